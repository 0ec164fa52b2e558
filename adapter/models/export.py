"""Bulk export jobs (FHIR Bulk Data Access IG v2, export.html): kept in the database so that
any gateway process can answer a status request, whichever process runs the job. A job holds
no personal data: its files under ``<instance>/exports/<job_id>/`` do, and are deleted when
the job expires, is deleted by its client, fails, or the service is destroyed."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import JSON, CheckConstraint, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from adapter import codes
from adapter.models.base import Base, utcnow

# accepted -> in-progress -> completed | failed; any of them -> cancelled (DELETE).
EXPORT_STATES: Final = ("accepted", "in-progress", "completed", "failed", "cancelled")
RUNNING_STATES: Final = ("accepted", "in-progress")
EXPORT_LEVELS: Final = ("system", "group", "patient")


class ExportJob(Base):
    """One ``$export`` request: who asked for what, how far it got, and the files it wrote."""

    __tablename__ = "export_job"
    __table_args__ = (
        CheckConstraint(codes.sql_in("state", EXPORT_STATES), name="state"),
        CheckConstraint(codes.sql_in("level", EXPORT_LEVELS), name="level"),
        CheckConstraint("children_done >= 0 AND children_total >= 0", name="progress"),
        # The sweep finds stalled running jobs and expired finished ones by these.
        Index("ix_export_job_state_heartbeat", "state", "heartbeat"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Random and unguessable: it is part of the status and file URLs.
    job_id: Mapped[str] = mapped_column(String(32), unique=True)
    # The client that started the job: the only one served its status and files.
    client_id: Mapped[str] = mapped_column(String(100), index=True)
    organisation_code: Mapped[str] = mapped_column(String(9))
    scopes: Mapped[str] = mapped_column(Text)
    rights: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose_of_use: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(7))
    # The Group id of a group-level export as given in the URL, and the authority it named.
    group_id: Mapped[str | None] = mapped_column(String(64))
    authority_id: Mapped[int | None] = mapped_column(Integer)
    # The logical ids of the Patients a POST kick-off's ``patient`` parameter restricted the
    # export to (export.html "Query Parameters": patient); None when not restricted.
    patients: Mapped[list[str] | None] = mapped_column(JSON)
    types: Mapped[list[str]] = mapped_column(JSON)
    since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    output_format: Mapped[str] = mapped_column(String(40))
    request_url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(12), default="accepted")
    children_total: Mapped[int] = mapped_column(Integer, default=0)
    children_done: Mapped[int] = mapped_column(Integer, default=0)
    # What the job is writing now, for X-Progress (no personal data).
    phase: Mapped[str] = mapped_column(String(60), default="queued")
    # [{"type": ..., "file": ..., "count": ...}] of the finished job's files.
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # OperationOutcome issues decided at kick-off (parameters ignored under handling=lenient).
    notes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    failure: Mapped[str | None] = mapped_column(String(500))
    transaction_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expires: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
