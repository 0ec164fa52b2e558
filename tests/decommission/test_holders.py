"""Every holder can act on its purge instruction: with exactly the scopes the README gives a
holder and no subscription it finds, reads and completes its Task; a holder with a registered
contact (rest-hook or MESH) is told there without subscribing; a subscription made after
switch-off gets the open Task at once; reminders follow the plan's interval; the dashboard and
``status`` say which Tasks never reached their holder."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.decommission.plan import load_plan, view
from adapter.decommission.tasks import remind
from adapter.demo import load_demo_data
from adapter.http import settings_of
from adapter.models import Child, PurgeTask
from adapter.security.ledger import record_deliveries
from tests.api.conftest import bearer
from tests.conftest import REPO
from tests.notify.helpers import dispatch, status_of, subscribe, subscription
from tests.notify.receivers import Receiver

CS = "https://fhir.contactpoint-gateway.example.org/CodeSystem/decommission"
JSON = {"Content-Type": "application/fhir+json"}
PLAN = ("plan", "--last-use", "2099-08-05", "--switch-off", "2099-08-06")


def readme_holder_scopes() -> str:
    """Return the scopes the README tells an operator to give a holder."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"\*\*A holder's scopes\*\* are `([^`]+)`", text)
    assert found, "the README states a holder's scopes"
    return found.group(1)


def cli(app: Flask, *args: str) -> Any:
    """Run ``contactpoint-gateway decommission ARGS``."""
    from adapter.decommission.cli import decommission_group

    return app.test_cli_runner().invoke(decommission_group, list(args))


def holding(app: Flask, db: Database, holders: dict[str, int]) -> None:
    """Load demo data and enter, for each holder, that many children in the delivery ledger
    (as if it had read them)."""
    load_demo_data(db, children=12, authorities=1, seed=4, progress=False)
    with db.write_transaction() as session:
        refs = list(session.scalars(select(Child.resource_id).order_by(Child.id)))
        for client_id, count in holders.items():
            record_deliveries(session, client_id, refs[:count], "read")


def switch_off(app: Flask) -> None:
    """Plan (future dates), then run down and switch off now (a drill of the phases)."""
    assert cli(app, *PLAN).exit_code == 0
    assert cli(app, "advance", "--now").exit_code == 0
    switched = cli(app, "advance", "--now")
    assert "purge tasks issued" in switched.output, switched.output


def purge_count(count: int) -> list[dict[str, Any]]:
    """Return a Task output with the number of records destroyed."""
    return [{"type": {"coding": [{"system": CS, "code": "purge-count"}]},
             "valueUnsignedInt": count}]


def shown(app: Flask) -> dict[str, str]:
    """Return each holder's status as ``status --json`` shows it."""
    result = cli(app, "status", "--json")
    assert result.exit_code == 0, result.output
    return {t["client_id"]: t["shown"] for t in orjson.loads(result.output)["tasks"]}


def test_a_holder_with_the_readme_scopes_and_no_subscription_completes_its_task(
        app: Flask, client: FlaskClient, db: Database) -> None:
    """Search, read, accept, complete: nothing but the README's scopes, no subscription."""
    scopes = readme_holder_scopes()
    assert scopes == "system/Task.rus"
    holder = bearer(client, app, "la-holder", "E09000033", scopes=scopes)
    holding(app, db, {"la-holder": 3})
    assert cli(app, *PLAN).exit_code == 0
    assert cli(app, "advance", "--now").exit_code == 0
    switched = cli(app, "advance", "--now")
    assert "1 holders have neither a purge-instruction subscription nor a contact" in \
        switched.output and switched.output.rstrip().endswith(": la-holder"), switched.output
    assert shown(app) == {"la-holder": "never-sent"}  # nothing delivered, not yet read
    found = client.get("/fhir/Task?status=requested", headers=holder)
    assert found.status_code == 200, found.json
    tasks = [e["resource"] for e in found.json["entry"]]
    assert len(tasks) == 1 and tasks[0]["restriction"]["period"]["end"].startswith("2099-10-06")
    task = client.get(f"/fhir/Task/{tasks[0]['id']}", headers=holder).json
    assert len([i for i in task["input"] if "valueReference" in i]) == 3
    assert shown(app) == {"la-holder": "instructed"}  # it has the Task now
    for body in ({**task, "status": "accepted"},
                 {**task, "status": "completed", "output": purge_count(3)}):
        answered = client.put(f"/fhir/Task/{task['id']}", data=orjson.dumps(body),
                              headers={**holder, **JSON})
        assert answered.status_code == 200, answered.json
    assert shown(app) == {"la-holder": "completed"}
    assert client.get("/fhir/Patient?_count=1", headers=holder).status_code in (403, 410)


def test_a_holder_is_told_at_its_registered_contact(app: Flask, client: FlaskClient,
                                                    db: Database, receiver: Receiver) -> None:
    """A holder with a rest-hook contact gets its Task there without subscribing; one without
    a contact or a subscription is shown as never sent, not as instructed."""
    for name in ("told", "untold"):
        bearer(client, app, name, "E09000033", scopes="system/Task.rus")
    holding(app, db, {"told": 2, "untold": 2})
    registered = cli(app, "contact", "told", receiver.url("/told"))
    assert registered.exit_code == 0, registered.output
    assert cli(app, "contact", "told", "ftp://nope").exit_code != 0
    switch_off(app)
    dispatch(app)
    bundles = [orjson.loads(r.body) for r in receiver.bodies("/told")]
    assert [status_of(b)["type"] for b in bundles] == ["handshake", "event-notification"]
    sent = bundles[1]["entry"][1]["resource"]
    assert sent["resourceType"] == "Task" and sent["status"] == "requested"
    with db.sessions() as session:
        assert sent["id"] == session.scalar(select(PurgeTask.resource_id).where(
            PurgeTask.client_id == "told"))
    assert shown(app) == {"told": "instructed", "untold": "never-sent"}
    table = cli(app, "status").output
    assert "never-sent" in table and "SYSTEM" in table and "REACHED" in table


def test_a_subscription_made_after_switch_off_gets_the_task_at_once(
        app: Flask, client: FlaskClient, db: Database, receiver: Receiver) -> None:
    """No waiting for a reminder: the open Task follows the handshake."""
    late = bearer(client, app, "late", "E09000033")
    holding(app, db, {"late": 2})
    switch_off(app)
    dispatch(app)
    subscribe(client, late, subscription("purge-instruction", receiver.url("/late"),
                                         content="full-resource"))
    dispatch(app)
    kinds = [status_of(orjson.loads(r.body))["type"] for r in receiver.bodies("/late")]
    assert kinds == ["handshake", "event-notification"]


def test_a_holder_registered_with_a_contact_after_switch_off_is_told_at_once(
        app: Flask, client: FlaskClient, db: Database, receiver: Receiver) -> None:
    """Registering a contact while a Task is open sends the Task there now."""
    bearer(client, app, "later", "E09000033", scopes="system/Task.rus")
    holding(app, db, {"later": 1})
    switch_off(app)
    assert cli(app, "contact", "later", receiver.url("/later")).exit_code == 0
    dispatch(app)
    kinds = [status_of(orjson.loads(r.body))["type"] for r in receiver.bodies("/later")]
    assert kinds == ["handshake", "event-notification"]


def test_reminders_follow_the_interval(app: Flask, client: FlaskClient, db: Database) -> None:
    """Reminded once the plan's interval has passed since the Task or the last reminder,
    not before; a completed Task is not reminded."""
    bearer(client, app, "slow", "E09000033", scopes="system/Task.rus")
    holding(app, db, {"slow": 1})
    switch_off(app)
    with db.sessions() as session:
        stored = load_plan(session)
        task = session.scalar(select(PurgeTask))
        assert stored is not None and task is not None
        plan, issued = view(stored), task.issued.replace(tzinfo=dt.UTC)
    interval = dt.timedelta(days=plan.reminder_days)
    with app.app_context():
        for offset, expected in ((interval - dt.timedelta(hours=1), 0), (interval, 1),
                                 (interval + dt.timedelta(days=1), 0), (interval * 2, 1)):
            with db.write_transaction() as session:
                assert remind(session, plan, issued + offset, settings_of(app)) == expected, \
                    offset


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_holder_is_told_at_its_mesh_mailbox(app: Flask, client: FlaskClient, db: Database,
                                              mesh_sandbox: str) -> None:
    """A MESH contact: the Task arrives as a MESH message in the holder's mailbox."""
    from tests.notify.conftest import MESH_MAILBOXES, MESH_SHARED_KEY
    from tests.notify.test_mesh import RECIPIENT, read_mailbox

    app.config.update(MESH_URL=mesh_sandbox, MESH_MAILBOX=MESH_MAILBOXES[0],
                      MESH_PASSWORD="password", MESH_SHARED_KEY=MESH_SHARED_KEY)
    bearer(client, app, "mesh-holder", "E09000033", scopes="system/Task.rus")
    holding(app, db, {"mesh-holder": 2})
    assert cli(app, "contact", "mesh-holder", f"mesh:{RECIPIENT}").exit_code == 0
    switch_off(app)
    dispatch(app)
    bundles = [orjson.loads(body) for body, _headers in read_mailbox(mesh_sandbox).values()]
    with db.sessions() as session:
        task_id = session.scalar(select(PurgeTask.resource_id))
    tasks = [e["resource"] for b in bundles for e in b["entry"][1:] if "resource" in e]
    assert [t["id"] for t in tasks if t["resourceType"] == "Task"] == [task_id]
    assert shown(app) == {"mesh-holder": "instructed"}
