"""Helpers of the mapping tests: stable ids on transient objects, publishing a child or an
assessment as every FHIR resource it becomes, and rebuilding it from those resources (the
service layer's job, done here by natural key) so that round trips compare whole records."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from adapter.fhir.conformance import Validator
from adapter.fhir.profiles import DefinitionRegistry
from adapter.identifiers import resource_id_for
from adapter.mapping import fhir
from adapter.mapping.datatypes import organisation_code
from adapter.models import Assessment, Child, Organisation, Practitioner
from adapter.systems import DEFAULT_CANONICAL_BASE
from tests.conftest import CONFORMANCE

BASE = DEFAULT_CANONICAL_BASE
UK_CORE = CONFORMANCE / "uk-core"
Resource = dict[str, Any]


@functools.cache
def validator() -> Validator:
    """The profile conformance checker over our definitions and UK Core (built once)."""
    from adapter.fhir.conformance import OWN_DEFINITIONS

    folders = [OWN_DEFINITIONS, *(UK_CORE / name for name in
                                  ("structuredefinitions", "valuesets", "codesystems"))]
    return Validator(DefinitionRegistry(folders, BASE))


def conformance_errors(resource: Resource) -> list[str]:
    """Return the error and fatal issues of ``resource`` against its declared profiles."""
    return [f"{i.expression}: {i.message}" for i in validator().check(resource)
            if i.severity in ("error", "fatal")]


def _organisation_ids(org: Organisation) -> None:
    """Give an organisation the id the service derives from its natural key."""
    org.resource_id = resource_id_for("Organization", organisation_code(org))


def _practitioner_ids(person: Practitioner | None) -> None:
    """Give a practitioner and its organisation their ids."""
    if person is not None:
        _organisation_ids(person.organisation)
        person.resource_id = resource_id_for(
            "Practitioner", f"{organisation_code(person.organisation)}/{person.local_id}")


def with_ids(child: Child) -> Child:
    """Give a transient child and all its parts the resource ids the service would."""
    child.resource_id = resource_id_for("Patient", child.contactpoint_id)
    _organisation_ids(child.managing_organisation)
    for local in child.local_identifiers:
        _organisation_ids(local.organisation)
    for position, involvement in enumerate(child.involvements):
        involvement.resource_id = resource_id_for(
            "PractitionerRole", f"{child.contactpoint_id}/{position}")
        _organisation_ids(involvement.organisation)
        _practitioner_ids(involvement.practitioner)
    return child


def with_assessment_ids(assessment: Assessment) -> Assessment:
    """Give a transient assessment, its child and its team the service's resource ids."""
    with_ids(assessment.child)
    assessment.resource_id = resource_id_for("CareTeam", f"ecaf/{assessment.assessment_id}")
    _organisation_ids(assessment.lead_organisation)
    _practitioner_ids(assessment.lead_practitioner)
    for position, member in enumerate(assessment.members):
        member.resource_id = resource_id_for(
            "PractitionerRole", f"ecaf/{assessment.assessment_id}/{position}")
        _organisation_ids(member.organisation)
        _practitioner_ids(member.practitioner)
    return assessment


@dataclass
class Published:
    """Every FHIR resource a record is published as."""

    main: Resource
    patient: Resource | None = None
    roles: dict[str, Resource] = field(default_factory=dict)
    organisations: dict[str, Resource] = field(default_factory=dict)
    practitioners: dict[tuple[str, str], Resource] = field(default_factory=dict)

    def resources(self) -> list[Resource]:
        """Return every resource."""
        return [self.main, *([self.patient] if self.patient else []), *self.roles.values(),
                *self.organisations.values(), *self.practitioners.values()]

    def add_organisation(self, org: Organisation) -> None:
        """Publish an organisation once."""
        self.organisations[organisation_code(org)] = fhir.organisation_to_fhir(org, base=BASE)

    def add_practitioner(self, person: Practitioner | None) -> None:
        """Publish a practitioner (and its organisation) once."""
        if person is not None:
            self.add_organisation(person.organisation)
            key = (organisation_code(person.organisation), person.local_id)
            self.practitioners[key] = fhir.practitioner_to_fhir(person, base=BASE)


def publish_child(child: Child) -> Published:
    """Return the Patient, CareTeam, PractitionerRoles, Organizations and Practitioners."""
    out = Published(fhir.child_to_careteam(child, base=BASE),
                    fhir.child_to_patient(child, base=BASE))
    out.add_organisation(child.managing_organisation)
    for local in child.local_identifiers:
        out.add_organisation(local.organisation)
    for involvement in child.involvements:
        out.roles[involvement.resource_id] = fhir.involvement_to_practitionerrole(
            involvement, base=BASE)
        out.add_organisation(involvement.organisation)
        out.add_practitioner(involvement.practitioner)
    return out


def publish_assessment(assessment: Assessment) -> Published:
    """Return the eCAF CareTeam, its PractitionerRoles, Organizations and Practitioners."""
    out = Published(fhir.assessment_to_careteam(assessment, base=BASE))
    lead = fhir.assessment_lead_to_practitionerrole(assessment, base=BASE)
    out.roles[lead["id"]] = lead
    out.add_organisation(assessment.lead_organisation)
    out.add_practitioner(assessment.lead_practitioner)
    for member in assessment.members:
        out.roles[member.resource_id] = fhir.team_member_to_practitionerrole(member, base=BASE)
        out.add_organisation(member.organisation)
        out.add_practitioner(member.practitioner)
    return out


class Resolver:
    """Replaces transient key-only organisations and practitioners by the published ones
    mapped back (what the service layer does against the database)."""

    def __init__(self, published: Published) -> None:
        self.published = published
        self.ignored: list[str] = []

    def organisation(self, key_only: Organisation) -> Organisation:
        """Return the organisation published under ``key_only``'s natural key."""
        resource = self.published.organisations[organisation_code(key_only)]
        org, ignored = fhir.organization_to_organisation(resource, base=BASE)
        self.ignored += ignored
        return org

    def practitioner(self, key_only: Practitioner | None) -> Practitioner | None:
        """Return the practitioner published under ``key_only``'s natural key."""
        if key_only is None:
            return None
        key = (organisation_code(key_only.organisation), key_only.local_id)
        person, ignored = fhir.practitioner_from_fhir(self.published.practitioners[key],
                                                      base=BASE)
        self.ignored += ignored
        person.organisation = self.organisation(person.organisation)
        return person


def rebuild_child(published: Published) -> tuple[Child, list[str]]:
    """Return the child mapped back from its Patient, CareTeam and referenced resources."""
    assert published.patient is not None
    child, ignored = fhir.patient_to_child(published.patient, base=BASE)
    gps = [organisation_code(i.organisation) for i in child.involvements]
    involvements, more = fhir.careteam_to_involvements(published.main, published.roles,
                                                       base=BASE)
    assert gps == [organisation_code(i.organisation) for i in involvements if i.role == "gp"]
    resolve = Resolver(published)
    child.involvements = involvements
    child.managing_organisation = resolve.organisation(child.managing_organisation)
    for local in child.local_identifiers:
        local.organisation = resolve.organisation(local.organisation)
    for involvement in involvements:
        involvement.organisation = resolve.organisation(involvement.organisation)
        involvement.practitioner = resolve.practitioner(involvement.practitioner)
    return child, ignored + more + resolve.ignored


def rebuild_assessment(published: Published, child: Child) -> tuple[Assessment, list[str]]:
    """Return the assessment mapped back from its CareTeam and referenced resources."""
    assessment, ignored = fhir.careteam_to_assessment(published.main, published.roles,
                                                      base=BASE)
    assert assessment.child.contactpoint_id == child.contactpoint_id
    resolve = Resolver(published)
    assessment.child = child
    assessment.lead_organisation = resolve.organisation(assessment.lead_organisation)
    assessment.lead_practitioner = resolve.practitioner(assessment.lead_practitioner)
    for member in assessment.members:
        member.organisation = resolve.organisation(member.organisation)
        member.practitioner = resolve.practitioner(member.practitioner)
    return assessment, ignored + resolve.ignored
