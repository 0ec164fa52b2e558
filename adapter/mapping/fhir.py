"""Canonical records <-> FHIR R4 JSON (UK Core, this service's profiles): the public API.

Outbound functions build plain dicts with mappings compiled once per canonical base (serialise
them with :func:`dumps`); they never touch fhir.resources. Inbound functions validate the
resource with ``fhir.resources.R4B`` first, then map it back to transient (not session-bound)
ORM objects and return the FHIR element paths they did not keep. Organisations and
practitioners come back as transient objects carrying their natural keys (ODS code / school
URN / GSS code; organisation code + local id) and, where the reference is relative, their
``resource_id``, for the service layer to resolve.

CareTeam participants carry no ``onBehalfOf`` (FHIR R4 careteam.html, invariant ctm-1: only
beside a Practitioner member, and ours are PractitionerRoles); inbound, each participant's
organisation comes from its PractitionerRole, else from another system's ``onBehalfOf``, else
the service layer resolves the member's PractitionerRole id (``adapter.mapping.participants``).

The canonical base is the ``base`` argument every function takes (``Settings.canonical_base``,
passed by the caller: nothing here reads the app).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Any, Final

import orjson
from pydantic import ValidationError

from adapter.config import PROJECT_ROOT
from adapter.errors import Invalid
from adapter.mapping.conceptmaps import load_translations
from adapter.mapping.datatypes import organisation_reference
from adapter.mapping.engine import Compiled, Context, MappingSpec, compile_mapping, read_spec
from adapter.mapping.participants import Team, read_team
from adapter.mapping.paths import format_path
from adapter.mapping.transforms import Env
from adapter.models import (
    Assessment,
    Child,
    Involvement,
    Organisation,
    Practitioner,
    TeamMember,
)
from adapter.registry import models
from adapter.systems import OwnSystems
from adapter.wellformed import require_content, require_shape

MAPPING_DIR: Final = PROJECT_ROOT / "mappings"
# fhir.resources R4B model of each resource type the mappings read (R4B and R4 have the same
# shape for these resources: docs/domain.md "Profiles to build on"), as the registry declares.
R4B_MODELS: Final = models()
_REDACTED: Final = {"redacted": True}
Ignored = list[str]


# --- compiled mappings --------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def read_specs() -> dict[str, MappingSpec]:
    """Return every mapping file of ``mappings/`` by name (read once)."""
    return {path.stem: read_spec(path) for path in sorted(MAPPING_DIR.glob("*.toml"))}


@functools.lru_cache(maxsize=8)
def compiled_mappings(base: str) -> dict[str, Compiled]:
    """Return every mapping compiled under ``base`` (compiled once per base)."""
    context = Context(Env(OwnSystems(base)), load_translations(base))
    return {name: compile_mapping(spec, context) for name, spec in read_specs().items()}


def canonical_base(base: str) -> str:
    """Return the canonical base ``base`` without its trailing slash.

    :raises LookupError: ``base`` is empty.
    """
    if not base:
        raise LookupError("no canonical base: pass base= (Settings.canonical_base)")
    return base.rstrip("/")


def mapping(name: str, base: str) -> Compiled:
    """Return the compiled mapping ``name`` under the canonical base."""
    return compiled_mappings(canonical_base(base))[name]


def dumps(resource: Mapping[str, Any]) -> bytes:
    """Return a resource as FHIR JSON bytes."""
    return orjson.dumps(resource)


# --- outbound -----------------------------------------------------------------------------

def child_to_patient(child: Child, *, redacted: bool = False,
                     base: str) -> dict[str, Any]:
    """Return the child's Patient (labelled REDACTED when the policy removed elements)."""
    return mapping("child_to_patient", base).forward(child, _REDACTED if redacted else None)


def child_to_careteam(child: Child, *, redacted: bool = False,
                      base: str) -> dict[str, Any]:
    """Return the CareTeam of the practitioners and services working with the child."""
    return mapping("involvements_to_careteam", base).forward(
        child, _REDACTED if redacted else None)


def assessment_to_careteam(assessment: Assessment, *, redacted: bool = False,
                           base: str) -> dict[str, Any]:
    """Return the CareTeam of an eCAF assessment's Team Around the Child."""
    return mapping("assessment_to_careteam", base).forward(
        assessment, _REDACTED if redacted else None)


def withhold_member(participant: dict[str, Any], whom_to_ask: Organisation, *,
                    base: str) -> None:
    """Remove a CareTeam participant's member (a PractitionerRole the caller may not see)
    and name whom to ask instead (the managing authority, docs/domain.md "Sensitive services") in
    ``onBehalfOf``: FHIR R4 invariant ctm-1 allows onBehalfOf when the member resolves to
    nothing (profile ContactPointGateway-ECAFCareTeam, invariant cpg-ctm-1)."""
    participant.pop("member", None)
    env = Env(OwnSystems(canonical_base(base)))
    participant["onBehalfOf"] = organisation_reference(env, whom_to_ask)


def organisation_to_fhir(org: Organisation, *, base: str) -> dict[str, Any]:
    """Return an organisation as an Organization."""
    return mapping("organisation_to_organization", base).forward(org)


def practitioner_to_fhir(person: Practitioner, *, base: str) -> dict[str, Any]:
    """Return a practitioner as a Practitioner."""
    return mapping("practitioner_to_practitioner", base).forward(person)


def involvement_to_practitionerrole(involvement: Involvement, *, redacted: bool = False,
                                    base: str) -> dict[str, Any]:
    """Return an involvement as the PractitionerRole its CareTeam participant refers to."""
    return mapping("involvement_to_practitionerrole", base).forward(
        involvement, _REDACTED if redacted else None)


def team_member_to_practitionerrole(member: TeamMember, *,
                                    base: str) -> dict[str, Any]:
    """Return an eCAF Team Around the Child member as a PractitionerRole."""
    return mapping("team_member_to_practitionerrole", base).forward(member)


def assessment_lead_to_practitionerrole(assessment: Assessment, *,
                                        base: str) -> dict[str, Any]:
    """Return an eCAF assessment's lead professional as a PractitionerRole."""
    return mapping("assessment_lead_to_practitionerrole", base).forward(assessment)


# --- inbound ------------------------------------------------------------------------------

def validate_resource(resource: Any, resource_type: str) -> dict[str, Any]:
    """Validate a FHIR JSON resource with fhir.resources.R4B and return it.

    Every inbound dialect passes here (a body, a Bundle entry, an NDJSON line): the door
    of ``adapter.wellformed`` is checked first, so that nothing stored fails to render.

    :raises Invalid: not a ``resource_type``, not valid FHIR, a name naming nobody or a
        birth date in the future (``expression`` = first error); ``Malformed`` (a 400) when
        not well-formed FHIR (null, empty element, a character XML 1.0 cannot carry).
    """
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise Invalid(f"a {resource_type} resource is needed", expression=resource_type)
    require_shape(resource)
    require_content(resource)
    module, _, name = R4B_MODELS[resource_type].rpartition(".")
    model = getattr(importlib.import_module(module), name)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first = errors[0]
        path = tuple(p for p in first["loc"] if isinstance(p, str | int))
        expression = format_path(resource_type, path)
        raise Invalid(f"{expression}: {first['msg']} ({len(errors)} error(s))",
                      expression=expression) from None
    except (TypeError, KeyError, ValueError) as exc:
        # fhir.resources raises these (not ValidationError) for a contained or nested
        # resource with an unknown or malformed resourceType.
        raise Invalid(f"{resource_type}: a nested resource is not a valid FHIR resource "
                      f"({type(exc).__name__})", expression=resource_type) from None
    return resource


def _reverse(name: str, resource: Any, resource_type: str,
             base: str) -> tuple[Any, Ignored]:
    """Validate ``resource`` and map it back with the mapping ``name``."""
    checked = validate_resource(resource, resource_type)
    obj, ignored = mapping(name, base).reverse(checked)
    return obj, ignored


def patient_to_child(resource: Any, *, base: str) -> tuple[Child, Ignored]:
    """Return a transient Child from a Patient, and the element paths not kept.

    :raises Invalid: the Patient is not valid or an element cannot be mapped.
    """
    child, ignored = _reverse("child_to_patient", resource, "Patient", base)
    return child, ignored


def careteam_to_involvements(resource: Any,
                             practitioner_roles: Mapping[str, Any] | None = None, *,
                             base: str) -> tuple[list[Involvement], Ignored]:
    """Return a child's involvements from its CareTeam, and the element paths not kept.

    Each participant's PractitionerRole (``practitioner_roles`` by logical id, or contained in
    the CareTeam as ``#id``) gives its organisation, practitioner and contact; a contained one
    makes a new involvement (``resource_id`` None). Another system's Practitioner member gives
    the practitioner and ``onBehalfOf`` the organisation. An involvement whose ``organisation``
    is None refers by ``resource_id`` to a PractitionerRole not given here: the service layer
    resolves it (the stored involvement with that ``resource_id``).

    :raises Invalid: a resource is not valid, an element cannot be mapped, a participant breaks
        FHIR R4 ctm-1, or its organisation cannot be determined.
    """
    team = _read_careteam(resource, practitioner_roles)
    child, ignored = mapping("involvements_to_careteam", base).reverse(team.resource)
    involvements: list[Involvement] = list(child.involvements)
    ignored += team.ignored
    for involvement in involvements:
        ignored += _merge_role(involvement, team, base)
    return involvements, ignored


def careteam_subject(resource: Any, *, base: str) -> Child:
    """Return a transient Child carrying the keys of a child's team CareTeam's subject.

    :raises Invalid: the CareTeam is not valid or its subject cannot be read.
    """
    child, _ignored = _reverse("involvements_to_careteam", resource, "CareTeam", base)
    return child  # type: ignore[no-any-return]


def careteam_to_assessment(resource: Any, practitioner_roles: Mapping[str, Any] | None = None,
                           *, base: str) -> tuple[Assessment, Ignored]:
    """Return a transient Assessment from an eCAF CareTeam, and the element paths not kept.

    The PractitionerRoles of the lead and the members (``practitioner_roles`` by logical id,
    or contained as ``#id``) give their organisations, practitioners and contacts, as for
    :func:`careteam_to_involvements`. ``lead_role_id`` is the lead member's PractitionerRole
    id (None when it was contained or the member is a Practitioner); ``lead_organisation`` is
    None when that PractitionerRole was not given: the service layer resolves it.

    :raises Invalid: a resource is not valid, an element cannot be mapped, a participant breaks
        FHIR R4 ctm-1, or its organisation cannot be determined.
    """
    team = _read_careteam(resource, practitioner_roles)
    assessment, ignored = mapping("assessment_to_careteam", base).reverse(team.resource)
    ignored += team.ignored
    ignored += _merge_lead(assessment, team, base)
    for member in assessment.members:
        ignored += _merge_role(member, team, base)
    return assessment, ignored


def _read_careteam(resource: Any, practitioner_roles: Mapping[str, Any] | None) -> Team:
    """Validate a CareTeam and prepare its participants (``participants.read_team``).

    :raises Invalid: not valid, or a participant breaks ctm-1 or has no organisation source.
    """
    return read_team(validate_resource(resource, "CareTeam"), practitioner_roles)


def _merge_role(part: Involvement | TeamMember, team: Team, base: str) -> Ignored:
    """Copy organisation, practitioner and contact from the PractitionerRole ``part`` refers
    to, when it is given; a contained one leaves ``part`` without an id (new)."""
    key = part.resource_id
    resource = team.roles.get(key) if key else None
    if resource is None:
        return []
    role, ignored = practitionerrole_to_involvement(resource, base=base)
    part.organisation, part.practitioner = role.organisation, role.practitioner
    part.phone, part.email = role.phone, role.email
    if isinstance(part, Involvement) and part.period_start is None and part.period_end is None:
        # The involvement's period is the participant's, else its PractitionerRole's (FHIR R4
        # PractitionerRole.period; mappings/involvement_to_practitionerrole.toml): a role
        # sent with its period alone would otherwise lose it without a note.
        part.period_start, part.period_end = role.period_start, role.period_end
    if key in team.contained_keys:
        part.resource_id = None  # type: ignore[assignment]
    return ignored


def _merge_lead(assessment: Assessment, team: Team, base: str) -> Ignored:
    """Copy organisation, practitioner and contact from the lead's PractitionerRole, when
    it is given; a contained one leaves ``lead_role_id`` None."""
    key = assessment.lead_role_id
    resource = team.roles.get(key) if key else None
    if resource is None:
        return []
    role, ignored = _reverse("assessment_lead_to_practitionerrole", resource, "PractitionerRole",
                             base)
    assessment.lead_organisation, assessment.lead_practitioner = (role.lead_organisation,
                                                                  role.lead_practitioner)
    assessment.phone, assessment.email = role.phone, role.email
    if key in team.contained_keys:
        assessment.lead_role_id = None
    return ignored


def organization_to_organisation(resource: Any, *,
                                 base: str) -> tuple[Organisation, Ignored]:
    """Return a transient Organisation from an Organization, and the paths not kept.

    :raises Invalid: the resource is not valid or an element cannot be mapped.
    """
    org, ignored = _reverse("organisation_to_organization", resource, "Organization", base)
    return org, ignored


def practitioner_from_fhir(resource: Any, *,
                           base: str) -> tuple[Practitioner, Ignored]:
    """Return a transient Practitioner from a Practitioner, and the paths not kept.

    :raises Invalid: the resource is not valid or an element cannot be mapped.
    """
    person, ignored = _reverse("practitioner_to_practitioner", resource, "Practitioner", base)
    return person, ignored


def practitionerrole_to_involvement(resource: Any, *,
                                    base: str) -> tuple[Involvement, Ignored]:
    """Return a transient Involvement from a PractitionerRole (without the CareTeam's
    indicators), and the paths not kept.

    :raises Invalid: the resource is not valid or an element cannot be mapped.
    """
    role, ignored = _reverse("involvement_to_practitionerrole", resource, "PractitionerRole",
                             base)
    return role, ignored


def practitionerrole_to_team_member(resource: Any, *,
                                    base: str) -> tuple[TeamMember, Ignored]:
    """Return a transient TeamMember from a PractitionerRole, and the paths not kept.

    :raises Invalid: the resource is not valid or an element cannot be mapped.
    """
    member, ignored = _reverse("team_member_to_practitionerrole", resource, "PractitionerRole",
                               base)
    return member, ignored
