"""The delivery ledger: which client received which child's data, first and last when.
It scopes the purge instructions (docs/architecture.md "Decommissioning"): exactly the
clients that hold a child are told to purge it.

Every route that returns a child's data to a client feeds it through ``record_delivery``, in
the transaction of the response, next to that disclosure's audit record: Patient reads and
search hits (``render_patient``), CareTeam reads and search hits — the child's team and its
eCAF assessments (``render_team``, ``render_ecaf``) —, PractitionerRoles of a child's
involvements, directory XML entries and assessments. The paths that hand data over in bulk or
later call ``record_deliveries`` with the children they handed over: bulk export files,
eCAF re-keying, full-resource notifications (once delivered) and ``$events``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final, cast

from sqlalchemy import Table, bindparam, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from adapter.db import built_once
from adapter.models import Client, LedgerEntry
from adapter.models.base import utcnow
from adapter.models.rows import ChildEntry
from adapter.security import audit
from adapter.security.caller import Caller

PENDING: Final = "ledger_pending"
# Audit actions of a rendering that is not (yet) a delivery to the caller.
NOT_DELIVERED: Final = frozenset({"notify"})
# The CLI's operator (adapter.directory.cli.cli_caller) and system jobs: the gateway itself,
# not a system that could be told to purge.
NOT_A_HOLDER: Final = frozenset({"cli", "system"})


@built_once
def upsert_statement(dialect: str) -> Any:
    """Return the ledger upsert of ``dialect`` (built once: it is on every read's path)."""
    return upsert_of(postgresql.insert if dialect == "postgresql" else sqlite.insert)


def upsert_of(insert: Any, prefix: str | None = None) -> Any:
    """Return the ledger upsert made with the dialect's ``insert``: insert a row, or move
    ``last_at`` on and count the delivery when the client already holds the child. With
    ``prefix`` its values are the parameters named by the prefix and the column (one row, in a
    statement that has other parameters: ``audit.write_gathered``)."""
    table = cast(Table, LedgerEntry.__table__)
    statement = insert(table)
    if prefix is not None:
        statement = statement.values({c: bindparam(f"{prefix}{c.name}", type_=c.type)
                                      for c in table.c if c.name != "id"})
    return statement.on_conflict_do_update(
        index_elements=[table.c.client_id, table.c.child_ref],
        set_={"last_at": statement.excluded.last_at, "last_via": statement.excluded.last_via,
              "deliveries": table.c.deliveries + 1})


def record_deliveries(session: Session, client_id: str, child_refs: Iterable[str], via: str,
                      at: dt.datetime | None = None) -> None:
    """Record that ``client_id`` received the data of each child in ``child_refs`` (FHIR
    Patient ids) by ``via`` (read, search, export, notification, events), now: a Core
    statement on the session's connection (one INSERT ... ON CONFLICT, no ORM bookkeeping)."""
    rows = ledger_rows(client_id, child_refs, via, at or utcnow())
    if rows:
        statement = upsert_statement(session.get_bind().dialect.name)
        session.connection().execute(statement, rows if len(rows) > 1 else rows[0])


def ledger_rows(client_id: str, child_refs: Iterable[str], via: str,
                moment: dt.datetime) -> list[dict[str, Any]]:
    """Return the ledger rows of one client's deliveries, sorted by child (concurrent upserts
    then lock the rows they share in one order)."""
    return [{"client_id": client_id, "child_ref": ref, "first_at": moment, "last_at": moment,
             "last_via": via, "deliveries": 1} for ref in sorted(set(child_refs))]


def record_delivery(session: Session, caller: Caller, child: ChildEntry,
                    via: str = "read") -> None:
    """Record that ``caller`` received ``child``'s data (one read or search hit; ``via`` is
    the audit action). Gathered in the session and written at commit with the audit records,
    one statement for all (a search page of 50 children is one upsert, not 50).

    A notification being rendered (``notify``) is not a delivery yet: the dispatcher records
    it once the receiver has taken it. The gateway's own operator identities are no holders.
    A ``HEAD`` request gets no data (a 304 is dropped with ``forget_deliveries``).
    """
    if via in NOT_DELIVERED or caller.client_id in NOT_A_HOLDER or audit.head_request():
        return
    # A list in the order gathered, so that a rolled-back savepoint drops what it added
    # (``audit._forget_rolled_back``) as it drops its audit records.
    session.info.setdefault(PENDING, []).append((caller.client_id, via, child.resource_id))


def forget_deliveries(session: Session) -> None:
    """Drop the deliveries gathered so far in ``session``: the response will not carry the
    data (304 Not Modified: the client's copy is current)."""
    session.info.pop(PENDING, None)


def delivery_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Take the deliveries gathered by ``record_delivery`` out of a session's ``info`` and
    return their ledger rows (``audit.write_gathered`` writes them at the commit), sorted by
    client and child across ways, so that concurrent transactions lock the rows they share in
    one order (PostgreSQL "Explicit Locking", 13.3.4 Deadlocks)."""
    gathered: list[tuple[str, str, str]] | None = info.pop(PENDING, None)
    if not gathered:
        return []
    pending: dict[tuple[str, str], set[str]] = {}
    for client_id, via, ref in gathered:
        pending.setdefault((client_id, via), set()).add(ref)
    moment = utcnow()
    rows = [row for (client_id, via), refs in sorted(pending.items())
            for row in ledger_rows(client_id, refs, via, moment)]
    return sorted(rows, key=lambda row: (row["client_id"], row["child_ref"]))


def forget_pending(session: Session, transaction: Any) -> None:
    """Drop what a rolled-back transaction gathered (it was never delivered)."""
    if transaction.parent is None:
        session.info.pop(PENDING, None)


def install() -> None:
    """Register the rollback hook once for every Session (what was gathered is written by
    ``audit``'s commit hook, with the audit records)."""
    if not event.contains(Session, "after_transaction_end", forget_pending):
        event.listen(Session, "after_transaction_end", forget_pending)


install()


def holders(session: Session, child_ref: str) -> list[tuple[LedgerEntry, str | None]]:
    """Return the ledger entries of one child with each client's organisation code."""
    query = (select(LedgerEntry, Client.organisation_code)
             .join(Client, Client.client_id == LedgerEntry.client_id, isouter=True)
             .where(LedgerEntry.child_ref == child_ref).order_by(LedgerEntry.client_id))
    return [(entry, code) for entry, code in session.execute(query)]
