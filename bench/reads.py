"""What a Patient read costs below HTTP (docs/scale.md "Reads"): loading one entry as light
records with SQLAlchemy Core (``adapter.store.rows``, what reads, search pages, notifications
and Patient exports use) next to loading it as ORM records (``adapter.store.children``,
``load_child``, what writes and history use), and the same with the disclosure policy and the
mapping to a Patient dict; then a page of 100 entries both ways.

    .venv/bin/python -m bench.reads [--children 500]

Demo children are written into a temporary SQLite database; each figure is the median of
five rounds over every child, in microseconds of CPU time of this process per entry (steadier
than wall time on a shared machine), each round in a fresh session (no identity map reuse).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import systems
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.mapping import fhir
from adapter.models import Child
from adapter.security.caller import Caller
from adapter.security.policy import disclose_child
from adapter.store.children import children_statement, load_child
from adapter.store.rows import entries_rows, entry_rows
from bench.report import header, row

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


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(prog="bench.reads")
    parser.add_argument("--children", type=int, default=500)
    args = parser.parse_args(argv or [])
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
