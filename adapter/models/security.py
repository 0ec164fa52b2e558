"""Registered client systems, used assertion ids and the audit trail (docs/architecture.md
"Security model")."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from adapter.models.base import Base, utcnow

CLIENT_RIGHTS = ("shielded", "sensitive", "audit", "admin")
CLIENT_STATUSES = ("active", "disabled")


class Client(Base):
    """A registered calling system: its organisation, scopes, rights and public keys.

    Only public keys (a JWKS) are stored: the gateway holds no client secret at all.
    """

    __tablename__ = "client"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        CheckConstraint("rate_limit_per_minute > 0", name="rate_limit_positive"),
        CheckConstraint("harvest_ceiling_per_hour > 0", name="harvest_ceiling_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # ODS code of an NHS body or GSS code of a local authority.
    organisation_code: Mapped[str] = mapped_column(String(9), index=True)
    scopes: Mapped[str] = mapped_column(Text)
    rights: Mapped[list[str]] = mapped_column(JSON, default=list)
    jwks: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="active")
    key_version: Mapped[int] = mapped_column(Integer, default=1)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=600)
    harvest_ceiling_per_hour: Mapped[int] = mapped_column(Integer, default=500)
    # Where the system is told without subscribing (its purge instruction): ``mesh:MAILBOX``
    # or an ``https://`` rest-hook endpoint (docs/holders.md "Being told").
    contact: Mapped[str | None] = mapped_column(String(500))
    # When the harvesting alert last fired for this client: it fires once an hour at most
    # (set by one atomic UPDATE, so that several gateway processes agree).
    harvest_alerted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)


class UsedAssertion(Base):
    """A client assertion ``jti`` already presented, kept until the assertion expires
    (SMART Backend Services: the server must reject a replayed ``jti``)."""

    __tablename__ = "used_assertion"
    __table_args__ = (UniqueConstraint("client_id", "jti"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(100))
    jti: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class RateWindow(Base):
    """Requests granted to one client in one minute, in leases taken by gateway processes
    (``adapter.security.limits``): a counter, not data about anyone."""

    __tablename__ = "rate_window"

    client_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Minutes since the Unix epoch.
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    granted: Mapped[int] = mapped_column(Integer)


class AuditRecord(Base):
    """One access to or change of a child's data (or of the service's state), append-only.

    ``child_ref`` is the child's FHIR logical id while the directory lives; destruction replaces
    it with a keyed hash whose key is then destroyed.
    """

    __tablename__ = "audit_record"
    __table_args__ = (
        CheckConstraint("outcome IN ('0', '4', '8', '12')", name="outcome"),
        Index("ix_audit_record_child_ref_recorded", "child_ref", "recorded"),
        # A client's activity in a time range; holds child_ref and action too, so that the
        # harvesting check (distinct children read by a client in the last hour) reads the
        # index alone.
        Index("ix_audit_record_client_activity", "client_id", "recorded", "child_ref",
              "action"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recorded: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                  index=True)
    client_id: Mapped[str] = mapped_column(String(100))
    organisation_code: Mapped[str] = mapped_column(String(9))
    # read, vread, search, create, update, delete, export, purge, token, alert, ...
    action: Mapped[str] = mapped_column(String(30), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(40))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    child_ref: Mapped[str | None] = mapped_column(String(64))
    # FHIR AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure, 12 major failure.
    outcome: Mapped[str] = mapped_column(String(2), default="0")
    override: Mapped[bool] = mapped_column(Boolean, default=False)
    purpose_of_use: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(64))


@event.listens_for(AuditRecord, "before_update")
@event.listens_for(AuditRecord, "before_delete")
def _refuse_audit_update(*_args: Any) -> None:
    """Audit records are append-only (they cannot be changed through any interface).

    :raises PermissionError: always.
    """
    raise PermissionError("audit records are append-only")


@event.listens_for(Session, "do_orm_execute")
def _refuse_audit_bulk_change(state: ORMExecuteState) -> None:
    """Refuse ORM ``update(AuditRecord)`` / ``delete(AuditRecord)`` statements, which bypass the
    per-object hooks above. (Destruction pseudonymises the trail with a deliberate
    Core statement on the table, not through the ORM.)

    :raises PermissionError: an ORM UPDATE or DELETE of audit records.
    """
    if (state.is_update or state.is_delete) and state.bind_mapper is not None \
            and state.bind_mapper.class_ is AuditRecord:
        raise PermissionError("audit records are append-only")
