"""eCAF assessment references and their Team Around the Child (docs/domain.md "eCAF assessment
references"): the gateway holds references only, never the assessment itself."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from adapter import codes, identity
from adapter.models.base import Base, ContactColumns, utcnow
from adapter.models.directory import Child, Organisation, Practitioner


def lead_role_id_default(context: ExecutionContext) -> str | None:
    """Return the FHIR id of a new assessment's lead professional PractitionerRole, as the
    mapping derives it (``adapter.identity.lead_role_id``)."""
    parameters = context.get_current_parameters()  # type: ignore[attr-defined]
    assessment_id = parameters.get("assessment_id")
    return identity.lead_role_id(assessment_id) if assessment_id else None


class Assessment(ContactColumns, Base):
    """An eCAF assessment reference: id, child, status, dates, lead professional, consent.

    ``phone``/``email`` are the lead professional's contact for this assessment.
    """

    __tablename__ = "assessment"
    __table_args__ = (
        CheckConstraint(codes.sql_in("status", codes.ASSESSMENT_STATUSES), name="status"),
        CheckConstraint("completed_date IS NULL OR started_date IS NULL "
                        "OR completed_date >= started_date", name="completed_after_start"),
        CheckConstraint("closed_date IS NULL OR started_date IS NULL "
                        "OR closed_date >= started_date", name="closed_after_start"),
        CheckConstraint("status <> 'closed' OR closed_date IS NOT NULL", name="closed_has_date"),
        CheckConstraint("status NOT IN ('completed', 'closed') OR completed_date IS NOT NULL "
                        "OR status = 'closed'", name="completed_has_date"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_assessment_lead_role_id", "lead_role_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The id of the lead professional's PractitionerRole, derived on insert; stored so that a
    # read by that id finds the assessment (a uuid5 cannot be inverted).
    lead_role_id: Mapped[str | None] = mapped_column(String(64), default=lead_role_id_default)
    # The eCAF system's own assessment id, unique within the issuing eCAF deployment.
    assessment_id: Mapped[str] = mapped_column(String(64), unique=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    started_date: Mapped[dt.date | None] = mapped_column(Date)
    completed_date: Mapped[dt.date | None] = mapped_column(Date)
    closed_date: Mapped[dt.date | None] = mapped_column(Date)
    lead_practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioner.id"))
    lead_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    consent_to_share: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                      index=True)

    child: Mapped[Child] = relationship()
    lead_practitioner: Mapped[Practitioner | None] = relationship(lazy="joined")
    lead_organisation: Mapped[Organisation] = relationship(lazy="joined")
    members: Mapped[list[TeamMember]] = relationship(
        back_populates="assessment", cascade="all, delete-orphan", order_by="TeamMember.position")

    __mapper_args__ = {"version_id_col": version}


class TeamMember(ContactColumns, Base):
    """A member of the Team Around the Child of one assessment."""

    __tablename__ = "team_member"
    __table_args__ = (
        CheckConstraint(codes.sql_in("role", codes.INVOLVEMENT_ROLES), name="role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # FHIR id of the PractitionerRole this team member is published as (stable, opaque).
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    assessment_id: Mapped[int] = mapped_column(
        ForeignKey("assessment.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(30))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioner.id"))

    assessment: Mapped[Assessment] = relationship(back_populates="members")
    organisation: Mapped[Organisation] = relationship(lazy="joined")
    practitioner: Mapped[Practitioner | None] = relationship(lazy="joined")
