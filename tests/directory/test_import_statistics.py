"""A bulk load leaves the query planner statistics of what it wrote: ``demo-data`` always, an
import when it wrote ``LARGE_IMPORT`` records or more (adapter/store/statistics.py)."""

from __future__ import annotations

import io

import pytest

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.directory.reader import iter_entry_data
from adapter.imports.directory import import_entries
from adapter.store import statistics
from tests.directory.batches import Batch
from tests.directory.test_import import team

Files = tuple[Batch, Batch, str]


def child_statistics(db: Database) -> int:
    """Return how many statistics the planner holds on the ``child`` table: SQLite's
    ``sqlite_stat1`` rows, PostgreSQL's ``pg_stats`` columns of this test's schema."""
    query = ("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'child' AND stat NOT LIKE '0%'"
             if db.is_sqlite else
             "SELECT count(*) FROM pg_stats WHERE tablename = 'child' "
             "AND schemaname = current_schema()")
    with db.engine.connect() as connection:
        return int(connection.exec_driver_sql(query).scalar_one())


def forget_statistics(db: Database) -> None:
    """Drop SQLite's statistics (the migrations' ANALYZE of the empty tables may leave rows)."""
    if db.is_sqlite:
        with db.write_engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.exec_driver_sql("DELETE FROM sqlite_stat1")


def test_demo_data_leaves_statistics(db: Database) -> None:
    """demo-data runs ANALYZE on the tables it wrote."""
    forget_statistics(db)
    load_demo_data(db, children=30, authorities=1, seed=3, progress=False)
    assert child_statistics(db) > 0
    if not db.is_sqlite:
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE oid = 'child'::regclass").scalar_one() == 30


def test_a_large_import_leaves_statistics(db: Database, demo_files: Files,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An import that wrote LARGE_IMPORT records refreshes the statistics at its end; on SQLite
    (no background ANALYZE) a smaller one leaves them as they were."""
    entries, _references, gss = demo_files
    monkeypatch.setattr(statistics, "LARGE_IMPORT", 20)
    forget_statistics(db)
    small = Batch(entries.head, entries.records[:10], entries.tail).document()
    outcomes = list(import_entries(db, iter_entry_data(io.BytesIO(small)), team(gss)))
    assert [o.status for o in outcomes] == ["created"] * 10
    if db.is_sqlite:
        assert child_statistics(db) == 0
    large = Batch(entries.head, entries.records[10:40], entries.tail).document()
    outcomes = list(import_entries(db, iter_entry_data(io.BytesIO(large)), team(gss), batch_size=7))
    assert [o.status for o in outcomes] == ["created"] * 30
    assert child_statistics(db) > 0
