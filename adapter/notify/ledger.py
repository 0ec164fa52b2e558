"""The delivery ledger: which client received which child's data, first and last when
(issue 6 item 5). Every path that hands a child's data to a client calls one function here in
the transaction of the delivery: Patient reads and search hits (``render_patient``), bulk
export files, full-resource notifications and ``$events``. It scopes the purge instructions
(issue 7): exactly the clients that hold a child are told to purge it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from adapter.models import Child, Client, LedgerEntry
from adapter.models.base import utcnow
from adapter.security.caller import Caller

PENDING: Final = "ledger_pending"


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert ledger rows, or move ``last_at`` on and count the delivery when present."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(LedgerEntry)
    statement = statement.on_conflict_do_update(
        index_elements=["client_id", "child_ref"],
        set_={"last_at": statement.excluded.last_at, "last_via": statement.excluded.last_via,
              "deliveries": LedgerEntry.deliveries + 1})
    session.execute(statement, rows)


def record_deliveries(session: Session, client_id: str, child_refs: Iterable[str], via: str,
                      at: dt.datetime | None = None) -> None:
    """Record that ``client_id`` received the data of each child in ``child_refs`` (FHIR
    Patient ids) by ``via`` (read, search, export, notification, events)."""
    moment = at or utcnow()
    rows = [{"client_id": client_id, "child_ref": ref, "first_at": moment, "last_at": moment,
             "last_via": via, "deliveries": 1} for ref in sorted(set(child_refs))]
    if rows:
        _upsert(session, rows)


def record_delivery(session: Session, caller: Caller, child: Child, via: str = "read") -> None:
    """Record that ``caller`` received ``child``'s data (one read or search hit). Gathered in
    the session and written at commit, one statement per client and way (a search page of
    50 children is one upsert, not 50)."""
    pending: dict[tuple[str, str], set[str]] = session.info.setdefault(PENDING, {})
    pending.setdefault((caller.client_id, via), set()).add(child.resource_id)


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


def holders_parameters(entries: list[tuple[LedgerEntry, str | None]]) -> dict[str, Any]:
    """Return the ``$holders`` result: one ``holder`` parameter per client (FHIR Parameters)."""
    from adapter.fhir.routes import instant

    parameters = []
    for entry, organisation in entries:
        parts: list[dict[str, Any]] = [{"name": "client", "valueString": entry.client_id}]
        if organisation:
            parts.append({"name": "organization", "valueString": organisation})
        parts += [{"name": "first", "valueInstant": instant(entry.first_at)},
                  {"name": "last", "valueInstant": instant(entry.last_at)},
                  {"name": "via", "valueCode": entry.last_via},
                  {"name": "deliveries", "valueInteger": int(entry.deliveries)}]
        parameters.append({"name": "holder", "part": parts})
    result: dict[str, Any] = {"resourceType": "Parameters"}
    if parameters:
        result["parameter"] = parameters
    return result
