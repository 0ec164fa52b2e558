"""Version history of directory records: every version of a child (with its parts), an
assessment reference, an organisation or a practitioner, for FHIR ``vread`` and ``_history``
(FHIR R4 http.html#vread), and the deletion tombstone of a PractitionerRole (kind ``role``: a
deleted resource is 410 Gone, http.html#read). docs/domain.md: a moved child's previous address
lives on only here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from adapter.models.base import Base

RECORD_KINDS = ("child", "assessment", "organisation", "practitioner", "role")


class RecordVersion(Base):
    """One version of one record: its canonical snapshot, or a deletion tombstone."""

    __tablename__ = "record_version"
    __table_args__ = (
        UniqueConstraint("kind", "resource_id", "version"),
        CheckConstraint("kind IN ('child', 'assessment', 'organisation', 'practitioner', "
                        "'role')", name="kind"),
        CheckConstraint("deleted OR snapshot IS NOT NULL", name="snapshot_unless_deleted"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    resource_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ResourceAlias(Base):
    """An earlier logical id of a resource and the id it has now (README "Identifiers"): a
    read, vread or history of the old id answers 301 Moved Permanently to the new one.

    Migration 0014 wrote them for PractitionerRoles whose stored ids had been derived from an
    involvement's or team member's list position instead of its natural key
    (``adapter.identity.involvement_role_id``). They name a child's roles: decommissioning
    destroys them with the child's data (``adapter.decommission.destruction``).
    """

    __tablename__ = "resource_alias"
    __table_args__ = (UniqueConstraint("resource_type", "old_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    old_id: Mapped[str] = mapped_column(String(64))
    new_id: Mapped[str] = mapped_column(String(64))
