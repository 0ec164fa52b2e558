"""Streaming import of canonical records: directory entries and assessment references, as a
dialect's parse stage yields them record by record (the directory XML reader,
``adapter.directory.reader.iter_entry_data``, called by the directory routes and CLI), each
with its position in the file and each either a canonical dict or the reason the parse stage
refused it. The good ones are applied in transactions of ``BATCH_SIZE`` records and every
record is answered with an ``ImportOutcome`` (created / updated / unchanged / rejected with its
reason), in the order of the file. Nothing here reads bytes: the stream stays the parse
stage's, so memory stays flat however long the file.

The rules of a write through any dialect hold per record (docs/domain.md; docs/architecture.md
"One write-authority policy"):

- a caller writes only entries its own organisation manages (an entry naming another managing
  authority, or stored under another one, is rejected "not your authority", not the whole
  file); shielded entries are changed only with the shielding right; archived ones only by an
  administrator;
- what another organisation owns it cannot change (``adapter.security.policy.authority``):
  a record describing a stored organisation or practitioner otherwise than the directory
  holds it is rejected "not your record", unless the caller owns it (the organisation
  itself, the practitioner's employer) or is an administrator;
- what a caller may not see it cannot change: the involvements and local identifiers the
  disclosure policy withholds from it are kept as stored (so an entry it exported, redacted,
  can be posted back as it is and changes nothing);
- a sensitive service's involvement needs its consent basis;
- a record carrying the ``version`` the gateway gave it is applied only onto that version
  (as FHIR ``If-Match``: no lost update); a record equal to the stored entry is "unchanged"
  whatever its version, so the same file posted twice changes nothing the second time.

Entries take a bulk path (``adapter.imports.rows``): the stored children of a batch
are loaded in one query and compared as canonical dicts, so unchanged ones cost no unit-of-work
at all; changed ones go through ``apply_child`` with a history snapshot; new ones are inserted
with one ``executemany`` per table, their outbox events and audit records with them. A batch
that meets a database constraint (a local identifier or an organisation code held by another
record) is rolled back and re-applied record by record, each in its own savepoint, so that only
the offending records are rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from adapter.db import Database
from adapter.errors import BadRequest, GatewayError
from adapter.models.canonical import Canonical
from adapter.security.caller import Caller
from adapter.store.statistics import analyzed_after

log = logging.getLogger(__name__)

BATCH_SIZE: Final = 500
# SQLite page cache of an import batch's connection, in KiB (the default is 2 MiB): a batch
# inserts into a dozen indexes at random places, and once the directory outgrows the default
# cache most of those inserts would read their pages back from the operating system.
SQLITE_IMPORT_CACHE_KIB: Final = 65536
CONFLICT: Final = ("the record conflicts with another stored record (an identifier or "
                   "organisation code it gives is held by another one) or a value is too long "
                   "for the directory")
DB_ERRORS: Final = (IntegrityError, DataError, StaleDataError)


class RefusedRecord(Protocol):
    """A record the parse stage refused (``adapter.directory.reader.RecordInvalid``): why and
    where, never the value, and the child's ContactPoint ID where the record gave a valid one
    (the only identifier a report repeats)."""

    message: str
    expression: str | None
    contactpoint_id: str | None


# (record number, line it starts on, canonical dict or why it was refused), in file order.
ParsedRecord = tuple[int, int | None, Canonical | RefusedRecord]
Items = Iterable[ParsedRecord]


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did with one record of a file (import-report.xsd ImportRecord)."""

    record_number: int
    line: int | None
    status: str
    contactpoint_id: str | None = None
    reason: str | None = None
    expression: str | None = None
    # What a write that was applied tells its writer (what was not kept or was changed:
    # ``adapter.fhir.announce``), as the import command reports it; not part of the XML report.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pending:
    """A record that passed the reader, waiting for its batch to be applied."""

    position: int
    line: int | None
    data: Canonical


@dataclass(frozen=True)
class ImportKind:
    """What tells entries and assessment references apart for the import."""

    name: str
    key: Callable[[Canonical], str]
    apply: Callable[[Session, Caller, list[Pending], str], dict[int, ImportOutcome]]
    contactpoint_id: Callable[[Canonical], str | None]


def rejected(pending: Pending, error: GatewayError,
             contactpoint_id: str | None = None) -> ImportOutcome:
    """Return the outcome of a record rejected with ``error`` (its message names no value)."""
    return ImportOutcome(pending.position, pending.line, "rejected", contactpoint_id,
                         error.message, error.expression)


def applied(pending: Pending, status: str, contactpoint_id: str | None) -> ImportOutcome:
    """Return the outcome of a record that was applied (created / updated / unchanged)."""
    return ImportOutcome(pending.position, pending.line, status, contactpoint_id)


def _refused_outcome(position: int, line: int | None, error: RefusedRecord) -> ImportOutcome:
    """Return the outcome of a record the parse stage refused."""
    return ImportOutcome(position, line, "rejected", error.contactpoint_id, error.message,
                         error.expression)


def _groups(items: Items, kind: ImportKind,
            size: int) -> Iterator[list[ImportOutcome | Pending]]:
    """Yield the records in groups of at most ``size``, in order; a group ends early where a
    record repeats one of the group (a later record is applied after an earlier one).

    :raises BadRequest: the document stops being a readable batch (after the group before).
    """
    group: list[ImportOutcome | Pending] = []
    keys: set[str] = set()
    try:
        for position, line, item in items:
            key = kind.key(item) if isinstance(item, dict) else None
            if len(group) >= size or (key is not None and key in keys):
                yield group
                group, keys = [], set()
            if isinstance(item, dict):
                group.append(Pending(position, line, item))
                keys.add(str(key))
            else:
                group.append(_refused_outcome(position, line, item))
    except BadRequest:
        if group:
            yield group
        raise
    if group:
        yield group


def run_import(db: Database, items: Items, caller: Caller, kind: ImportKind, *,
               batch_size: int = BATCH_SIZE, detail: str = "directory XML import",
               ) -> Iterator[ImportOutcome]:
    """Apply a stream of parsed records in batches; yield one outcome per record, in order;
    a large import refreshes the planner's statistics at its end (``analyzed_after``).

    :raises BadRequest: the document stops being a readable batch; the records before that
        point have been applied and their outcomes yielded.
    """
    yield from analyzed_after(db, _applied(db, items, caller, kind, batch_size, detail))


def _applied(db: Database, items: Items, caller: Caller, kind: ImportKind, batch_size: int,
             detail: str) -> Iterator[ImportOutcome]:
    """Apply the records batch by batch; yield one outcome per record, in order."""
    for group in _groups(items, kind, batch_size):
        pending = [item for item in group if isinstance(item, Pending)]
        done = apply_batch(db, caller, pending, kind, detail) if pending else {}
        for item in group:
            yield done[item.position] if isinstance(item, Pending) else item


def apply_batch(db: Database, caller: Caller, pending: list[Pending], kind: ImportKind,
                detail: str) -> dict[int, ImportOutcome]:
    """Apply one batch in one transaction; on a database constraint, record by record."""
    try:
        with db.write_transaction() as session, _import_cache(session):
            return kind.apply(session, caller, pending, detail)
    except DB_ERRORS as error:
        log.warning("%s: a batch of %d records met %s; applying it record by record",
                    kind.name, len(pending), type(error).__name__)
    return _one_by_one(db, caller, pending, kind, detail)


@contextmanager
def _import_cache(session: Session) -> Iterator[None]:
    """On SQLite, give the batch's connection a page cache of ``SQLITE_IMPORT_CACHE_KIB``
    while the batch is applied, and its own size back afterwards (the connection returns to a
    pool that serves small requests)."""
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    raw: Any = session.connection().connection.dbapi_connection
    before = raw.execute("PRAGMA cache_size").fetchone()[0]
    raw.execute(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size = {int(before)}")


def _one_by_one(db: Database, caller: Caller, pending: list[Pending], kind: ImportKind,
                detail: str) -> dict[int, ImportOutcome]:
    """Apply each record of a batch in its own savepoint; reject those the database refuses."""
    outcomes: dict[int, ImportOutcome] = {}
    with db.write_transaction() as session:
        for item in pending:
            try:
                with session.begin_nested():
                    outcomes.update(kind.apply(session, caller, [item], detail))
                    session.flush()
            except DB_ERRORS:
                outcomes[item.position] = rejected(
                    item, GatewayError(CONFLICT), kind.contactpoint_id(item.data))
            session.expunge_all()
    return outcomes


def import_entries(db: Database, records: Items, caller: Caller, *,
                   batch_size: int = BATCH_SIZE,
                   detail: str = "directory XML import") -> Iterator[ImportOutcome]:
    """Apply a stream of parsed directory entries; yield each record's outcome.

    :raises BadRequest: the parse stage found the file unreadable from some point on (the
        records before it are applied).
    """
    from adapter.imports.entries import ENTRY_KIND

    return run_import(db, records, caller, ENTRY_KIND, batch_size=batch_size, detail=detail)


def import_assessments(db: Database, records: Items, caller: Caller, *,
                       batch_size: int = BATCH_SIZE,
                       detail: str = "directory XML import") -> Iterator[ImportOutcome]:
    """Apply a stream of parsed assessment references; yield each record's outcome.

    :raises BadRequest: as ``import_entries``.
    """
    from adapter.imports.assessments import ASSESSMENT_KIND

    return run_import(db, records, caller, ASSESSMENT_KIND, batch_size=batch_size,
                      detail=detail)
