"""Every disclosure is audited exactly once, and its record is committed before the response
leaves (adapter/db.py ``Database.read_transaction``, docs/architecture.md "Audit before the
answer"): read, vread, history, a search page of many, ``_revinclude``d CareTeams and bulk
export lines, one by one; then many concurrent reads against the served gateway; then a served
worker killed (SIGKILL) at random moments while it answers reads."""

from __future__ import annotations

import http.client
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from adapter.db import Database
from adapter.directory.schema import NS
from adapter.export import exporter as exporter_module
from adapter.models import AuditRecord, Child, LedgerEntry
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from tests.api.conftest import Callers
from tests.api.test_export import export, inline
from tests.conftest import REPO
from tests.notify.test_crash import dispatcher_env
from tests.security.helpers import register
from tests.security.test_header_limit import BIN, free_port, wait_for_answer

__all__ = ["inline"]  # the export test's fixture: jobs run inline
SYSTEM = Caller("system", "-", [], frozenset(), None)


def counts(db: Database, client_id: str) -> Counter[tuple[str, str | None, str | None]]:
    """Return how many records each (action, resource type, resource id) has for a client."""
    with db.sessions() as session:
        rows = session.execute(select(AuditRecord.action, AuditRecord.resource_type,
                                      AuditRecord.resource_id)
                               .where(AuditRecord.client_id == client_id))
        return Counter((action, kind, rid) for action, kind, rid in rows)


def new_records(db: Database, client_id: str,
                before: Counter[tuple[str, str | None, str | None]]
                ) -> Counter[tuple[str, str | None, str | None]]:
    """Return the records a client got since ``before``."""
    return counts(db, client_id) - before


def some_children(db: Database, how_many: int) -> list[str]:
    """Return the resource ids of ``how_many`` children."""
    with db.sessions() as session:
        return list(session.scalars(select(Child.resource_id).order_by(Child.id)
                                    .limit(how_many)))


# --- one request at a time --------------------------------------------------------------

def test_read_vread_and_history_are_audited_once(client: FlaskClient, callers: Callers,
                                                 demo: Database) -> None:
    """A read, a vread and a history of a child each leave exactly one record of that child."""
    child = some_children(demo, 1)[0]
    for path, action in ((f"/fhir/Patient/{child}", "read"),
                         (f"/fhir/Patient/{child}/_history/1", "vread"),
                         (f"/fhir/Patient/{child}/_history", "history")):
        before = counts(demo, "la-one")
        response = client.get(path, headers=callers.la)
        assert response.status_code == 200, response.json
        assert new_records(demo, "la-one", before) == Counter({(action, "Patient", child): 1})


def test_head_and_not_modified_are_audited_once_and_qualified(client: FlaskClient,
                                                              callers: Callers,
                                                              demo: Database) -> None:
    """HEAD is one ``read-head``, a 304 one ``read-not-modified``: never a plain read."""
    child = some_children(demo, 1)[0]
    before = counts(demo, "la-one")
    assert client.head(f"/fhir/Patient/{child}", headers=callers.la).status_code == 200
    assert new_records(demo, "la-one", before) == Counter({("read-head", "Patient", child): 1})
    etag = client.get(f"/fhir/Patient/{child}", headers=callers.la).headers["ETag"]
    before = counts(demo, "la-one")
    response = client.get(f"/fhir/Patient/{child}",
                          headers={**callers.la, "If-None-Match": etag})
    assert response.status_code == 304
    assert new_records(demo, "la-one", before) == Counter(
        {("read-not-modified", "Patient", child): 1})


def test_a_search_page_audits_each_hit_and_revinclude_once(client: FlaskClient,
                                                          callers: Callers,
                                                          demo: Database) -> None:
    """A page of every child with their CareTeams: one ``search`` record per Patient and per
    CareTeam of the Bundle, none more (the page is one INSERT of many rows)."""
    before = counts(demo, "admin")
    response = client.get("/fhir/Patient?_count=100&_revinclude=CareTeam:subject",
                          headers=callers.admin)
    assert response.status_code == 200, response.json
    entries = [e["resource"] for e in response.json["entry"]]  # type: ignore[index]
    patients = [r["id"] for r in entries if r["resourceType"] == "Patient"]
    teams = [r["id"] for r in entries if r["resourceType"] == "CareTeam"]
    assert len(patients) == len(some_children(demo, 1000)) and teams
    expected = Counter({("search", "Patient", p): 1 for p in patients})
    expected.update({("search", "CareTeam", t): 1 for t in teams})
    assert new_records(demo, "admin", before) == expected


def test_every_exported_child_is_audited_once(client: FlaskClient, callers: Callers,
                                              demo: Database,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk export over several batches: one ``export`` record per Patient line, none more."""
    monkeypatch.setattr(exporter_module, "BATCH_SIZE", 7)
    before = counts(demo, "admin")
    _, files = export(client, callers.admin, query="?_type=Patient")
    lines = [p["id"] for p in files["Patient"]]
    assert len(lines) == len(set(lines)) == len(some_children(demo, 1000))
    assert new_records(demo, "admin", before) == Counter(
        {("export", "Patient", p): 1 for p in lines})


def test_directory_xml_reads_are_audited_once(client: FlaskClient, callers: Callers,
                                              demo: Database) -> None:
    """A directory XML read by ContactPoint ID is one ``read`` record; a page of an
    authority's entries one ``read`` record per entry it holds (as each is audited)."""
    with demo.sessions() as session:
        child, cpid = session.execute(select(Child.resource_id, Child.contactpoint_id)
                                      .order_by(Child.id).limit(1)).one()
    before = counts(demo, "admin")
    response = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
    assert response.status_code == 200
    assert new_records(demo, "admin", before) == Counter({("read", "Patient", child): 1})
    before = counts(demo, "admin")
    response = client.get(f"/directory/entries?authority={callers.authority}&_count=1000",
                          headers=callers.admin)
    assert response.status_code == 200
    recorded = new_records(demo, "admin", before)
    assert recorded and set(recorded.values()) == {1}
    assert {action for action, _, _ in recorded} == {"read"}
    count = etree.fromstring(response.data).findtext(f"{{{NS}}}Header/{{{NS}}}Count")
    assert int(count or -1) == len(recorded)


@pytest.mark.parametrize("path", ["/fhir/Patient/{id}", "/directory/entries/{cpid}"])
def test_a_read_that_fails_after_reading_records_no_disclosure(client: FlaskClient,
                                                               callers: Callers,
                                                               demo: Database,
                                                               path: str) -> None:
    """A child loaded, disclosed and audited whose rendering then fails (a stored name XML
    cannot carry, planted as in tests/security/test_render_isolation.py) leaves the failure's
    record only, never the disclosure its read transaction gathered: FHIR and directory XML."""
    with demo.write_transaction() as session:
        child = session.scalar(select(Child).where(Child.shielded.is_(False),
                                                   Child.record_status == "live")
                               .order_by(Child.id).limit(1))
        assert child is not None
        child.names[0].family = "Unrenderable\u0001Canary"
        planted, cpid = child.resource_id, child.contactpoint_id
    before = counts(demo, "admin")
    response = client.get(path.format(id=planted, cpid=cpid), headers=callers.admin)
    assert response.status_code >= 400
    recorded = new_records(demo, "admin", before)
    assert [action for action, _, _ in recorded] == ["read-failed"]
    assert ("read", "Patient", planted) not in recorded


# --- the read transaction itself --------------------------------------------------------

def test_read_transaction_commits_its_records_when_the_block_ends(db: Database) -> None:
    """The records gathered in a read transaction are committed, in one write, when its block
    ends (before a response made in it can leave); a block that raises writes none."""
    with db.read_transaction() as session:
        for index in range(3):
            audit.record(session, "read", resource_type="Patient", resource_id=f"r{index}",
                         child_ref=f"r{index}", caller=SYSTEM)
    assert counts(db, "system") == Counter({("read", "Patient", f"r{i}"): 1 for i in range(3)})
    with pytest.raises(RuntimeError), db.read_transaction() as session:
        audit.record(session, "read", resource_type="Patient", resource_id="gone",
                     child_ref="gone", caller=SYSTEM)
        raise RuntimeError("the rendering failed")
    assert ("read", "Patient", "gone") not in counts(db, "system")


def test_a_read_transaction_cannot_write_behind_the_queue(db: Database) -> None:
    """On SQLite the read runs on connections that refuse writes (a write there would take the
    lock outside the writer queue and fail on a stale snapshot under load); on PostgreSQL it is
    the one transaction that also writes the records."""
    statement = AuditRecord.__table__.insert().values(  # type: ignore[attr-defined]
        recorded=func.now(), client_id="system", organisation_code="-", action="direct",
        outcome="0", override=False)
    if db.is_sqlite:
        with pytest.raises(OperationalError, match="readonly"), \
                db.read_transaction() as session:
            session.execute(statement)
    else:
        with db.read_transaction() as session:
            session.execute(statement)
        assert counts(db, "system") == Counter({("direct", None, None): 1})


def test_a_rolled_back_savepoint_drops_its_records(db: Database) -> None:
    """A batch entry that fails rolls its savepoint back: its records go with it, the
    transaction's others are written."""
    with db.write_transaction() as session:
        audit.record(session, "read", resource_type="Patient", resource_id="kept",
                     caller=SYSTEM)
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.record(session, "read", resource_type="Patient", resource_id="dropped",
                         caller=SYSTEM)
            raise RuntimeError("the entry failed")
        with session.begin_nested():
            audit.record(session, "read", resource_type="Patient", resource_id="nested",
                         caller=SYSTEM)
    assert counts(db, "system") == Counter({("read", "Patient", "kept"): 1,
                                            ("read", "Patient", "nested"): 1})



def test_a_rolled_back_savepoint_drops_its_deliveries(db: Database) -> None:
    """A batch entry that read a child and then failed delivered nothing: its savepoint's
    rollback drops the delivery with the audit record, so the holder is never told to purge
    what it never received; the transaction's other deliveries are written."""
    reader = Caller("batch-reader", "E09000001", [], frozenset())
    with db.write_transaction() as session:
        ledger.record_delivery(session, reader, SimpleNamespace(resource_id="kept"))  # type: ignore[arg-type]
        with pytest.raises(RuntimeError), session.begin_nested():
            ledger.record_delivery(session, reader, SimpleNamespace(resource_id="dropped"))  # type: ignore[arg-type]
            raise RuntimeError("the entry failed")
        with session.begin_nested():
            ledger.record_delivery(session, reader, SimpleNamespace(resource_id="nested"))  # type: ignore[arg-type]
    with db.sessions() as session:
        held = set(session.scalars(select(LedgerEntry.child_ref).where(
            LedgerEntry.client_id == "batch-reader")))
    assert held == {"kept", "nested"}

# --- the served gateway -----------------------------------------------------------------

@dataclass
class Served:
    """A served gateway (gunicorn master and its worker) and a token for it."""

    port: int
    process: subprocess.Popen[bytes]
    token: str = ""

    def worker(self) -> int:
        """Return the pid of the worker (the master's child), waiting for a new one."""
        deadline = time.monotonic() + 60
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        while time.monotonic() < deadline:
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
            time.sleep(0.05)
        raise AssertionError("no worker")


@pytest.fixture
def served(demo: Database, tmp_path: Path, app: Flask) -> Iterator[Served]:
    """``contactpoint-gateway serve`` (one worker process, threaded) on the demo directory,
    with a token of ``la-one`` from its own token endpoint."""
    port = free_port()
    who = register(app, "la-one", scopes="system/*.rs")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [str(BIN / "contactpoint-gateway"), "serve", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1"], cwd=REPO, env={
            **dispatcher_env(demo, tmp_path), "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_answer(port, process)
        form = who.form("system/*.rs", aud=f"http://127.0.0.1:{port}/auth/token")
        status, body = call(port, "POST", "/auth/token", urlencode(form),
                            {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        yield Served(port, process, orjson.loads(body)["access_token"])
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def call(port: int, method: str, path: str, body: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Make one request on a new connection; return the status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Outcomes:
    """What each request (by its X-Request-ID) was answered, or that it got no answer."""

    answered: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def reader(served: Served, children: list[str], rounds: int, outcomes: Outcomes,
           stop: threading.Event | None = None) -> None:
    """Read children by id and search pages, each request with its own X-Request-ID; note
    which children each answer carried."""
    rng = random.Random()
    for _ in range(rounds):
        if stop is not None and stop.is_set():
            return
        request_id = uuid.uuid4().hex
        if rng.random() < 0.7:
            action, path = "read", f"/fhir/Patient/{rng.choice(children)}"
        else:
            action, path = "search", f"/fhir/Patient?_count={rng.randint(2, 12)}"
        headers = {"Authorization": f"Bearer {served.token}", "X-Request-ID": request_id}
        try:
            status, body = call(served.port, "GET", path, headers=headers)
        except (OSError, http.client.HTTPException):
            with outcomes.lock:
                outcomes.unanswered.add(request_id)
            continue
        if status != 200:  # a worker being replaced may answer 503: no disclosure
            with outcomes.lock:
                outcomes.unanswered.add(request_id)
            continue
        resource = orjson.loads(body)
        ids = {e["resource"]["id"] for e in resource.get("entry", [])} \
            if action == "search" else {resource["id"]}
        with outcomes.lock:
            outcomes.answered[request_id] = (action, ids)


def records_by_request(db: Database) -> dict[str, Counter[tuple[str, str | None]]]:
    """Return the ``la-one`` records of each request id: (action, child) counted."""
    found: dict[str, Counter[tuple[str, str | None]]] = {}
    with db.sessions() as session:
        for request_id, action, child in session.execute(
                select(AuditRecord.request_id, AuditRecord.action, AuditRecord.child_ref)
                .where(AuditRecord.client_id == "la-one",
                       AuditRecord.request_id.is_not(None))):
            found.setdefault(request_id, Counter())[(action, child)] += 1
    return found


def assert_every_answer_audited_once(db: Database, outcomes: Outcomes) -> None:
    """Every answered request has exactly one record of each child it carried and no other;
    a request with records but no answer is one in flight when the worker died (its record
    committed, its answer lost: the trail says more than was received, never less)."""
    records = records_by_request(db)
    for request_id, (action, children) in outcomes.answered.items():
        assert records.get(request_id) == Counter({(action, c): 1 for c in children}), \
            f"{action} {request_id}"
    for request_id, counted in records.items():
        assert request_id in outcomes.answered or request_id in outcomes.unanswered
        assert all(n == 1 for n in counted.values())


def test_concurrent_reads_are_each_audited_once(served: Served, demo: Database) -> None:
    """8 threads × 20 reads and searches at once: every answer's children have exactly one
    record each, and every record has its answer."""
    children = some_children(demo, 12)
    outcomes = Outcomes()
    threads = [threading.Thread(target=reader, args=(served, children, 20, outcomes))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes.answered) == 160 and not outcomes.unanswered
    assert_every_answer_audited_once(demo, outcomes)
    assert set(records_by_request(demo)) == set(outcomes.answered)


def test_a_killed_worker_never_leaves_an_answer_unaudited(served: Served,
                                                          demo: Database) -> None:
    """The worker is killed (SIGKILL) at random moments while 6 threads read: every answer
    received has its record committed exactly once; records without an answer belong to
    requests cut off by a kill."""
    children = some_children(demo, 12)
    outcomes, stop = Outcomes(), threading.Event()
    threads = [threading.Thread(target=reader, args=(served, children, 10_000, outcomes, stop))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    rng = random.Random(18)
    try:
        for _ in range(8):
            pid = served.worker()
            time.sleep(rng.uniform(0.3, 1.2))
            os.kill(pid, signal.SIGKILL)
            while served.worker() == pid:
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert outcomes.answered and outcomes.unanswered
    assert_every_answer_audited_once(demo, outcomes)
