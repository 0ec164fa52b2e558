"""Bulk import of one directory XML file (README "Benchmarks"): 100,000 entries with 1% broken,
imported into SQLite and PostgreSQL by the import command's path (the file read in pieces by 1
and by 2 worker processes, ``adapter.directory.split``; the records applied in this process),
next to baselines measured in the same run: plain lxml iterparse with per-record XSD
validation of the same file in one process, and plain SQLAlchemy Core inserts of the same rows
(pre-assigned ids, no parsing, no look-ups); then the re-import of the same file, which
changes nothing.

    .venv/bin/python -m bench.bulk_import [--records 100000] [--no-postgres]

``BENCH_IMPORT_RECORDS`` sets the default of ``--records`` (also under ``make bench``), e.g.
10000 for a quick run.

The file is made from demo data (``adapter.demo``) written to a scratch SQLite database and
written out by the directory writer. PostgreSQL is the local server
(``BENCH_POSTGRES_ADMIN``, default ``host=127.0.0.1 user=postgres dbname=postgres``): scratch
databases are created and dropped (``bench.scratch``). Figures are records per second of wall
time and of this process's CPU time (steadier on a shared machine; it leaves out the PostgreSQL
server's work; with workers, nor theirs). A summary follows in ``bench.report`` lines: each
import next to the lxml baseline with the goal set for it (80% of it), and the import with 2
workers next to the import with 1 (goal 1.6×); wall time: the import is judged end to end.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from lxml import etree
from sqlalchemy import insert, select

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.directory.reader import iter_entry_data
from adapter.directory.schema import ENTRY_XSD, load_schema, q
from adapter.directory.split import read_batch_file
from adapter.directory.writer import write_entries_data
from adapter.imports.directory import import_entries
from adapter.imports.rows import (
    NewEntries,
    Organisations,
    Practitioners,
    organisations_of,
    practitioners_of,
)
from adapter.imports.stored import load_stored
from adapter.models import Child
from adapter.models.base import Base
from bench.report import Goal, header, row
from bench.scratch import scratch_postgres

PAGE: Final = 2000
BREAK_EVERY: Final = 100
ENTRY_START: Final = re.compile(rb"<DirectoryEntry[ >]")
# The goals set for the import: 80% of the rate of parsing and validating alone (in one
# process), and 1.6 times that rate with 2 workers (their rate over the rate with 1).
IMPORT_GOAL: Final = Goal.ratio_at_least(0.8)
WORKERS_GOAL: Final = Goal.ratio_at_least(1.6)
WORKERS: Final = (1, 2)
BASELINE: Final = "baseline: lxml iterparse + per-record XSD validation"
# label -> (wall, CPU) records/s of every timed step of this run, for the summary.
MEASURED: dict[str, tuple[float, float]] = {}


def rss_mb() -> float:
    """Return this process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, records: int, run: Callable[[], Any]) -> Any:
    """Run ``run``, print the rate of ``records`` records, and return its result."""
    start, cpu = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    MEASURED[label] = (records / seconds, records / max(cpu, 1e-9))
    print(f"  {label:<62} {records / seconds:>8,.0f}/s wall {records / cpu:>8,.0f}/s CPU "
          f"({seconds:,.1f} s)", flush=True)
    return result


# --- the file -------------------------------------------------------------------------------

def write_file(folder: Path, records: int) -> Path:
    """Write ``records`` demo entries (over 4 authorities) to one batch file, 1% broken."""
    db = Database(f"sqlite:///{folder / 'source.db'}")
    db.upgrade()
    timed("demo data into a scratch SQLite database", records,
          lambda: load_demo_data(db, children=records, authorities=4, seed=7, progress=False))
    path = folder / "entries.xml"
    with open(path, "wb") as stream:
        timed("writing the batch file (stored entries -> directory writer)", records,
              lambda: write_entries_data(_dumps(db), stream))
    db.dispose()
    return _break(path, folder / "entries-broken.xml")


def _dumps(db: Database) -> Iterator[dict[str, Any]]:
    """Yield every stored child's canonical dict (read with Core, a page at a time)."""
    after = 0
    while True:
        with db.sessions() as session:
            page = list(session.execute(select(Child.id, Child.contactpoint_id).where(
                Child.id > after).order_by(Child.id).limit(PAGE)))
            stored = load_stored(session, [cpid for _, cpid in page])
        if not page:
            return
        yield from (stored[cpid].data for _, cpid in page)
        after = page[-1][0]


def _break(source: Path, target: Path) -> Path:
    """Copy the file with every 100th record's birth date made impossible."""
    number = 0
    with open(source, "rb") as lines, open(target, "wb") as out:
        for line in lines:
            if ENTRY_START.search(line):
                number += 1
            if number % BREAK_EVERY == 0 and b"<BirthDate>" in line:
                line = re.sub(rb"\d{4}-\d\d-\d\d", b"2015-02-30", line)
            out.write(line)
    source.unlink()
    return target


def record_lines(path: Path) -> list[int]:
    """Return the line each record of the file starts on."""
    with open(path, "rb") as lines:
        return [n for n, line in enumerate(lines, start=1) if ENTRY_START.search(line)]


# --- baselines ------------------------------------------------------------------------------

def parse_and_validate(path: Path) -> int:
    """Stream the file with plain lxml, validating each record against the XSD."""
    schema, count = load_schema(ENTRY_XSD), 0
    for _, element in etree.iterparse(str(path), events=("end",), tag=q("DirectoryEntry"),
                                      resolve_entities=False, no_network=True, load_dtd=False):
        schema.validate(element)
        count += 1
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]
    return count


def prepare_rows(db: Database, path: Path, spool: Path) -> int:
    """Parse the file's good records into table rows with pre-assigned ids (organisations
    and practitioners stored first), pickled page by page to ``spool``; return the count."""
    done, child_id = 0, 0
    with open(spool, "wb") as out, db.write_transaction() as session:
        page: list[dict[str, Any]] = []
        for _, _, data in iter_entry_data(str(path)):
            if isinstance(data, dict):
                page.append(data)
            if len(page) == PAGE:
                child_id = _pickle_page(session, page, child_id, out)
                done, page = done + len(page), []
        if page:
            _pickle_page(session, page, child_id, out)
            done += len(page)
    return done


def _pickle_page(session: Any, page: list[dict[str, Any]], child_id: int, out: Any) -> int:
    """Resolve a page's organisations and practitioners; pickle its rows; return the last id."""
    organisations = Organisations(session)
    organisations.resolve(org for data in page for org in organisations_of(data))
    practitioners = Practitioners(session, organisations)
    practitioners.resolve(p for data in page for p in practitioners_of(data))
    rows = NewEntries(organisations, practitioners)
    children = []
    for data in page:
        child_id += 1
        children.append({**rows.child_row(data), "id": child_id})
        rows.add_parts(data, child_id)
    pickle.dump({"child": children, **rows.rows}, out)
    return child_id


def core_insert(db: Database, spool: Path) -> None:
    """Insert the pickled rows with plain Core executemany, one transaction per page."""
    with open(spool, "rb") as stream:
        while True:
            try:
                tables = pickle.load(stream)  # noqa: S301 - our own file of this run
            except EOFError:
                return
            with db.write_engine.begin() as connection:
                for name in ("child", "child_name", "carer", "involvement", "local_identifier"):
                    if tables[name]:
                        connection.execute(insert(Base.metadata.tables[name]), tables[name])


# --- the import -----------------------------------------------------------------------------

def import_label(label: str, workers: int) -> str:
    """Return the name of the import figure of a database and a number of workers."""
    return f"{label}: import, {workers} worker{'s' if workers > 1 else ''} (read, apply)"


def run_import(db: Database, path: Path, workers: int) -> tuple[Counter[str], list[Any]]:
    """Import the file as the system caller, as the import command does (the file read in
    pieces by ``workers`` processes); return the counts and the rejected outcomes."""
    counts: Counter[str] = Counter()
    rejected = []
    records = read_batch_file(path, "entries", workers)
    for outcome in import_entries(db, records, cli_caller_offline()):
        counts[outcome.status] += 1
        if outcome.status == "rejected":
            rejected.append(outcome)
    return counts, rejected


def cli_caller_offline() -> Any:
    """Return the CLI's system caller (every right), without an application context."""
    from adapter.models.security import CLIENT_RIGHTS
    from adapter.security.caller import Caller
    from adapter.security.scopes import parse_scopes

    return Caller("bench", "-", parse_scopes("system/*.cruds"), frozenset(CLIENT_RIGHTS), None,
                  "bench")


def measure(label: str, url: str, path: Path, lines: list[int], workers: int,
            **options: Any) -> None:
    """Import and re-import the file into an empty database and print the figures."""
    records = len(lines)
    db = Database(url, **options)
    db.upgrade()
    before = rss_mb()
    counts, rejected = timed(import_label(label, workers), records,
                             lambda: run_import(db, path, workers))
    lined = all(o.line == lines[o.record_number - 1] for o in rejected)
    print(f"    {dict(counts)}; every rejected record with its line: {lined}; "
          f"peak RSS {before:,.0f} -> {rss_mb():,.0f} MB", flush=True)
    again, _ = timed(f"{label}: re-import, {workers} worker(s) (0 changes)", records,
                     lambda: run_import(db, path, workers))
    print(f"    {dict(again)}", flush=True)
    db.dispose()


def core_baseline(label: str, url: str, prepared: Database, spool: Path) -> None:
    """Print the rate of plain Core inserts of the pickled rows into an empty database (its
    organisations and practitioners copied first, with their ids)."""
    db = Database(url)
    db.upgrade()
    with prepared.engine.connect() as source, db.write_engine.begin() as target:
        for name in ("organisation", "practitioner"):
            table = Base.metadata.tables[name]
            rows = [dict(row) for row in source.execute(select(table)).mappings()]
            target.execute(insert(table), rows)
    count = sum(len(page["child"]) for page in _pages(spool))
    timed(f"{label}: baseline: plain Core insert of the same rows", count,
          lambda: core_insert(db, spool))
    db.dispose()


def _pages(spool: Path) -> Iterator[dict[str, Any]]:
    """Yield the pickled pages."""
    with open(spool, "rb") as stream:
        while True:
            try:
                yield pickle.load(stream)  # noqa: S301 - our own file of this run
            except EOFError:
                return


def main(argv: list[str] | None = None) -> None:
    """Make the file, then measure the baselines and the import on SQLite and PostgreSQL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int,
                        default=int(os.environ.get("BENCH_IMPORT_RECORDS", "100000")))
    parser.add_argument("--no-postgres", action="store_true")
    # Under ``python -m bench`` the command line names the benchmarks, not these options.
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="bench-import-") as name:
        folder = Path(name)
        path = write_file(folder, args.records)
        lines = record_lines(path)
        print(f"directory XML import, {len(lines):,} entries, 1 in {BREAK_EVERY} broken "
              f"({path.stat().st_size / 1e6:,.0f} MB)")
        timed(BASELINE, len(lines), lambda: parse_and_validate(path))
        prepared = Database(f"sqlite:///{folder / 'rows.db'}")
        prepared.upgrade()
        spool = folder / "rows.pickle"
        timed("reader (iter_entry_data: validate, check) + building rows", len(lines),
              lambda: prepare_rows(prepared, path, spool))
        for workers in WORKERS:
            measure("SQLite", f"sqlite:///{folder / f'import-{workers}.db'}", path, lines,
                    workers)
        core_baseline("SQLite", f"sqlite:///{folder / 'core.db'}", prepared, spool)
        if not args.no_postgres:
            for workers in WORKERS:
                with scratch_postgres(f"bench_gateway_import_{workers}") as url:
                    if url is None:
                        print("  PostgreSQL: not reachable, skipped")
                    else:
                        measure("PostgreSQL", url, path, lines, workers)
            with scratch_postgres("bench_gateway_core") as url:
                if url is not None:
                    core_baseline("PostgreSQL", url, prepared, spool)
        prepared.dispose()
    summary()


def summary() -> None:
    """Print each measured step next to the lxml baseline (wall, then CPU records/s), and each
    import with 2 workers next to the import with 1."""
    wall, cpu = MEASURED[BASELINE]
    header("summary: records/s of wall time, then of this process's CPU time")
    row(f"{BASELINE} (wall)", wall, "/s")
    imports = {import_label(label, workers) for label in ("SQLite", "PostgreSQL")
               for workers in WORKERS}
    for label, (step_wall, step_cpu) in MEASURED.items():
        if label == BASELINE or label.startswith(("demo data", "writing")):
            continue
        row(f"{label} (wall)", step_wall, "/s", wall, IMPORT_GOAL if label in imports else None)
        row(f"{label} (CPU)", step_cpu, "/s", cpu)
    for label in ("SQLite", "PostgreSQL"):
        one, two = (MEASURED.get(import_label(label, workers)) for workers in WORKERS)
        if one is not None and two is not None:
            row(f"{label}: import, 2 workers over 1 worker (wall)", two[0], "/s", one[0],
                WORKERS_GOAL)


if __name__ == "__main__":
    main(sys.argv[1:])
