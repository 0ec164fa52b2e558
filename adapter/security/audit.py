"""The audit trail: one call, made by every service function that reads or changes a child's
data, in the same transaction as the access (issue 5; DOMAIN.md "Who used it")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.identifiers import InvalidIdentifier, resource_id_for, validate_contactpoint_id
from adapter.models import AuditRecord
from adapter.security.caller import Caller, current_caller


def record(session: Session, action: str, *, resource_type: str | None = None,
           resource_id: str | None = None, child_ref: str | None = None, outcome: str = "0",
           override: bool = False, detail: str | None = None,
           caller: Caller | None = None) -> AuditRecord:
    """Add one audit record to ``session`` (committed with the access it records).

    ``detail`` must never hold personal data: it is kept after destruction.
    """
    who = caller or current_caller()
    entry = AuditRecord(
        client_id=who.client_id if who else "system",
        organisation_code=who.organisation_code if who else "-",
        action=action, resource_type=resource_type, resource_id=resource_id,
        child_ref=child_ref, outcome=outcome, override=override,
        purpose_of_use=who.purpose_of_use if who else None,
        detail=detail, request_id=who.request_id if who else None,
    )
    session.add(entry)
    return entry


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
