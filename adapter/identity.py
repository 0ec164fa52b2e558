"""Every identity rule of the gateway in one place: the natural keys of organisations,
practitioners, involvements and eCAF team members, and the FHIR logical id of every resource.

A logical id is the UUIDv5 of the resource type and its natural key
(``adapter.identifiers.resource_id_for``), so that the same record gets the same id however it
arrives (FHIR write, bulk import, directory XML, demo data) and a re-import is idempotent
(docs/domain.md; README "Identifiers"). Nothing else in ``adapter/`` derives an id: every
writer, reader and history rebuild calls the rule named here (tests/test_identity.py checks).

Pure: no database, no Flask, no model classes; records are read by attribute or key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from adapter import systems
from adapter.identifiers import resource_id_for

# An organisation's natural key is its ODS code, else its school URN, else its GSS code:
# (scheme, column) in that order.
ORGANISATION_CODES: Final = (("ods", "ods_code"), ("urn", "urn"), ("gss", "gss_code"))


def _value(record: Mapping[str, Any] | object, name: str) -> Any:
    """Return field ``name`` of a dict or an attribute of an object (None when absent)."""
    if type(record) is dict:  # canonical dicts: no ABC check (bulk imports ask per part)
        return record.get(name)
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


# --- natural keys ------------------------------------------------------------------------

def organisation_code_column(org: Mapping[str, Any] | object) -> tuple[str, str] | None:
    """Return (column, code) of an organisation's natural code, or None when it has none."""
    for _scheme, column in ORGANISATION_CODES:
        code = _value(org, column)
        if code:
            return column, str(code)
    return None


def organisation_key(org: Mapping[str, Any] | object) -> tuple[str, str]:
    """Return an organisation's natural key (scheme, code): ODS code, else school URN, else
    GSS code.

    :raises ValueError: the organisation has none of these codes.
    """
    for scheme, column in ORGANISATION_CODES:
        code = _value(org, column)
        if code:
            return scheme, str(code)
    raise ValueError("an organisation needs an ODS code, a school URN or a GSS code")


def organisation_code(org: Mapping[str, Any] | object) -> str:
    """Return an organisation's natural code (the code of :func:`organisation_key`).

    :raises ValueError: the organisation has no code.
    """
    return organisation_key(org)[1]


def first_national_id(ids: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """Return the first of a practitioner's national identifiers (system, value): in
    ``adapter.systems.PRACTITIONER_SYSTEMS`` order, then by value.

    :raises ValueError: no identifiers.
    """
    order = list(systems.PRACTITIONER_SYSTEMS)
    ranked = sorted(ids, key=lambda pair: (order.index(pair[0]), pair[1]))
    if not ranked:
        raise ValueError("a practitioner without a staff id needs a national identifier")
    return ranked[0]


def practitioner_key_text(local_id: str | None, national_ids: Iterable[tuple[str, str]]) -> str:
    """Return what names a practitioner in an involvement's or team member's key: the staff
    id, else the first national identifier as ``system|value`` ("" without either)."""
    if local_id:
        return local_id
    ids = list(national_ids)
    return "|".join(first_national_id(ids)) if ids else ""


def practitioner_dict_key_text(data: Mapping[str, Any] | None) -> str:
    """Return :func:`practitioner_key_text` of a canonical practitioner dict (None: "")."""
    if data is None:
        return ""
    return practitioner_key_text(data.get("local_id"), (
        (i["system"], i["value"]) for i in data.get("identifiers") or ()))


def involvement_key(role: str, organisation: str, practitioner: str,
                    period_start: object = None) -> str:
    """Return the natural key of an involvement: role, organisation code, practitioner
    (:func:`practitioner_key_text`) and start date. Matching on it keeps each involvement's
    row and PractitionerRole id (``adapter.store.records.merge_keyed``)."""
    return f"{role}/{organisation}/{practitioner}/{period_start or ''}"


def team_member_key(role: str, organisation: str, practitioner: str) -> str:
    """Return the natural key of an eCAF team member: an involvement's without a start."""
    return involvement_key(role, organisation, practitioner)


def part_key(part: object) -> str:
    """Return the natural key of a stored involvement or team member (``adapter.models``):
    role, organisation, practitioner and start date (:func:`involvement_key`). Matching on it
    keeps each one's row and PractitionerRole id."""
    organisation = organisation_code(_value(part, "organisation"))
    person = _value(part, "practitioner")
    practitioner = ("" if person is None
                    else practitioner_key_text(person.local_id, person.national_ids()))
    return involvement_key(_value(part, "role"), organisation, practitioner,
                           _value(part, "period_start"))


# --- resource ids ------------------------------------------------------------------------

def patient_id(cpid: str) -> str:
    """Return the Patient id of a child: from its ContactPoint ID."""
    return resource_id_for("Patient", cpid)


def team_careteam_id(cpid: str) -> str:
    """Return the id of a child's team CareTeam: from its ContactPoint ID."""
    return resource_id_for("CareTeam", f"team/{cpid}")


def ecaf_careteam_id(assessment_id: str) -> str:
    """Return the id of an eCAF assessment's CareTeam: from its assessment id."""
    return resource_id_for("CareTeam", f"ecaf/{assessment_id}")


def involvement_role_id(cpid: str, key: str) -> str:
    """Return the PractitionerRole id of a child's involvement: from the ContactPoint ID and
    the involvement's natural key (:func:`involvement_key`), never its list position."""
    return resource_id_for("PractitionerRole", f"{cpid}/{key}")


def lead_role_id(assessment_id: str) -> str:
    """Return the PractitionerRole id of an eCAF assessment's lead professional."""
    return resource_id_for("PractitionerRole", f"ecaf/{assessment_id}/lead")


def member_role_id(assessment_id: str, key: str) -> str:
    """Return the PractitionerRole id of an eCAF team member: from the assessment id and the
    member's natural key (:func:`team_member_key`), never its list position."""
    return resource_id_for("PractitionerRole", f"ecaf/{assessment_id}/{key}")


def contained_role_id(local_id: str) -> str:
    """Return the key under which a CareTeam's contained PractitionerRole ``#local_id`` is
    looked up while the CareTeam is read (it never becomes a stored id)."""
    return resource_id_for("PractitionerRole", f"contained/{local_id}")


def organisation_id(code: str) -> str:
    """Return the Organization id of an organisation: from its natural code."""
    return resource_id_for("Organization", code)


def practitioner_id(organisation: str, local_id: str) -> str:
    """Return the Practitioner id of a member of staff: the employer's natural code and the
    staff id."""
    return resource_id_for("Practitioner", f"{organisation}/{local_id}")


def national_practitioner_id(ids: Iterable[tuple[str, str]]) -> str:
    """Return the Practitioner id of a practitioner known only by national identifiers: from
    the first of them (:func:`first_national_id`) as ``system|value``.

    :raises ValueError: no identifiers.
    """
    system, value = first_national_id(ids)
    return resource_id_for("Practitioner", f"{system}|{value}")
