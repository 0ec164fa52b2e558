"""Inbound CareTeam participants: whom the member is and where its organisation comes from.

FHIR R4 CareTeam invariant ctm-1 (careteam.html, severity error) on ``CareTeam.participant``::

    onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))

``onBehalfOf`` is allowed only when the member is a Practitioner (or resolves to nothing). This
service's members are PractitionerRoles, which carry their ``organization``, so the CareTeams it
writes have no ``onBehalfOf`` (mappings/README.md). Inbound, a participant's organisation comes
from, in this order:

1. its PractitionerRole, given to the reverse mapping by logical id (``practitioner_roles``) or
   contained in the CareTeam and referred to as ``#id`` (FHIR R4 references.html#contained);
2. ``onBehalfOf``, beside another system's Practitioner member (or no member);
3. the service layer, which resolves the member's PractitionerRole id on this server.

Before the field map reads a CareTeam, :func:`read_team` refuses a participant that breaks
ctm-1, a ``#id`` that names nothing contained, and a participant whose organisation none of
these can give; it moves the contained PractitionerRoles beside the given ones, under keys that
the rewritten members name, so the field map reads every member the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from adapter import identity
from adapter.errors import Invalid
from adapter.mapping.datatypes import reference_id, reference_type
from adapter.mapping.engine import without_nulls
from adapter.mapping.transforms import ValueNotAccepted

# ctm-1: the only member type ``onBehalfOf`` may stand beside.
ON_BEHALF_OF_MEMBER: Final = "Practitioner"


@dataclass
class Team:
    """An inbound CareTeam prepared for the field map.

    ``resource``: the CareTeam without nulls and without ``contained``, each member that
    referred to a contained PractitionerRole rewritten to ``PractitionerRole/<key>``;
    ``roles``: the PractitionerRoles by key (the given ones by logical id, the contained ones
    by their key); ``contained_keys``: the keys of the contained ones (new participants, which
    have no id on this server); ``ignored``: the contained resources that are not read.
    """

    resource: dict[str, Any]
    roles: dict[str, Any] = field(default_factory=dict)
    contained_keys: set[str] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)


def contained_key(local_id: str) -> str:
    """Return the key under which a contained PractitionerRole ``#local_id`` is looked up."""
    return identity.contained_role_id(local_id)


def read_team(resource: Mapping[str, Any], given: Mapping[str, Any] | None) -> Team:
    """Return a validated CareTeam prepared for the field map (see the module docstring).

    :raises Invalid: a participant breaks ctm-1, refers to nothing contained, or has no
        source for its organisation (``expression`` names the participant's element).
    """
    clean: dict[str, Any] = without_nulls(dict(resource))
    contained: list[Any] = clean.pop("contained", [])
    local = {item["id"]: index for index, item in enumerate(contained)
             if isinstance(item, dict) and isinstance(item.get("id"), str)}
    team = Team(clean, dict(given or {}))
    read: set[int] = set()
    participants = clean.get("participant", [])
    for index, participant in enumerate(participants):
        where = f"CareTeam.participant[{index}]"
        target = _contained_target(participant.get("member"), local, where)
        kind = contained[target].get("resourceType") if target is not None else \
            reference_type(participant.get("member"))
        check_ctm1(participant, kind, where)
        if target is not None and kind == "PractitionerRole":
            participants[index] = _inline(participant, contained[target], team)
            read.add(target)
        else:
            check_organisation_source(participant, kind, where)
    team.ignored = [f"CareTeam.contained[{i}]" for i in range(len(contained)) if i not in read]
    return team


def _contained_target(member: Any, local: Mapping[str, int], where: str) -> int | None:
    """Return the index in ``contained`` of the resource a ``#id`` member names (None for
    any other member).

    :raises Invalid: a ``#id`` that names no contained resource (FHIR R4
        references.html#contained: a local reference resolves within the resource).
    """
    literal = member.get("reference") if isinstance(member, dict) else None
    if not isinstance(literal, str) or not literal.startswith("#"):
        return None
    if literal[1:] not in local:
        raise Invalid(f"{where}.member: no contained resource has this id.",
                      expression=f"{where}.member")
    return local[literal[1:]]


def check_ctm1(participant: Mapping[str, Any], member_type: str | None, where: str) -> None:
    """Refuse ``onBehalfOf`` beside a member that resolves to anything but a Practitioner
    (FHIR R4 careteam.html, invariant ctm-1); a member whose type cannot be told resolves to
    nothing here, which ctm-1 allows.

    :raises Invalid: ctm-1 is broken.
    """
    if "onBehalfOf" in participant and member_type not in (None, ON_BEHALF_OF_MEMBER):
        raise Invalid(f"{where}.onBehalfOf: allowed only when the member is a Practitioner "
                      f"(FHIR R4 CareTeam invariant ctm-1); this member is a {member_type}, "
                      "whose organisation is its own: leave onBehalfOf out.",
                      expression=f"{where}.onBehalfOf")


def check_organisation_source(participant: Mapping[str, Any], member_type: str | None,
                              where: str) -> None:
    """Check that a participant's organisation can be found: ``onBehalfOf``, or a member
    PractitionerRole with a logical id (given, or stored on this server).

    :raises Invalid: neither.
    """
    if "onBehalfOf" in participant or _role_id(participant.get("member"), member_type):
        return
    raise Invalid(f"{where}.member: the participant's organisation cannot be determined: refer "
                  "to its PractitionerRole (PractitionerRole/<id>, or a contained #id), or give "
                  "a Practitioner member with onBehalfOf (FHIR R4 CareTeam invariant ctm-1).",
                  expression=f"{where}.member")


def _role_id(member: Any, member_type: str | None) -> str | None:
    """Return the logical id of a PractitionerRole member, if it has one."""
    if member_type != "PractitionerRole" or not isinstance(member, dict):
        return None
    try:
        return reference_id(member.get("reference"), "PractitionerRole")
    except ValueNotAccepted:
        return None


def _inline(participant: dict[str, Any], role: dict[str, Any], team: Team) -> dict[str, Any]:
    """Return the participant with its member referring to a contained PractitionerRole
    rewritten to ``PractitionerRole/<key>``, the role added to the team's roles by key."""
    key = contained_key(str(role["id"]))
    team.roles[key] = role
    team.contained_keys.add(key)
    return {**participant, "member": {**participant["member"],
                                      "reference": f"PractitionerRole/{key}"}}
