"""Canonical records as plain dicts, and transient ORM records built from them.

``canonical_dump(child)`` is everything a directory entry holds as a plain dict of Python
values (dates, booleans, lists), without the database's integer ids, the derived FHIR resource
ids and the derived search keys: two dumps are equal exactly when two entries say the same
thing. Readers of every dialect produce these dicts; ``ChildRecord`` and ``AssessmentRecord``
turn them into transient (not session-bound) ORM objects, with organisations and practitioners
carrying their natural keys so that a service layer can resolve them or create them.

Natural keys: an organisation is keyed by its ODS code, else its school URN, else its GSS code;
a practitioner by the organisation's key and its local id.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, Final

from adapter import identity
from adapter.errors import Invalid
from adapter.identity import ORGANISATION_CODES
from adapter.models.assessment import Assessment, TeamMember
from adapter.models.directory import (
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    Practitioner,
    PractitionerIdentifier,
)

Canonical = dict[str, Any]
OrganisationKey = tuple[str, str]
PractitionerKey = tuple[OrganisationKey, str]

ADDRESS_FIELDS: Final = ("address_saon", "address_paon", "address_street", "address_locality",
                         "address_town", "address_postcode", "address_uprn")
CONTACT_FIELDS: Final = ("phone", "email")
NAME_FIELDS: Final = ("title", "given", "family")
ORGANISATION_FIELDS: Final = ("name", "type", "ods_code", "urn", "gss_code", "la_number",
                              *ADDRESS_FIELDS, *CONTACT_FIELDS)
PRACTITIONER_FIELDS: Final = ("local_id", *NAME_FIELDS, *CONTACT_FIELDS)
CHILD_FIELDS: Final = ("contactpoint_id", "nhs_number", "nhs_number_status", "upn", "gender",
                       "birth_date", "death_date", "address_status", *ADDRESS_FIELDS,
                       "address_start", "address_end", "shielded", "record_status",
                       "extended_retention", "retention_date")
META_FIELDS: Final = ("version", "last_updated")
CHILD_NAME_FIELDS: Final = ("use", *NAME_FIELDS, "period_start", "period_end")
CARER_FIELDS: Final = ("relation", "parental_responsibility", *NAME_FIELDS, *CONTACT_FIELDS,
                       *ADDRESS_FIELDS)
INVOLVEMENT_FIELDS: Final = ("role", "sensitive", "consent_basis", "lead_professional",
                             "caf_completed", "period_start", "period_end", *CONTACT_FIELDS)
ASSESSMENT_FIELDS: Final = ("assessment_id", "status", "started_date", "completed_date",
                            "closed_date", "consent_to_share", *CONTACT_FIELDS)
TEAM_MEMBER_FIELDS: Final = ("role", *CONTACT_FIELDS)
BOOLEAN_FIELDS: Final = frozenset({"shielded", "parental_responsibility", "sensitive",
                                   "lead_professional", "caf_completed", "consent_to_share"})
# Lengths of the search-key columns ChildName.family_norm and ChildName.given_norm.
FAMILY_NORM_LENGTH: Final = 35
GIVEN_NORM_LENGTH: Final = 200


# --- dumps -------------------------------------------------------------------------------

def _fields(obj: object, names: Iterable[str]) -> Canonical:
    """Return the named attributes of ``obj``; unset booleans are False, given names a list."""
    out: Canonical = {}
    for name in names:
        value = getattr(obj, name)
        if name in BOOLEAN_FIELDS:
            value = bool(value)
        elif name == "given":
            value = list(value or ())
        out[name] = value
    return out


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Return ``value`` as an aware UTC datetime (SQLite returns naive UTC ones)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def organisation_dump(org: Organisation) -> Canonical:
    """Return an organisation's natural keys and details."""
    return _fields(org, ORGANISATION_FIELDS)


def practitioner_dump(practitioner: Practitioner | None) -> Canonical | None:
    """Return a practitioner's local id, name, contact and employing organisation."""
    if practitioner is None:
        return None
    data = _fields(practitioner, PRACTITIONER_FIELDS)
    org = practitioner.organisation
    data["organisation"] = organisation_dump(org) if org is not None else None
    if practitioner.identifiers:  # only when held: a staff id's description stays as it was
        data["identifiers"] = [{"system": system, "value": value}
                               for system, value in sorted(practitioner.national_ids())]
    return data


def _local_identifiers_dump(child: Child) -> list[Canonical]:
    """Return a child's local identifiers with their organisations."""
    return [{"organisation": organisation_dump(li.organisation), "value": li.value}
            for li in child.local_identifiers]


def _involvement_dump(involvement: Involvement) -> Canonical:
    """Return one involvement with its organisation and practitioner."""
    data = _fields(involvement, INVOLVEMENT_FIELDS)
    data["organisation"] = organisation_dump(involvement.organisation)
    data["practitioner"] = practitioner_dump(involvement.practitioner)
    return data


def _meta_dump(record: Child | Assessment) -> Canonical:
    """Return the version and last-updated time of a record."""
    return {"version": record.version, "last_updated": as_utc(record.last_updated)}


def canonical_dump(child: Child, *, meta: bool = True) -> Canonical:
    """Return everything a directory entry holds as a plain, comparable dict.

    With ``meta`` the record's ``version`` and ``last_updated`` are included.
    """
    data = _fields(child, CHILD_FIELDS)
    data["managing_organisation"] = organisation_dump(child.managing_organisation)
    data["names"] = [_fields(name, CHILD_NAME_FIELDS) for name in child.names]
    data["local_identifiers"] = _local_identifiers_dump(child)
    data["carers"] = [_fields(carer, CARER_FIELDS) for carer in child.carers]
    data["involvements"] = [_involvement_dump(inv) for inv in child.involvements]
    if meta:
        data.update(_meta_dump(child))
    return data


def child_reference_dump(child: Child) -> Canonical:
    """Return the identifiers by which an assessment reference names its child."""
    return {"contactpoint_id": child.contactpoint_id, "nhs_number": child.nhs_number,
            "upn": child.upn, "local_identifiers": _local_identifiers_dump(child)}


def _team_member_dump(member: TeamMember) -> Canonical:
    """Return one member of the Team Around the Child."""
    data = _fields(member, TEAM_MEMBER_FIELDS)
    data["organisation"] = organisation_dump(member.organisation)
    data["practitioner"] = practitioner_dump(member.practitioner)
    return data


def canonical_assessment_dump(assessment: Assessment, *, meta: bool = True) -> Canonical:
    """Return everything an eCAF assessment reference holds as a plain, comparable dict."""
    data = _fields(assessment, ASSESSMENT_FIELDS)
    data["child"] = child_reference_dump(assessment.child)
    data["lead_organisation"] = organisation_dump(assessment.lead_organisation)
    data["lead_practitioner"] = practitioner_dump(assessment.lead_practitioner)
    data["members"] = [_team_member_dump(member) for member in assessment.members]
    if meta:
        data.update(_meta_dump(assessment))
    return data


def without_meta(data: Mapping[str, Any]) -> Canonical:
    """Return a canonical dict without ``version`` and ``last_updated``."""
    return {key: value for key, value in data.items() if key not in META_FIELDS}


# --- natural keys ------------------------------------------------------------------------

def organisation_codes(data: Mapping[str, Any]) -> list[OrganisationKey]:
    """Return every code of an organisation as (scheme, code), the natural key first."""
    return [(scheme, data[field]) for scheme, field in ORGANISATION_CODES if data.get(field)]


def organisation_key(data: Mapping[str, Any]) -> OrganisationKey:
    """Return an organisation's natural key: ODS code, else school URN, else GSS code.

    :raises Invalid: the organisation has none of these codes.
    """
    try:
        return identity.organisation_key(data)
    except ValueError as error:
        raise Invalid(str(error)) from error


def practitioner_key(data: Mapping[str, Any]) -> PractitionerKey:
    """Return a practitioner's natural key: the employer's key and the local id; of one
    known only by national identifiers, ("national", "") and the first of them
    (``system|value``)."""
    if data.get("organisation") is None:
        first = min((i["system"], i["value"]) for i in data.get("identifiers") or ())
        return ("national", ""), "|".join(first)
    return organisation_key(data["organisation"]), str(data["local_id"])


class OrganisationIndex:
    """The organisations and practitioners of one record, each described one way only."""

    def __init__(self) -> None:
        self.organisations: dict[OrganisationKey, Canonical] = {}
        self.practitioners: dict[PractitionerKey, Canonical] = {}

    def add_organisation(self, data: Canonical, expression: str | None = None) -> None:
        """Register an organisation under each of its codes.

        :raises Invalid: the record describes an organisation with one of these codes
            differently elsewhere.
        """
        codes = organisation_codes(data)
        for code in codes:
            known = self.organisations.get(code)
            if known is not None and known != data:
                raise Invalid("the organisation is described differently elsewhere in the "
                              "record", expression=expression)
        for code in codes:
            self.organisations[code] = data

    def add_practitioner(self, data: Canonical, expression: str | None = None) -> None:
        """Register a practitioner under its natural key.

        :raises Invalid: the record describes the same practitioner differently elsewhere.
        """
        key = practitioner_key(data)
        known = self.practitioners.get(key)
        if known is not None and known != data:
            raise Invalid("the practitioner is described differently elsewhere in the record",
                          expression=expression)
        self.practitioners[key] = data


# --- transient ORM records ---------------------------------------------------------------

def normalise_name(text: str) -> str:
    """Return the search key of a name: accents removed, case folded, spaces collapsed.

    FHIR string search matches "case- and accent-insensitive" (FHIR R4 search.html#string).
    """
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.casefold().split())


def _present(data: Mapping[str, Any], names: Iterable[str]) -> Canonical:
    """Return the named values of ``data`` that are not None, as constructor arguments.

    An unset column reads None on a transient object and inserts its default, so leaving
    the Nones out changes nothing but the cost: each set attribute goes through SQLAlchemy's
    instrumentation.
    """
    return {name: value for name in names if (value := data[name]) is not None}


class ObjectBuilder:
    """Builds transient ORM objects, one Organisation and Practitioner per natural key."""

    def __init__(self) -> None:
        self.organisations: dict[OrganisationKey, Organisation] = {}
        self.practitioners: dict[PractitionerKey, Practitioner] = {}

    def organisation(self, data: Mapping[str, Any]) -> Organisation:
        """Return the Organisation for ``data``, made once per natural key."""
        key = organisation_key(data)
        org = self.organisations.get(key)
        if org is None:
            org = Organisation(**_present(data, ORGANISATION_FIELDS))
            self.organisations[key] = org
        return org

    def practitioner(self, data: Mapping[str, Any] | None) -> Practitioner | None:
        """Return the Practitioner for ``data``, made once per natural key."""
        if data is None:
            return None
        key = practitioner_key(data)
        practitioner = self.practitioners.get(key)
        if practitioner is None:
            employer = data.get("organisation")
            practitioner = Practitioner(
                **_present(data, PRACTITIONER_FIELDS),
                organisation=self.organisation(employer) if employer is not None else None,
                identifiers=[PractitionerIdentifier(system=i["system"], value=i["value"])
                             for i in data.get("identifiers") or ()])
            self.practitioners[key] = practitioner
        return practitioner

    def local_identifiers(self, items: Iterable[Mapping[str, Any]]) -> list[LocalIdentifier]:
        """Return LocalIdentifier objects with their organisations."""
        return [LocalIdentifier(organisation=self.organisation(item["organisation"]),
                                value=item["value"]) for item in items]


def _child_name(position: int, data: Mapping[str, Any]) -> ChildName:
    """Return a ChildName with its search keys."""
    return ChildName(position=position, **_present(data, CHILD_NAME_FIELDS),
                     family_norm=normalise_name(data["family"])[:FAMILY_NORM_LENGTH],
                     given_norm=normalise_name(" ".join(data["given"]))[:GIVEN_NORM_LENGTH])


def _involvement(builder: ObjectBuilder, position: int, data: Mapping[str, Any]) -> Involvement:
    """Return an Involvement with its organisation and practitioner."""
    return Involvement(position=position, **_present(data, INVOLVEMENT_FIELDS),
                       organisation=builder.organisation(data["organisation"]),
                       practitioner=builder.practitioner(data["practitioner"]))


def build_child(data: Mapping[str, Any]) -> tuple[Child, ObjectBuilder]:
    """Return a transient Child with its parts, and the builder holding its organisations.

    ``version`` and ``last_updated`` are left to the database.
    """
    builder = ObjectBuilder()
    child = Child(**_present(data, CHILD_FIELDS),
                  managing_organisation=builder.organisation(data["managing_organisation"]))
    child.names = [_child_name(i, name) for i, name in enumerate(data["names"])]
    child.local_identifiers = builder.local_identifiers(data["local_identifiers"])
    child.carers = [Carer(position=i, **_present(carer, CARER_FIELDS))
                    for i, carer in enumerate(data["carers"])]
    child.involvements = [_involvement(builder, i, inv)
                          for i, inv in enumerate(data["involvements"])]
    return child, builder


def build_assessment(data: Mapping[str, Any]) -> tuple[Assessment, ObjectBuilder]:
    """Return a transient Assessment with its team, and the builder holding its organisations.

    The child is left out: the service layer resolves it from ``data["child"]``.
    """
    builder = ObjectBuilder()
    assessment = Assessment(**_present(data, ASSESSMENT_FIELDS),
                            lead_organisation=builder.organisation(data["lead_organisation"]),
                            lead_practitioner=builder.practitioner(data["lead_practitioner"]))
    assessment.members = [
        TeamMember(position=i, **_present(member, TEAM_MEMBER_FIELDS),
                   organisation=builder.organisation(member["organisation"]),
                   practitioner=builder.practitioner(member["practitioner"]))
        for i, member in enumerate(data["members"])]
    return assessment, builder


class _BuiltRecord(ABC):
    """A record read from a dialect: its canonical dict and, made once on first use, the
    transient objects it describes with the Organisations and Practitioners they refer to."""

    def __init__(self, data: Canonical) -> None:
        self.data = data

    @abstractmethod
    def _build(self) -> tuple[Any, ObjectBuilder]:
        """Make the transient objects (each record type says how)."""

    @cached_property
    def _built(self) -> tuple[Any, ObjectBuilder]:
        """The transient objects, made once."""
        return self._build()

    @property
    def organisations(self) -> dict[OrganisationKey, Organisation]:
        """The transient Organisations the record refers to, by natural key."""
        return self._built[1].organisations

    @property
    def practitioners(self) -> dict[PractitionerKey, Practitioner]:
        """The transient Practitioners the record refers to, by natural key."""
        return self._built[1].practitioners


class ChildRecord(_BuiltRecord):
    """A directory entry read from a dialect, as a canonical dict and transient objects.

    On first use it builds the transient Child with its parts and the Organisation and
    Practitioner objects it refers to.

    Resource ids and versions are left to the service layer, which resolves organisations and
    practitioners by natural key before it adds the child to a session.
    """

    @property
    def contactpoint_id(self) -> str:
        """The child's ContactPoint ID."""
        return str(self.data["contactpoint_id"])

    def _build(self) -> tuple[Child, ObjectBuilder]:
        return build_child(self.data)

    @property
    def child(self) -> Child:
        """The transient Child with names, identifiers, carers and involvements."""
        child: Child = self._built[0]
        return child


class AssessmentRecord(_BuiltRecord):
    """An eCAF assessment reference read from a dialect, as a canonical dict and objects.

    It holds the identifiers of its child and, on first use, the transient Assessment with its
    team.
    """

    @property
    def assessment_id(self) -> str:
        """The eCAF assessment id."""
        return str(self.data["assessment_id"])

    @property
    def child_reference(self) -> Canonical:
        """The child's identifiers: contactpoint_id, nhs_number, upn, local_identifiers."""
        reference: Canonical = self.data["child"]
        return reference

    def _build(self) -> tuple[Assessment, ObjectBuilder]:
        return build_assessment(self.data)

    @property
    def assessment(self) -> Assessment:
        """The transient Assessment with lead professional and team members (no child)."""
        assessment: Assessment = self._built[0]
        return assessment
