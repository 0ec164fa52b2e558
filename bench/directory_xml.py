"""Directory XML speed: writing a batch of entries, and streaming it back in with per-record
XSD validation, next to plain lxml baselines measured in the same run.

    .venv/bin/python -m bench.directory_xml [--children 10000]

Demo children (``adapter.demo``) are written into a temporary SQLite database, loaded with
their parts, then written and read. Figures are records per second of wall time and of CPU
time of this process (the CPU figure is steadier on a shared machine); each reader's CPU
figure is printed as a ``bench.report`` line next to the lxml baseline with XSD validation.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.directory import iter_entries, iter_entry_data, write_entries
from adapter.directory.schema import ENTRY_XSD, load_schema, q
from adapter.models import Child, Involvement, LocalIdentifier
from bench.report import header, row


def timed(run: Callable[[], int]) -> tuple[float, float]:
    """Run ``run`` (returning its record count); return its records/s of CPU and wall time."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / max(cpu, 1e-9), count / wall


def load_children(db: Database) -> list[Child]:
    """Return every child with the parts a directory entry holds, loaded."""
    with db.sessions() as session:
        return list(session.scalars(select(Child).options(
            selectinload(Child.names), selectinload(Child.carers),
            selectinload(Child.local_identifiers).joinedload(LocalIdentifier.organisation),
            selectinload(Child.involvements).joinedload(Involvement.practitioner),
            selectinload(Child.managing_organisation))))


def lxml_baseline(data: bytes, validate: bool) -> int:
    """Stream the batch with plain lxml iterparse (and per-record validation); return count."""
    schema, count = load_schema(ENTRY_XSD), 0
    for _, element in etree.iterparse(io.BytesIO(data), events=("end",),
                                      tag=q("DirectoryEntry"), resolve_entities=False,
                                      no_network=True, load_dtd=False):
        if validate and not schema.validate(element):
            raise AssertionError("the batch the writer wrote is invalid")
        count += 1
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]
    return count


def read_dicts(data: bytes) -> int:
    """Stream the batch to canonical dicts; return the count."""
    return sum(1 for _, _, item in iter_entry_data(io.BytesIO(data)) if isinstance(item, dict))


def read_records(data: bytes) -> int:
    """Stream the batch to transient ORM records; return the count."""
    return sum(1 for _, _, item in iter_entries(io.BytesIO(data)) if item.child is not None)


def main(argv: list[str] | None = None) -> None:
    """Write demo children, then measure the writer and the readers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=10_000)
    # Under ``python -m bench`` the command line names the benchmarks, not these options.
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{Path(folder) / 'bench.db'}")
        db.upgrade()
        load_demo_data(db, children=args.children, authorities=4, seed=7, progress=False)
        children = load_children(db)
        db.dispose()
    gc.collect()
    gc.freeze()  # the loaded children are input, not garbage the writer makes
    stream = io.BytesIO()
    written = timed(lambda: write_entries(children, stream))
    data = stream.getvalue()
    print(f"directory XML, {len(children):,} demo entries ({len(data) / len(children):,.0f} "
          "bytes an entry); records/s of CPU time (wall time in brackets)")
    header()
    parse = timed(lambda: lxml_baseline(data, validate=False))
    validate = timed(lambda: lxml_baseline(data, validate=True))
    figures = [("write_entries (loaded ORM children -> batch XML)", written, None),
               ("lxml iterparse (baseline)", parse, None),
               ("lxml iterparse + per-record XSD (baseline)", validate, None),
               ("iter_entry_data (validate, check -> dicts)",
                timed(lambda: read_dicts(data)), validate[0]),
               ("iter_entries + .child (-> ORM objects)",
                timed(lambda: read_records(data)), validate[0])]
    for label, (cpu, wall), baseline in figures:
        row(f"{label} [{wall:,.0f}/s]", cpu, "/s", baseline)


if __name__ == "__main__":
    main(sys.argv[1:])
