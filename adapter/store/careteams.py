"""Children's teams and eCAF Teams Around the Child as FHIR CareTeams (served by the
provider of ``CareTeam``, adapter/fhir/providers/careteam.py). Two kinds behind one type, told
apart by ``category``:

- ``directory-team``: the practitioners and services working with a child (its involvements);
  id derived from the ContactPoint ID, version = the child's version, subject the Patient.
- ``ecaf-tac``: an eCAF assessment reference and its Team Around the Child.

Both are a child's data: disclosed by the child's policy (docs/domain.md "Shielding", "Sensitive
services") and audited per read and per search hit. A shielded child's team shows no
participant to a caller without the shielding right; its eCAF teams (whose existence is the
CAF indicator, withheld too) do not exist for that caller. Sensitive services are removed for
callers without that right, and the CareTeam is labelled REDACTED.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Select, and_, exists, false, or_, select, true
from sqlalchemy.orm import Session, contains_eager, selectinload

from adapter import codes
from adapter.errors import Forbidden, Gone, Invalid, NotFound, issue
from adapter.fhir import references
from adapter.fhir.handlers import Rendered
from adapter.fhir.patient_search import PATIENT_PARAMS, criterion_condition
from adapter.fhir.search import (
    BY_IDENTIFIER,
    NOT,
    Criterion,
    SearchParam,
    parse_date,
    search_reference,
    split_token,
)
from adapter.mapping import fhir as mapping
from adapter.models import Assessment, Child, Involvement, Organisation, Practitioner, TeamMember
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import (
    child_visible,
    disclose_assessment,
    disclose_child,
    involvement_shown,
    lead_shown,
    may_see_child,
    may_see_involvement,
    may_see_lead,
    may_see_member,
    may_write_involvement,
    member_shown,
    visible_to,
)
from adapter.store import history
from adapter.store.children import BREAK_GLASS, base, child_query
from adapter.store.organisations import (
    matching_codes,
    organisation_identifier_condition,
    organisation_key_copy,
    own_systems,
    practitioner_copy,
    practitioner_identifier_condition,
    stored_organisation,
    stored_practitioner,
    token_condition,
)
from adapter.store.practitioner_roles import involvement_role, lead_role, member_role
from adapter.store.records import part_key

TEAM: Final = "directory-team"
ECAF: Final = "ecaf-tac"
CARE_TEAM_STATUS: Final = "http://hl7.org/fhir/care-team-status"
# CareTeam.status of a child's team: the entry's record status (involvements_to_careteam.toml).
TEAM_STATUS: Final = {"active": "live", "inactive": "archived"}
REFERENCE_TYPES: Final = ("PractitionerRole", "Practitioner", "Organization")
Versions = list[tuple[Rendered | None, int, str, dt.datetime]]


def not_found(resource_id: str) -> NotFound:
    """Return the error of a CareTeam that does not exist for the caller."""
    return NotFound(f"No CareTeam/{resource_id} on this server (or not one you may see).")


# --- loading ------------------------------------------------------------------------------

def team_child(session: Session, careteam_id: str, caller: Caller) -> Child | None:
    """Return the child whose team CareTeam has id ``careteam_id`` (if visible at all)."""
    return session.scalar(child_query().where(Child.careteam_id == careteam_id,
                                              visible_to(caller)))


def assessment_query(caller: Caller) -> Select[Assessment]:
    """Return a select of the assessments ``caller`` may see, with what the mapping needs."""
    child = contains_eager(Assessment.child)
    return (select(Assessment).join(Child, Assessment.child_id == Child.id)
            .where(child_visible(caller))
            .options(child.selectinload(Child.names), child.selectinload(Child.involvements),
                     child.joinedload(Child.managing_organisation),
                     selectinload(Assessment.members)))


def load_assessment(session: Session, resource_id: str, caller: Caller) -> Assessment | None:
    """Return the assessment with CareTeam id ``resource_id`` that ``caller`` may see."""
    return session.scalar(assessment_query(caller).where(Assessment.resource_id == resource_id))


def check_deleted(session: Session, resource_id: str, caller: Caller) -> None:
    """Say so when an eCAF CareTeam was deleted (410), unless its child is hidden from the
    caller (then it never existed for them).

    :raises Gone: deleted.
    """
    versions = history.assessment_versions(session, resource_id)
    if not versions or not versions[0].deleted or len(versions) < 2:
        return
    if snapshot_child(session, versions[1], caller) is not None:
        raise Gone(f"CareTeam/{resource_id} has been deleted.")


def snapshot_child(session: Session, version: Any, caller: Caller) -> Child | None:
    """Return the child an assessment snapshot names, if ``caller`` may see its roles."""
    cpid = (version.snapshot or {}).get("child", {}).get("contactpoint_id")
    child = session.scalar(child_query().where(Child.contactpoint_id == cpid))
    return child if child is not None and may_see_child(child, caller) else None


# --- disclosure and rendering ---------------------------------------------------------------

def _warnings(shielded: bool) -> list[dict[str, Any]]:
    """Return the break-glass warning when a shielded child's data was disclosed."""
    return [issue("warning", "suppressed", BREAK_GLASS)] if shielded else []


def render_team(session: Session, child: Child, caller: Caller, action: str | None,
                current: Child | None = None) -> Rendered:
    """Disclose, audit (as ``action``; None: a write's own record) and map a child's team;
    ``current`` is the child now when ``child`` is an earlier version (judged by both)."""
    disclosure = disclose_child(child, caller, current)
    resource = mapping.child_to_careteam(disclosure.child, redacted=disclosure.redacted,
                                         base=base())
    if action is not None:
        audit.record(session, action, resource_type="CareTeam", resource_id=str(resource["id"]),
                     child_ref=child.resource_id, override=disclosure.override, caller=caller)
        ledger.record_delivery(session, caller, child, action)
    return Rendered(resource, child.version, child.last_updated, _warnings(disclosure.override))


def render_ecaf(session: Session, assessment: Assessment, caller: Caller,
                action: str | None) -> Rendered:
    """Disclose, audit and map an eCAF Team Around the Child."""
    view, redacted = disclose_assessment(assessment, caller)
    resource = mapping.assessment_to_careteam(view, redacted=redacted, base=base())
    if not may_see_lead(assessment, caller):  # the lead's PractitionerRole is withheld
        for participant in resource.get("participant", []):
            if is_lead_participant(participant):
                mapping.withhold_member(participant, assessment.child.managing_organisation,
                                        base=base())
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


def team_is_listed(child: Child, caller: Caller) -> bool:
    """Return True when a child's team is listed for ``caller``: it has a participant the
    caller may see (a team with none is read by id only, as an empty REDACTED CareTeam)."""
    return may_see_child(child, caller) and any(
        may_see_involvement(i, caller) for i in child.involvements)


def careteams_of(session: Session, child: Child, caller: Caller,
                 action: str = "search") -> list[dict[str, Any]]:
    """Return the CareTeams whose subject is ``child``, as ``caller`` may see them (audited):
    the child's team (when listed) and its eCAF Teams Around the Child."""
    found = [render_team(session, child, caller, action).resource] \
        if team_is_listed(child, caller) else []
    assessments = session.scalars(assessment_query(caller).where(
        Assessment.child_id == child.id).order_by(Assessment.id)).unique()
    return found + [render_ecaf(session, a, caller, action).resource for a in assessments]


def participant_roles(session: Session, row: Child | Assessment,
                      caller: Caller) -> list[dict[str, Any]]:
    """Return the PractitionerRoles of a CareTeam's participants that ``caller`` may see
    (``_include=CareTeam:participant``), audited."""
    if isinstance(row, Child):
        if not may_see_child(row, caller):
            return []
        return [involvement_role(session, i, caller, "search") for i in row.involvements
                if may_see_involvement(i, caller)]
    lead = [lead_role(session, row, caller, "search")] if may_see_lead(row, caller) else []
    return lead + [member_role(session, m, caller, "search") for m in row.members
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


def participant_match(criterion: Criterion, value: str, role_id: Any, practitioner: Any,
                      organisation: Any) -> Any:
    """Return the condition that one participant (role id, practitioner and organisation
    columns) is the one a ``participant`` value names."""
    if criterion.modifier == "identifier":
        return or_(practitioner.in_(select(Practitioner.id).where(
            practitioner_identifier_condition(value))),
            organisation.in_(select(Organisation.id).where(
                organisation_identifier_condition(value))))
    kind, rid = split_reference(value, criterion.param.name)
    options = {"PractitionerRole": role_id == rid,
               "Practitioner": practitioner.in_(select(Practitioner.id).where(
                   Practitioner.resource_id == rid)),
               "Organization": organisation.in_(select(Organisation.id).where(
                   Organisation.resource_id == rid))}
    return options[kind] if kind else or_(*options.values())


def subject_condition(criterion: Criterion, value: str, caller: Caller) -> Any:
    """Return the condition on Child that it is the subject a ``patient``/``subject`` names
    (``:identifier``: by the Patient identifier rules, which respect shielding).

    :raises BadRequest: a reference to another resource type.
    """
    if criterion.modifier == "identifier":
        return criterion_condition(Criterion(PATIENT_PARAMS["identifier"], None, (value,)),
                                   caller)
    _kind, rid = search_reference(value, ("Patient",), criterion.param.name)
    return Child.resource_id == rid


def category_matches(value: str, kind: str) -> Any:
    """Return true() when a category token names ``kind`` (directory-team or ecaf-tac)."""
    system, code = split_token(value)
    named = code == kind and system in (None, own_systems().code_system("careteam-category"))
    return true() if named else false()


def team_statuses(value: str) -> list[str]:
    """Return the record statuses whose team status a ``status`` token names."""
    system, code = split_token(value)
    return [TEAM_STATUS[code]] if code in TEAM_STATUS and system in (None, CARE_TEAM_STATUS) \
        else []


def ecaf_identifier(value: str) -> Any:
    """Return the condition on Assessment of an ``identifier`` token (eCAF assessment id)."""
    system, code = split_token(value)
    return Assessment.assessment_id == code \
        if system in (None, own_systems().ecaf_assessment) else false()


def team_participant(criterion: Criterion, value: str, caller: Caller) -> Any:
    """Return the condition on Child that a participant the caller may see matches."""
    match = participant_match(criterion, value, Involvement.resource_id,
                              Involvement.practitioner_id, Involvement.organisation_id)
    return exists().where(Involvement.child_id == Child.id, involvement_shown(caller), match)


def ecaf_participant(criterion: Criterion, value: str, caller: Caller) -> Any:
    """Return the condition on Assessment that a member or lead the caller may see matches."""
    members = exists().where(TeamMember.assessment_id == Assessment.id, member_shown(caller),
                             participant_match(criterion, value, TeamMember.resource_id,
                                               TeamMember.practitioner_id,
                                               TeamMember.organisation_id))
    lead = and_(lead_shown(caller), participant_match(
        criterion, value, Assessment.lead_role_id, Assessment.lead_practitioner_id,
        Assessment.lead_organisation_id))
    return or_(members, lead)


def team_condition(criterion: Criterion, caller: Caller) -> Any:
    """Return the SQL condition of one criterion on children's teams.

    :raises BadRequest: a malformed value.
    """
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Child.careteam_id == v,
        "_lastUpdated": lambda v: date_condition(Child.last_updated, v, "_lastUpdated"),
        "patient": lambda v: subject_condition(criterion, v, caller),
        "subject": lambda v: subject_condition(criterion, v, caller),
        "status": lambda v: Child.record_status.in_(team_statuses(v)),
        "category": lambda v: category_matches(v, TEAM),
        "identifier": lambda _v: false(),
        "participant": lambda v: team_participant(criterion, v, caller),
    }
    return token_condition(criterion, builders[criterion.param.name])


def ecaf_condition(criterion: Criterion, caller: Caller) -> Any:
    """Return the SQL condition of one criterion on eCAF teams (joined with their child).

    :raises BadRequest: a malformed value.
    """
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Assessment.resource_id == v,
        "_lastUpdated": lambda v: date_condition(Assessment.last_updated, v, "_lastUpdated"),
        "patient": lambda v: subject_condition(criterion, v, caller),
        "subject": lambda v: subject_condition(criterion, v, caller),
        "status": lambda v: Assessment.status.in_(sorted(matching_codes(
            "assessment-status", codes.ASSESSMENT_STATUSES, v))),
        "category": lambda v: category_matches(v, ECAF),
        "identifier": ecaf_identifier,
        "participant": lambda v: ecaf_participant(criterion, v, caller),
    }
    return token_condition(criterion, builders[criterion.param.name])


def team_query(caller: Caller) -> Select[Child]:
    """Return the select of the children whose team is listed for ``caller``."""
    return child_query().where(child_visible(caller), exists().where(
        Involvement.child_id == Child.id, involvement_shown(caller)))


# --- writes -------------------------------------------------------------------------------

def category_of(resource: dict[str, Any]) -> str:
    """Return the kind a CareTeam names by its category.

    :raises Invalid: neither directory-team nor ecaf-tac.
    """
    system = own_systems().code_system("careteam-category")
    found = {str(coding.get("code")) for concept in list_items(resource.get("category"))
             if isinstance(concept, dict) for coding in list_items(concept.get("coding"))
             if isinstance(coding, dict) and coding.get("system") == system}
    for kind in (ECAF, TEAM):
        if kind in found:
            return kind
    raise Invalid(f"A CareTeam here is a child's team or an eCAF Team Around the Child: give "
                  f"category {system}|{TEAM} or |{ECAF}.", expression="CareTeam.category")


def ecaf_assessment_id(resource: dict[str, Any]) -> str | None:
    """Return the eCAF assessment id of a CareTeam's identifier, if it has one."""
    system = own_systems().ecaf_assessment
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


def check_shielding(child: Child, caller: Caller) -> None:
    """Writes about a shielded child need the shielding right (part of it is withheld).

    :raises Forbidden: shielded, without the right.
    """
    if child.shielded and not caller.has_right("shielded"):
        raise Forbidden("Writing the team of a shielded child needs the shielding right (its "
                        "practitioners and services are withheld from you).",
                        expression="CareTeam.subject")


def check_consent(part: Involvement, where: str) -> None:
    """A sensitive service's involvement is recorded only with consent or on suspicion of
    significant harm (docs/domain.md "Sensitive services"); sensitive roles are always flagged.

    :raises Invalid: a sensitive involvement without its basis.
    """
    if part.role in codes.SENSITIVE_ROLES:
        part.sensitive = True
    if part.sensitive and part.consent_basis is None:
        raise Invalid(f"{where}: a sensitive service's involvement is recorded only with the "
                      "child's or carer's consent or on suspicion of significant harm: give the "
                      "consent basis extension.", expression=where)


def complete_part(session: Session, part: Involvement | TeamMember, where: str,
                  stored: dict[str, Any]) -> None:
    """Complete an inbound participant: one that refers to a PractitionerRole of this team by
    id takes its organisation, practitioner and contact from it; one detailed by a contained
    PractitionerRole (or another system's Practitioner and onBehalfOf) has its organisation
    and practitioner resolved to stored records (``adapter.mapping.participants``).

    :raises Invalid: a role that is not this team's, or an unknown organisation or
        practitioner.
    """
    if part.organisation is None:
        known = stored.get(part.resource_id) if part.resource_id else None
        if known is None:
            raise Invalid(f"{where}.member: not a PractitionerRole of this team; refer to one "
                          "of its roles, or contain a new PractitionerRole (#id).",
                          expression=f"{where}.member")
        part.organisation, part.practitioner = known.organisation, known.practitioner
        part.phone, part.email = known.phone, known.email
        return
    part.organisation = organisation_key_copy(
        stored_organisation(session, part.organisation, f"{where}.member"))
    if part.practitioner is not None:
        part.practitioner = practitioner_copy(
            stored_practitioner(session, part.practitioner, f"{where}.member"))


def _same(incoming: Involvement, stored: Involvement) -> bool:
    """Return True when an inbound involvement says what a stored one says (flags left
    unset read as false)."""
    flags = ("sensitive", "lead_professional", "caf_completed")
    return (part_key(incoming) == part_key(stored)
            and all(bool(getattr(incoming, f)) == bool(getattr(stored, f)) for f in flags)
            and (incoming.consent_basis, incoming.period_end)
            == (stored.consent_basis, stored.period_end))


def merge_team(existing: Child, copies: list[Involvement], incoming: list[Involvement],
               caller: Caller) -> list[Involvement]:
    """Return the involvements of a team written by ``caller``: it changes only those of its
    own organisation; others' are kept unchanged, and so is every involvement
    it may not see (docs/domain.md "Sensitive services").

    :raises Forbidden: the write adds or changes another organisation's involvement.
    """
    by_id = {inv.resource_id: i for i, inv in enumerate(existing.involvements)}
    by_key = {part_key(copy): i for i, copy in enumerate(copies)}
    used: set[int] = set()
    merged: list[Involvement] = []
    for index, inv in enumerate(incoming):
        match = by_id.get(inv.resource_id) if inv.resource_id else by_key.get(part_key(inv))
        if may_write_involvement(inv.organisation, caller):
            merged.append(inv)
        elif match is not None and may_see_involvement(existing.involvements[match], caller) \
                and _same(inv, copies[match]):
            merged.append(copies[match])
        else:
            raise Forbidden("You may add or change only involvements of your own organisation "
                            f"({caller.organisation_code}); send the others as they are.",
                            expression=f"CareTeam.participant[{index}]")
        if match is not None:
            used.add(match)
    for i, stored in enumerate(existing.involvements):
        if i not in used and not (may_write_involvement(stored.organisation, caller)
                                  and may_see_involvement(stored, caller)):
            merged.insert(min(i, len(merged)), copies[i])
    return merged


def check_assessment_dates(record: Assessment) -> None:
    """Check the dates an assessment's status needs (the model's CHECK constraints).

    :raises Invalid: a date out of order or missing for the status.
    """
    started = record.started_date
    problems = [
        (record.completed_date and started and record.completed_date < started,
         "completed before it started"),
        (record.closed_date and started and record.closed_date < started,
         "closed before it started"),
        (record.status == "closed" and record.closed_date is None,
         "closed without a closed date (period.end)"),
        (record.status == "completed" and record.completed_date is None,
         "completed without a completed date"),
    ]
    for broken, text in problems:
        if broken:
            raise Invalid(f"The assessment is {text}.", expression="CareTeam.period")




def stored_member(member: TeamMember) -> TeamMember:
    """Return a transient copy of a stored team member, its organisation and practitioner as
    keys that resolve to the stored ones unchanged."""
    copy = TeamMember(role=member.role, phone=member.phone, email=member.email)
    copy.organisation = organisation_key_copy(member.organisation)
    copy.practitioner = practitioner_copy(member.practitioner) if member.practitioner else None
    return copy
