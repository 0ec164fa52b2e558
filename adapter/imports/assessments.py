"""Applying one batch of eCAF assessment references (read as canonical dicts): each record in
its own savepoint through ``apply_assessment``, with the rules of an eCAF write through the
FHIR CareTeam (``adapter.store.careteams``): the lead professional's organisation or the
child's managing authority writes it, a shielded child's only with the shielding right, and
what the caller may not see (sensitive services' team members, a sensitive lead professional)
is kept as stored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload, selectinload

from adapter import identity
from adapter.errors import Conflict, Forbidden, GatewayError, Invalid
from adapter.imports.directory import (
    CONFLICT,
    DB_ERRORS,
    ImportKind,
    Pending,
    applied,
    rejected,
)
from adapter.imports.rows import (
    SharedRows,
    described_in_assessment,
    national_only,
    with_national_only_practitioners,
)
from adapter.models import Assessment, Child
from adapter.models.canonical import (
    AssessmentRecord,
    Canonical,
    canonical_assessment_dump,
    organisation_key,
    without_meta,
)
from adapter.security import audit
from adapter.security.caller import Caller
from adapter.security.policy import (
    is_administrator,
    may_see_lead,
    may_see_member,
    may_write_assessment,
    require_shared_unchanged,
    visible_to,
)
from adapter.store import history
from adapter.store.records import apply_assessment

WHERE: Final = "AssessmentReference"
LEAD_FIELDS: Final = ("lead_organisation", "lead_practitioner", "phone", "email")
# The child's identifiers an assessment reference may name it by, in the order tried.
CHILD_KEYS: Final = (("contactpoint_id", Child.contactpoint_id),
                     ("nhs_number", Child.nhs_number), ("upn", Child.upn))


def child_select(caller: Caller) -> Select[Child]:
    """Return a select of the children ``caller`` may write assessment references about,
    with the managing authority the checks need."""
    return select(Child).options(joinedload(Child.managing_organisation)).where(
        visible_to(caller))


def find_child(session: Session, reference: Canonical, caller: Caller,
               known: Mapping[str, Child]) -> Child:
    """Return the stored child an assessment reference names (by ContactPoint ID, else NHS
    number, else UPN; ``known`` holds children found by ContactPoint ID already); every
    identifier it gives must be that child's.

    :raises Invalid: no such entry (visible to the caller), or identifiers of several.
    """
    given = [(name, column) for name, column in CHILD_KEYS if reference.get(name)]
    child = known.get(reference.get("contactpoint_id") or "")
    if child is None and given:
        name, column = given[0]
        child = session.scalar(child_select(caller).where(column == reference[name])
                               .order_by(Child.id).limit(1))
    if child is None:
        raise Invalid("the child is not in the directory: import its entry first",
                      expression=f"{WHERE}/Child")
    if any(getattr(child, name) != reference[name] for name, _ in given):
        raise Invalid("the child's identifiers name different entries",
                      expression=f"{WHERE}/Child")
    return child


def check_writable(data: Canonical, child: Child, existing: Assessment | None,
                   caller: Caller) -> None:
    """Check that ``caller`` may write this assessment reference.

    :raises Forbidden: neither the lead's organisation nor the child's authority (for the
        record and for the stored reference), or a shielded child without the right.
    :raises Invalid: the stored reference is about another child.
    """
    authority = child.managing_organisation
    allowed = may_write_assessment(data["lead_organisation"], authority, caller)
    if existing is not None:
        allowed &= may_write_assessment(existing.lead_organisation, authority, caller)
    if not allowed:
        raise Forbidden("not your authority: only the lead professional's organisation or the "
                        "child's managing authority writes an assessment reference",
                        expression=f"{WHERE}/LeadProfessional")
    if child.shielded and not caller.has_right("shielded"):
        raise Forbidden("the child's entry is shielded: writing its assessment references "
                        "needs the shielding right", expression=f"{WHERE}/Child")
    if existing is not None and existing.child_id != child.id:
        raise Invalid("the stored assessment reference is about another child",
                      expression=f"{WHERE}/Child")


def _member_key(member: Canonical) -> str:
    """Return a team member dict's natural key, as ``records.part_key`` makes it."""
    return identity.team_member_key(member["role"], organisation_key(member["organisation"])[1],
                                    identity.practitioner_dict_key_text(member["practitioner"]))


def merge_withheld(data: Canonical, stored: Canonical, existing: Assessment,
                   caller: Caller) -> Canonical:
    """Return ``data`` with what ``caller`` may not see kept as stored: sensitive services'
    team members, and a lead professional from a sensitive service (docs/domain.md "Sensitive
    services"; the same parts ``careteams.ecaf_view`` withholds), and the practitioners the
    dialect cannot name (known only by national numbers)."""
    merged = dict(data)
    if not may_see_lead(existing, caller):
        merged.update({name: stored[name] for name in LEAD_FIELDS})
    elif merged["lead_practitioner"] is None and national_only(stored["lead_practitioner"]) \
            and organisation_key(merged["lead_organisation"]) == \
            organisation_key(stored["lead_organisation"]):
        # The record cannot name a lead known only by national numbers: it keeps them.
        merged["lead_practitioner"] = stored["lead_practitioner"]
    hidden = [i for i, member in enumerate(existing.members) if not may_see_member(member, caller)]
    members = with_national_only_practitioners(list(data["members"]), stored["members"])
    sent = {_member_key(member) for member in members}
    for index in hidden:
        if _member_key(stored["members"][index]) not in sent:
            members.insert(min(index, len(members)), stored["members"][index])
    merged["members"] = members
    return merged


class AssessmentBatch:
    """One batch of assessment references, each applied in its own savepoint."""

    def __init__(self, session: Session, caller: Caller, detail: str) -> None:
        self.session, self.caller, self.detail = session, caller, detail
        self.stored: dict[str, Assessment] = {}
        self.children: dict[str, Child] = {}
        self.shared: SharedRows | None = None

    def apply(self, pending: list[Pending]) -> dict[int, Any]:
        """Apply the batch; return each record's outcome by its position."""
        self._prefetch(pending)
        outcomes: dict[int, Any] = {}
        for item in pending:
            cpid = item.data["child"].get("contactpoint_id")
            try:
                with self.session.begin_nested():
                    outcomes[item.position] = applied(item, self._apply(item.data), cpid)
            except GatewayError as error:
                outcomes[item.position] = rejected(item, error, cpid)
            except DB_ERRORS:
                outcomes[item.position] = rejected(item, GatewayError(CONFLICT), cpid)
        return outcomes

    def _prefetch(self, pending: list[Pending]) -> None:
        """Load the batch's stored references and the children they name by ContactPoint ID,
        one query each."""
        ids = [item.data["assessment_id"] for item in pending]
        self.stored = {a.assessment_id: a for a in self.session.scalars(
            select(Assessment).where(Assessment.assessment_id.in_(ids))
            .options(selectinload(Assessment.members)))}
        cpids = [cpid for item in pending if (cpid := item.data["child"].get("contactpoint_id"))]
        self.children = {c.contactpoint_id: c for c in self.session.scalars(
            child_select(self.caller).where(Child.contactpoint_id.in_(cpids)))}
        if not is_administrator(self.caller):  # who may change any shared record
            self.shared = SharedRows(self.session, (
                described for item in pending
                for described in described_in_assessment(item.data)))

    def _apply(self, data: Canonical) -> str:
        """Apply one reference; return created, updated or unchanged.

        :raises GatewayError: the write is not allowed or names an older version.
        """
        child = find_child(self.session, data["child"], self.caller, self.children)
        existing = self.stored.get(data["assessment_id"])
        check_writable(data, child, existing, self.caller)
        if self.shared is not None:
            require_shared_unchanged(described_in_assessment(data), self.shared, self.caller)
        before = None
        if existing is not None:
            stored = canonical_assessment_dump(existing, meta=False)
            data = merge_withheld(data, stored, existing, self.caller)
            if {**without_meta(data), "child": stored["child"]} == stored:
                return "unchanged"
            if data.get("version") not in (None, existing.version):
                raise Conflict(f"the reference changed after version {data['version']}, which "
                               f"this record was read at: read it again and re-apply the "
                               "change", expression=f"{WHERE}/@version")
            before = history.assessment_snapshot(existing)
        return self._write(data, child, existing, before)

    def _write(self, data: Canonical, child: Child, existing: Assessment | None,
               before: Any) -> str:
        """Apply, snapshot the superseded version and audit the write."""
        record = AssessmentRecord(without_meta(data)).assessment
        assessment, status = apply_assessment(self.session, record, child, existing)
        self.session.flush()
        if status != "unchanged":
            if before is not None:
                self.session.add(before)
            audit.record(self.session, "import-" + ("create" if existing is None else "update"),
                         resource_type="CareTeam", resource_id=assessment.resource_id,
                         child_ref=child.resource_id, caller=self.caller, detail=self.detail)
        return status


def _apply_assessments(session: Session, caller: Caller, pending: list[Pending],
                       detail: str) -> dict[int, Any]:
    """Apply a batch of assessment references (``ImportKind.apply``)."""
    return AssessmentBatch(session, caller, detail).apply(pending)


ASSESSMENT_KIND: Final = ImportKind(
    "assessment references", lambda data: str(data["assessment_id"]), _apply_assessments,
    lambda data: data["child"].get("contactpoint_id"))
