"""The decommissioning as holders live it, from plan to certificate (on SQLite and PostgreSQL):
three local systems hold children received from the gateway, each registered with exactly the
README's holder scopes —

- ``agent-la`` runs the reference purge agent (``contactpoint-gateway holder``, a separate
  process talking HTTP to the gateway served on 127.0.0.1) beside a small local store (a SQLite
  file) that its purge command empties; the agent is killed in the middle of the purge and
  resumes;
- ``hand-la`` acknowledges by hand over FHIR;
- ``silent-la`` is told at its registered contact and never answers.

The plan is a drill (its dates are past: refused without --drill), the cron-style ``advance``
moves the phases, destruction before destroy-by needs an override reason, the certificate
lists each holder's outcome and the final notice's delivery, and the local store is empty."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.models import Child
from adapter.security import clients as registry
from adapter.security.ledger import record_deliveries
from tests.api.conftest import bearer
from tests.decommission.test_holders import cli, readme_holder_scopes
from tests.notify.helpers import dispatch, subscribe, subscription
from tests.notify.receivers import Receiver
from tests.security.helpers import make_key

# The local system's purge command: deletes the named children from its store and prints how
# many records it destroyed. While a "block" file exists it says it started and waits (the
# test kills the agent then, as a crash in the middle of a purge).
PURGE_SCRIPT = '''
import json, sqlite3, sys, time
from pathlib import Path
here = Path(sys.argv[1])
patients = [json.loads(line)["patient"] for line in sys.stdin if line.strip()]
if (here / "block").exists():
    (here / "started").write_text("started")
    time.sleep(60)
store = sqlite3.connect(here / "store.sqlite")
with store:
    purged = sum(store.execute("DELETE FROM child WHERE patient = ?", (p,)).rowcount
                 for p in patients)
print(json.dumps({"purged": purged}))
'''


@dataclass
class Holder:
    """The agent's holder: its key, its local store and its agent's files."""

    folder: Path
    key_file: Path
    children: list[str]

    @property
    def store(self) -> Path:
        """The local system's database."""
        return self.folder / "store.sqlite"

    def left(self) -> int:
        """Return how many children the local store still holds."""
        with sqlite3.connect(self.store) as store:
            return int(store.execute("SELECT count(*) FROM child").fetchone()[0])


def register_agent_holder(app: Flask, tmp_path: Path, organisation: str,
                          children: list[tuple[str, str]]) -> Holder:
    """Register ``agent-la`` with the README's scopes and a key file; fill its local store."""
    key = make_key("ES384")
    with app.extensions["db"].transaction() as session:
        registry.add_client(session, "agent-la", "Case management (agent)", organisation,
                            readme_holder_scopes(), [], {"keys": [key.as_dict(private=False)]})
    folder = tmp_path / "agent-la"
    folder.mkdir()
    key_file = folder / "agent-la.jwk.json"
    key_file.write_bytes(orjson.dumps(key.as_dict(private=True)))
    (folder / "purge.py").write_text(PURGE_SCRIPT)
    with sqlite3.connect(folder / "store.sqlite") as store:
        store.execute("CREATE TABLE child (patient TEXT PRIMARY KEY, contactpoint_id TEXT)")
        store.executemany("INSERT INTO child VALUES (?, ?)", children)
    return Holder(folder, key_file, [p for p, _ in children])


def agent(base: str, holder: Holder) -> list[str]:
    """Return the command line of one round of the reference agent."""
    command = f"{sys.executable} {holder.folder / 'purge.py'} {holder.folder}"
    return [str(Path(sys.executable).parent / "contactpoint-gateway"), "holder", "--gateway",
            base, "--client", "agent-la", "--key", str(holder.key_file), "--state",
            str(holder.folder / "state.json"), "--purge-command", command, "--once"]


def crash_in_the_purge(base: str, holder: Holder) -> None:
    """Run the agent, and kill it (SIGKILL, with its purge command) while it purges."""
    (holder.folder / "block").write_text("block")
    process = subprocess.Popen(agent(base, holder), cwd=holder.folder, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (holder.folder / "started").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the purge never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    (holder.folder / "block").unlink()
    state = orjson.loads((holder.folder / "state.json").read_bytes())
    assert [t["step"] for t in state["tasks"].values()] == ["purging"]


def run_agent(base: str, holder: Holder) -> str:
    """Run one round of the agent to its end; return what it printed."""
    done = subprocess.run(agent(base, holder), cwd=holder.folder, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def held(db: Database) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Load demo data; return what each holder received: the agent's children (Patient id,
    ContactPoint ID), the hand holder's and the silent one's Patient ids."""
    load_demo_data(db, children=16, authorities=1, seed=9, progress=False)
    with db.sessions() as session:
        rows = [(str(r), str(c)) for r, c in session.execute(
            select(Child.resource_id, Child.contactpoint_id).order_by(Child.id))]
    return rows[:8], [r for r, _ in rows[8:11]], [r for r, _ in rows[11:13]]


def plan_as_drill(app: Flask) -> None:
    """A plan whose dates are past is refused, accepted as a drill; cron's advance runs it."""
    today = dt.datetime.now(dt.UTC).date()
    dates = ["--last-use", str(today - dt.timedelta(days=3)),
             "--switch-off", str(today - dt.timedelta(days=2))]
    refused = cli(app, "plan", *dates)
    assert refused.exit_code != 0 and "--drill" in refused.output
    assert cli(app, "plan", *dates, "--drill").exit_code == 0
    for expected in ("live -> run-down", "run-down -> switched-off; 3 purge tasks issued"):
        moved = cli(app, "advance")
        assert moved.exit_code == 0 and moved.output.splitlines()[0] == expected, moved.output
    # silent-la has a contact; the other two will have to search for their Tasks
    assert moved.output.rstrip().endswith("contact`): agent-la, hand-la"), moved.output
    idle = cli(app, "advance")
    assert idle.exit_code == 0 and idle.output.startswith("nothing due"), idle.output


def acknowledge_by_hand(client: FlaskClient, headers: dict[str, str], count: int) -> None:
    """hand-la finds its Task by search, accepts it and completes it over FHIR."""
    found = client.get("/fhir/Task", headers=headers).json
    task = found["entry"][0]["resource"]
    system = task["code"]["coding"][0]["system"]
    for body in ({**task, "status": "accepted"},
                 {**task, "status": "completed", "output": [{"type": {"coding": [
                     {"system": system, "code": "purge-count"}]}, "valueUnsignedInt": count}]}):
        answered = client.put(f"/fhir/Task/{task['id']}", data=orjson.dumps(body),
                              headers={**headers, "Content-Type": "application/fhir+json"})
        assert answered.status_code == 200, answered.json


def check_certificate(app: Flask, holder: Holder) -> dict[str, Any]:
    """The certificate says it was a drill, the override, each holder's outcome and the final
    notice's delivery."""
    folder = Path(app.config["INSTANCE_PATH"]) / "decommission"
    certificate = orjson.loads((folder / "certificate.json").read_bytes())["certificate"]
    assert certificate["timetable"]["drill"] is True
    assert certificate["destruction"]["override"]["reason"] == "drill: holders need no longer"
    outcomes = {a["client"]: (a["shown"], a["purged"]) for a in certificate["acknowledgements"]}
    assert outcomes == {"agent-la": ("completed", len(holder.children)),
                        "hand-la": ("completed", 3), "silent-la": ("silent", None)}
    assert [(n["client"], n["delivered"]) for n in certificate["finalNotice"]] == [
        ("watcher", True)]
    return certificate


def test_three_holders_from_plan_to_certificate(app: Flask, client: FlaskClient, db: Database,
                                                receiver: Receiver, served: str,
                                                tmp_path: Path) -> None:
    """The agent's store ends empty; the certificate tells each holder's story."""
    scopes = readme_holder_scopes()
    agent_children, hand_children, silent_children = held(db)
    holder = register_agent_holder(app, tmp_path, "E09000033", agent_children)
    hand = bearer(client, app, "hand-la", "E09000033", scopes=scopes)
    bearer(client, app, "silent-la", "E08000003", scopes=scopes)
    watcher = bearer(client, app, "watcher", "E09000033")
    with db.write_transaction() as session:
        for client_id, refs in (("agent-la", holder.children), ("hand-la", hand_children),
                                ("silent-la", silent_children)):
            record_deliveries(session, client_id, refs, "read")
    subscribe(client, watcher, subscription("decommission-notice", receiver.url("/watcher"),
                                            content="full-resource"))
    assert cli(app, "contact", "silent-la", receiver.url("/silent")).exit_code == 0
    plan_as_drill(app)
    dispatch(app)
    assert len(receiver.bodies("/silent")) == 2  # handshake, then its Task

    crash_in_the_purge(served, holder)
    assert holder.left() == len(holder.children)  # killed before its store was touched
    printed = run_agent(served, holder)  # resumes: the Task was accepted, the purge re-run
    assert f"status=completed purged={len(holder.children)}" in printed, printed
    assert run_agent(served, holder) == ""  # nothing open any more
    acknowledge_by_hand(client, hand, 3)

    early = cli(app, "destroy", "--yes")
    assert early.exit_code != 0 and "silent-la" in early.output and "--override" in early.output
    done = cli(app, "destroy", "--yes", "--override", "drill: holders need no longer")
    assert done.exit_code == 0 and "final notice delivered to 1 of 1" in done.output, done.output
    check_certificate(app, holder)
    assert holder.left() == 0
    assert client.get("/healthz").json["phase"] == "destroyed"


class RefusingHook(BaseHTTPRequestHandler):
    """A local system's purge hook that refuses, with its reason (and records the call)."""

    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Record the children asked for; answer 422 with a reason."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        RefusingHook.calls.append(orjson.loads(body))
        answer = orjson.dumps({"reason": "Records under a court order must be kept"})
        self.send_response(422)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""


def test_the_agent_rejects_with_the_local_systems_reason(app: Flask, client: FlaskClient,
                                                         db: Database, served: str,
                                                         tmp_path: Path) -> None:
    """A purge hook that refuses makes the Task rejected with the hook's reason; the agent's
    next round has nothing to do."""
    from adapter.holder.agent import Settings
    from adapter.holder.run import run_round

    children, _hand, _silent = held(db)
    holder = register_agent_holder(app, tmp_path, "E09000033", children[:2])
    with db.write_transaction() as session:
        record_deliveries(session, "agent-la", holder.children, "read")
    plan_as_drill_quietly(app)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), RefusingHook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        settings = Settings(served, "agent-la", holder.key_file, tmp_path / "state.json",
                            purge_url=f"http://127.0.0.1:{hook.server_port}/purge")
        outcomes = run_round(settings)
        assert run_round(settings) == []
    finally:
        hook.shutdown()
        hook.server_close()
    assert [(o.status, o.reason) for o in outcomes] == [
        ("rejected", "Records under a court order must be kept")]
    assert sorted(c["patient"] for c in RefusingHook.calls[-1]["children"]) == \
        sorted(holder.children)
    status = orjson.loads(cli(app, "status", "--json").output)["tasks"][0]
    assert (status["shown"], status["reason"]) == ("rejected",
                                                   "Records under a court order must be kept")


def plan_as_drill_quietly(app: Flask) -> None:
    """Plan a drill and switch off at once."""
    assert cli(app, "plan", "--last-use", "2020-01-01", "--switch-off", "2020-01-02",
               "--drill").exit_code == 0
    assert cli(app, "advance").exit_code == cli(app, "advance").exit_code == 0


def test_a_saved_purge_is_reported_without_purging_again(
        app: Flask, client: FlaskClient, db: Database, served: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway goes away after the local purge and before the answer: the next round
    answers with the saved count and does not run the purge command again."""
    from adapter.holder import run as agent_run
    from adapter.holder.agent import AgentError, Gateway, Settings

    children, _hand, _silent = held(db)
    holder = register_agent_holder(app, tmp_path, "E09000033", children[:3])
    with db.write_transaction() as session:
        record_deliveries(session, "agent-la", holder.children, "read")
    plan_as_drill_quietly(app)
    runs = tmp_path / "runs.log"
    command = (f"sh -c 'echo run >> {runs}; exec {sys.executable} "
               f"{holder.folder / 'purge.py'} {holder.folder}'")
    settings = Settings(served, "agent-la", holder.key_file, tmp_path / "state.json",
                        purge_command=command)
    real_update = Gateway.update

    def unreachable_for_the_answer(gateway: Gateway, task: dict[str, Any]) -> dict[str, Any]:
        if task["status"] == "completed":
            raise AgentError("PUT Task: ConnectionError")
        return real_update(gateway, task)
    with monkeypatch.context() as patched:
        patched.setattr(agent_run.Gateway, "update", unreachable_for_the_answer)
        with pytest.raises(AgentError):
            agent_run.run_round(settings)
    assert holder.left() == 0 and runs.read_text().count("run") == 1
    outcomes = agent_run.run_round(settings)
    assert [(o.status, o.purged) for o in outcomes] == [("completed", 3)]
    assert runs.read_text().count("run") == 1  # not purged again
    status = orjson.loads(cli(app, "status", "--json").output)["tasks"][0]
    assert (status["shown"], status["purged"]) == ("completed", 3)
