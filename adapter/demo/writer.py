"""Streams demo data into the database: organisations found or created, then children in
batches of pre-assigned keys, inserted with SQLAlchemy Core ``executemany`` (PostgreSQL: COPY),
never through the ORM's unit of work."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from random import Random
from typing import Any, Final, cast

import psycopg
from psycopg import sql
from psycopg.types.json import Json
from sqlalchemy import JSON, Connection, Table, func, select
from tqdm import tqdm

from adapter.db import Database
from adapter.demo.children import TABLES, Batch, ChildFactory, Ids
from adapter.demo.names import name_lists
from adapter.demo.world import (
    MAX_AUTHORITIES,
    Authority,
    AuthorityPlan,
    plan_authority,
    resolve_authority,
)
from adapter.models import Base
from adapter.store.statistics import refresh_statistics

log = logging.getLogger(__name__)

BATCH_SIZE: Final = 2000
LOOKUP_CHUNK: Final = 500
ALL_TABLES: Final = ("organisation", "practitioner", *TABLES)


def _table(name: str) -> Table:
    """Return the table ``name`` of the canonical model."""
    return Base.metadata.tables[name]


def check_sizes(children: int, authorities: int) -> None:
    """Check the requested amounts.

    :raises ValueError: a negative number of children, or authorities outside 1..150.
    """
    if children < 0:
        raise ValueError("children: must not be negative")
    if not 1 <= authorities <= MAX_AUTHORITIES:
        raise ValueError(f"authorities: from 1 to {MAX_AUTHORITIES}")


def next_ids(connection: Connection) -> Ids:
    """Return the first free primary key of every table (after the current maximum)."""
    return Ids({name: (connection.execute(select(func.max(_table(name).c.id))).scalar() or 0) + 1
                for name in ALL_TABLES})


def _chunks(values: list[str]) -> Iterator[list[str]]:
    """Yield ``values`` in chunks small enough for an ``IN`` list."""
    for start in range(0, len(values), LOOKUP_CHUNK):
        yield values[start:start + LOOKUP_CHUNK]


def existing_ids(connection: Connection, name: str, resource_ids: list[str]) -> dict[str, int]:
    """Return the ids of the rows of table ``name`` that have these resource ids."""
    table = _table(name)
    found: dict[str, int] = {}
    for chunk in _chunks(resource_ids):
        rows = connection.execute(select(table.c.resource_id, table.c.id)
                                  .where(table.c.resource_id.in_(chunk)))
        found.update({resource_id: row_id for resource_id, row_id in rows})
    return found


def _insert_missing(connection: Connection, name: str, rows: Iterable[dict[str, Any]],
                    ids: Ids) -> dict[str, int]:
    """Insert the rows whose resource id is not in the table yet; return every row's id."""
    pending = list(rows)
    known = existing_ids(connection, name, [r["resource_id"] for r in pending])
    fresh = []
    for row in pending:
        if row["resource_id"] not in known:
            known[row["resource_id"]] = ids.take(name)
            fresh.append({k: v for k, v in row.items() if not k.startswith("_")}
                         | {"id": known[row["resource_id"]]})
    if fresh:
        connection.execute(_table(name).insert(), fresh)
    log.info("demo data: %d %s rows reused, %d written", len(pending) - len(fresh), name,
             len(fresh))
    return known


def write_world(connection: Connection, plans: list[AuthorityPlan], ids: Ids) -> list[Authority]:
    """Find or create the authorities' organisations and practitioners; return them with ids."""
    org_ids = _insert_missing(connection, "organisation",
                              (o.row for p in plans for o in p.organisations), ids)
    staff = ({**s, "organisation_id": org_ids[o.row["resource_id"]]}
             for p in plans for o in p.organisations for s in o.staff)
    staff_ids = _insert_missing(connection, "practitioner", staff, ids)
    return [resolve_authority(plan, org_ids, staff_ids) for plan in plans]


def existing_upn_serials(connection: Connection) -> dict[str, int]:
    """Return the highest permanent UPN serial of every cohort already in the database.

    A cohort is UPN characters 2-10 (authority, establishment, year); a second run continues
    its serials, so that no two children share a UPN.
    """
    upn = _table("child").c.upn
    cohort = func.substr(upn, 2, 9)
    query = (select(cohort, func.max(func.substr(upn, 11, 3)))
             .where(func.substr(upn, 13, 1).in_(list("0123456789"))).group_by(cohort))
    return {key: int(serial) for key, serial in connection.execute(query)}


def copy_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows into a PostgreSQL table with ``COPY FROM STDIN`` (psycopg 3).

    COPY streams the rows in one command: several times faster than an executemany, which
    psycopg sends as one INSERT per row.
    """
    columns = list(rows[0])
    is_json = [isinstance(table.c[column].type, JSON) for column in columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns)))
    driver = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([Json(row[c]) if j else row[c]
                            for c, j in zip(columns, is_json, strict=True)])


def insert_batch(connection: Connection, batch: Batch) -> None:
    """Insert a batch's rows, parents before children: COPY on PostgreSQL with psycopg, one
    executemany per table elsewhere."""
    copy = connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg"
    for name in TABLES:
        if batch.rows[name]:
            if copy:
                copy_rows(connection, _table(name), batch.rows[name])
            else:
                connection.execute(_table(name).insert(), batch.rows[name])


def reset_sequences(connection: Connection) -> None:
    """Move PostgreSQL's id sequences past the pre-assigned keys (SQLite needs nothing)."""
    if connection.dialect.name != "postgresql":
        return
    for name in ALL_TABLES:
        table = _table(name)
        connection.execute(select(func.setval(func.pg_get_serial_sequence(name, "id"),
                                              select(func.max(table.c.id)).scalar_subquery())))


def load_demo_data(db: Database, *, children: int, authorities: int, seed: int,
                   progress: bool) -> int:
    """Write ``children`` fictional children over ``authorities`` authorities; return the count.

    One writing transaction (on SQLite it takes the write lock at once, so that the keys read
    at its start stay free): the database holds all of the demo data or none of it.

    :raises ValueError: the amounts are out of range (see ``check_sizes``).
    """
    check_sizes(children, authorities)
    plans = [plan_authority(index) for index in range(authorities)]
    with db.write_engine.begin() as connection:
        ids = next_ids(connection)
        world = write_world(connection, plans, ids)
        # Synthetic data, not secrets: a seeded generator is what makes it reproducible.
        factory = ChildFactory(Random(seed), ids, world, name_lists())  # noqa: S311
        factory.upn_serials.update(existing_upn_serials(connection))
        with tqdm(total=children, unit=" children", file=sys.stderr,
                  disable=not progress) as bar:
            for size in _batch_sizes(children):
                batch = Batch()
                for _ in range(size):
                    factory.add(batch)
                insert_batch(connection, batch)
                bar.update(size)
        reset_sequences(connection)
    analyze(db)
    log.info("demo data: %d children written over %d authorities", children, authorities)
    return children


def analyze(db: Database) -> None:
    """Refresh the planner's statistics of the tables written (``refresh_statistics``)."""
    refresh_statistics(db, ALL_TABLES)


def _batch_sizes(total: int) -> Iterator[int]:
    """Yield the sizes of the batches that make up ``total``."""
    for start in range(0, total, BATCH_SIZE):
        yield min(BATCH_SIZE, total - start)


def count_children(db: Database) -> int:
    """Return how many children the database holds."""
    with db.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(_table("child")))
                   .scalar_one())
