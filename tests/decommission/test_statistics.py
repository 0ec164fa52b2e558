"""Destruction leaves no personal value in the databases' planner statistics: PostgreSQL keeps
each column's most common values and histogram bounds in ``pg_statistic`` after the rows are
gone, and SQLite keeps ``sqlite_stat*`` rows (adapter/decommission/storage.py)."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from flask import Flask
from sqlalchemy import text

from adapter.db import Database
from adapter.decommission.destruction import destroy
from adapter.demo import load_demo_data
from adapter.http import settings_of
from tests.decommission.test_units import _plan


def plant_common_surname(db: Database) -> str:
    """Give every demo child one made-up surname (so that it is the column's most common value)
    and refresh the statistics; return the surname."""
    surname = "zq" + secrets.token_hex(6)
    with db.write_engine.begin() as connection:
        connection.execute(text("UPDATE child_name SET family_norm = :s, family = :s"),
                           {"s": surname})
        connection.exec_driver_sql("ANALYZE")
    return surname


def statistics_text(db: Database) -> str:
    """Return the statistics this database keeps of its own tables, as text."""
    with db.engine.connect() as connection:
        if db.is_sqlite:
            names = [r[0] for r in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")]
            rows = [row for name in names
                    for row in connection.exec_driver_sql(f"SELECT * FROM {name}")]
            return repr(rows)
        rows = connection.execute(text(
            "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats "
            "WHERE schemaname = current_schema()")).all()
    return repr(rows)


def pg_statistic_bytes(db: Database) -> bytes:
    """Return the bytes of ``pg_statistic``'s data file, after a checkpoint wrote it out."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("CHECKPOINT")
        directory, path = connection.exec_driver_sql(
            "SELECT current_setting('data_directory'), pg_relation_filepath('pg_statistic')"
        ).one()
    return (Path(directory) / path).read_bytes()


def test_destruction_forgets_the_planner_statistics(app: Flask, db: Database) -> None:
    """A surname that the statistics held before destruction is in neither the statistics
    nor (PostgreSQL) the catalog's data file afterwards."""
    load_demo_data(db, children=40, authorities=1, seed=7, progress=False)
    surname = plant_common_surname(db)
    if not db.is_sqlite:
        assert surname in statistics_text(db)
        assert surname.encode() in pg_statistic_bytes(db)
    _plan(app, db, "switched-off")
    with app.app_context():
        done = destroy(db, settings_of(app), dt.datetime.now(dt.UTC),
                       override="statistics test")
    assert done.after["child_name"] == 0
    assert surname not in statistics_text(db)
    if not db.is_sqlite:
        assert surname.encode() not in pg_statistic_bytes(db)


def test_destruction_refusal_names_a_few_of_many_holders(app: Flask, db: Database) -> None:
    """With hundreds of open purge Tasks the refusal names five holders and counts the rest."""
    from adapter.decommission.destruction import destroy_blockers
    from adapter.decommission.plan import load_plan
    from adapter.models import PurgeTask

    _plan(app, db, "switched-off")
    now = dt.datetime.now(dt.UTC)
    with db.write_transaction() as session:
        for n in range(300):
            session.add(PurgeTask(resource_id=f"task-{n:03d}", client_id=f"holder-{n:03d}",
                                  organisation_code="E09000001", status="requested",
                                  children=1, version=1, issued=now, last_updated=now,
                                  reminders=0))
    with db.sessions() as session:
        plan = load_plan(session)
        assert plan is not None
        blockers = destroy_blockers(session, plan, now)
    assert "300 holders (holder-000, holder-001, holder-002, holder-003, holder-004 and 295 " \
           "more)" in blockers[-1]
