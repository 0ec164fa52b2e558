"""What a transaction gathers (audit records, deliveries) is written by one function,
``audit.write_gathered``, whether a session's commit calls it or ``Database.read_transaction``
does on SQLite; on PostgreSQL one record with one delivery is one statement (docs/architecture.md
"Audit before the answer"). Each shape is checked on both databases: the records, and the
ledger row inserted, then moved on and counted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from adapter.db import Database
from adapter.models import AuditRecord, LedgerEntry
from adapter.security import audit, ledger
from adapter.security.caller import Caller

READER = Caller("reader", "E09000001", [], frozenset())


def gather(db: Database, refs: list[str], via: str = "read", *, read: bool = True) -> None:
    """Gather a record and a delivery of each child in one read (or write) transaction."""
    transaction = db.read_transaction() if read else db.write_transaction()
    with transaction as session:
        for ref in refs:
            audit.record(session, via, resource_type="Patient", resource_id=ref,
                         child_ref=ref, caller=READER)
            ledger.record_delivery(session, READER, SimpleNamespace(resource_id=ref), via)  # type: ignore[arg-type]


def ledger_of(db: Database) -> dict[str, tuple[int, str]]:
    """Return the reader's ledger: child -> (deliveries, last way)."""
    with db.sessions() as session:
        return {entry.child_ref: (entry.deliveries, entry.last_via) for entry in session.scalars(
            select(LedgerEntry).where(LedgerEntry.client_id == "reader"))}


def records_of(db: Database) -> list[tuple[str, str | None]]:
    """Return the reader's audit records: (action, child), in order."""
    with db.sessions() as session:
        return [(r.action, r.child_ref) for r in session.scalars(
            select(AuditRecord).where(AuditRecord.client_id == "reader")
            .order_by(AuditRecord.id))]


@pytest.mark.parametrize("read", [True, False], ids=["read-transaction", "write-transaction"])
def test_one_record_and_one_delivery(db: Database, read: bool) -> None:
    """A read by id's shape: the record is written, the delivery inserted, then counted."""
    gather(db, ["c1"], read=read)
    assert records_of(db) == [("read", "c1")]
    assert ledger_of(db) == {"c1": (1, "read")}
    gather(db, ["c1"], "search", read=read)
    assert records_of(db) == [("read", "c1"), ("search", "c1")]
    assert ledger_of(db) == {"c1": (2, "search")}


def test_many_records_and_deliveries(db: Database) -> None:
    """A search page's shape: every record and every delivery, none twice."""
    gather(db, ["c1"])
    gather(db, ["c3", "c1", "c2"], "search")
    assert sorted(records_of(db)) == [("read", "c1"), ("search", "c1"), ("search", "c2"),
                                      ("search", "c3")]
    assert ledger_of(db) == {"c1": (2, "search"), "c2": (1, "search"), "c3": (1, "search")}


def test_records_without_deliveries_and_the_reverse(db: Database) -> None:
    """A record of no delivery (a HEAD, an operator's read) and a delivery recorded beside a
    record of another client are each written alone."""
    with db.read_transaction() as session:
        audit.record(session, "read-head", resource_type="Patient", resource_id="c1",
                     child_ref="c1", caller=READER)
    with db.read_transaction() as session:
        ledger.record_delivery(session, READER, SimpleNamespace(resource_id="c2"))  # type: ignore[arg-type]
    assert records_of(db) == [("read-head", "c1")]
    assert ledger_of(db) == {"c2": (1, "read")}
