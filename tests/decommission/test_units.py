"""The decommissioning's parts on their own: the timetable, the phase rules for every kind of
route, purge Task answers, the certificate's signatures, re-keying under the disclosure policy,
and admin sessions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey
from lxml import etree
from sqlalchemy import select

from adapter.db import Database
from adapter.decommission import phases
from adapter.decommission.acknowledge import apply_answer, read_answer
from adapter.decommission.certificate import (
    CertificateError,
    signed_json,
    signed_xml,
    verify_certificate,
)
from adapter.decommission.gate import PhaseRefused, enforce_request
from adapter.decommission.plan import make_timetable, save_plan
from adapter.decommission.rekey import rekey_page
from adapter.demo import load_demo_data
from adapter.directory.schema import CERTIFICATE_XSD, load_schema
from adapter.errors import Conflict, Invalid
from adapter.http import settings_of
from adapter.models import (
    Assessment,
    DecommissionPlan,
    Event,
    LocalIdentifier,
    Organisation,
    PurgeTask,
    ResourceAlias,
)
from adapter.security.caller import Caller
from adapter.security.policy.phase import ALLOWED_KINDS
from adapter.security.scopes import parse_scopes
from adapter.systems import DEFAULT_CANONICAL_BASE
from tests.api.conftest import bearer
from tests.security.helpers import form_csrf_token

LONDON = "Europe/London"
BASE = DEFAULT_CANONICAL_BASE  # the test app's canonical base (the default)
CS = "https://fhir.contactpoint-gateway.example.org/CodeSystem/decommission"


# --- timetable -------------------------------------------------------------------------------

def test_announced_timetable() -> None:
    """Last use 5 August, switch-off 6 August at noon (BST), destroy-by two months later."""
    t = make_timetable("2026-08-05", "2026-08-06", None, LONDON, "12:00")
    assert t.run_down_at == dt.datetime(2026, 8, 4, 23, 0, tzinfo=dt.UTC)
    assert t.switch_off_at == dt.datetime(2026, 8, 6, 11, 0, tzinfo=dt.UTC)
    assert t.destroy_by_at == dt.datetime(2026, 10, 6, 11, 0, tzinfo=dt.UTC)


def test_two_months_end_on_the_last_day_of_a_shorter_month() -> None:
    """31 December plus two calendar months is the end of February (GMT: no offset)."""
    t = make_timetable("2027-12-30", "2027-12-31T09:30", None, LONDON, "12:00")
    assert t.destroy_by_at == dt.datetime(2028, 2, 29, 9, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("last_use", "switch_off", "destroy_by", "message"), [
    ("2026-08-06", "2026-08-06", None, "after the day of last use"),
    ("2026-08-05", "2026-08-06", "2026-10-07", "at most two calendar months"),
    ("2026-08-05", "2026-08-06", "2026-08-06T11:00", "after the switch-off"),
    ("5 Aug", "2026-08-06", None, "expected YYYY-MM-DD"),
    ("2026-08-05", "noon", None, "expected YYYY-MM-DD"),
])
def test_bad_timetables_are_refused(last_use: str, switch_off: str, destroy_by: str | None,
                                    message: str) -> None:
    """Dates out of order, too late a destruction, or malformed dates are refused."""
    with pytest.raises(Invalid, match=message):
        make_timetable(last_use, switch_off, destroy_by, LONDON, "12:00")


# --- plan and phases ---------------------------------------------------------------------------

NOW = dt.datetime(2099, 6, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("last_use", "switch_off", "destroy_by", "problem"), [
    ("2099-05-30", "2099-08-06", None, "day of last use"),
    ("2099-05-30", "2099-05-31", None, "switch-off"),
    ("2099-08-05", "2099-08-06", "2099-08-20", "fewer than the minimum of 28"),
])
def test_a_timetable_that_cuts_holders_short_is_a_drill_only(
        app: Flask, db: Database, last_use: str, switch_off: str, destroy_by: str | None,
        problem: str) -> None:
    """Past dates or a purge window under the minimum are refused unless --drill, which the
    plan, its PlanDefinition (experimental) and its description record."""
    from adapter.decommission.plan import view
    from adapter.decommission.resources import plan_definition

    timetable = make_timetable(last_use, switch_off, destroy_by, LONDON, "12:00")
    with app.app_context(), db.write_transaction() as session:
        with pytest.raises(Invalid, match=problem) as refused:
            save_plan(session, timetable, 7, 14, NOW, base=BASE, min_days=28)
        assert "--drill" in refused.value.message
    with app.app_context(), db.write_transaction() as session:
        plan = save_plan(session, timetable, 7, 14, NOW, base=BASE, min_days=28,
                         drill=True)
        resource = plan_definition(view(plan), BASE)
    assert plan.drill and resource["experimental"] is True
    assert resource["description"].startswith("DRILL")


def test_a_fair_timetable_needs_no_drill(app: Flask, db: Database) -> None:
    """Future dates and the default two months are accepted as they are (not a drill)."""
    timetable = make_timetable("2099-08-05", "2099-08-06", None, LONDON, "12:00")
    with app.app_context(), db.write_transaction() as session:
        plan = save_plan(session, timetable, 7, 14, NOW, base=BASE, min_days=28)
        assert plan.drill is False


def test_the_plan_command_refuses_past_dates_without_drill(app: Flask, db: Database) -> None:
    """The README's own example would be refused once past; --drill accepts it."""
    from adapter.decommission.cli import decommission_group

    runner = app.test_cli_runner()
    past = ["plan", "--last-use", "2020-08-05", "--switch-off", "2020-08-06"]
    refused = runner.invoke(decommission_group, past)
    assert refused.exit_code != 0 and "does not protect the holders" in refused.output
    assert "--drill" in refused.output
    accepted = runner.invoke(decommission_group, [*past, "--drill"])
    assert accepted.exit_code == 0 and accepted.output.startswith("DRILL"), accepted.output


def _plan(app: Flask, db: Database, phase: str = "live") -> None:
    """Save a plan and put the service in ``phase``."""
    with app.app_context(), db.write_transaction() as session:
        save_plan(session, make_timetable("2099-08-05", "2099-08-06", None, LONDON, "12:00"),
                  7, 14, base=BASE)
        plan = session.get(DecommissionPlan, 1)
        assert plan is not None
        plan.phase = phase
    phases.forget(db)


@pytest.mark.parametrize("phase", list(ALLOWED_KINDS))
def test_each_phase_lets_through_only_its_kinds(app: Flask, db: Database, phase: str) -> None:
    """run-down refuses writes with 409; switched-off and destroyed refuse with 410."""
    _plan(app, db, phase)
    with app.test_request_context("/"):
        for kind in ("meta", "read", "write", "purge", "admin"):
            if kind in ALLOWED_KINDS[phase]:
                enforce_request(kind)
                continue
            with pytest.raises(PhaseRefused) as refused:
                enforce_request(kind)
            assert refused.value.status == (409 if phase == "run-down" else 410)
            outcome = refused.value.to_outcome()
            assert outcome["issue"][0]["details"]["coding"][0]["code"] == phase
            assert "6 October 2099" in outcome["issue"][0]["diagnostics"]


def test_planning_announces_and_stops_after_switch_off(app: Flask, db: Database,
                                                      client: FlaskClient) -> None:
    """A plan is announced (one notice event per change); once switched off it is fixed."""
    _plan(app, db)
    with db.sessions() as session:
        notices = list(session.scalars(select(Event).where(Event.topic == "decommission-notice")))
    assert [n.payload["resourceType"] for n in notices if n.payload] == ["PlanDefinition"]
    assert client.get("/healthz").json["phase"] == "live"
    with db.write_transaction() as session:
        plan = session.get(DecommissionPlan, 1)
        assert plan is not None
        plan.phase = "switched-off"
    with app.app_context(), db.write_transaction() as session, pytest.raises(Conflict):
        save_plan(session, make_timetable("2099-08-05", "2099-08-06", None, LONDON, "12:00"),
                  7, 14, base=BASE)


def test_without_a_plan_the_service_is_live(client: FlaskClient) -> None:
    """No plan: live; Task and PlanDefinition are declared all the same (their routes answer:
    an empty search, a 404 read)."""
    statement = client.get("/fhir/metadata").json
    assert "phase: live" in statement["description"]
    assert {"Task", "PlanDefinition"} <= {r["type"] for r in statement["rest"][0]["resource"]}
    assert client.get("/healthz").json["phase"] == "live"


# --- purge Task answers ------------------------------------------------------------------------

def _task_body(status: str, **extra: Any) -> dict[str, Any]:
    """Return a minimal Task body with ``status``."""
    return {"resourceType": "Task", "id": "t1", "status": status, "intent": "order", **extra}


@pytest.mark.parametrize(("body", "message"), [
    (_task_body("rejected"), "statusReason"),
    (_task_body("completed"), "purge-count"),
    (_task_body("completed", output=[{"type": {"coding": [{"system": CS,
                                                          "code": "purge-count"}]},
                                      "valueInteger": -1}]), "zero or more"),
    (_task_body("finished"), "status is one of"),
    ({"resourceType": "Patient", "id": "t1"}, "A Task resource"),
    (_task_body("accepted") | {"id": "t2"}, "id in the URL"),
])
def test_bad_answers_are_refused(body: dict[str, Any], message: str) -> None:
    """Rejections need a reason, completions a count; the body must be a valid Task."""
    with pytest.raises(Invalid, match=message):
        read_answer(body, "t1", CS)


def test_transitions(db: Database) -> None:
    """requested -> accepted -> completed; a completed Task is final; no change, no version."""
    caller = Caller("sys", "A81001", parse_scopes("system/*.cruds"), frozenset())
    task = PurgeTask(resource_id="t1", client_id="sys", organisation_code="A81001",
                     status="requested", children=3, version=1, reminders=0)
    now = dt.datetime(2099, 8, 7, tzinfo=dt.UTC)
    with db.sessions() as session:
        assert apply_answer(session, task, read_answer(_task_body("accepted"), "t1", CS),
                            caller, now)
        assert not apply_answer(session, task, read_answer(_task_body("accepted"), "t1", CS),
                                caller, now)
        done = _task_body("completed", output=[{"type": {"coding": [
            {"system": CS, "code": "purge-count"}]}, "valueUnsignedInt": 3}])
        assert apply_answer(session, task, read_answer(done, "t1", CS), caller, now)
        assert (task.status, task.purged, task.version) == ("completed", 3, 3)
        with pytest.raises(Conflict, match="final"):
            apply_answer(session, task, read_answer(_task_body("accepted"), "t1", CS), caller,
                         now)
        session.rollback()


# --- certificate -------------------------------------------------------------------------------

def _certificate() -> dict[str, Any]:
    """Return a small certificate."""
    return {"certificateId": "c1", "issued": "2099-10-06T11:00:00.000Z", "issuer": "https://x",
            "timetable": {"lastUse": "2099-08-05", "runDownAt": "2099-08-04T23:00:00.000Z",
                          "switchOffAt": "2099-08-06T11:00:00.000Z",
                          "destroyByAt": "2099-10-06T11:00:00.000Z", "timeZone": LONDON,
                          "drill": True, "runDownStarted": None, "switchedOff": None,
                          "destroyed": "2099-10-06T11:00:00.000Z"},
            "destruction": {"started": "2099-10-06T11:00:00.000Z",
                            "finished": "2099-10-06T11:00:01.000Z",
                            "override": {"reason": "a drill", "overruled": [
                                "destroy-by is 6 October 2099 12:00 BST"]},
                            "storage": "SQLite", "exportJobsRemoved": 0},
            "tables": [{"name": "child", "before": 5, "after": 0}],
            "acknowledgements": [{"task": "t1", "client": "sys", "clientName": "System",
                                  "organisation": "A81001", "organisationName": "A practice",
                                  "status": "completed", "shown": "completed", "children": 5,
                                  "purged": 5, "reason": None,
                                  "delivered": "2099-08-06T11:00:05.000Z", "answered": None,
                                  "reminders": 0, "escalated": False}],
            "summary": {"completed": 1},
            "finalNotice": [{"subscription": "s1", "client": "sys", "channel": "rest-hook",
                             "delivered": True, "at": "2099-10-06T11:00:00.500Z",
                             "detail": None}],
            "audit": {"records": 9, "lastRecordId": 9, "digest": "sha256:00",
                      "pseudonymisation": "HMAC"}}


def test_certificate_signatures_verify_and_detect_tampering() -> None:
    """Both forms verify with the key; any change or another key breaks them."""
    key = ECKey.generate_key("P-384", parameters={"alg": "ES384"})
    key.ensure_kid()
    document = signed_json(_certificate(), key)
    xml = signed_xml(_certificate(), key)
    load_schema(CERTIFICATE_XSD).assertValid(etree.fromstring(xml))
    assert verify_certificate(orjson.dumps(document), key).form == "json"
    assert verify_certificate(xml, key).certificate_id == "c1"
    document["certificate"]["tables"][0]["after"] = 1
    other = ECKey.generate_key("P-384", parameters={"alg": "ES384"})
    for data, with_key in ((orjson.dumps(document), key), (xml, other),
                           (xml.replace(b">5<", b">4<", 1), key), (b"{}", key), (b"<x", key)):
        with pytest.raises(CertificateError):
            verify_certificate(data, with_key)


# --- re-keying -------------------------------------------------------------------------------

def test_rekey_follows_the_disclosure_policy(db: Database, app: Flask) -> None:
    """A shielded child's NHS number and UPN are withheld from a caller without the right,
    another organisation's local id always; the record says it was redacted."""
    load_demo_data(db, children=20, authorities=1, seed=3, progress=False)
    with db.write_transaction() as session:
        assessment = session.scalars(select(Assessment).order_by(Assessment.id)).first()
        assert assessment is not None
        authority = assessment.child.managing_organisation.gss_code
        other = session.scalar(select(Organisation).where(Organisation.type == "school"))
        assert other is not None and authority is not None
        assessment.child.local_identifiers.append(LocalIdentifier(organisation=other,
                                                                  value="CASE-77"))
        assessment.child.shielded = True
        target = assessment.resource_id
    plain = Caller("ecaf", authority, parse_scopes("system/*.rs"), frozenset())
    right = Caller("ecaf2", authority, parse_scopes("system/*.rs"), frozenset({"shielded"}))
    with app.app_context(), db.write_transaction() as session:
        shown = {r.careteam_id: r for r in rekey_page(session, plain, 0, 100)[0]}
        full = {r.careteam_id: r for r in rekey_page(session, right, 0, 100)[0]}
    assert shown[target].redacted and shown[target].nhs_number is None
    assert full[target].nhs_number and full[target].redacted  # the school's id is withheld
    assert all(li.value != "CASE-77" for r in (shown[target], full[target])
               for li in r.local_ids)


# --- admin sessions --------------------------------------------------------------------------

def test_admin_login_session_and_refusals(app: Flask, client: FlaskClient,
                                          db: Database) -> None:
    """An admin token opens a strict, HttpOnly session; others are refused; browsers without a
    session are sent to the login form, API callers get a 401."""
    admin = bearer(client, app, "boss", "E09000001", ["admin"])["Authorization"].split()[1]
    plain = bearer(client, app, "plain", "E09000001")["Authorization"].split()[1]
    assert client.get("/admin/decommission").status_code == 303
    assert client.get("/admin/decommission",
                      headers={"Authorization": "Bearer nope"}).status_code == 401
    csrf = form_csrf_token(client)
    refused = client.post("/admin/login", data={"token": plain, "csrf_token": csrf})
    assert refused.status_code == 200 and b"no admin right" in refused.data
    assert "cpgw_admin" not in refused.headers.get("Set-Cookie", "")
    opened = client.post("/admin/login", data={"token": admin, "next": "https://evil/",
                                               "csrf_token": csrf})
    assert opened.status_code == 303 and opened.headers["Location"] == "/admin/decommission"
    cookie = next(c for c in opened.headers.getlist("Set-Cookie") if c.startswith("cpgw_admin="))
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Strict", "Path=/admin"))
    page = client.get("/admin/decommission")
    assert page.status_code == 200 and b"no decommissioning plan" in page.data
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert client.get("/admin/static/decommission.css").mimetype == "text/css"
    client.set_cookie("cpgw_admin", admin, path="/admin")  # an access token is no session
    assert client.get("/admin/decommission").status_code == 303


# --- destruction -----------------------------------------------------------------------------

def test_role_aliases_are_destroyed() -> None:
    """The aliases of earlier PractitionerRole ids name a child's roles: destruction deletes
    them (and counts them in the certificate), once."""
    from adapter.decommission.destruction import DELETED, KEPT, table_of

    named = [table_of(model).name for model in (*DELETED, *KEPT)]
    assert len(named) == len(set(named))
    assert "resource_alias" in {table_of(model).name for model in DELETED}


def test_interrupted_destruction_resumes(app: Flask, db: Database,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A destruction cut short after the deletion (the storage could not be scrubbed) is
    finished by running it again; a finished one cannot run twice."""
    from adapter.decommission import storage
    from adapter.decommission.certify import issue_certificate
    from adapter.decommission.destruction import destroy
    from adapter.errors import Unavailable

    load_demo_data(db, children=5, authorities=1, seed=5, progress=False)
    with db.transaction() as session:  # an earlier role id (migration 0014) names a child's role
        session.add(ResourceAlias(resource_type="PractitionerRole", old_id="old-role-id",
                                  new_id="new-role-id"))
    _plan(app, db, "switched-off")
    settings, now = settings_of(app), dt.datetime.now(dt.UTC)

    def busy(*_args: Any) -> str:
        raise Unavailable("busy")
    with app.app_context():
        with monkeypatch.context() as patched:
            patched.setattr(storage, "scrub", busy)
            with pytest.raises(Unavailable):
                destroy(db, settings, now, override="a drill")
        done = destroy(db, settings, now, override=None)  # resumed: no override needed
        assert done.override == "a drill" and done.before["child"] == 5
        assert done.after["child"] == 0
        assert done.before["resource_alias"] == 1 and done.after["resource_alias"] == 0
        issued = issue_certificate(db, settings, done, now)
        override = issued["certificate"]["destruction"]["override"]
        assert override["reason"] == "a drill" and "destroy-by" in override["overruled"][0]
        with pytest.raises(Conflict, match="destroyed"):
            destroy(db, settings, now, override="again")


def test_xsd_code_lists_equal_the_vocabularies() -> None:
    """The decommissioning's XSD code lists are those of the code."""
    from adapter.decommission.codes import DISPLAY_STATUSES
    from adapter.directory.schema import SCHEMA_DIR
    from adapter.models.decommission import PHASES, TASK_STATUSES

    xs = "{http://www.w3.org/2001/XMLSchema}"
    found = {}
    for name in ("decommission.xsd", "certificate.xsd"):
        for simple in etree.parse(str(SCHEMA_DIR / name)).getroot().iter(xs + "simpleType"):
            values = tuple(e.get("value") for e in simple.iter(xs + "enumeration"))
            if values:
                found[simple.get("name")] = values
    assert set(found) == {"PhaseCode", "ShownStatusCode", "TaskStatusCode"}
    assert found["PhaseCode"] == PHASES and found["ShownStatusCode"] == DISPLAY_STATUSES
    assert sorted(found["TaskStatusCode"]) == sorted(TASK_STATUSES)
