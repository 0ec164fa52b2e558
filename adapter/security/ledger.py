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
import functools
from collections.abc import Iterable
from typing import Any, Final, cast

from sqlalchemy import Table, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

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


@functools.cache
def _upsert_statement(dialect: str) -> Any:
    """Return the ledger upsert of ``dialect`` (built once: it is on every read's path)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = cast(Table, LedgerEntry.__table__)
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.client_id, table.c.child_ref],
        set_={"last_at": statement.excluded.last_at, "last_via": statement.excluded.last_via,
              "deliveries": table.c.deliveries + 1})


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert ledger rows, or move ``last_at`` on and count the delivery when present (a Core
    statement on the session's connection: one INSERT ... ON CONFLICT, no ORM bookkeeping)."""
    statement = _upsert_statement(session.get_bind().dialect.name)
    session.connection().execute(statement, rows if len(rows) > 1 else rows[0])


def record_deliveries(session: Session, client_id: str, child_refs: Iterable[str], via: str,
                      at: dt.datetime | None = None) -> None:
    """Record that ``client_id`` received the data of each child in ``child_refs`` (FHIR
    Patient ids) by ``via`` (read, search, export, notification, events)."""
    moment = at or utcnow()
    rows = [{"client_id": client_id, "child_ref": ref, "first_at": moment, "last_at": moment,
             "last_via": via, "deliveries": 1} for ref in sorted(set(child_refs))]
    if rows:
        _upsert(session, rows)


def record_delivery(session: Session, caller: Caller, child: ChildEntry,
                    via: str = "read") -> None:
    """Record that ``caller`` received ``child``'s data (one read or search hit; ``via`` is
    the audit action). Gathered in the session and written at commit, one statement per
    client and way (a search page of 50 children is one upsert, not 50).

    A notification being rendered (``notify``) is not a delivery yet: the dispatcher records
    it once the receiver has taken it. The gateway's own operator identities are no holders.
    A ``HEAD`` request gets no data (a 304 is dropped with ``forget_deliveries``).
    """
    if via in NOT_DELIVERED or caller.client_id in NOT_A_HOLDER or audit.head_request():
        return
    pending: dict[tuple[str, str], set[str]] = session.info.setdefault(PENDING, {})
    pending.setdefault((caller.client_id, via), set()).add(child.resource_id)


def forget_deliveries(session: Session) -> None:
    """Drop the deliveries gathered so far in ``session``: the response will not carry the
    data (304 Not Modified: the client's copy is current)."""
    session.info.pop(PENDING, None)


def write_pending(session: Session) -> None:
    """Before a commit, write the deliveries gathered by ``record_delivery``."""
    pending: dict[tuple[str, str], set[str]] | None = session.info.pop(PENDING, None)
    for (client_id, via), refs in (pending or {}).items():
        record_deliveries(session, client_id, refs, via)


def forget_pending(session: Session, transaction: Any) -> None:
    """Drop what a rolled-back transaction gathered (it was never delivered)."""
    if transaction.parent is None:
        session.info.pop(PENDING, None)


def install() -> None:
    """Register the commit hooks once for every Session."""
    if not event.contains(Session, "before_commit", write_pending):
        event.listen(Session, "before_commit", write_pending)
        event.listen(Session, "after_transaction_end", forget_pending)


install()


def holders(session: Session, child_ref: str) -> list[tuple[LedgerEntry, str | None]]:
    """Return the ledger entries of one child with each client's organisation code."""
    query = (select(LedgerEntry, Client.organisation_code)
             .join(Client, Client.client_id == LedgerEntry.client_id, isouter=True)
             .where(LedgerEntry.child_ref == child_ref).order_by(LedgerEntry.client_id))
    return [(entry, code) for entry, code in session.execute(query)]
