"""Version bumping: a change to any row that belongs to a child (or an assessment) is a new
version of that child (or assessment), the FHIR ``meta.versionId`` and ETag (FHIR R4 http.html
"Managing Resource Contention")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from adapter.models.assessment import Assessment, TeamMember
from adapter.models.base import utcnow
from adapter.models.directory import Carer, Child, ChildName, Involvement, LocalIdentifier

CHILD_PARTS = (ChildName, Carer, Involvement, LocalIdentifier)
VERSIONED_OR_PART = (Child, Assessment, TeamMember, *CHILD_PARTS)


def _owner_of(obj: object) -> Child | Assessment | None:
    """Return the versioned record that ``obj`` is part of, if any."""
    if isinstance(obj, CHILD_PARTS):
        return obj.child
    if isinstance(obj, TeamMember):
        return obj.assessment
    return None


def touch_owners(session: Session, _context: Any, _instances: Any) -> None:
    """Before a flush, stamp ``last_updated`` on every child or assessment whose parts changed.

    Stamping the owner makes it dirty, so SQLAlchemy's ``version_id_col`` bumps its version
    in the same flush (and the UPDATE's version check gives optimistic locking).
    """
    now = utcnow()
    # One new version per owner per transaction, however many flushes the transaction makes.
    stamped: set[Child | Assessment] = session.info.setdefault("versioned", set())
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, VERSIONED_OR_PART) and (
            obj in session.new or obj in session.deleted or session.is_modified(obj)
        ):
            owner = obj if isinstance(obj, Child | Assessment) else _owner_of(obj)
            if owner is not None and owner not in session.deleted and owner not in stamped:
                owner.last_updated = now
                stamped.add(owner)


def forget_stamps(session: Session, _transaction: Any) -> None:
    """Start counting versions afresh when a transaction ends (the outermost one: each
    flush runs in a subtransaction, which is neither nested nor the end)."""
    if _transaction.parent is None:
        session.info.pop("versioned", None)


def install_versioning() -> None:
    """Register the before-flush listener once for every Session."""
    if not event.contains(Session, "before_flush", touch_owners):
        event.listen(Session, "before_flush", touch_owners)
        event.listen(Session, "after_transaction_end", forget_stamps)
