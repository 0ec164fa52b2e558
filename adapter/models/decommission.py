"""The decommissioning (docs/architecture.md "Decommissioning"): the plan with its timetable
and phase, one purge Task per system that received children's data, and the children each
Task names (a snapshot of the delivery ledger taken at switch-off).

None of these tables holds a child's data except ``purge_task_item.child_ref`` (the FHIR id of
a child's Patient), which destruction deletes; a purge Task keeps only its status and counts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from adapter.models.base import Base, utcnow

# live -> run-down -> switched-off -> destroyed (docs/domain.md "The decommissioning timetable").
PHASES: Final = ("live", "run-down", "switched-off", "destroyed")
# FHIR R4 task-status codes a purge Task may take (task.html#statemachine).
TASK_STATUSES: Final = ("requested", "received", "accepted", "rejected", "in-progress",
                        "completed", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    """Return a CHECK expression ``column IN (...)``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class DecommissionPlan(Base):
    """The one decommissioning plan: its timetable (instants in UTC), the phase the service is
    in, when each phase was entered, and the signed destruction certificate once issued."""

    __tablename__ = "decommission_plan"
    __table_args__ = (
        CheckConstraint("id = 1", name="singleton"),
        CheckConstraint(_in("phase", PHASES), name="phase"),
        CheckConstraint("run_down_at < switch_off_at AND switch_off_at < destroy_by_at",
                        name="timetable_order"),
        CheckConstraint("reminder_days > 0 AND escalate_days >= 0", name="intervals"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    phase: Mapped[str] = mapped_column(String(20), default="live")
    # The day of last use as announced; run-down starts at its first moment (local time).
    last_use: Mapped[dt.date] = mapped_column(Date)
    run_down_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    switch_off_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    destroy_by_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    time_zone: Mapped[str] = mapped_column(String(40))
    # A drill: dates in the past or a short purge window were allowed (README
    # "Decommissioning"); said in every notice, on the dashboard and in the certificate.
    drill: Mapped[bool] = mapped_column(Boolean, default=False)
    reminder_days: Mapped[int] = mapped_column(Integer)
    escalate_days: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    planned_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When each phase was actually entered (advance, destroy).
    run_down_started: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    switched_off: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    destroyed: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # {"certificate": {...}, "signature": "..."} and its XML form, once destruction is done.
    certificate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    certificate_xml: Mapped[str | None] = mapped_column(Text)


class PurgeTask(Base):
    """One purge instruction: a FHIR R4 Task addressed to one client system (its ``owner`` is
    the client's organisation), and that system's answer."""

    __tablename__ = "purge_task"
    __table_args__ = (
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        CheckConstraint("children >= 0 AND reminders >= 0", name="counts"),
        CheckConstraint("purged IS NULL OR purged >= 0", name="purged"),
        Index("ix_purge_task_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(100), unique=True)
    organisation_code: Mapped[str] = mapped_column(String(9))
    # The organisation's name when the Task was issued (the directory's organisations are
    # destroyed, the dashboard and the certificate still name the holder).
    organisation_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default="requested")
    # Why the system rejected (or failed) the instruction, in its own words.
    status_reason: Mapped[str | None] = mapped_column(String(500))
    children: Mapped[int] = mapped_column(Integer)
    # How many records the system says it destroyed (Task.output purge-count).
    purged: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    issued: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When the Task first reached its owner: a notification carrying it was delivered, or the
    # owner read or searched it (``adapter.decommission.tasks.reached``); None: never sent.
    delivered: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    answered: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    completed: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reminders: Mapped[int] = mapped_column(Integer, default=0)
    last_reminded: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    escalated: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class PurgeTaskItem(Base):
    """One child a purge Task names: the Patient id the system received (from the ledger)."""

    __tablename__ = "purge_task_item"

    task_id: Mapped[int] = mapped_column(ForeignKey("purge_task.id", ondelete="CASCADE"),
                                         primary_key=True)
    child_ref: Mapped[str] = mapped_column(String(64), primary_key=True)


class OperatorExport(Base):
    """Files an operator's ``export`` command wrote without ``--as`` (no client holds them, so
    no purge Task covers them): destruction removes them and the certificate says so."""

    __tablename__ = "operator_export"

    id: Mapped[int] = mapped_column(primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The managing authority exported (a GSS code) and the format.
    authority: Mapped[str] = mapped_column(String(9))
    format: Mapped[str] = mapped_column(String(20))
    folder: Mapped[str] = mapped_column(Text)
    # The files written, as absolute paths.
    files: Mapped[list[str]] = mapped_column(JSON, default=list)
    # When destruction removed them.
    removed: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
