"""The query planner's statistics, refreshed after a bulk load (``ANALYZE``).

Without them SQLite's planner has no ``sqlite_stat1`` to choose indexes by and PostgreSQL's
plans a freshly loaded table from what it held before (postgresql.org/docs/current/
sql-analyze.html; sqlite.org/lang_analyze.html): a search page over 100,000 children loaded
without statistics took 110 ms, with them 1.9 ms (docs/scale.md "Search").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Final, Protocol, TypeVar

from adapter.db import Database

log = logging.getLogger(__name__)

# The tables a directory load writes and the searches read: the directory entry's, its
# organisations and practitioners, and the eCAF teams.
DIRECTORY_TABLES: Final = ("organisation", "practitioner", "practitioner_identifier", "child",
                           "child_name", "local_identifier", "carer", "involvement",
                           "assessment", "team_member")
# An import that wrote this many records refreshes the statistics at its end: a small one
# changes them little, and ANALYZE reads every table named (on SQLite every index of it).
LARGE_IMPORT: Final = 1000
WRITTEN: Final = frozenset({"created", "updated"})


class Outcome(Protocol):
    """What an import did with one record (``adapter.directory.writer.ImportOutcome``)."""

    @property
    def status(self) -> str:
        """created, updated, unchanged or rejected."""


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


def refresh_statistics(db: Database, tables: Iterable[str] = DIRECTORY_TABLES) -> None:
    """Run ``ANALYZE`` on ``tables``, by name: on PostgreSQL a bare ANALYZE visits every
    schema of the database and waits on every other session's locks; on SQLite it would read
    the audit trail's indexes too, which no search plans by."""
    names = list(tables)
    with db.write_transaction() as session:
        connection = session.connection()
        if db.is_sqlite:
            for name in names:  # SQLite's ANALYZE takes one name
                connection.exec_driver_sql(f'ANALYZE "{name}"')
        else:
            connection.exec_driver_sql("ANALYZE " + ", ".join(f'"{name}"' for name in names))


def analyzed_after(db: Database, outcomes: Iterable[OutcomeT]) -> Iterator[OutcomeT]:
    """Yield an import's outcomes; once they are all out (or the import stopped), refresh the
    statistics when it wrote ``LARGE_IMPORT`` records or more."""
    written = 0
    try:
        for outcome in outcomes:
            written += outcome.status in WRITTEN
            yield outcome
    finally:
        if written >= LARGE_IMPORT:
            log.info("import wrote %d records: refreshing the planner's statistics", written)
            refresh_statistics(db)
