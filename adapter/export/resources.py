"""The FHIR resources an export writes for one child, exactly as a read by the same client
would render them: the child's Patient, its team CareTeam and its involvements'
PractitionerRoles, and the CareTeams of its eCAF assessment references with their lead's and
members' PractitionerRoles. Each goes through the disclosure functions of its REST handler
(built on ``adapter.security.policy``: one policy for every dialect), called
without their per-resource audit: an export writes one audit record per child instead."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.orm import Session

from adapter.fhir.careteams import render_ecaf, render_team
from adapter.fhir.providers.patient import render_patient
from adapter.models import Assessment, Child
from adapter.models.rows import ChildRow
from adapter.registry import child_types, referenced_types
from adapter.security.caller import Caller
from adapter.security.policy import may_see_child, may_see_involvement, may_see_lead, may_see_member
from adapter.store.careteams import team_is_listed
from adapter.store.practitioner_roles import (
    involvement_role,
    lead_role,
    member_role,
)

# The exported types that are a child's data, and those the children's resources refer to
# (adapter/registry.py).
CHILD_TYPES: Final = child_types()
REFERENCED_TYPES: Final = referenced_types()

Resource = dict[str, Any]


@dataclass
class ChildExport:
    """The NDJSON lines an export writes for one child, and what they refer to."""

    child_ref: str
    override: bool
    lines: list[tuple[str, bytes]] = field(default_factory=list)
    references: set[str] = field(default_factory=set)

    @property
    def exported(self) -> bool:
        """Return True when some of the child's data is written (then it is audited)."""
        return any(resource_type != "OperationOutcome" for resource_type, _ in self.lines)


def child_resources(session: Session, child: Child | ChildRow, caller: Caller,
                    types: frozenset[str], base: str) -> Iterator[Resource]:
    """Yield those of ``types`` among the child's Patient, its team CareTeam (when a search
    would list it) and the PractitionerRoles of the involvements ``caller`` may see (under
    the canonical ``base``). A child read as light records (``adapter.store.rows``) is read
    so for its Patient alone: the exporter loads ORM records whenever the other types are
    asked for."""
    if "Patient" in types:
        yield render_patient(session, child, caller, None, base).resource
    if isinstance(child, ChildRow):
        return
    if "CareTeam" in types and team_is_listed(child, caller):
        yield render_team(session, child, caller, None, base).resource
    if "PractitionerRole" in types and may_see_child(child, caller):
        for involvement in child.involvements:
            if may_see_involvement(involvement, caller):
                yield involvement_role(session, involvement, caller, None, base)


def assessment_resources(session: Session, assessment: Assessment, caller: Caller,
                         types: frozenset[str], base: str) -> Iterator[Resource]:
    """Yield those of ``types`` among an eCAF assessment's CareTeam and the PractitionerRoles
    of its lead and members, as ``caller`` may see them (nothing for a shielded child without
    the right: docs/domain.md "Shielding" withholds the CAF indicator)."""
    if not may_see_child(assessment.child, caller):
        return
    if "CareTeam" in types:
        yield render_ecaf(session, assessment, caller, None, base).resource
    if "PractitionerRole" in types:
        if may_see_lead(assessment, caller):
            yield lead_role(session, assessment, caller, None, base)
        for member in assessment.members:
            if may_see_member(member, caller):
                yield member_role(session, member, caller, None, base)


def references(resource: Any, found: set[str]) -> set[str]:
    """Add to ``found`` every relative reference to an Organization or a Practitioner in
    ``resource`` (``Organization/<id>``) and return it."""
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                if value.split("/", 1)[0] in REFERENCED_TYPES:
                    found.add(value)
            else:
                references(value, found)
    elif isinstance(resource, list):
        for item in resource:
            references(item, found)
    return found
