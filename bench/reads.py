"""What a Patient read costs below HTTP (docs/scale.md "Reads"): loading one entry as light
records with SQLAlchemy Core (``adapter.store.rows``, what reads, search pages, notifications
and Patient exports use) next to loading it as ORM records (``adapter.store.children``,
``load_child``, what writes and history use), and the same with the disclosure policy and the
mapping to a Patient dict; then a page of 100 entries both ways. Then a whole served read in
this process (``--served``): ``GET /fhir/Patient/{id}`` and a search by identifier through
Flask's test client with a real token, and the audit write every read makes alone
(``Database.read_transaction`` gathering one audit record and one delivery, beside the same
transaction gathering nothing), on SQLite and, when the local server answers
(``bench.scratch``), PostgreSQL; ``--profile`` prints where a served read's CPU goes.

    .venv/bin/python -m bench.reads [--children 500] [--served] [--profile]

Demo children are written into a temporary SQLite database; each figure is the median of
five rounds over every child, in microseconds of CPU time of this process per entry (steadier
than wall time on a shared machine), each round in a fresh session (no identity map reuse).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import create_app, systems
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.mapping import fhir
from adapter.models import Child
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child
from adapter.store.children import children_statement, load_child
from adapter.store.rows import entries_rows, entry_rows
from bench.http import Target, prepare
from bench.report import header, row
from bench.scratch import scratch_postgres

BASE = systems.DEFAULT_CANONICAL_BASE
ROUNDS = 5
PAGE = 100
# A caller of no authority without rights: every sensitive involvement and local id is
# withheld, so the redaction runs on every entry that has one.
CALLER = Caller("bench-reads", "E00000000", [], frozenset())


def per_entry(db: Database, ids: list[str], read: Callable[[Session, str], Any]) -> float:
    """Return the median over rounds of the CPU microseconds per entry of ``read``."""
    rounds = []
    for _ in range(ROUNDS):
        with db.sessions() as session:
            start = time.process_time()
            for resource_id in ids:
                read(session, resource_id)
            rounds.append((time.process_time() - start) / len(ids) * 1e6)
    return statistics.median(rounds)


def per_page(db: Database, pages: list[list[int]],
             load: Callable[[Session, list[int]], list[Any]]) -> float:
    """Return the median over rounds of the CPU milliseconds per page of ``load`` + map."""
    rounds = []
    for _ in range(ROUNDS):
        with db.sessions() as session:
            start = time.process_time()
            for page in pages:
                for child in load(session, page):
                    mapped(child)
            rounds.append((time.process_time() - start) / len(pages) * 1e3)
    return statistics.median(rounds)


def mapped(child: Any) -> dict[str, Any]:
    """Return the Patient ``CALLER`` may see of ``child``."""
    disclosure = disclose_child(child, CALLER)
    return fhir.child_to_patient(disclosure.child, redacted=disclosure.redacted, base=BASE)


def orm_page(session: Session, ids: list[int]) -> list[Any]:
    """Return a page of entries as ORM records (the statement search pages used)."""
    return list(session.scalars(children_statement(), {"ids": ids}).unique())


def served(children: int, profile: bool) -> None:
    """Print the figures of a served read in process on SQLite and PostgreSQL."""
    with tempfile.TemporaryDirectory() as folder:
        served_on("SQLite", Path(folder), f"sqlite:///{Path(folder) / 'gateway.db'}",
                  children, profile)
    with scratch_postgres("bench_reads") as url, tempfile.TemporaryDirectory() as folder:
        if url is None:
            print("PostgreSQL: not reachable, not measured")
            return
        served_on("PostgreSQL", Path(folder), url, children, profile)


def served_on(name: str, instance: Path, url: str, children: int, profile: bool) -> None:
    """Print the CPU per served read, per search and per audit write on the database ``url``."""
    target = prepare(instance, url, children)
    saved = dict(os.environ)
    os.environ.update(target.env)
    try:
        app = create_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    client = app.test_client()
    base = f"http://127.0.0.1:{target.env['GATEWAY_PORT']}"
    auth = {"Authorization": f"Bearer {target.token}", "Accept": "application/fhir+json"}

    def get(path: str) -> None:
        response = client.get(path, headers=auth, base_url=base)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")

    reads = [f"/fhir/Patient/{rid}" for rid in target.patient_ids]
    searches = [f"/fhir/Patient?{target.query}"] * len(reads)
    for path in reads + searches:  # warm every cache (token, client, plans, statements)
        get(path)
    read = per_call(reads, get)
    search = per_call(searches, get)
    db: Database = app.extensions["db"]
    gathered, empty = audit_write(db, target)
    header(f"{name}, {children} demo children, in process (Flask test client), CPU time "
           f"per call (median of {ROUNDS} rounds of {len(reads)})")
    row("GET /fhir/Patient/{id}", read, "µs")
    row("GET /fhir/Patient?identifier=…", search, "µs")
    row("read transaction gathering one audit record + delivery", gathered, "µs")
    row("read transaction gathering nothing", empty, "µs")
    row("the audit write alone (the difference)", gathered - empty, "µs")
    if profile:
        profiled(reads * 4, get)
    db.close()


def per_call(items: list[Any], call: Callable[[Any], Any]) -> float:
    """Return the median over rounds of the CPU microseconds per ``call`` of each item."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.process_time()
        for item in items:
            call(item)
        rounds.append((time.process_time() - start) / len(items) * 1e6)
    return statistics.median(rounds)


def audit_write(db: Database, target: Target) -> tuple[float, float]:
    """Return the CPU µs of a read transaction that gathers one audit record and one delivery
    (what a read by id writes) and of one that gathers nothing."""
    # ``record_delivery`` reads only the child's id.
    entries = [SimpleNamespace(resource_id=rid) for rid in target.patient_ids]
    caller = Caller("bench-reads", "E00000000", [], frozenset())

    def gather(entry: Any) -> None:
        with db.read_transaction() as session:
            audit.record(session, "read", resource_type="Patient",
                         resource_id=entry.resource_id, child_ref=entry.resource_id,
                         caller=caller)
            ledger.record_delivery(session, caller, entry)

    def nothing(_entry: Any) -> None:
        with db.read_transaction():
            pass

    for entry in entries:
        gather(entry)
    return per_call(entries, gather), per_call(entries, nothing)


# The steps of a served read, each named by the function that does it (module file, name):
# its cumulative CPU under cProfile, per read.
STEPS = (
    ("the access layer (every before_request hook)", "flask/app.py", "preprocess_request"),
    ("loading the entry (one SELECT, light records)", "store/children.py", "load_entry"),
    ("disclosure policy", "policy/disclosure.py", "disclose_child"),
    ("mapping to a Patient", "mapping/fhir.py", "child_to_patient"),
    ("renderable check", "adapter/wellformed.py", "require_renderable"),
    ("negotiation and JSON encoding", "adapter/http.py", "fhir_response"),
    ("audit record and delivery: their statements", "security/audit.py", "write_gathered"),
    ("SQLite: their transaction (queue, BEGIN IMMEDIATE, COMMIT too)", "adapter/db.py",
     "write_gathered"),
    ("PostgreSQL: the commit (the statements, COMMIT)", "orm/session.py", "commit"),
    ("every after_request hook", "flask/app.py", "process_response"),
    ("the whole app (Flask's wsgi_app)", "flask/app.py", "wsgi_app"),
    ("the whole request (with the test client)", "flask/testing.py", "open"),
)


def profiled(items: list[str], call: Callable[[str], Any]) -> None:
    """Print where a served read's CPU goes: each step of ``STEPS`` (cumulative under
    cProfile, which about doubles every figure, so read them as shares), then the top
    functions."""
    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(lambda: [call(item) for item in items])
    stats = pstats.Stats(profiler)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    print(f"cProfile of {len(items)} reads: µs per read under the profiler")
    for label, where, name in STEPS:
        spent = sum(entry[3] for (path, _line, function), entry in table.items()
                    if function == name and path.endswith(where))
        print(f"  {label:<56} {spent / len(items) * 1e6:9,.0f} µs")
    stats.sort_stats("cumulative").print_stats(30)


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(prog="bench.reads")
    parser.add_argument("--children", type=int, default=500)
    parser.add_argument("--served", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv or [])
    if args.served:
        served(args.children, args.profile)
        return
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{Path(folder) / 'bench.db'}")
        db.upgrade()
        load_demo_data(db, children=args.children, authorities=4, seed=7, progress=False)
        with db.sessions() as session:
            ids = list(session.scalars(select(Child.resource_id).where(
                Child.record_status == "live").order_by(Child.id)))
            keys = list(session.scalars(select(Child.id).where(
                Child.record_status == "live").order_by(Child.id)))
        pages = [keys[i:i + PAGE] for i in range(0, len(keys) - PAGE + 1, PAGE)]
        orm = per_entry(db, ids, lambda s, rid: load_child(s, rid, CALLER))
        light = per_entry(db, ids, lambda s, rid: entry_rows(s, rid, CALLER))
        orm_read = per_entry(db, ids, lambda s, rid: mapped(load_child(s, rid, CALLER)))
        light_read = per_entry(db, ids, lambda s, rid: mapped(entry_rows(s, rid, CALLER)))
        orm_pages = per_page(db, pages, orm_page)
        light_pages = per_page(db, pages, entries_rows)
        db.close()
    header(f"SQLite, {len(ids)} live demo children, CPU time per entry (median of {ROUNDS})")
    row("load one entry, ORM records (load_child)", orm, "µs")
    row("load one entry, light records (entry_rows)", light, "µs", baseline=orm)
    row("load + disclose + map, ORM records", orm_read, "µs")
    row("load + disclose + map, light records", light_read, "µs", baseline=orm_read)
    # No goal of its own: the goals a read is judged by are the served ones (bench/http.py).
    row("load + disclose + map: ORM ÷ light (times faster)", orm_read / light_read, "×")
    row(f"page of {PAGE}: load + disclose + map, ORM records", orm_pages, "ms")
    row(f"page of {PAGE}: load + disclose + map, light records", light_pages, "ms",
        baseline=orm_pages)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
