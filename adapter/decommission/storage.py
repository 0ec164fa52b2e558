"""Scrubbing deleted data out of the database files after destruction (issue 7 item 5).

SQLite: ``secure_delete`` (set before the deletes) overwrites deleted content; ``VACUUM``
rebuilds the file so that no free page keeps an old row; ``wal_checkpoint(TRUNCATE)`` copies the
write-ahead log into the file and truncates the log to zero bytes (sqlite.org wal.html,
pragma.html#pragma_wal_checkpoint). PostgreSQL: ``VACUUM FULL`` rewrites each table and its
TOAST table into new files, so no dead row version (an old tuple of a deleted or updated row)
survives (postgresql.org docs, "VACUUM").
"""

from __future__ import annotations

from collections.abc import Iterable

from adapter.db import Database
from adapter.errors import Unavailable

SQLITE_STEPS = "SQLite: secure_delete=ON, VACUUM, wal_checkpoint(TRUNCATE)"
POSTGRES_STEPS = "PostgreSQL: VACUUM FULL on every table touched"


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
        cursor.execute("VACUUM")
        cursor.close()
    finally:
        raw.close()
    checkpoint_sqlite(db)
    return SQLITE_STEPS


def scrub_postgres(db: Database, tables: Iterable[str]) -> str:
    """Rewrite each of ``tables`` with VACUUM FULL; return what was done."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in tables:
            # The names are the model's own table names, never input.
            connection.exec_driver_sql(f'VACUUM FULL "{table}"')
    return POSTGRES_STEPS


def scrub(db: Database, tables: Iterable[str]) -> str:
    """Scrub deleted data from the database's files; return what was done."""
    return scrub_sqlite(db) if db.is_sqlite else scrub_postgres(db, tables)
