"""The provider of ``PractitionerRole``: the roles of involvements, eCAF leads and team members
(stored by ``adapter.store.practitioner_roles``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar, Final

from sqlalchemy import Select, false, or_, select, true
from sqlalchemy.orm import Session

from adapter import codes
from adapter.errors import Forbidden, Gone, MethodNotAllowed, NotFound, issue
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.paging import Kind, count_of, kinds_page
from adapter.fhir.providers.records import (
    CURRENT_ONLY,
    organisation_identifier_condition,
    practitioner_identifier_condition,
)
from adapter.fhir.search import (
    BY_IDENTIFIER,
    NOT,
    Criterion,
    SearchParam,
    SearchRequest,
    matching_codes,
    reference_id,
    split_token,
    token_condition,
)
from adapter.fhir.validation import validate_stored
from adapter.models import (
    Assessment,
    Child,
    Involvement,
    Organisation,
    Practitioner,
    TeamMember,
)
from adapter.security import audit
from adapter.security.caller import Caller
from adapter.security.policy import may_write_involvement
from adapter.settings import Settings
from adapter.store import history
from adapter.store.aliases import redirect_if_moved
from adapter.store.children import BREAK_GLASS
from adapter.store.organisations import flush_write
from adapter.store.practitioner_roles import (
    NOT_FOUND,
    deleted_role,
    involvement_query,
    involvement_role,
    lead_query,
    lead_role,
    member_query,
    member_role,
    record_role_deleted,
)
from adapter.systems import OwnSystems


def role_rendered(resource: dict[str, Any], owner: Child | Assessment, child: Child) -> Rendered:
    """Return a role with its owner's version and the break-glass warning if it applies."""
    issues = [issue("warning", "suppressed", BREAK_GLASS)] if child.shielded else []
    return Rendered(resource, owner.version, owner.last_updated, issues)


def _practitioner_ids(criterion: Criterion, value: str, own: OwnSystems) -> Any:
    """Return the select of practitioner ids a ``practitioner`` value names."""
    if criterion.modifier == "identifier":
        return select(Practitioner.id).where(practitioner_identifier_condition(value, own))
    rid = reference_id(value, "Practitioner", criterion.param.name)
    return select(Practitioner.id).where(Practitioner.resource_id == rid)


def _organisation_ids(criterion: Criterion, value: str, own: OwnSystems) -> Any:
    """Return the select of organisation ids an ``organization`` value names."""
    if criterion.modifier == "identifier":
        return select(Organisation.id).where(organisation_identifier_condition(value, own))
    rid = reference_id(value, "Organization", criterion.param.name)
    return select(Organisation.id).where(Organisation.resource_id == rid)


def _is_lead_code(value: str, own: OwnSystems) -> bool:
    """Return True when a role token names the lead professional (own team-role system)."""
    system, code = split_token(value)
    return code == "lead-professional" and system in (None, own.code_system("team-role"))


# Columns of each kind: (id, practitioner, organisation, role or None for the lead).
KIND_COLUMNS: Final = {
    "involvement": (Involvement.resource_id, Involvement.practitioner_id,
                    Involvement.organisation_id, Involvement.role),
    "member": (TeamMember.resource_id, TeamMember.practitioner_id, TeamMember.organisation_id,
               TeamMember.role),
    "lead": (Assessment.lead_role_id, Assessment.lead_practitioner_id,
             Assessment.lead_organisation_id, None),
}


def role_condition(kind: str, criterion: Criterion, own: OwnSystems) -> Any:
    """Return the SQL condition of one criterion on the roles of ``kind`` (this server's
    systems ``own``).

    :raises BadRequest: a reference to another resource type.
    """
    id_column, practitioner, organisation, role = KIND_COLUMNS[kind]
    name = criterion.param.name
    if name == "practitioner":
        return or_(*(practitioner.in_(_practitioner_ids(criterion, v, own))
                     for v in criterion.values))
    if name == "organization":
        return or_(*(organisation.in_(_organisation_ids(criterion, v, own))
                     for v in criterion.values))
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: id_column == v,
        "role": lambda v: (true() if _is_lead_code(v, own) else false()) if role is None else
        role.in_(sorted(matching_codes("involvement-role", codes.INVOLVEMENT_ROLES, v,
                                       own.base))),
    }
    return token_condition(criterion, builders[name])


PRACTITIONER_ROLE_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the PractitionerRole", modifiers=NOT),
    SearchParam("practitioner", "reference", "The Practitioner (Practitioner/id, or "
                ":identifier with the employer's staff id)",
                "http://hl7.org/fhir/SearchParameter/PractitionerRole-practitioner", BY_IDENTIFIER),
    SearchParam("organization", "reference", "The organisation (Organization/id, or "
                ":identifier with its ODS code, school URN or GSS code)",
                "http://hl7.org/fhir/SearchParameter/PractitionerRole-organization", BY_IDENTIFIER),
    SearchParam("role", "token", "The role: involvement-role code (or its SNOMED CT "
                "translation), or team-role lead-professional for eCAF lead professionals",
                "http://hl7.org/fhir/SearchParameter/PractitionerRole-role", NOT),
)}


class PractitionerRoleProvider:
    """The REST handler of ``PractitionerRole``."""

    resource_type: ClassVar[str] = "PractitionerRole"
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "vread", "history-instance", "search-type", "search-type-post", "delete",
        "validate")
    search_params: ClassVar[dict[str, SearchParam]] = PRACTITIONER_ROLE_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = "PractitionerRole"
    # Why a POST or PUT here is 405 (adapter/http.py): a role is a child's involvement.
    written_through: ClassVar[str] = (
        "A PractitionerRole is created and changed through its CareTeam: add or change the "
        "participant (a contained PractitionerRole) in the child's team or the eCAF CareTeam.")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.own = OwnSystems(settings.canonical_base)

    def _find(self, session: Session, resource_id: str,
              caller: Caller) -> Involvement | TeamMember | Assessment:
        """Return the involvement, team member or assessment (lead) with role id
        ``resource_id`` that ``caller`` may see.

        :raises NotFound: none the caller may see.
        :raises Gone: a deleted one the caller could see.
        """
        for query, column in ((involvement_query(caller), Involvement.resource_id),
                              (member_query(caller), TeamMember.resource_id),
                              (lead_query(caller), Assessment.lead_role_id)):
            found = session.scalar(query.where(column == resource_id))
            if found is not None:
                return found
        redirect_if_moved(session, self.resource_type, resource_id,
                          lambda new_id: self._find(session, new_id, caller))
        if deleted_role(session, resource_id, caller) is not None:
            raise Gone(f"PractitionerRole/{resource_id} has been deleted.")
        raise NotFound(NOT_FOUND.format(id=resource_id))

    def _render(self, session: Session, found: Involvement | TeamMember | Assessment,
                caller: Caller, action: str) -> Rendered:
        """Render a found role, audited as ``action``."""
        base = self.settings.canonical_base
        if isinstance(found, Involvement):
            return role_rendered(involvement_role(session, found, caller, action, base),
                                 found.child, found.child)
        if isinstance(found, TeamMember):
            return role_rendered(member_role(session, found, caller, action, base),
                                 found.assessment, found.assessment.child)
        return role_rendered(lead_role(session, found, caller, action, base), found,
                             found.child)

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the PractitionerRole as ``caller`` may see it."""
        return self._render(session, self._find(session, resource_id, caller), caller, "read")

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return the current version (a role's version is its child's or assessment's).

        :raises NotFound: another version.
        """
        found = self._find(session, resource_id, caller)
        owner = found if isinstance(found, Assessment) else (
            found.child if isinstance(found, Involvement) else found.assessment)
        if version != owner.version:
            raise NotFound(CURRENT_ONLY.format(type="PractitionerRole", id=resource_id,
                                               version=owner.version))
        return self._render(session, found, caller, "vread")

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return the current version (earlier ones live in the child's history), or the
        deletion of a deleted role."""
        try:
            found = self._find(session, resource_id, caller)
        except Gone:
            tombstone = deleted_role(session, resource_id, caller)
            assert tombstone is not None  # noqa: S101 - Gone means there is one
            return [(None, tombstone.version, "DELETE", tombstone.last_updated)]
        rendered = self._render(session, found, caller, "history")
        method = "POST" if rendered.version == 1 else "PUT"
        return [(rendered, rendered.version, method, rendered.last_updated)]

    def _kinds(self, session: Session, search: SearchRequest, caller: Caller) -> list[Kind]:
        """Return the three kinds of role, each with the search's criteria applied."""
        base = self.settings.canonical_base
        renders: dict[str, Callable[[Any], dict[str, Any]]] = {
            "involvement": lambda row: involvement_role(session, row, caller, "search", base),
            "member": lambda row: member_role(session, row, caller, "search", base),
            "lead": lambda row: lead_role(session, row, caller, "search", base),
        }
        queries: dict[str, tuple[Select[Any], Any]] = {
            "involvement": (involvement_query(caller), Involvement.id),
            "member": (member_query(caller), TeamMember.id),
            "lead": (lead_query(caller), Assessment.id),
        }
        kinds = []
        for name, (query, id_column) in queries.items():
            for criterion in search.criteria:
                query = query.where(role_condition(name, criterion, self.own))
            kinds.append(Kind(name, query, id_column, renders[name]))
        return kinds

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of PractitionerRoles (involvements, then eCAF members, then leads)."""
        rows, cursor = kinds_page(session, self._kinds(session, search, caller), search)
        return Page([kind.render(row) for kind, row in rows], [], cursor)

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many PractitionerRoles match (nothing is disclosed: no audit)."""
        return sum(count_of(session, kind.query, kind.id_column)
                   for kind in self._kinds(session, search, caller))

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Roles are created through their CareTeam (declared without ``create``).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("A PractitionerRole is created through its CareTeam: add a "
                               "participant to the child's team or to the eCAF CareTeam.")

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Roles are changed through their CareTeam (declared without ``update``).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("A PractitionerRole is changed through its CareTeam.")

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """End an involvement: delete it (its own organisation, or an administrator).

        :raises NotFound: no role the caller may see.
        :raises Gone: a role deleted already.
        :raises MethodNotAllowed: an eCAF team role (changed through the eCAF CareTeam).
        :raises Forbidden: another organisation's involvement.
        """
        found = self._find(session, resource_id, caller)
        if not isinstance(found, Involvement):
            raise MethodNotAllowed("An eCAF Team Around the Child role is changed through its "
                                   "CareTeam (PUT the CareTeam without it).")
        if not may_write_involvement(found.organisation, caller):
            raise Forbidden("Only the involvement's own organisation may end it (a client "
                            "writes only involvements of its own organisation).",
                            expression="PractitionerRole.organization")
        child = found.child
        before = history.child_snapshot(child)
        # Deleted while still linked to its child, so that the child gets a new version; the
        # version check comes first (a concurrent writer loses), then the snapshot.
        session.delete(found)
        flush_write(session, "entry")
        session.add(before)
        record_role_deleted(session, found, child)  # a later read is 410 Gone
        flush_write(session, "entry")
        audit.record(session, "delete", resource_type="PractitionerRole",
                     resource_id=resource_id, child_ref=child.resource_id, caller=caller)

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues inbound validation finds (no change is made)."""
        return validate_stored("PractitionerRole", resource, caller, self.settings)
