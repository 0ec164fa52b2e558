"""Children's teams and eCAF Teams Around the Child, stored (served as FHIR CareTeams by the
provider of ``CareTeam``, adapter/fhir/providers/careteam.py, rendered and searched by
adapter/fhir/careteams.py): loading them as a caller may see them, and the rules of a write.
Two kinds behind one type, told apart by ``category``:

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

from typing import Any, Final

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, contains_eager, selectinload

from adapter import codes
from adapter.errors import Forbidden, Gone, Invalid, NotFound
from adapter.models import Assessment, Child, Involvement, TeamMember
from adapter.security.caller import Caller
from adapter.security.policy import (
    child_visible,
    involvement_shown,
    may_see_child,
    may_see_involvement,
    may_write_involvement,
    visible_to,
)
from adapter.store import history
from adapter.store.children import child_query
from adapter.store.organisations import (
    organisation_key_copy,
    practitioner_copy,
    stored_organisation,
    stored_practitioner,
)
from adapter.store.records import part_key

TEAM: Final = "directory-team"
ECAF: Final = "ecaf-tac"


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


# --- listing ------------------------------------------------------------------------------

def team_is_listed(child: Child, caller: Caller) -> bool:
    """Return True when a child's team is listed for ``caller``: it has a participant the
    caller may see (a team with none is read by id only, as an empty REDACTED CareTeam)."""
    return may_see_child(child, caller) and any(
        may_see_involvement(i, caller) for i in child.involvements)


def team_query(caller: Caller) -> Select[Child]:
    """Return the select of the children whose team is listed for ``caller``."""
    return child_query().where(child_visible(caller), exists().where(
        Involvement.child_id == Child.id, involvement_shown(caller)))


# --- writes -------------------------------------------------------------------------------

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
