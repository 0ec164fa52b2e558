"""The audit trail: one call, made by every service function that reads or changes a child's
data, in the same transaction as the access (issue 5; DOMAIN.md "Who used it")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Final

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from adapter.identifiers import InvalidIdentifier, resource_id_for, validate_contactpoint_id
from adapter.models import AuditRecord
from adapter.models.base import utcnow
from adapter.security.caller import Caller, current_caller


def record(session: Session, action: str, *, resource_type: str | None = None,
           resource_id: str | None = None, child_ref: str | None = None, outcome: str = "0",
           override: bool = False, detail: str | None = None,
           caller: Caller | None = None) -> AuditRecord:
    """Write one audit record in ``session``'s transaction (committed with the access it
    records, rolled back with it); return it (a copy, not in the session).

    One Core INSERT on the session's connection, at once: no unit of work, no flush (every
    read writes one, so this is on the hottest path of the service).

    ``detail`` must never hold personal data: it is kept after destruction.
    """
    who = caller or current_caller()
    values = {
        "recorded": utcnow(),
        "client_id": who.client_id if who else "system",
        "organisation_code": who.organisation_code if who else "-",
        "action": action, "resource_type": resource_type, "resource_id": resource_id,
        "child_ref": child_ref, "outcome": outcome, "override": override,
        "purpose_of_use": who.purpose_of_use if who else None,
        "detail": _clipped(detail), "request_id": who.request_id if who else None,
    }
    key = session.connection().execute(_INSERT, values).inserted_primary_key
    return AuditRecord(id=key[0] if key else None, **values)


def _clipped(detail: str | None) -> str | None:
    """Return ``detail`` cut to the column's length, marked where cut: an overlong detail must
    not fail the access it records."""
    if detail is None or len(detail) <= DETAIL_LENGTH:
        return detail
    return detail[:DETAIL_LENGTH - 1] + "…"


DETAIL_LENGTH: Final = AuditRecord.__table__.c.detail.type.length  # type: ignore[attr-defined]
_INSERT: Final = insert(AuditRecord.__table__)  # type: ignore[arg-type]


def child_ref_of(text: str) -> str:
    """Return the child reference (Patient id) for a Patient id or a ContactPoint ID, as the
    audit trail keeps it (the id is derived from the ContactPoint ID, so it outlives the entry)."""
    try:
        return resource_id_for("Patient", validate_contactpoint_id(text))
    except InvalidIdentifier:
        return text.strip()


def trail(session: Session, *, child_ref: str | None = None, client_id: str | None = None,
          since: dt.datetime | None = None) -> Iterator[AuditRecord]:
    """Yield the audit records of one child or one client, oldest first, streamed."""
    query = select(AuditRecord).order_by(AuditRecord.recorded, AuditRecord.id)
    if child_ref is not None:
        query = query.where(AuditRecord.child_ref == child_ref)
    if client_id is not None:
        query = query.where(AuditRecord.client_id == client_id)
    if since is not None:
        query = query.where(AuditRecord.recorded >= since)
    yield from session.scalars(query.execution_options(yield_per=500))
