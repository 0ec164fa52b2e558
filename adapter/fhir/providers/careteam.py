"""The provider of ``CareTeam``: a child's team and an eCAF Team Around the Child behind one
type (stored by ``adapter.store.careteams``, rendered and searched by
``adapter.fhir.careteams``)."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session, attributes

from adapter import identity
from adapter.errors import Conflict, Forbidden, Gone, Invalid, MethodNotAllowed, NotFound
from adapter.fhir import references
from adapter.fhir.careteam_notes import careteam_changes
from adapter.fhir.careteams import (
    CARETEAM_PARAMS,
    Versions,
    category_of,
    ecaf_assessment_id,
    ecaf_condition,
    is_lead_participant,
    list_items,
    participant_roles,
    render_ecaf,
    render_team,
    subject_child,
    team_condition,
)
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.paging import Kind, count_of, kinds_page
from adapter.fhir.providers.patient import render_patient
from adapter.fhir.providers.records import check_body_id
from adapter.fhir.search import SearchParam, SearchRequest
from adapter.fhir.validation import require_valid, validate_stored
from adapter.mapping import fhir as mapping
from adapter.models import Assessment, Child, Organisation
from adapter.models.canonical import build_child, canonical_dump
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import may_see_member, may_write_assessment
from adapter.settings import Settings
from adapter.store import history
from adapter.store.careteams import (
    ECAF,
    TEAM,
    assessment_query,
    check_assessment_dates,
    check_consent,
    check_deleted,
    check_shielding,
    complete_part,
    load_assessment,
    merge_team,
    not_found,
    snapshot_child,
    stored_member,
    team_child,
    team_query,
)
from adapter.store.children import require_own_authority
from adapter.store.organisations import (
    check_version,
    flush_write,
    method_of,
    organisation_key_copy,
    practitioner_copy,
    stored_organisation,
    stored_practitioner,
    write_errors,
)
from adapter.store.records import apply_assessment, apply_child, part_key
from adapter.systems import OwnSystems


class CareTeamProvider:
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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.canonical_base
        self.own = OwnSystems(self.base)

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
            return render_team(session, row, caller, action, self.base)
        return render_ecaf(session, row, caller, action, self.base)

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
            out.append((render_team(session, child, caller, action, self.base), child.version,
                        method_of(child.version), child.last_updated))
        for stored in history.child_versions(session, child.resource_id):
            if stored.deleted or only not in (None, stored.version):
                continue
            snapshot = self._with_current_ids(history.child_from_snapshot(stored), child)
            out.append((render_team(session, snapshot, caller, action, self.base, child),
                        stored.version,
                        method_of(stored.version), stored.last_updated))
        return out

    def _with_current_ids(self, snapshot: Child, current: Child) -> Child:
        """Give a snapshot's involvements the PractitionerRole ids of the current ones they
        are (same natural key), else the id an involvement with that key is given when it is
        stored (``records._link_involvement``)."""
        ids = {part_key(i): i.resource_id for i in current.involvements}
        for involvement in snapshot.involvements:
            key = part_key(involvement)
            involvement.resource_id = ids.get(key) or identity.involvement_role_id(
                current.contactpoint_id, key)
        snapshot.careteam_id = current.careteam_id
        return snapshot

    def _ecaf_versions(self, session: Session, resource_id: str, current: Any,
                       caller: Caller, action: str, only: int | None) -> Versions:
        """Return the versions of an eCAF team (a deleted one: its tombstone first).

        :raises NotFound: no such team for the caller.
        """
        stored = history.assessment_versions(session, resource_id)
        child = current.child if current is not None else \
            next((snapshot_child(session, v, caller) for v in stored if not v.deleted), None)
        if child is None:
            raise not_found(resource_id)
        out: Versions = []
        if current is not None and only in (None, current.version):
            out.append((render_ecaf(session, current, caller, action, self.base),
                        current.version,
                        method_of(current.version), current.last_updated))
        for version in stored:
            if only not in (None, version.version):
                continue
            rendered = None if version.deleted else render_ecaf(
                session, history.assessment_from_snapshot(version, child), caller, action,
                self.base)
            method = "DELETE" if version.deleted else method_of(version.version)
            out.append((rendered, version.version, method, version.last_updated))
        return out

    # --- search -------------------------------------------------------------------------

    def _kinds(self, session: Session, search: SearchRequest, caller: Caller) -> list[Kind]:
        """Return the two kinds of CareTeam with the search's criteria applied."""
        teams, ecafs = team_query(caller), assessment_query(caller)
        for criterion in search.criteria:
            teams = teams.where(team_condition(criterion, caller, self.own))
            ecafs = ecafs.where(ecaf_condition(criterion, caller, self.own))
        return [Kind("team", teams, Child.id,
                     lambda row: render_team(session, row, caller, "search", self.base).resource),
                Kind("ecaf", ecafs, Assessment.id,
                     lambda row: render_ecaf(session, row, caller, "search", self.base).resource)]

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
                for role in participant_roles(session, row, caller, self.base):
                    found.setdefault(("PractitionerRole", role["id"]), role)
        if "CareTeam:subject" in search.includes:
            children = {id(c): c for c in (r if isinstance(r, Child) else r.child for r in rows)}
            for child in children.values():
                patient = render_patient(session, child, caller, "search", self.base).resource
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
        if category_of(resource, self.own) == TEAM:
            notes = self._valid(session, resource, caller)
            child = subject_child(session, mapping.careteam_subject(resource, base=self.base),
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
        kind = category_of(resource, self.own)
        child = team_child(session, resource_id, caller)
        if child is not None and kind == TEAM:
            notes = self._valid(session, resource, caller)
            return self._write_team(session, child, resource, notes, caller, if_match)
        assessment = load_assessment(session, resource_id, caller)
        if assessment is not None and kind == ECAF:
            return self._update_ecaf(session, assessment, resource, caller, if_match)
        if child is None and assessment is None and kind == ECAF:
            return self._create_ecaf_at(session, resource_id, resource, caller)
        if child is None and assessment is None:
            raise not_found(resource_id)
        raise Invalid("The CareTeam's category does not match the CareTeam at this id.",
                      expression="CareTeam.category")

    def _valid(self, session: Session, resource: dict[str, Any],
               caller: Caller) -> list[dict[str, Any]]:
        """Validate an inbound CareTeam and read its participants' earlier PractitionerRole
        ids as the ids they have now; return the notes (not kept, ids read anew).

        :raises Invalid: not valid.
        """
        notes = require_valid("CareTeam", resource, self.settings)
        return notes + references.resolve_role_aliases(session, "CareTeam", resource, caller)

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
        references.require_resolved(session, "CareTeam", resource, caller, self.settings)
        subject = mapping.careteam_subject(resource, base=self.base)
        if subject.resource_id not in (None, child.resource_id) or \
                subject.contactpoint_id not in (None, child.contactpoint_id):
            raise Invalid("The subject of a child's team is that child.",
                          expression="CareTeam.subject")
        incoming, _ignored = mapping.careteam_to_involvements(resource, base=self.base)
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
        rendered = render_team(session, child, caller, None, self.base)
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
        notes = self._valid(session, resource, caller)
        record, _ignored = mapping.careteam_to_assessment(resource, base=self.base)
        child = subject_child(session, record.child, caller)
        check_shielding(child, caller)
        references.require_resolved(session, "CareTeam", resource, caller, self.settings)
        check_assessment_dates(record)
        self._resolve_lead(session, record, existing)
        stored = {m.resource_id: stored_member(m) for m in (existing.members if existing
                                                              else [])}
        positions = [i for i, p in enumerate(list_items(resource.get("participant")))
                     if not is_lead_participant(p)]
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
        aid = ecaf_assessment_id(resource, self.own)
        if aid is None or identity.ecaf_careteam_id(aid) != resource_id:
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
        rendered = render_ecaf(session, assessment, caller, None, self.base)
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
        return validate_stored("CareTeam", resource, caller, self.settings)
