"""Children's teams and eCAF Teams Around the Child as FHIR CareTeams (the REST handler of
``CareTeam``). Two kinds behind one type, told apart by ``category``:

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
from typing import Any, ClassVar, Final

from sqlalchemy import Select, and_, exists, false, or_, select, true, update
from sqlalchemy.orm import Session, attributes, contains_eager, selectinload

from adapter import codes
from adapter.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    issue,
)
from adapter.fhir import references
from adapter.fhir.careteam_notes import careteam_changes
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import (
    BY_IDENTIFIER,
    NOT,
    Criterion,
    SearchParam,
    SearchRequest,
    parse_date,
    search_reference,
    split_token,
)
from adapter.fhir.validation import require_valid, validate_stored
from adapter.identifiers import resource_id_for
from adapter.mapping import fhir as mapping
from adapter.models import Assessment, Child, Involvement, Organisation, Practitioner, TeamMember
from adapter.models.canonical import build_child, canonical_dump
from adapter.notify import ledger
from adapter.security import audit
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
    may_write_assessment,
    may_write_involvement,
    member_shown,
    visible_to,
)
from adapter.store import history
from adapter.store.children import (
    BREAK_GLASS,
    PATIENT_PARAMS,
    child_query,
    criterion_condition,
    render_patient,
    require_own_authority,
)
from adapter.store.organisations import (
    Kind,
    base,
    check_body_id,
    check_version,
    count_of,
    flush_write,
    kinds_page,
    matching_codes,
    method_of,
    organisation_identifier_condition,
    organisation_key_copy,
    own_systems,
    practitioner_copy,
    practitioner_identifier_condition,
    stored_organisation,
    stored_practitioner,
    token_condition,
    write_errors,
)
from adapter.store.practitioner_roles import involvement_role, lead_role, member_role
from adapter.store.records import apply_assessment, apply_child, part_key

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
    if _snapshot_child(session, versions[1], caller) is not None:
        raise Gone(f"CareTeam/{resource_id} has been deleted.")


def _snapshot_child(session: Session, version: Any, caller: Caller) -> Child | None:
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
            if _is_lead_participant(participant):
                mapping.withhold_member(participant, assessment.child.managing_organisation,
                                        base=base())
    shielded = assessment.child.shielded
    if action is not None:
        audit.record(session, action, resource_type="CareTeam", resource_id=str(resource["id"]),
                     child_ref=assessment.child.resource_id, override=shielded, caller=caller)
        ledger.record_delivery(session, caller, assessment.child, action)
    return Rendered(resource, assessment.version, assessment.last_updated, _warnings(shielded))


def _is_lead_participant(participant: Any) -> bool:
    """Return True when a CareTeam participant has the lead-professional role."""
    return isinstance(participant, dict) and any(
        coding.get("code") == "lead-professional" for role in _items(participant.get("role"))
        if isinstance(role, dict) for coding in _items(role.get("coding"))
        if isinstance(coding, dict))


def _items(value: Any) -> list[Any]:
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
    found = {str(coding.get("code")) for concept in _items(resource.get("category"))
             if isinstance(concept, dict) for coding in _items(concept.get("coding"))
             if isinstance(coding, dict) and coding.get("system") == system}
    for kind in (ECAF, TEAM):
        if kind in found:
            return kind
    raise Invalid(f"A CareTeam here is a child's team or an eCAF Team Around the Child: give "
                  f"category {system}|{TEAM} or |{ECAF}.", expression="CareTeam.category")


def ecaf_assessment_id(resource: dict[str, Any]) -> str | None:
    """Return the eCAF assessment id of a CareTeam's identifier, if it has one."""
    system = own_systems().ecaf_assessment
    for identifier in _items(resource.get("identifier")):
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


class CareTeamHandler:
    """The REST handler of ``CareTeam``."""

    resource_type: ClassVar[str] = "CareTeam"
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "vread", "history-instance", "search-type", "search-type-post", "create",
        "update", "conditional-update", "delete", "validate")
    search_params: ClassVar[dict[str, SearchParam]] = CARETEAM_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset({"CareTeam:participant",
                                                    "CareTeam:subject"})
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = "CareTeam"

    # --- reads --------------------------------------------------------------------------

    def _find(self, session: Session, resource_id: str,
              caller: Caller) -> Child | Assessment:
        """Return the child (its team) or the assessment with CareTeam id ``resource_id``.

        :raises NotFound: neither, or not one the caller may see.
        :raises Gone: a deleted eCAF team.
        """
        child = team_child(session, resource_id, caller)
        if child is not None:
            return child
        assessment = load_assessment(session, resource_id, caller)
        if assessment is not None:
            return assessment
        check_deleted(session, resource_id, caller)
        raise not_found(resource_id)

    def _render(self, session: Session, row: Child | Assessment, caller: Caller,
                action: str | None) -> Rendered:
        """Render a child's team or an eCAF team."""
        if isinstance(row, Child):
            return render_team(session, row, caller, action)
        return render_ecaf(session, row, caller, action)

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the CareTeam as ``caller`` may see it."""
        return self._render(session, self._find(session, resource_id, caller), caller, "read")

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return one version of a CareTeam.

        :raises NotFound: no such version.
        """
        for rendered, number, _method, _updated in self._versions(session, resource_id,
                                                                  caller, "vread", version):
            if number == version and rendered is not None:
                return rendered
        raise NotFound(f"CareTeam/{resource_id} has no version {version}.")

    def history(self, session: Session, resource_id: str, caller: Caller) -> Versions:
        """Return every version of a CareTeam, newest first."""
        return self._versions(session, resource_id, caller, "history", None)

    def _versions(self, session: Session, resource_id: str, caller: Caller, action: str,
                  only: int | None) -> Versions:
        """Return the versions of a CareTeam (only version ``only`` rendered, if given).

        :raises NotFound: no such CareTeam for the caller.
        """
        try:
            row: Child | Assessment | None = self._find(session, resource_id, caller)
        except Gone:
            row = None
        if isinstance(row, Child):
            return self._team_versions(session, row, caller, action, only)
        return self._ecaf_versions(session, resource_id, row, caller, action, only)

    def _team_versions(self, session: Session, child: Child, caller: Caller, action: str,
                       only: int | None) -> Versions:
        """Return the versions of a child's team: the child's versions (docs/domain.md: earlier
        ones live in the record's history)."""
        out: Versions = []
        if only in (None, child.version):
            out.append((render_team(session, child, caller, action), child.version,
                        method_of(child.version), child.last_updated))
        for stored in history.child_versions(session, child.resource_id):
            if stored.deleted or only not in (None, stored.version):
                continue
            snapshot = self._with_current_ids(history.child_from_snapshot(stored), child)
            out.append((render_team(session, snapshot, caller, action, child), stored.version,
                        method_of(stored.version), stored.last_updated))
        return out

    def _with_current_ids(self, snapshot: Child, current: Child) -> Child:
        """Give a snapshot's involvements the PractitionerRole ids of the current ones they
        are (same natural key), else the id an involvement with that key is given when it is
        stored (``records._link_involvement``)."""
        ids = {part_key(i): i.resource_id for i in current.involvements}
        for involvement in snapshot.involvements:
            key = part_key(involvement)
            involvement.resource_id = ids.get(key) or resource_id_for(
                "PractitionerRole", f"{current.contactpoint_id}/{key}")
        snapshot.careteam_id = current.careteam_id
        return snapshot

    def _ecaf_versions(self, session: Session, resource_id: str, current: Any,
                       caller: Caller, action: str, only: int | None) -> Versions:
        """Return the versions of an eCAF team (a deleted one: its tombstone first).

        :raises NotFound: no such team for the caller.
        """
        stored = history.assessment_versions(session, resource_id)
        child = current.child if current is not None else \
            next((_snapshot_child(session, v, caller) for v in stored if not v.deleted), None)
        if child is None:
            raise not_found(resource_id)
        out: Versions = []
        if current is not None and only in (None, current.version):
            out.append((render_ecaf(session, current, caller, action), current.version,
                        method_of(current.version), current.last_updated))
        for version in stored:
            if only not in (None, version.version):
                continue
            rendered = None if version.deleted else render_ecaf(
                session, history.assessment_from_snapshot(version, child), caller, action)
            method = "DELETE" if version.deleted else method_of(version.version)
            out.append((rendered, version.version, method, version.last_updated))
        return out

    # --- search -------------------------------------------------------------------------

    def _kinds(self, session: Session, search: SearchRequest, caller: Caller) -> list[Kind]:
        """Return the two kinds of CareTeam with the search's criteria applied."""
        teams, ecafs = team_query(caller), assessment_query(caller)
        for criterion in search.criteria:
            teams = teams.where(team_condition(criterion, caller))
            ecafs = ecafs.where(ecaf_condition(criterion, caller))
        return [Kind("team", teams, Child.id,
                     lambda row: render_team(session, row, caller, "search").resource),
                Kind("ecaf", ecafs, Assessment.id,
                     lambda row: render_ecaf(session, row, caller, "search").resource)]

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of CareTeams: children's teams, then eCAF teams (keyset paging)."""
        rows, cursor = kinds_page(session, self._kinds(session, search, caller), search)
        matches = [kind.render(row) for kind, row in rows]
        return Page(matches, self._included(session, [r for _k, r in rows], search, caller),
                    cursor)

    def _included(self, session: Session, rows: list[Any], search: SearchRequest,
                  caller: Caller) -> list[dict[str, Any]]:
        """Return the ``_include``d PractitionerRoles and Patients (disclosed and audited)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        if "CareTeam:participant" in search.includes:
            for row in rows:
                for role in participant_roles(session, row, caller):
                    found.setdefault(("PractitionerRole", role["id"]), role)
        if "CareTeam:subject" in search.includes:
            children = {id(c): c for c in (r if isinstance(r, Child) else r.child for r in rows)}
            for child in children.values():
                patient = render_patient(session, child, caller, "search").resource
                found.setdefault(("Patient", patient["id"]), patient)
        return list(found.values())

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many CareTeams match (nothing is disclosed: no audit)."""
        return sum(count_of(session, kind.query, kind.id_column)
                   for kind in self._kinds(session, search, caller))

    # --- writes -------------------------------------------------------------------------

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create an eCAF team, or set a child's team (its involvements), by ``category``.

        :raises Conflict: the eCAF assessment is already referenced.
        """
        if category_of(resource) == TEAM:
            notes = require_valid("CareTeam", resource)
            child = subject_child(session, mapping.careteam_subject(resource, base=base()),
                                  caller)
            return self._write_team(session, child, resource, notes, caller, None, posted=True)
        return self._create_ecaf(session, resource, caller)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update a CareTeam (If-Match guards against lost updates); an eCAF team can be
        created by PUT at the id derived from its assessment id.

        :raises Invalid: the body's id or kind differs from the URL's.
        """
        check_body_id(resource, resource_id, "CareTeam")
        kind = category_of(resource)
        child = team_child(session, resource_id, caller)
        if child is not None and kind == TEAM:
            return self._write_team(session, child, resource, require_valid("CareTeam", resource),
                                    caller, if_match)
        assessment = load_assessment(session, resource_id, caller)
        if assessment is not None and kind == ECAF:
            return self._update_ecaf(session, assessment, resource, caller, if_match)
        if child is None and assessment is None and kind == ECAF:
            return self._create_ecaf_at(session, resource_id, resource, caller)
        if child is None and assessment is None:
            raise not_found(resource_id)
        raise Invalid("The CareTeam's category does not match the CareTeam at this id.",
                      expression="CareTeam.category")

    def _write_team(self, session: Session, child: Child, resource: dict[str, Any],
                    notes: list[dict[str, Any]], caller: Caller,
                    if_match: int | None, posted: bool = False) -> WriteResult:
        """Set a child's involvements from its validated team CareTeam. A POST that changes
        the team is a create (201, FHIR R4 http.html#create), whether or not the child had
        involvements before: the team of a child exists as long as the child.

        :raises PreconditionFailed: stale ``If-Match``.
        :raises Forbidden: not the managing authority, or shielded without the right.
        :raises Invalid: the subject is another child, or a participant is invalid.
        """
        check_version(child.version, if_match)
        require_own_authority(child.managing_organisation, caller)
        check_shielding(child, caller)
        references.require_resolved(session, "CareTeam", resource, caller)
        subject = mapping.careteam_subject(resource, base=base())
        if subject.resource_id not in (None, child.resource_id) or \
                subject.contactpoint_id not in (None, child.contactpoint_id):
            raise Invalid("The subject of a child's team is that child.",
                          expression="CareTeam.subject")
        incoming, _ignored = mapping.careteam_to_involvements(resource, base=base())
        record, _builder = build_child(canonical_dump(child, meta=False))
        copies = list(record.involvements)
        stored = {inv.resource_id: copies[i] for i, inv in enumerate(child.involvements)}
        for index, part in enumerate(incoming):
            where = f"CareTeam.participant[{index}]"
            complete_part(session, part, where, stored)
            check_consent(part, where)
        record.involvements = merge_team(child, copies, incoming, caller)
        result = self._apply_team(session, child, record, caller, notes, posted)
        result.rendered.issues += careteam_changes(resource, result.rendered.resource, False,
                                                   result.rendered.issues)
        return result

    def _apply_team(self, session: Session, child: Child, record: Child, caller: Caller,
                    notes: list[dict[str, Any]], posted: bool) -> WriteResult:
        """Apply a team's involvements, snapshot the previous version, audit and render."""
        before, had = history.child_snapshot(child), bool(child.involvements)
        with write_errors("team"):
            child, outcome = apply_child(session, record, child)
            session.flush()  # the version check first: a concurrent writer gets 412
        if outcome != "unchanged":
            session.add(before)
            flush_write(session, "team")
        action = "update-unchanged" if outcome == "unchanged" else "update" if had else "create"
        audit.record(session, action, resource_type="CareTeam", resource_id=child.careteam_id,
                     child_ref=child.resource_id, caller=caller)
        ledger.record_delivery(session, caller, child, "write")  # the answer discloses it
        rendered = render_team(session, child, caller, None)
        rendered.issues = notes + rendered.issues
        return WriteResult(rendered, created=(posted or not had) and outcome != "unchanged",
                           changed=outcome != "unchanged")

    def _ecaf_record(self, session: Session, resource: dict[str, Any], caller: Caller,
                     existing: Assessment | None) -> tuple[Assessment, Child,
                                                           list[dict[str, Any]]]:
        """Validate and map an eCAF CareTeam to a transient assessment about a stored child,
        its organisations and practitioners resolved, hidden members kept.

        :raises Invalid: invalid, or naming what is not known here.
        :raises Forbidden: a shielded child without the right.
        """
        notes = require_valid("CareTeam", resource)
        record, _ignored = mapping.careteam_to_assessment(resource, base=base())
        child = subject_child(session, record.child, caller)
        check_shielding(child, caller)
        references.require_resolved(session, "CareTeam", resource, caller)
        check_assessment_dates(record)
        self._resolve_lead(session, record, existing)
        stored = {m.resource_id: _stored_member(m) for m in (existing.members if existing
                                                              else [])}
        positions = [i for i, p in enumerate(_items(resource.get("participant")))
                     if not _is_lead_participant(p)]
        for member, index in zip(record.members, positions, strict=False):
            complete_part(session, member, f"CareTeam.participant[{index}]", stored)
        hidden = [stored[m.resource_id] for m in (existing.members if existing else [])
                  if not may_see_member(m, caller)]
        record.members = [*record.members, *hidden]
        return record, child, notes

    def _resolve_lead(self, session: Session, record: Assessment,
                      existing: Assessment | None) -> None:
        """Resolve the lead professional: the stored lead when the member is this team's lead
        PractitionerRole, else the contained role's (or onBehalfOf's) stored records.

        :raises Invalid: another lead role, or an unknown organisation or practitioner.
        """
        where = "CareTeam.participant.member"
        if record.lead_organisation is None:
            if existing is None or record.lead_role_id != existing.lead_role_id:
                raise Invalid(f"{where}: the lead's member is not this team's lead "
                              "PractitionerRole; contain a new one (#id).", expression=where)
            person = existing.lead_practitioner
            record.lead_organisation = organisation_key_copy(existing.lead_organisation)
            record.lead_practitioner = practitioner_copy(person) if person else None
            record.phone, record.email = existing.phone, existing.email
            return
        record.lead_organisation = organisation_key_copy(
            stored_organisation(session, record.lead_organisation, where))
        if record.lead_practitioner is not None:
            record.lead_practitioner = practitioner_copy(
                stored_practitioner(session, record.lead_practitioner, where))

    def _authorise_ecaf(self, lead: Organisation, child: Child, caller: Caller) -> None:
        """eCAF writes: the lead professional's organisation or the child's managing authority.

        :raises Forbidden: neither.
        """
        if not may_write_assessment(lead, child.managing_organisation, caller):
            raise Forbidden("Only the lead professional's organisation or the child's managing "
                            "authority may write this eCAF team.", expression="CareTeam")

    def _create_ecaf(self, session: Session, resource: dict[str, Any],
                     caller: Caller) -> WriteResult:
        """Create an eCAF assessment reference from its CareTeam.

        :raises Conflict: the assessment is already referenced.
        """
        record, child, notes = self._ecaf_record(session, resource, caller, None)
        self._authorise_ecaf(stored_organisation(session, record.lead_organisation,
                                                 "CareTeam.participant"), child, caller)
        taken = session.scalar(select(Assessment.resource_id).where(
            Assessment.assessment_id == record.assessment_id))
        if taken is not None:
            raise Conflict(f"CareTeam/{taken} references this eCAF assessment: update it with "
                           "PUT.", expression="CareTeam.identifier")
        with write_errors("eCAF team"):
            assessment, _outcome = apply_assessment(session, record, child, None)
            session.flush()
        self._continue_versions(session, assessment)
        result = self._saved(session, assessment, caller, "create", notes, created=True)
        result.rendered.issues += careteam_changes(resource, result.rendered.resource, True,
                                                   result.rendered.issues)
        return result

    def _continue_versions(self, session: Session, assessment: Assessment) -> None:
        """A team created again after its deletion continues its version numbers (its
        history keeps the earlier versions and the tombstone)."""
        previous = history.assessment_versions(session, assessment.resource_id)
        if not previous:
            return
        number = previous[0].version + 1
        session.execute(update(Assessment).where(Assessment.id == assessment.id)
                        .values(version=number).execution_options(synchronize_session=False))
        attributes.set_committed_value(assessment, "version", number)

    def _create_ecaf_at(self, session: Session, resource_id: str, resource: dict[str, Any],
                        caller: Caller) -> WriteResult:
        """Create an eCAF team by PUT: only at the id derived from its assessment id.

        :raises Invalid: another id.
        """
        aid = ecaf_assessment_id(resource)
        if aid is None or resource_id_for("CareTeam", f"ecaf/{aid}") != resource_id:
            raise Invalid("A new eCAF CareTeam can be created by PUT only at the id derived "
                          "from its assessment id; use POST instead.", expression="CareTeam.id")
        return self._create_ecaf(session, resource, caller)

    def _update_ecaf(self, session: Session, existing: Assessment, resource: dict[str, Any],
                     caller: Caller, if_match: int | None) -> WriteResult:
        """Update an eCAF assessment reference from its CareTeam.

        :raises PreconditionFailed: stale ``If-Match``.
        :raises Invalid: another assessment id or another child.
        """
        check_version(existing.version, if_match)
        self._authorise_ecaf(existing.lead_organisation, existing.child, caller)
        record, child, notes = self._ecaf_record(session, resource, caller, existing)
        if record.assessment_id != existing.assessment_id or child is not existing.child:
            raise Invalid("The eCAF assessment id and the child of an eCAF team cannot change.",
                          expression="CareTeam.identifier")
        before = history.assessment_snapshot(existing)
        with write_errors("eCAF team"):
            assessment, outcome = apply_assessment(session, record, child, existing)
            session.flush()  # the version check first: a concurrent writer gets 412
        if outcome != "unchanged":
            session.add(before)
            flush_write(session, "eCAF team")
        action = "update" if outcome != "unchanged" else "update-unchanged"
        result = self._saved(session, assessment, caller, action, notes, created=False,
                             changed=outcome != "unchanged")
        result.rendered.issues += careteam_changes(resource, result.rendered.resource, True,
                                                   result.rendered.issues)
        return result

    def _saved(self, session: Session, assessment: Assessment, caller: Caller, action: str,
               notes: list[dict[str, Any]], *, created: bool,
               changed: bool = True) -> WriteResult:
        """Audit and render a written eCAF team."""
        audit.record(session, action, resource_type="CareTeam",
                     resource_id=assessment.resource_id,
                     child_ref=assessment.child.resource_id, caller=caller)
        ledger.record_delivery(session, caller, assessment.child, "write")  # (as a read)
        rendered = render_ecaf(session, assessment, caller, None)
        rendered.issues = notes + rendered.issues
        return WriteResult(rendered, created, changed)

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Delete an eCAF team (the assessment reference); a child's team is not deleted.

        :raises MethodNotAllowed: a child's team.
        :raises Forbidden: neither the lead's organisation nor the managing authority.
        """
        row = self._find(session, resource_id, caller)
        if isinstance(row, Child):
            raise MethodNotAllowed("A child's team is not deleted: end each involvement by "
                                   "deleting its PractitionerRole (or PUT the team without it).")
        self._authorise_ecaf(row.lead_organisation, row.child, caller)
        before = history.assessment_snapshot(row)
        session.delete(row)
        flush_write(session, "eCAF team")  # the version check first: a concurrent writer loses
        session.add(before)
        history.record_deleted(session, "assessment", resource_id, before.version + 1)
        flush_write(session, "eCAF team")
        audit.record(session, "delete", resource_type="CareTeam", resource_id=resource_id,
                     child_ref=row.child.resource_id, caller=caller)

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues inbound validation finds (no change is made)."""
        return validate_stored("CareTeam", resource, caller)


def _stored_member(member: TeamMember) -> TeamMember:
    """Return a transient copy of a stored team member, its organisation and practitioner as
    keys that resolve to the stored ones unchanged."""
    copy = TeamMember(role=member.role, phone=member.phone, email=member.email)
    copy.organisation = organisation_key_copy(member.organisation)
    copy.practitioner = practitioner_copy(member.practitioner) if member.practitioner else None
    return copy
