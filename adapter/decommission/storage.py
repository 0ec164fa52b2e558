"""Scrubbing deleted data out of the database files after destruction.

SQLite: ``secure_delete`` (set before the deletes) overwrites deleted content; ``VACUUM``
rebuilds the file so that no free page keeps an old row; ``wal_checkpoint(TRUNCATE)`` copies the
write-ahead log into the file and truncates the log to zero bytes (sqlite.org wal.html,
pragma.html#pragma_wal_checkpoint). PostgreSQL: ``VACUUM FULL`` rewrites each table and its
TOAST table into new files, so no dead row version (an old tuple of a deleted or updated row)
survives (postgresql.org docs, "VACUUM").

Both databases also keep values of their own in the planner's statistics: PostgreSQL's
``pg_statistic`` holds each column's most common values and histogram bounds (surnames,
postcodes, birth dates), and neither deleting the rows nor ``ANALYZE`` of an empty table
replaces them (postgresql.org docs, "pg_statistic"; ANALYZE updates statistics only from rows it
samples). Changing a column's type removes its statistics (``ALTER TABLE ... ALTER COLUMN ...
TYPE``, here to the type it already has: an empty table makes that cheap), and ``VACUUM FULL
pg_statistic`` then rewrites the catalog without the dead rows. SQLite's ``ANALYZE`` of the
emptied tables replaces their ``sqlite_stat*`` rows (``sqlite_stat4``, where compiled in, holds
sampled index keys), and ``secure_delete`` zeroes the old ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import Connection
from sqlalchemy.exc import InternalError

from adapter.db import Database
from adapter.errors import Unavailable

log = logging.getLogger(__name__)

SQLITE_STEPS = "SQLite: secure_delete=ON, ANALYZE, VACUUM, wal_checkpoint(TRUNCATE)"
POSTGRES_STEPS = ("PostgreSQL: column statistics removed and VACUUM FULL on every table "
                  "touched, VACUUM FULL pg_statistic")


def checkpoint_sqlite(db: Database) -> None:
    """Empty the SQLite write-ahead log into the database file and truncate it.

    :raises Unavailable: another connection kept the checkpoint from completing.
    """
    db.dispose()
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        busy, _log, _done = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        cursor.close()
    finally:
        raw.close()
    db.dispose()
    if busy:
        raise Unavailable("Another connection kept the WAL checkpoint from completing: stop "
                          "the gateway's other processes and run the destruction again.")


def scrub_sqlite(db: Database) -> str:
    """Rebuild the SQLite file and truncate its WAL; return what was done."""
    db.dispose()  # pooled connections would hold the WAL open
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("ANALYZE")
        cursor.execute("VACUUM")
        cursor.close()
    finally:
        raw.close()
    checkpoint_sqlite(db)
    return SQLITE_STEPS


def _forget_statistics(connection: Connection, table: str) -> None:
    """Remove the planner's statistics of every column of ``table`` that has any, by changing
    each such column to the type it already has."""
    columns = connection.exec_driver_sql(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped "
        "AND EXISTS (SELECT 1 FROM pg_statistic s WHERE s.starelid = a.attrelid "
        "AND s.staattnum = a.attnum)", {"table": f'"{table}"'}).all()
    if columns:
        changes = ", ".join(f'ALTER COLUMN "{name}" TYPE {kind}' for name, kind in columns)
        connection.exec_driver_sql(f'ALTER TABLE "{table}" {changes}')


def scrub_postgres(db: Database, tables: Iterable[str]) -> str:
    """Remove the column statistics of ``tables``, rewrite each with VACUUM FULL, then rewrite
    ``pg_statistic``; return what was done.

    :raises Unavailable: the database's role may not rewrite ``pg_statistic`` (PostgreSQL skips
        it with a warning: only its owner, a superuser or the database's owner may).
    """
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in tables:
            # The names are the model's own table names, never input.
            _forget_statistics(connection, table)
            connection.exec_driver_sql(f'VACUUM FULL "{table}"')
        if not _may_vacuum_catalog(connection):
            raise Unavailable("The database role may not rewrite pg_statistic, which still "
                              "holds old column statistics: run the destruction again as the "
                              "database's owner or a superuser.")
        _rewrite_statistics_catalog(connection)
    return POSTGRES_STEPS


def _rewrite_statistics_catalog(connection: Connection, attempts: int = 3) -> None:
    """``VACUUM FULL pg_statistic``, after a plain VACUUM of it and its TOAST table together.

    VACUUM FULL copies rows that are dead but still visible to an older snapshot, and reads
    their TOAST values to do so; autovacuum may have removed those TOAST chunks on its own
    ("missing chunk number 0 for toast value ... in pg_toast_2619"). The plain VACUUM removes
    such rows with their chunks under one horizon; the rewrite is tried again if it still meets
    one.

    :raises sqlalchemy.exc.InternalError: the rewrite failed ``attempts`` times.
    """
    for attempt in range(1, attempts + 1):
        connection.exec_driver_sql("VACUUM pg_statistic")
        try:
            connection.exec_driver_sql("VACUUM FULL pg_statistic")
            return
        except InternalError as exc:
            if attempt == attempts or "toast" not in str(exc.orig):
                raise
            log.warning("VACUUM FULL pg_statistic met a removed TOAST chunk; trying again")


def _may_vacuum_catalog(connection: Connection) -> bool:
    """Return True when this role may VACUUM ``pg_statistic``: a superuser or the owner of the
    current database (postgresql.org docs, "VACUUM": database owners may vacuum every table of
    their database except shared catalogs)."""
    return bool(connection.exec_driver_sql(
        "SELECT rolsuper OR pg_has_role(current_user, (SELECT datdba FROM pg_database "
        "WHERE datname = current_database()), 'MEMBER') FROM pg_roles "
        "WHERE rolname = current_user").scalar())


def scrub(db: Database, tables: Iterable[str]) -> str:
    """Scrub deleted data from the database's files; return what was done."""
    return scrub_sqlite(db) if db.is_sqlite else scrub_postgres(db, tables)
