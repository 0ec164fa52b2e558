"""The FHIR dialect of stored CareTeams (served by the provider of ``CareTeam``,
adapter/fhir/providers/careteam.py; stored by ``adapter.store.careteams``): rendering a child's
team or an eCAF Team Around the Child as the caller may see it (disclosed, audited, fed to the
delivery ledger), the search parameters and their SQL conditions, and what an inbound CareTeam
says about its kind, eCAF assessment and subject. The REST reads, bulk $export
(adapter/export/resources.py) and notifications (adapter/notify/content.py) render through the
same functions, so every dialect discloses a CareTeam alike.

Everything under this server's own systems takes the canonical base (or the systems under it)
from its caller, who was given the settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import and_, exists, false, or_, select, true
from sqlalchemy.orm import Session

from adapter import codes
from adapter.errors import Invalid, issue
from adapter.fhir import references
from adapter.fhir.handlers import Rendered
from adapter.fhir.patient_search import PATIENT_PARAMS, criterion_condition
from adapter.fhir.providers.records import (
    organisation_identifier_condition,
    practitioner_identifier_condition,
)
from adapter.fhir.search import (
    BY_IDENTIFIER,
    NOT,
    Criterion,
    SearchParam,
    matching_codes,
    parse_date,
    search_reference,
    split_token,
    token_condition,
)
from adapter.mapping import fhir as mapping
from adapter.models import Assessment, Child, Involvement, Organisation, Practitioner, TeamMember
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import (
    disclose_assessment,
    disclose_child,
    involvement_shown,
    lead_shown,
    may_see_child,
    may_see_involvement,
    may_see_lead,
    may_see_member,
    member_shown,
)
from adapter.store.careteams import ECAF, TEAM, assessment_query, team_is_listed
from adapter.store.children import BREAK_GLASS
from adapter.store.practitioner_roles import involvement_role, lead_role, member_role
from adapter.systems import OwnSystems

CARE_TEAM_STATUS: Final = "http://hl7.org/fhir/care-team-status"
# CareTeam.status of a child's team: the entry's record status (involvements_to_careteam.toml).
TEAM_STATUS: Final = {"active": "live", "inactive": "archived"}
REFERENCE_TYPES: Final = ("PractitionerRole", "Practitioner", "Organization")
Versions = list[tuple[Rendered | None, int, str, dt.datetime]]


# --- disclosure and rendering ---------------------------------------------------------------

def _warnings(shielded: bool) -> list[dict[str, Any]]:
    """Return the break-glass warning when a shielded child's data was disclosed."""
    return [issue("warning", "suppressed", BREAK_GLASS)] if shielded else []


def render_team(session: Session, child: Child, caller: Caller, action: str | None,
                base: str, current: Child | None = None) -> Rendered:
    """Disclose, audit (as ``action``; None: a write's own record) and map a child's team
    under the canonical ``base``; ``current`` is the child now when ``child`` is an earlier
    version (judged by both)."""
    disclosure = disclose_child(child, caller, current)
    resource = mapping.child_to_careteam(disclosure.child, redacted=disclosure.redacted,
                                         base=base)
    if action is not None:
        audit.record(session, action, resource_type="CareTeam", resource_id=str(resource["id"]),
                     child_ref=child.resource_id, override=disclosure.override, caller=caller)
        ledger.record_delivery(session, caller, child, action)
    return Rendered(resource, child.version, child.last_updated, _warnings(disclosure.override))


def render_ecaf(session: Session, assessment: Assessment, caller: Caller,
                action: str | None, base: str) -> Rendered:
    """Disclose, audit and map an eCAF Team Around the Child under the canonical ``base``."""
    view, redacted = disclose_assessment(assessment, caller)
    resource = mapping.assessment_to_careteam(view, redacted=redacted, base=base)
    if not may_see_lead(assessment, caller):  # the lead's PractitionerRole is withheld
        for participant in resource.get("participant", []):
            if is_lead_participant(participant):
                mapping.withhold_member(participant, assessment.child.managing_organisation,
                                        base=base)
    shielded = assessment.child.shielded
    if action is not None:
        audit.record(session, action, resource_type="CareTeam", resource_id=str(resource["id"]),
                     child_ref=assessment.child.resource_id, override=shielded, caller=caller)
        ledger.record_delivery(session, caller, assessment.child, action)
    return Rendered(resource, assessment.version, assessment.last_updated, _warnings(shielded))


def is_lead_participant(participant: Any) -> bool:
    """Return True when a CareTeam participant has the lead-professional role."""
    return isinstance(participant, dict) and any(
        coding.get("code") == "lead-professional" for role in list_items(participant.get("role"))
        if isinstance(role, dict) for coding in list_items(role.get("coding"))
        if isinstance(coding, dict))


def list_items(value: Any) -> list[Any]:
    """Return an inbound element that should be a list, or [] when it is not one (the
    validation that follows reports it)."""
    return value if isinstance(value, list) else []


def careteams_of(session: Session, child: Child, caller: Caller, base: str,
                 action: str = "search") -> list[dict[str, Any]]:
    """Return the CareTeams whose subject is ``child``, as ``caller`` may see them (audited):
    the child's team (when listed) and its eCAF Teams Around the Child."""
    found = [render_team(session, child, caller, action, base).resource] \
        if team_is_listed(child, caller) else []
    assessments = session.scalars(assessment_query(caller).where(
        Assessment.child_id == child.id).order_by(Assessment.id)).unique()
    return found + [render_ecaf(session, a, caller, action, base).resource
                    for a in assessments]


def participant_roles(session: Session, row: Child | Assessment, caller: Caller,
                      base: str) -> list[dict[str, Any]]:
    """Return the PractitionerRoles of a CareTeam's participants that ``caller`` may see
    (``_include=CareTeam:participant``), audited."""
    if isinstance(row, Child):
        if not may_see_child(row, caller):
            return []
        return [involvement_role(session, i, caller, "search", base) for i in row.involvements
                if may_see_involvement(i, caller)]
    lead = [lead_role(session, row, caller, "search", base)] \
        if may_see_lead(row, caller) else []
    return lead + [member_role(session, m, caller, "search", base) for m in row.members
                   if may_see_member(m, caller)]


# --- search -------------------------------------------------------------------------------

CARETEAM_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the CareTeam", modifiers=NOT),
    SearchParam("_lastUpdated", "date", "When the team last changed (with prefixes)"),
    SearchParam("patient", "reference", "The child (Patient/id, or :identifier with the "
                "ContactPoint ID or NHS number)",
                "http://hl7.org/fhir/SearchParameter/clinical-patient", BY_IDENTIFIER),
    SearchParam("subject", "reference", "The child (Patient/id, or :identifier)",
                "http://hl7.org/fhir/SearchParameter/CareTeam-subject", BY_IDENTIFIER),
    SearchParam("status", "token", "proposed | active | suspended | inactive | "
                "entered-in-error", "http://hl7.org/fhir/SearchParameter/CareTeam-status", NOT),
    SearchParam("category", "token", "directory-team (a child's team) | ecaf-tac (an eCAF "
                "Team Around the Child)",
                "http://hl7.org/fhir/SearchParameter/CareTeam-category", NOT),
    SearchParam("identifier", "token", "eCAF assessment id (system|value)",
                "http://hl7.org/fhir/SearchParameter/clinical-identifier", NOT),
    SearchParam("participant", "reference", "A participant: PractitionerRole, Practitioner or "
                "Organization (or :identifier); never matches what you may not see",
                "http://hl7.org/fhir/SearchParameter/CareTeam-participant", BY_IDENTIFIER),
)}


def date_condition(column: Any, value: str, name: str) -> Any:
    """Return a FHIR date comparison (search.html#prefix) on a timestamp column."""
    rng = parse_date(value, name)
    start, end = rng.start, rng.end
    slack = dt.timedelta(days=36)  # ap: about 10% of a year
    return {
        "eq": and_(column >= start, column < end), "ne": or_(column < start, column >= end),
        "lt": column < start, "le": column < end, "gt": column >= end, "ge": column >= start,
        "sa": column >= end, "eb": column < start,
        "ap": and_(column >= start - slack, column < end + slack),
    }[rng.prefix]


def split_reference(value: str, name: str) -> tuple[str | None, str]:
    """Return the type (None for a bare id) and id of a ``participant`` reference value.

    :raises BadRequest: a reference to a type a participant cannot be.
    """
    return search_reference(value, REFERENCE_TYPES, name)


def participant_match(criterion: Criterion, value: str, own: OwnSystems,
                      columns: tuple[Any, Any, Any]) -> Any:
    """Return the condition that one participant (its role id, practitioner and organisation
    ``columns``) is the one a ``participant`` value names."""
    role_id, practitioner, organisation = columns
    if criterion.modifier == "identifier":
        return or_(practitioner.in_(select(Practitioner.id).where(
            practitioner_identifier_condition(value, own))),
            organisation.in_(select(Organisation.id).where(
                organisation_identifier_condition(value, own))))
    kind, rid = split_reference(value, criterion.param.name)
    options = {"PractitionerRole": role_id == rid,
               "Practitioner": practitioner.in_(select(Practitioner.id).where(
                   Practitioner.resource_id == rid)),
               "Organization": organisation.in_(select(Organisation.id).where(
                   Organisation.resource_id == rid))}
    return options[kind] if kind else or_(*options.values())


def subject_condition(criterion: Criterion, value: str, caller: Caller,
                      own: OwnSystems) -> Any:
    """Return the condition on Child that it is the subject a ``patient``/``subject`` names
    (``:identifier``: by the Patient identifier rules, which respect shielding).

    :raises BadRequest: a reference to another resource type.
    """
    if criterion.modifier == "identifier":
        return criterion_condition(Criterion(PATIENT_PARAMS["identifier"], None, (value,)),
                                   caller, own.base)
    _kind, rid = search_reference(value, ("Patient",), criterion.param.name)
    return Child.resource_id == rid


def category_matches(value: str, kind: str, own: OwnSystems) -> Any:
    """Return true() when a category token names ``kind`` (directory-team or ecaf-tac)."""
    system, code = split_token(value)
    named = code == kind and system in (None, own.code_system("careteam-category"))
    return true() if named else false()


def team_statuses(value: str) -> list[str]:
    """Return the record statuses whose team status a ``status`` token names."""
    system, code = split_token(value)
    return [TEAM_STATUS[code]] if code in TEAM_STATUS and system in (None, CARE_TEAM_STATUS) \
        else []


def ecaf_identifier(value: str, own: OwnSystems) -> Any:
    """Return the condition on Assessment of an ``identifier`` token (eCAF assessment id)."""
    system, code = split_token(value)
    return Assessment.assessment_id == code \
        if system in (None, own.ecaf_assessment) else false()


def team_participant(criterion: Criterion, value: str, caller: Caller,
                     own: OwnSystems) -> Any:
    """Return the condition on Child that a participant the caller may see matches."""
    match = participant_match(criterion, value, own, (
        Involvement.resource_id, Involvement.practitioner_id, Involvement.organisation_id))
    return exists().where(Involvement.child_id == Child.id, involvement_shown(caller), match)


def ecaf_participant(criterion: Criterion, value: str, caller: Caller,
                     own: OwnSystems) -> Any:
    """Return the condition on Assessment that a member or lead the caller may see matches."""
    members = exists().where(TeamMember.assessment_id == Assessment.id, member_shown(caller),
                             participant_match(criterion, value, own, (
                                 TeamMember.resource_id, TeamMember.practitioner_id,
                                 TeamMember.organisation_id)))
    lead = and_(lead_shown(caller), participant_match(criterion, value, own, (
        Assessment.lead_role_id, Assessment.lead_practitioner_id,
        Assessment.lead_organisation_id)))
    return or_(members, lead)


def team_condition(criterion: Criterion, caller: Caller, own: OwnSystems) -> Any:
    """Return the SQL condition of one criterion on children's teams.

    :raises BadRequest: a malformed value.
    """
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Child.careteam_id == v,
        "_lastUpdated": lambda v: date_condition(Child.last_updated, v, "_lastUpdated"),
        "patient": lambda v: subject_condition(criterion, v, caller, own),
        "subject": lambda v: subject_condition(criterion, v, caller, own),
        "status": lambda v: Child.record_status.in_(team_statuses(v)),
        "category": lambda v: category_matches(v, TEAM, own),
        "identifier": lambda _v: false(),
        "participant": lambda v: team_participant(criterion, v, caller, own),
    }
    return token_condition(criterion, builders[criterion.param.name])


def ecaf_condition(criterion: Criterion, caller: Caller, own: OwnSystems) -> Any:
    """Return the SQL condition of one criterion on eCAF teams (joined with their child).

    :raises BadRequest: a malformed value.
    """
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Assessment.resource_id == v,
        "_lastUpdated": lambda v: date_condition(Assessment.last_updated, v, "_lastUpdated"),
        "patient": lambda v: subject_condition(criterion, v, caller, own),
        "subject": lambda v: subject_condition(criterion, v, caller, own),
        "status": lambda v: Assessment.status.in_(sorted(matching_codes(
            "assessment-status", codes.ASSESSMENT_STATUSES, v, own.base))),
        "category": lambda v: category_matches(v, ECAF, own),
        "identifier": lambda v: ecaf_identifier(v, own),
        "participant": lambda v: ecaf_participant(criterion, v, caller, own),
    }
    return token_condition(criterion, builders[criterion.param.name])


# --- what an inbound CareTeam says ---------------------------------------------------------

def category_of(resource: dict[str, Any], own: OwnSystems) -> str:
    """Return the kind a CareTeam names by its category (this server's code system ``own``).

    :raises Invalid: neither directory-team nor ecaf-tac.
    """
    system = own.code_system("careteam-category")
    found = {str(coding.get("code")) for concept in list_items(resource.get("category"))
             if isinstance(concept, dict) for coding in list_items(concept.get("coding"))
             if isinstance(coding, dict) and coding.get("system") == system}
    for kind in (ECAF, TEAM):
        if kind in found:
            return kind
    raise Invalid(f"A CareTeam here is a child's team or an eCAF Team Around the Child: give "
                  f"category {system}|{TEAM} or |{ECAF}.", expression="CareTeam.category")


def ecaf_assessment_id(resource: dict[str, Any], own: OwnSystems) -> str | None:
    """Return the eCAF assessment id of a CareTeam's identifier, if it has one."""
    system = own.ecaf_assessment
    for identifier in list_items(resource.get("identifier")):
        if isinstance(identifier, dict) and identifier.get("system") == system:
            value = identifier.get("value")
            return str(value) if value else None
    return None


def subject_child(session: Session, subject: Child, caller: Caller) -> Child:
    """Return the stored child a CareTeam's subject names (logical id or ContactPoint ID).

    :raises Invalid: no such child (visible to the caller), or id and identifier disagree.
    """
    return references.stored_child(session, subject, caller, "CareTeam.subject")
