"""The disclosure policy: what of a child's entry a caller may see (docs/domain.md "Shielding",
"Sensitive services", "Other organisations' numbers", "Retention"). The only place these rules
are decided, for every dialect (FHIR JSON and XML, directory XML, bulk export, notifications,
eCAF re-keying) and every path, before mapping:

- *which records exist* for a caller: SQL conditions the loaders and searches add
  (``visible_to``, ``hidden_unless``, ``involvement_visible``, ``member_visible``,
  ``lead_visible``) and their Python twins (``may_see_entry``, ``may_see_child``, ...);
- *what of a record* a caller sees: ``disclose_child`` and ``disclose_assessment`` return the
  record itself when nothing is withheld, else a transient copy without the withheld parts
  and the flag that labels the output REDACTED (a visible redaction, never a silent gap).
  ``disclose_child`` judges an entry loaded as ORM records or as the light records of a read
  (``adapter.models.rows``) by the same rules; only the copy it makes differs (the light
  records are copied as light records: no ORM object is made on a read).

An earlier version of an entry is judged by the entry's current state as well as its own,
whichever is stricter: shielding an entry hides what its earlier versions showed, and an
involvement of an organisation now working with the child as a sensitive service is withheld
from every earlier version (unless the current entry shows that same involvement).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, exists, not_, true

from adapter import codes, identity
from adapter.identity import part_key
from adapter.models import (
    Assessment,
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    TeamMember,
)
from adapter.models.base import copy_columns
from adapter.models.rows import (
    CarerRow,
    ChildEntry,
    ChildRow,
    InvolvementRow,
    LocalIdentifierRow,
    OrganisationRow,
)
from adapter.security.caller import Caller

# docs/domain.md "Shielding": what a caller without the right still sees of a shielded child.
SHIELDED_VISIBLE: Final = frozenset({"resource_id", "contactpoint_id", "gender", "birth_date",
                                     "record_status", "retention_date", "shielded",
                                     "version", "last_updated", "created"})
# What of a carer it still sees: name, relationship and parental responsibility say who the
# person is, not where the child can be found.
CARER_NAME_ONLY: Final = ("position", "title", "given", "family", "relation",
                          "parental_responsibility")


@dataclass(frozen=True)
class Disclosure:
    """What a caller may see of one child (ORM records, or the light records of a read)."""

    child: Any  # Child, or ChildRow when the entry was loaded as light records
    redacted: bool
    # A caller with the shielding right read a shielded child: audited as an override and
    # answered with a warning (docs/domain.md "Shielding", break glass).
    override: bool


def organisation_code(org: Organisation | OrganisationRow | None) -> str | None:
    """Return the code a client's organisation_code is compared with: the organisation's
    natural code (``identity.organisation_code``), None without one."""
    found = identity.organisation_code_column(org) if org is not None else None
    return found[1] if found else None


# --- which records exist for a caller -------------------------------------------------------

def sensitive_visible(caller: Caller) -> bool:
    """Return True when the caller may see sensitive services (docs/domain.md "Sensitive
    services": the authority's directory team)."""
    return caller.has_right("sensitive")


def visible_to(caller: Caller) -> Any:
    """Return the condition on Child hiding archived entries from ordinary callers
    (docs/domain.md "Retention": archived entries are invisible to every ordinary caller)."""
    return Child.record_status == "live" if not caller.has_right("admin") else Child.id.is_not(None)


def hidden_unless(caller: Caller) -> Any:
    """Return the condition on Child excluding shielded children for callers without the right
    (a search matches only on what the caller may see, docs/domain.md "Shielding")."""
    return Child.shielded.is_(False) if not caller.has_right("shielded") \
        else Child.id.is_not(None)


def child_visible(caller: Caller) -> Any:
    """Return the condition on Child under which its roles and eCAF teams may be shown to
    ``caller``: live (or an administrator) and not shielded (or the caller holds the right)."""
    return and_(visible_to(caller), hidden_unless(caller))


def involvement_shown(caller: Caller) -> Any:
    """Return the condition on Involvement alone: a sensitive service's only with the right."""
    return true() if sensitive_visible(caller) else not_(Involvement.sensitive)


def involvement_visible(caller: Caller) -> Any:
    """Return the condition on Involvement (joined with its Child) for ``caller``."""
    return and_(child_visible(caller), involvement_shown(caller))


def member_shown(caller: Caller) -> Any:
    """Return the condition on TeamMember alone: a member from a sensitive service (by its
    role) is withheld without the right."""
    return true() if sensitive_visible(caller) else TeamMember.role.not_in(codes.SENSITIVE_ROLES)


def member_visible(caller: Caller) -> Any:
    """Return the condition on TeamMember (joined with assessment and child) for ``caller``."""
    return and_(child_visible(caller), member_shown(caller))


def lead_sensitive() -> Any:
    """Return the condition on Assessment that its lead professional is a sensitive service:
    the lead organisation is one the child is involved with as a sensitive service."""
    return exists().where(Involvement.child_id == Assessment.child_id, Involvement.sensitive,
                          Involvement.organisation_id == Assessment.lead_organisation_id)


def lead_shown(caller: Caller) -> Any:
    """Return the condition on Assessment alone that ``caller`` may see its lead's role."""
    return true() if sensitive_visible(caller) else not_(lead_sensitive())


def lead_visible(caller: Caller) -> Any:
    """Return the condition on Assessment (joined with its child) that ``caller`` may see the
    lead professional's role."""
    return and_(child_visible(caller), lead_shown(caller))


def may_see_entry(child: ChildEntry, caller: Caller) -> bool:
    """Return True when the entry exists for ``caller`` at all (live, or an administrator)."""
    return child.record_status == "live" or caller.has_right("admin")


def may_link_identifier(shielded: bool, caller: Caller) -> bool:
    """Return True when ``caller`` may be told which entry holds a national identifier (NHS
    number, UPN): not a shielded child's without the shielding right, as a search by it never
    matches one (docs/domain.md "Shielding", "Other organisations' numbers")."""
    return not shielded or caller.has_right("shielded")


def may_see_child(child: ChildEntry, caller: Caller) -> bool:
    """Return True when ``caller`` may see the roles and eCAF teams of ``child`` at all."""
    return may_see_entry(child, caller) and (not child.shielded or caller.has_right("shielded"))


def may_see_involvement(involvement: Involvement | InvolvementRow, caller: Caller) -> bool:
    """Return True when ``caller`` may see ``involvement`` (docs/domain.md "Sensitive
    services").

    Without the sensitive-services right a caller sees "at most that a sensitive service is
    involved and whom to ask": the involvement itself is withheld (even its role would say
    which kind of service), the entry is labelled REDACTED, and ``managingOrganization`` names
    the authority whose directory team brokers contact. Consent allows the involvement to be
    recorded; it does not widen who sees the provider.
    """
    return not involvement.sensitive or sensitive_visible(caller)


def may_see_member(member: TeamMember, caller: Caller) -> bool:
    """Return True when ``caller`` may see an eCAF team member (sensitive roles withheld)."""
    return member.role not in codes.SENSITIVE_ROLES or sensitive_visible(caller)


def is_lead_sensitive(assessment: Assessment) -> bool:
    """Return True when the lead organisation works with the child as a sensitive service
    (compared by code: an earlier version's organisation is a transient copy without an id)."""
    lead = organisation_code(assessment.lead_organisation)
    return lead is not None and lead in _sensitive_organisations(assessment.child)


def may_see_lead(assessment: Assessment, caller: Caller) -> bool:
    """Return True when ``caller`` may see the lead professional of an assessment."""
    return sensitive_visible(caller) or not is_lead_sensitive(assessment)


def may_see_local_identifier(identifier: LocalIdentifier | LocalIdentifierRow,
                             caller: Caller) -> bool:
    """Return True when the identifier was allocated by the caller's own organisation
    (docs/domain.md "Other organisations' numbers")."""
    return organisation_code(identifier.organisation) == caller.organisation_code


# --- what of a record a caller sees ---------------------------------------------------------

def disclose_child(child: Child | ChildRow, caller: Caller,
                   current: Child | None = None) -> Disclosure:
    """Return what ``caller`` may see of ``child``; ``current`` is the entry as it is now when
    ``child`` is an earlier version of it (the stricter of the two states decides). An entry
    loaded as light records (``ChildRow``, the current version) is answered with light
    records."""
    shielded = child.shielded or (current is not None and current.shielded)
    if shielded and not caller.has_right("shielded"):
        return Disclosure(_shielded_view(child), True, False)
    withheld = _now_sensitive(child, current) \
        if current is not None and not sensitive_visible(caller) else set()
    involvements = [i for i in child.involvements
                    if may_see_involvement(i, caller)
                    and not (withheld and part_key(i) in withheld)]
    local_ids = [li for li in child.local_identifiers if may_see_local_identifier(li, caller)]
    if len(involvements) == len(child.involvements) \
            and len(local_ids) == len(child.local_identifiers):
        return Disclosure(child, False, shielded)
    return Disclosure(_view(child, involvements, local_ids), True, shielded)


def disclose_assessment(assessment: Assessment, caller: Caller) -> tuple[Assessment, bool]:
    """Return what ``caller`` may see of an eCAF assessment's team, and whether it is
    redacted: sensitive members are removed; a sensitive lead is replaced by the managing
    authority, whom to ask (docs/domain.md "Sensitive services"). Whether the assessment
    exists for the caller at all (its child shielded) is ``child_visible``'s decision."""
    members = [m for m in assessment.members if may_see_member(m, caller)]
    lead_ok = may_see_lead(assessment, caller)
    if lead_ok and len(members) == len(assessment.members):
        return assessment, False
    view = Assessment(resource_id=assessment.resource_id, assessment_id=assessment.assessment_id,
                      status=assessment.status, started_date=assessment.started_date,
                      completed_date=assessment.completed_date,
                      closed_date=assessment.closed_date, version=assessment.version,
                      consent_to_share=assessment.consent_to_share,
                      last_updated=assessment.last_updated)
    view.child = assessment.child
    view.lead_organisation = assessment.lead_organisation if lead_ok else \
        assessment.child.managing_organisation
    view.lead_practitioner = assessment.lead_practitioner if lead_ok else None
    view.members = [_member_copy(m) for m in members]
    return view, True


def withheld_local_identifiers(child: Child, caller: Caller) -> list[LocalIdentifier]:
    """Return transient copies of the local identifiers of ``child`` that ``caller`` may not
    see: an update from that caller cannot have meant to remove what it was never shown."""
    return [copy_local_identifier(li) for li in child.local_identifiers
            if not may_see_local_identifier(li, caller)]


def _now_sensitive(version: ChildEntry, current: Child) -> set[str]:
    """Return the keys of the involvements of an earlier version that would name a provider
    working with the child as a sensitive service now: its organisation is one, and the
    involvement is not one the current entry shows as an ordinary service."""
    sensitive = _sensitive_organisations(current)
    if not sensitive:
        return set()
    ordinary = {part_key(i) for i in current.involvements if not i.sensitive}
    return {key for i in version.involvements
            if organisation_code(i.organisation) in sensitive
            and (key := part_key(i)) not in ordinary}


def _sensitive_organisations(child: Child) -> set[str | None]:
    """Return the codes of the organisations working with ``child`` as sensitive services."""
    return {organisation_code(i.organisation) for i in child.involvements if i.sensitive}


def _copy(obj: object, cls: type) -> object:
    """Return a transient copy of ``obj``'s data columns."""
    copy = cls()
    copy_columns(obj, copy, frozenset({"id", "child_id"}))  # type: ignore[arg-type]
    return copy


def _view(child: Child | ChildRow, involvements: Iterable[Any],
          local_ids: Iterable[Any]) -> Child | ChildRow:
    """Return a transient copy of ``child`` with only the given involvements and local ids
    (light records share their items: nothing of them is changed)."""
    if isinstance(child, ChildRow):
        return child.with_lists(involvements=list(involvements), local_identifiers=list(local_ids))
    view: Child = _copy(child, Child)  # type: ignore[assignment]
    view.managing_organisation = child.managing_organisation
    view.names = [_copy(n, ChildName) for n in child.names]  # type: ignore[misc]
    view.carers = [_copy(c, Carer) for c in child.carers]  # type: ignore[misc]
    view.involvements = [copy_involvement(i) for i in involvements]
    view.local_identifiers = [copy_local_identifier(li) for li in local_ids]
    return view


def copy_involvement(involvement: Involvement) -> Involvement:
    """Return a transient copy of an involvement, sharing its organisation and practitioner."""
    copy: Involvement = _copy(involvement, Involvement)  # type: ignore[assignment]
    copy.organisation, copy.practitioner = involvement.organisation, involvement.practitioner
    return copy


def copy_local_identifier(identifier: LocalIdentifier) -> LocalIdentifier:
    """Return a transient copy of a local identifier, sharing its organisation."""
    copy: LocalIdentifier = _copy(identifier, LocalIdentifier)  # type: ignore[assignment]
    copy.organisation = identifier.organisation
    return copy


def _member_copy(member: TeamMember) -> TeamMember:
    """Return a transient copy of a team member sharing its organisation and practitioner."""
    copy = TeamMember(resource_id=member.resource_id, position=member.position,
                      role=member.role, phone=member.phone, email=member.email)
    copy.organisation, copy.practitioner = member.organisation, member.practitioner
    return copy


def _shielded_view(child: Child | ChildRow) -> Child | ChildRow:
    """Return the little a caller without the right sees of a shielded child (also of an
    earlier version of a child shielded since): names, gender, birth date, ContactPoint ID,
    carers' names and the managing authority to contact, labelled shielded."""
    if isinstance(child, ChildRow):
        row: ChildRow = child.only(SHIELDED_VISIBLE)
        row.shielded = True
        row.names = list(child.names)
        row.carers = [_carer_row_name_only(c) for c in child.carers]
        return row
    view = Child()
    for name in SHIELDED_VISIBLE:
        setattr(view, name, getattr(child, name))
    view.shielded = True
    view.managing_organisation = child.managing_organisation
    view.names = [_copy(n, ChildName) for n in child.names]  # type: ignore[misc]
    view.carers = [_carer_name_only(c) for c in child.carers]
    return view


def _carer_name_only(carer: Carer) -> Carer:
    """Return a transient carer without contact details: name, relationship and parental
    responsibility say who the person is, not where the child can be found."""
    copy = Carer(**{name: getattr(carer, name) for name in CARER_NAME_ONLY})
    copy.given = list(carer.given)
    return copy


def _carer_row_name_only(carer: CarerRow) -> CarerRow:
    """Return a carer's light record without contact details (as ``_carer_name_only``)."""
    copy: CarerRow = carer.only(CARER_NAME_ONLY)
    copy.given = list(carer.given)
    return copy
