"""The practitioners and services working with children as FHIR PractitionerRoles (served by the
provider of ``PractitionerRole``, adapter/fhir/providers/practitioner_role.py): every
involvement of a child's directory entry, and the lead professional and each member of an eCAF
Team Around the Child.

A role is a child's data: it is disclosed by the child's policy and every read is audited. A
role the caller may not see does not exist for them (404, never a hint of its existence):
every role of a shielded child for a caller without the shielding right (docs/domain.md
"Shielding": every involvement is withheld), and a sensitive service's role for a caller
without the sensitive-services right (docs/domain.md "Sensitive services").
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, contains_eager

from adapter.mapping import fhir as mapping
from adapter.models import (
    Assessment,
    Child,
    Involvement,
    RecordVersion,
    TeamMember,
)
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import (
    involvement_visible,
    lead_visible,
    may_see_child,
    member_visible,
    sensitive_visible,
)
from adapter.store import history
from adapter.store.aliases import current_id

NOT_FOUND: Final = "No PractitionerRole/{id} on this server (or not one you may see)."


# --- deletion tombstones ------------------------------------------------------------------

def record_role_deleted(session: Session, involvement: Involvement, child: Child) -> None:
    """Store the deletion tombstone of an involvement's role, at the child's new version; it
    names the child and whether the role was a sensitive service's, so that only callers who
    could see the role learn that it was deleted."""
    history.record_deleted(session, "role", involvement.resource_id, child.version,
                           {"child": child.resource_id, "sensitive": bool(involvement.sensitive)})


def deleted_role(session: Session, resource_id: str, caller: Caller) -> RecordVersion | None:
    """Return the latest deletion tombstone of role ``resource_id`` if ``caller`` could have
    seen the role (its child visible to them, a sensitive service only with the right)."""
    stored = history.versions(session, "role", resource_id)
    if not stored:
        return None
    tombstone = stored[0]
    noted = tombstone.snapshot or {}
    child = session.scalar(select(Child).where(Child.resource_id == noted.get("child")))
    if child is None or not may_see_child(child, caller):
        return None
    if noted.get("sensitive") and not sensitive_visible(caller):
        return None
    return tombstone


# --- rendering ----------------------------------------------------------------------------

def _audited(session: Session, resource: dict[str, Any], child: Child, caller: Caller,
             action: str | None) -> dict[str, Any]:
    """Write the audit record of one role disclosed as ``action`` (None: a write's own)."""
    if action is not None:
        audit.record(session, action, resource_type="PractitionerRole",
                     resource_id=str(resource["id"]), child_ref=child.resource_id,
                     override=child.shielded, caller=caller)
        ledger.record_delivery(session, caller, child, action)
    return resource


def involvement_role(session: Session, involvement: Involvement, caller: Caller,
                     action: str | None, base: str) -> dict[str, Any]:
    """Return an involvement's PractitionerRole (under the canonical ``base``), audited."""
    resource = mapping.involvement_to_practitionerrole(involvement, base=base)
    return _audited(session, resource, involvement.child, caller, action)


def member_role(session: Session, member: TeamMember, caller: Caller,
                action: str | None, base: str) -> dict[str, Any]:
    """Return an eCAF team member's PractitionerRole (under the canonical ``base``), audited."""
    resource = mapping.team_member_to_practitionerrole(member, base=base)
    return _audited(session, resource, member.assessment.child, caller, action)


def lead_role(session: Session, assessment: Assessment, caller: Caller,
              action: str | None, base: str) -> dict[str, Any]:
    """Return an eCAF lead professional's PractitionerRole (under the canonical ``base``),
    audited."""
    resource = mapping.assessment_lead_to_practitionerrole(assessment, base=base)
    return _audited(session, resource, assessment.child, caller, action)


# --- earlier ids ----------------------------------------------------------------------------

def current_role_id(session: Session, old_id: str, caller: Caller) -> str | None:
    """Return the id now of the role whose earlier id is ``old_id`` (``resource_alias``,
    migration 0014), when ``caller`` may see that role; None otherwise, so that an earlier id
    tells nobody more than the role's own id does (as a read of it, ``redirect_if_moved``)."""
    new_id = current_id(session, "PractitionerRole", old_id)
    if new_id is None:
        return None
    for query, column in ((involvement_query(caller), Involvement.resource_id),
                          (member_query(caller), TeamMember.resource_id),
                          (lead_query(caller), Assessment.lead_role_id)):
        if session.scalar(query.where(column == new_id)) is not None:
            return new_id
    return None


# --- queries ------------------------------------------------------------------------------

def involvement_query(caller: Caller) -> Select[Involvement]:
    """Return the select of the involvements ``caller`` may see, with their children."""
    return (select(Involvement).join(Child, Involvement.child_id == Child.id)
            .where(involvement_visible(caller)).options(contains_eager(Involvement.child)))


def member_query(caller: Caller) -> Select[TeamMember]:
    """Return the select of the eCAF team members ``caller`` may see."""
    return (select(TeamMember).join(Assessment, TeamMember.assessment_id == Assessment.id)
            .join(Child, Assessment.child_id == Child.id).where(member_visible(caller))
            .options(contains_eager(TeamMember.assessment).contains_eager(Assessment.child)))


def lead_query(caller: Caller) -> Select[Assessment]:
    """Return the select of the assessments whose lead ``caller`` may see."""
    return (select(Assessment).join(Child, Assessment.child_id == Child.id)
            .where(lead_visible(caller)).options(contains_eager(Assessment.child)))
