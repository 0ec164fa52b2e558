"""The directory entry: child, names, local identifiers, carers, organisations, practitioners,
involvements (docs/domain.md "The directory entry", Regulations 2007 Schedule 1)."""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from adapter import codes, identity
from adapter.models.base import AddressColumns, Base, ContactColumns, PersonNameColumns, utcnow


def careteam_id_default(context: ExecutionContext) -> str | None:
    """Return the FHIR id of a new child's team CareTeam (``identity.team_careteam_id``), as
    the mapping derives it (transform ``careteam_id``)."""
    cpid = context.get_current_parameters().get("contactpoint_id")  # type: ignore[attr-defined]
    return identity.team_careteam_id(cpid) if cpid else None


# Prefix-search indexes that migrations 0010, 0015 and 0016 create per database
# (``text_pattern_ops`` on PostgreSQL, expression indexes on the postcode without spaces, on
# the given names from their second word and on the family name's first three letters):
# SQLAlchemy's model cannot declare them for both databases alike, so the model leaves them to
# the migrations and the model-versus-migrations test checks them by name
# (adapter/store/prefix.py uses them).
SEARCH_INDEXES: Final = ("ix_child_name_family_prefix", "ix_child_name_given_prefix",
                         "ix_child_postcode_prefix", "ix_child_name_given_rest",
                         "ix_child_name_given_many", "ix_child_name_family_walk")
# The entries the one-live-entry-per-NHS-number index covers (migration 0011).
LIVE_ENTRY: Final = "record_status = 'live'"


class Organisation(AddressColumns, ContactColumns, Base):
    """A local authority, school, GP practice, trust or service."""

    __tablename__ = "organisation"
    __table_args__ = (
        CheckConstraint(codes.sql_in("type", codes.ORGANISATION_TYPES), name="type"),
        CheckConstraint("ods_code IS NOT NULL OR urn IS NOT NULL OR gss_code IS NOT NULL",
                        name="has_code"),
        CheckConstraint("type <> 'local-authority' OR gss_code IS NOT NULL", name="la_has_gss"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(30))
    ods_code: Mapped[str | None] = mapped_column(String(6), unique=True)
    urn: Mapped[str | None] = mapped_column(String(6), unique=True)
    gss_code: Mapped[str | None] = mapped_column(String(9), unique=True)
    la_number: Mapped[str | None] = mapped_column(String(3))
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __mapper_args__ = {"version_id_col": version}


class Practitioner(PersonNameColumns, ContactColumns, Base):
    """A named practitioner (health visitor, social worker, lead professional, ...), known by
    an employer's staff id, by national identifiers (``identifiers``), or by both."""

    __tablename__ = "practitioner"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The employing organisation's own staff identifier, unique within it; neither is known
    # of a practitioner that another system identifies by national numbers only.
    local_id: Mapped[str | None] = mapped_column(String(64))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"),
                                                        index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    organisation: Mapped[Organisation | None] = relationship(lazy="joined")
    identifiers: Mapped[list[PractitionerIdentifier]] = relationship(
        back_populates="practitioner", cascade="all, delete-orphan", lazy="selectin",
        order_by="PractitionerIdentifier.id")

    __table_args__ = (
        UniqueConstraint("organisation_id", "local_id"),
        CheckConstraint("(organisation_id IS NULL AND local_id IS NULL) OR "
                        "(organisation_id IS NOT NULL AND local_id IS NOT NULL)",
                        name="staff_id_has_employer"),
    )
    __mapper_args__ = {"version_id_col": version}

    def national_ids(self) -> set[tuple[str, str]]:
        """Return the (system, value) pairs of the practitioner's national identifiers."""
        return {(i.system, i.value) for i in self.identifiers}


class PractitionerIdentifier(Base):
    """A practitioner's national identifier: a regulator's registration number (GMC, GMP,
    NMC, HCPC, GPhC) or the SDS user id (adapter/systems.py PRACTITIONER_SYSTEMS), each
    naming one practitioner only."""

    __tablename__ = "practitioner_identifier"
    __table_args__ = (UniqueConstraint("system", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(
        ForeignKey("practitioner.id", ondelete="CASCADE"), index=True)
    system: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(String(64))

    practitioner: Mapped[Practitioner] = relationship(back_populates="identifiers")


class Child(AddressColumns, Base):
    """A child's directory entry: identity, one address (or a statement), status, retention.

    ``version`` is bumped by every change of the child or of a row that belongs to it
    (see ``adapter.models.versioning``): it is the FHIR ``meta.versionId`` and ETag.
    """

    __tablename__ = "child"
    __table_args__ = (
        CheckConstraint(codes.sql_in("gender", codes.GENDERS), name="gender"),
        CheckConstraint(codes.sql_in("address_status", codes.ADDRESS_STATUSES),
                        name="address_status"),
        CheckConstraint(codes.sql_in("record_status", codes.RECORD_STATUSES),
                        name="record_status"),
        CheckConstraint(
            "nhs_number_status IS NULL OR "
            + codes.sql_in("nhs_number_status", codes.NHS_NUMBER_STATUSES),
            name="nhs_number_status",
        ),
        CheckConstraint(
            "extended_retention IS NULL OR "
            + codes.sql_in("extended_retention", codes.EXTENDED_RETENTION_REASONS),
            name="extended_retention",
        ),
        CheckConstraint("death_date IS NULL OR death_date >= birth_date", name="death_after_birth"),
        CheckConstraint("nhs_number_status IS NULL OR nhs_number IS NOT NULL",
                        name="nhs_status_needs_number"),
        # A statement (no known address, left England) replaces the address: it carries none.
        CheckConstraint(
            "address_status IN ('current', 'last-known') OR (address_postcode IS NULL "
            "AND address_paon IS NULL AND address_street IS NULL AND address_town IS NULL)",
            name="statement_has_no_address",
        ),
        CheckConstraint("address_end IS NULL OR address_start IS NULL "
                        "OR address_end >= address_start", name="address_period_order"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_child_managing_org_updated", "managing_organisation_id", "last_updated", "id"),
        Index("ix_child_birth_date", "birth_date"),
        Index("ix_child_careteam_id", "careteam_id"),
        # One live entry per NHS number (docs/domain.md "The directory entry"): the services
        # refuse a second one with a 409, the database even when two writers race (0011).
        Index("uq_child_live_nhs_number", "nhs_number", unique=True,
              postgresql_where=text(LIVE_ENTRY), sqlite_where=text(LIVE_ENTRY)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    # The id of the child's team CareTeam, derived on insert; stored so that a read by that
    # id finds the child (a uuid5 cannot be inverted).
    careteam_id: Mapped[str | None] = mapped_column(String(64), default=careteam_id_default)
    contactpoint_id: Mapped[str] = mapped_column(String(11), unique=True)
    nhs_number: Mapped[str | None] = mapped_column(String(10), index=True)
    nhs_number_status: Mapped[str | None] = mapped_column(String(2))
    upn: Mapped[str | None] = mapped_column(String(13), index=True)
    gender: Mapped[str] = mapped_column(String(1))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    death_date: Mapped[dt.date | None] = mapped_column(Date)
    address_status: Mapped[str] = mapped_column(String(40), default="current")
    address_start: Mapped[dt.date | None] = mapped_column(Date)
    address_end: Mapped[dt.date | None] = mapped_column(Date)
    shielded: Mapped[bool] = mapped_column(Boolean, default=False)
    record_status: Mapped[str] = mapped_column(String(10), default="live")
    extended_retention: Mapped[str | None] = mapped_column(String(30))
    retention_date: Mapped[dt.date] = mapped_column(Date, index=True)
    managing_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                      index=True)

    managing_organisation: Mapped[Organisation] = relationship()
    names: Mapped[list[ChildName]] = relationship(
        back_populates="child", cascade="all, delete-orphan", order_by="ChildName.position")
    local_identifiers: Mapped[list[LocalIdentifier]] = relationship(
        back_populates="child", cascade="all, delete-orphan", order_by="LocalIdentifier.id")
    carers: Mapped[list[Carer]] = relationship(
        back_populates="child", cascade="all, delete-orphan", order_by="Carer.position")
    involvements: Mapped[list[Involvement]] = relationship(
        back_populates="child", cascade="all, delete-orphan", order_by="Involvement.position")

    __mapper_args__ = {"version_id_col": version}


class ChildName(PersonNameColumns, Base):
    """One of a child's names: the current one or a former one, with its period."""

    __tablename__ = "child_name"
    __table_args__ = (
        CheckConstraint(codes.sql_in("use", codes.NAME_USES), name="use"),
        CheckConstraint("period_end IS NULL OR period_start IS NULL OR period_end >= period_start",
                        name="period_order"),
        UniqueConstraint("child_id", "position"),
        # Search by family name; normalised lower-case for prefix matching.
        Index("ix_child_name_family_norm", "family_norm"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    use: Mapped[str] = mapped_column(String(10))
    family_norm: Mapped[str] = mapped_column(String(35))
    given_norm: Mapped[str] = mapped_column(String(200), default="")
    period_start: Mapped[dt.date | None] = mapped_column(Date)
    period_end: Mapped[dt.date | None] = mapped_column(Date)

    child: Mapped[Child] = relationship(back_populates="names")


class LocalIdentifier(Base):
    """An identifier allocated by one organisation (e.g. a social-care case id).

    Shown only to callers from that organisation (docs/domain.md "Other organisations' numbers").
    """

    __tablename__ = "local_identifier"
    __table_args__ = (UniqueConstraint("organisation_id", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child.id", ondelete="CASCADE"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    value: Mapped[str] = mapped_column(String(64))

    child: Mapped[Child] = relationship(back_populates="local_identifiers")
    organisation: Mapped[Organisation] = relationship(lazy="joined")


class Carer(PersonNameColumns, ContactColumns, AddressColumns, Base):
    """A parent or carer: name, relationship, parental responsibility, contact details."""

    __tablename__ = "carer"
    __table_args__ = (
        CheckConstraint(codes.sql_in("relation", codes.CARER_RELATIONSHIPS), name="relation"),
        UniqueConstraint("child_id", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    relation: Mapped[str] = mapped_column(String(30))
    parental_responsibility: Mapped[bool] = mapped_column(Boolean, default=False)

    child: Mapped[Child] = relationship(back_populates="carers")


class Involvement(ContactColumns, Base):
    """A practitioner or service working with a child, including the school and the GP."""

    __tablename__ = "involvement"
    __table_args__ = (
        CheckConstraint(codes.sql_in("role", codes.INVOLVEMENT_ROLES), name="role"),
        CheckConstraint(
            "consent_basis IS NULL OR " + codes.sql_in("consent_basis", codes.CONSENT_BASES),
            name="consent_basis",
        ),
        # docs/domain.md: a sensitive service's involvement is recorded only with consent or on
        # suspicion of significant harm; sensitive roles are always flagged sensitive.
        CheckConstraint("NOT sensitive OR consent_basis IS NOT NULL", name="sensitive_needs_basis"),
        CheckConstraint(
            "sensitive OR NOT " + codes.sql_in("role", codes.SENSITIVE_ROLES),
            name="sensitive_role_flagged",
        ),
        CheckConstraint("period_end IS NULL OR period_start IS NULL OR period_end >= period_start",
                        name="period_order"),
        # No unique position: involvements are matched by natural key and renumbered in place.
        Index("ix_involvement_organisation", "organisation_id"),
        Index("ix_involvement_practitioner", "practitioner_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # FHIR id of the PractitionerRole this involvement is published as (stable, opaque).
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("child.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(30))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioner.id"))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_basis: Mapped[str | None] = mapped_column(String(20))
    lead_professional: Mapped[bool] = mapped_column(Boolean, default=False)
    caf_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    period_start: Mapped[dt.date | None] = mapped_column(Date)
    period_end: Mapped[dt.date | None] = mapped_column(Date)

    child: Mapped[Child] = relationship(back_populates="involvements")
    organisation: Mapped[Organisation] = relationship(lazy="joined")
    practitioner: Mapped[Practitioner | None] = relationship(lazy="joined")
