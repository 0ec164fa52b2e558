"""The write-authority policy: who may create or change which record (docs/domain.md "The
directory entry", docs/architecture.md "Policy"). One rule for every dialect and path (FHIR
create and update, transaction and batch Bundles, directory XML, the ``import`` command):

- a child's entry is written by its managing authority's systems; through FHIR a child's
  team (CareTeam, its PractitionerRoles contained) is written by those systems, and in it an
  involvement is added, changed or ended only by the organisation providing it (the GP
  practices also by the managing authority, through ``Patient.generalPractitioner``),
  while a directory XML entry is the managing authority's whole record of its child,
  involvements included; an eCAF assessment reference is written by the lead professional's
  organisation or the child's managing authority; an administrator (the national directory
  team, the ``import`` command without ``--as``) writes any of them;
- a **shared** record (an organisation; a practitioner, owned by their employer) is changed
  only by the organisation that owns it or an administrator. Anyone may *refer* to it, and a
  directory XML record may *describe* it as the directory holds it, but a description that
  differs from the stored record is a change another organisation's record does not take:
  the record carrying it is refused with a reason (never applied in part), and nothing is
  written. A shared record the directory does not hold yet may be introduced by the record
  that first describes it (the directory cannot refer to what it does not hold); from then on
  its owner maintains it.

Services ask these functions; nothing else decides who may write what.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from adapter.errors import Forbidden, Invalid
from adapter.models import Organisation
from adapter.models.canonical import ORGANISATION_FIELDS, PRACTITIONER_FIELDS
from adapter.security.caller import Caller

ADMIN: Final = "admin"
# Readable names of the columns a description of a shared record may differ in.
FIELD_NAMES: Final = {"name": "name", "type": "type", "ods_code": "ODS code",
                      "urn": "school URN", "gss_code": "GSS code",
                      "la_number": "authority number", "phone": "telephone",
                      "email": "e-mail", "local_id": "staff id", "title": "title",
                      "given": "given names", "family": "family name"}
NOT_YOURS: Final = "not your record: "

# An organisation as the services hold it: a model object, a canonical dict or its codes.
OrganisationLike = Organisation | Mapping[str, Any] | frozenset[str]


def codes_of(org: OrganisationLike | None) -> set[str]:
    """Return every code naming an organisation (ODS code, school URN, GSS code)."""
    if org is None:
        return set()
    if isinstance(org, frozenset):
        return {code for code in org if code}
    if isinstance(org, Organisation):
        values = (org.ods_code, org.urn, org.gss_code)
    else:
        values = (org.get("ods_code"), org.get("urn"), org.get("gss_code"))
    return {code for code in values if code}


def is_administrator(caller: Caller) -> bool:
    """Return True for the national directory team (the ``admin`` right)."""
    return caller.has_right(ADMIN)


def acts_for(org: OrganisationLike | None, caller: Caller) -> bool:
    """Return True when ``caller`` is ``org`` itself, or an administrator."""
    return is_administrator(caller) or caller.organisation_code in codes_of(org)


# --- children, involvements, eCAF assessment references -------------------------------------

def may_write_child(authority: OrganisationLike | None, caller: Caller) -> bool:
    """Return True when ``caller`` may create or change an entry managed by ``authority``."""
    return acts_for(authority, caller)


def require_child_writer(authority: OrganisationLike | None, caller: Caller,
                         expression: str) -> None:
    """A client writes only entries its own organisation manages (docs/domain.md "The
    directory entry": every entry belongs to one managing local authority).

    :raises Forbidden: another authority's entry.
    """
    if not may_write_child(authority, caller):
        raise Forbidden("You may write only entries whose managing authority is your own "
                        f"organisation ({caller.organisation_code}).", expression=expression)


def implied_managing_authority(caller: Caller, own: Organisation | None,
                               expression: str) -> Organisation:
    """Return the managing authority of an entry written without naming one: the caller's
    own authority, when the caller is that authority's system (``own``: the stored local
    authority whose code is the caller's organisation). Every entry has one managing
    authority (docs/domain.md "The directory entry"), and an authority's system writes only
    its own entries, so there is nothing to guess. A national client (the national directory
    team, an administrator, writing for every authority) or a system of any other
    organisation must name it.

    :raises Invalid: the caller is not an authority's system.
    """
    if own is not None and own.type == "local-authority" and not is_administrator(caller):
        return own
    who = ("a national client (the national directory team's right)"
           if is_administrator(caller) else
           f"your organisation ({caller.organisation_code}) is not a local authority here")
    raise Invalid(f"{expression} is required: {who}, so the entry's managing local authority "
                  "must be named (an authority's own system may leave it out: the entry is "
                  "then its own).", expression=expression)


def may_write_involvement(provider: OrganisationLike | None, caller: Caller) -> bool:
    """Return True when ``caller`` may add, change or end, through FHIR, an involvement of
    ``provider`` (a directory XML entry is written whole by ``may_write_child``)."""
    return acts_for(provider, caller)


def may_write_assessment(lead: OrganisationLike | None, authority: OrganisationLike | None,
                         caller: Caller) -> bool:
    """Return True when ``caller`` may write an eCAF assessment reference: the lead
    professional's organisation or the child's managing authority."""
    return acts_for(lead, caller) or acts_for(authority, caller)


# --- shared records: organisations and practitioners ----------------------------------------

def may_change_organisation(org: OrganisationLike | None, caller: Caller) -> bool:
    """Return True when ``caller`` may create or change ``org``'s record."""
    return acts_for(org, caller)


def may_change_practitioner(employer: OrganisationLike | None, caller: Caller) -> bool:
    """Return True when ``caller`` may create or change the record of a practitioner
    employed by ``employer``.

    A practitioner known here only by national numbers (a regulator's register, the SDS user
    id) has no employer to own the record: any organisation's system may create and name it,
    as the public registers do; a staff id added later makes it the employer's."""
    if employer is None:
        return is_administrator(caller) or bool(caller.organisation_code)
    return acts_for(employer, caller)


def require_organisation_writer(org: OrganisationLike, caller: Caller, expression: str) -> None:
    """An organisation's record is written by the organisation itself or an administrator.

    :raises Forbidden: another organisation's record.
    """
    if not may_change_organisation(org, caller):
        raise Forbidden("Only an administrator or the organisation itself may create or change "
                        "its record; you may refer to it.", expression=expression)


def require_practitioner_writer(employer: OrganisationLike | None, caller: Caller,
                                expression: str) -> None:
    """A practitioner's record is written by their employer or an administrator.

    :raises Forbidden: a practitioner employed by another organisation.
    """
    if not may_change_practitioner(employer, caller):
        raise Forbidden("Only an administrator or the employing organisation may create or "
                        "change a practitioner's record; you may refer to it.",
                        expression=expression)


def organisation_changes(described: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """Return the columns a description would change of a stored organisation (a detail the
    description leaves out is kept: ``records.resolve_organisation``)."""
    return [name for name in ORGANISATION_FIELDS
            if described.get(name) is not None and described[name] != stored[name]]


def practitioner_changes(described: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """Return the columns a description would change of a stored practitioner (every column
    is taken from it: ``records.resolve_practitioner``)."""
    return [name for name in PRACTITIONER_FIELDS if described.get(name) != stored[name]]


class StoredShared(Protocol):
    """The stored organisations and practitioners a batch of records describes."""

    def organisation(self, described: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Return the stored organisation with a description's natural key, or None."""

    def practitioner(self, described: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Return the stored practitioner (employer and staff id) of a description, or None."""


@dataclass(frozen=True)
class Described:
    """A shared record described inside another record: where, what kind, and how."""

    expression: str
    kind: str  # "organisation" or "practitioner"
    data: Mapping[str, Any]


def _fields(names: Iterable[str]) -> str:
    """Return column names as readable words."""
    return ", ".join(FIELD_NAMES.get(name, name) for name in names)


def _organisation_refusal(item: Described, stored: Mapping[str, Any], caller: Caller,
                          ) -> Forbidden | None:
    """Return the refusal of a description changing another organisation, else None."""
    if may_change_organisation(stored, caller):
        return None
    changed = organisation_changes(item.data, stored)
    if not changed:
        return None
    code = sorted(codes_of(stored))[0]
    return Forbidden(f"{NOT_YOURS}organisation {code} is another organisation's record; this "
                     f"record would change its {_fields(changed)}. Only that organisation or "
                     "the national directory team changes it: describe it as the directory "
                     "holds it (as an export gives it)", expression=item.expression)


def _practitioner_refusal(item: Described, stored: Mapping[str, Any], employer: Mapping[str, Any],
                          caller: Caller) -> Forbidden | None:
    """Return the refusal of a description changing another organisation's practitioner."""
    if may_change_practitioner(employer, caller):
        return None
    changed = practitioner_changes(item.data, stored)
    if not changed:
        return None
    code = sorted(codes_of(employer))[0]
    return Forbidden(f"{NOT_YOURS}the practitioner is employed by {code}; this record would "
                     f"change their {_fields(changed)}. Only their employer or the national "
                     "directory team changes them: describe them as the directory holds them "
                     "(as an export gives them)", expression=item.expression)


def shared_refusal(described: Iterable[Described], stored: StoredShared,
                   caller: Caller) -> Forbidden | None:
    """Return the refusal of the first description that would change a shared record
    ``caller`` does not own, or None when the record may be applied."""
    for item in described:
        if item.kind == "organisation":
            row = stored.organisation(item.data)
            refusal = None if row is None else _organisation_refusal(item, row, caller)
        else:
            person = stored.practitioner(item.data)
            employer = stored.organisation(item.data["organisation"])
            refusal = None if person is None or employer is None else \
                _practitioner_refusal(item, person, employer, caller)
        if refusal is not None:
            return refusal
    return None


def require_shared_unchanged(described: Iterable[Described], stored: StoredShared,
                             caller: Caller) -> None:
    """Refuse a record that would change a shared record ``caller`` does not own.

    :raises Forbidden: it would (the reason names the organisation's code and the details).
    """
    refusal = shared_refusal(described, stored, caller)
    if refusal is not None:
        raise refusal
