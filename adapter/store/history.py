"""Version snapshots of children (and assessment references) for ``vread`` and ``_history``:
the canonical dump of every version, and transient records rebuilt from one."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter import identity
from adapter.models import Assessment, Child, Practitioner, RecordVersion
from adapter.models.canonical import (
    as_utc,
    build_assessment,
    build_child,
    canonical_assessment_dump,
    canonical_dump,
)
from adapter.store.records import national_resource_id, part_key

DATE_KEYS: Final = frozenset({"birth_date", "death_date", "address_start", "address_end",
                              "retention_date", "period_start", "period_end", "started_date",
                              "completed_date", "closed_date"})


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with dates and datetimes as ISO strings (JSON column contents)."""
    value: dict[str, Any] = orjson.loads(orjson.dumps(data))
    return value


def _typed(value: Any, key: str | None = None) -> Any:
    """Return a snapshot value with its dates and datetimes parsed back."""
    if isinstance(value, dict):
        return {k: _typed(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str) and key in DATE_KEYS:
        return dt.date.fromisoformat(value)
    if isinstance(value, str) and key == "last_updated":
        return dt.datetime.fromisoformat(value)
    return value


def child_snapshot(child: Child) -> RecordVersion:
    """Return the snapshot of ``child`` as it is now (taken before an update changes it).

    Only superseded versions are stored: the current version is always the live entry.
    """
    return RecordVersion(kind="child", resource_id=child.resource_id, version=child.version,
                         last_updated=as_utc(child.last_updated),
                         snapshot=_jsonable(canonical_dump(child)))


def record_deleted(session: Session, kind: str, resource_id: str, version: int,
                   note: dict[str, Any] | None = None) -> None:
    """Store a deletion tombstone after the last version of a record of ``kind`` (child,
    assessment, role); ``note`` says what a later read needs to decide who may learn of it."""
    session.add(RecordVersion(kind=kind, resource_id=resource_id, version=version,
                              last_updated=dt.datetime.now(dt.UTC), deleted=True,
                              snapshot=note))


def versions(session: Session, kind: str, resource_id: str) -> list[RecordVersion]:
    """Return every superseded version of a record of ``kind`` (and its tombstone), newest
    first."""
    return list(session.scalars(
        select(RecordVersion).where(RecordVersion.kind == kind,
                                    RecordVersion.resource_id == resource_id)
        .order_by(RecordVersion.version.desc())))


def child_versions(session: Session, resource_id: str) -> list[RecordVersion]:
    """Return every superseded version of a child (and its tombstone), newest first."""
    return versions(session, "child", resource_id)


def child_from_snapshot(version: RecordVersion) -> Child:
    """Return a transient Child as it was at ``version`` (with derived resource ids)."""
    assert version.snapshot is not None  # noqa: S101 - tombstones are never rebuilt
    data = _typed(version.snapshot)
    child, _builder = build_child(data)
    child.resource_id = version.resource_id
    child.version, child.last_updated = version.version, version.last_updated
    for involvement in child.involvements:
        involvement.resource_id = identity.involvement_role_id(child.contactpoint_id,
                                                               part_key(involvement))
    _derive_shared_ids(_builder)
    return child


# --- assessment references ------------------------------------------------------------------

def assessment_snapshot(assessment: Assessment) -> RecordVersion:
    """Return the snapshot of an assessment reference as it is now (taken before an update
    or a deletion changes it)."""
    return RecordVersion(kind="assessment", resource_id=assessment.resource_id,
                         version=assessment.version,
                         last_updated=as_utc(assessment.last_updated),
                         snapshot=_jsonable(canonical_assessment_dump(assessment)))


def assessment_versions(session: Session, resource_id: str) -> list[RecordVersion]:
    """Return every superseded version of an assessment (and its tombstone), newest first."""
    return versions(session, "assessment", resource_id)


def assessment_from_snapshot(version: RecordVersion, child: Child) -> Assessment:
    """Return a transient Assessment as it was at ``version``, about ``child`` (the snapshot
    names the child by identifiers only), with derived resource ids."""
    assert version.snapshot is not None  # noqa: S101 - tombstones are never rebuilt
    assessment, builder = build_assessment(_typed(version.snapshot))
    assessment.child = child
    assessment.resource_id = version.resource_id
    assessment.version, assessment.last_updated = version.version, version.last_updated
    for member in assessment.members:
        member.resource_id = identity.member_role_id(assessment.assessment_id, part_key(member))
    _derive_shared_ids(builder)
    return assessment


def _derive_shared_ids(builder: Any) -> None:
    """Give the organisations and practitioners a snapshot names the ids their natural keys
    derive (``adapter/identity.py``), as the store gave them."""
    for organisation in builder.organisations.values():
        code = identity.organisation_code(organisation)
        organisation.resource_id = identity.organisation_id(code)
    for practitioner in builder.practitioners.values():
        practitioner.resource_id = _practitioner_id(practitioner)


def _practitioner_id(practitioner: Practitioner) -> str:
    """Return the id derived from a snapshot practitioner's key: employer's code and staff
    id, else its first national identifier (as ``PractitionerProvider`` derives it)."""
    if practitioner.organisation is None:
        return national_resource_id(practitioner.national_ids())
    return identity.practitioner_id(identity.organisation_code(practitioner.organisation),
                                    practitioner.local_id or "")
