"""CareTeam participants and FHIR R4 invariant ctm-1 (careteam.html, severity error):

    onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))

Every CareTeam the mappings write is checked with its members resolved, as a validator does in
a searchset Bundle with ``_include=CareTeam:participant``; inbound, a participant's organisation
comes from its PractitionerRole (given by id or contained), else from another system's
``onBehalfOf`` beside a Practitioner member, else it is left to the service layer."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from adapter import systems
from adapter.errors import Invalid
from adapter.identity import lead_role_id
from adapter.mapping import fhir
from adapter.models import Organisation
from tests import strategies
from tests.golden_regen import build_case_assessment, build_case_child, case_names, load_input
from tests.mapping.helpers import (
    BASE,
    Published,
    conformance_errors,
    publish_assessment,
    publish_child,
    with_assessment_ids,
    with_ids,
)

Resource = dict[str, Any]
OWN = systems.OwnSystems(BASE)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GP = {"coding": [{"system": OWN.code_system("involvement-role"), "code": "gp"}]}
LEAD = {"coding": [{"system": OWN.code_system("team-role"), "code": "lead-professional"}]}
SURGERY = {"reference": "Organization/surgery",
           "identifier": {"system": systems.ODS_CODE, "value": "A81001"}}
DOCTOR = {"reference": "Practitioner/doc-1",
          "identifier": {"system": OWN.local_id("A81001"), "value": "GP-17"}}


# --- ctm-1, evaluated with the members resolved ---------------------------------------------

def resolve(reference: Any, resource: Resource, bundle: dict[str, Resource]) -> Resource | None:
    """FHIRPath ``resolve()`` of a Reference: a ``#id`` among the resource's contained
    resources, else ``Type/id`` among the Bundle's entries; nothing found is empty."""
    literal = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(literal, str):
        return None
    if literal.startswith("#"):
        return next((c for c in resource.get("contained", []) if c.get("id") == literal[1:]),
                    None)
    return bundle.get(literal)


def ctm1_violations(careteam: Resource, bundle: dict[str, Resource]) -> list[str]:
    """Return the participants that break ctm-1: onBehalfOf beside a member that resolves
    to something other than a Practitioner."""
    bad = []
    for index, participant in enumerate(careteam.get("participant", [])):
        if "onBehalfOf" not in participant:
            continue
        member = resolve(participant.get("member"), careteam, bundle)
        if member is not None and member["resourceType"] != "Practitioner":
            bad.append(f"CareTeam.participant[{index}]")
    return bad


def unresolved_members(careteam: Resource, bundle: dict[str, Resource]) -> list[str]:
    """Return the participants whose member does not resolve to a PractitionerRole (so
    that the ctm-1 check above is made with every member resolved, never vacuously)."""
    return [f"CareTeam.participant[{index}]"
            for index, participant in enumerate(careteam.get("participant", []))
            if (resolve(participant.get("member"), careteam, bundle) or {}).get(
                "resourceType") != "PractitionerRole"]


def searchset(resources: Iterable[Resource]) -> dict[str, Resource]:
    """Return resources by ``Type/id``: a Bundle with every participant included."""
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def assert_ctm1(published: Published) -> None:
    """Assert the CareTeam meets ctm-1 with every member resolved, and has no onBehalfOf."""
    bundle = searchset(published.resources())
    assert unresolved_members(published.main, bundle) == []
    assert ctm1_violations(published.main, bundle) == []
    assert all("onBehalfOf" not in p for p in published.main.get("participant", []))


@SETTINGS
@given(strategies.children())
def test_every_childs_team_meets_ctm1_with_its_members_resolved(child: Any) -> None:
    """A child's team: every member resolves to its PractitionerRole; ctm-1 holds."""
    assert_ctm1(publish_child(with_ids(child)))


@SETTINGS
@given(strategies.assessments())
def test_every_ecaf_team_meets_ctm1_with_its_members_resolved(assessment: Any) -> None:
    """An eCAF Team Around the Child: the lead's and each member's PractitionerRole."""
    assert_ctm1(publish_assessment(with_assessment_ids(assessment)))


@pytest.mark.parametrize("case", case_names())
def test_every_golden_careteam_meets_ctm1(case: str) -> None:
    """The golden CareTeams, with the PractitionerRoles of the same input."""
    data = load_input(case)
    child = build_case_child(data)
    published = Published(fhir.child_to_careteam(child, base=BASE))
    published.roles = {i.resource_id: fhir.involvement_to_practitionerrole(i, base=BASE)
                       for i in child.involvements}
    assert_ctm1(published)
    assessment = build_case_assessment(data, child)
    if assessment is not None:
        published = Published(fhir.assessment_to_careteam(assessment, base=BASE))
        lead = fhir.assessment_lead_to_practitionerrole(assessment, base=BASE)
        published.roles = {lead["id"]: lead} | {
            m.resource_id: fhir.team_member_to_practitionerrole(m, base=BASE)
            for m in assessment.members}
        assert_ctm1(published)


def test_the_ctm1_check_is_not_vacuous() -> None:
    """The check fails onBehalfOf beside a PractitionerRole (the shape of mapping version 1)
    and passes it beside a Practitioner or a member that resolves to nothing."""
    role = {"resourceType": "PractitionerRole", "id": "r1"}
    person = {"resourceType": "Practitioner", "id": "doc-1"}
    bundle = searchset([role, person])
    team = {"resourceType": "CareTeam", "participant": [
        {"member": {"reference": "PractitionerRole/r1"}, "onBehalfOf": SURGERY},
        {"member": {"reference": "Practitioner/doc-1"}, "onBehalfOf": SURGERY},
        {"member": {"reference": "PractitionerRole/elsewhere"}, "onBehalfOf": SURGERY},
        {"onBehalfOf": SURGERY},
        {"member": {"reference": "#c1"}, "onBehalfOf": SURGERY}],
        "contained": [dict(role, id="c1")]}
    assert ctm1_violations(team, bundle) == ["CareTeam.participant[0]",
                                             "CareTeam.participant[4]"]
    assert unresolved_members(team, bundle) == ["CareTeam.participant[1]",
                                                "CareTeam.participant[2]",
                                                "CareTeam.participant[3]"]


@SETTINGS
@given(strategies.assessments())
def test_a_withheld_lead_names_whom_to_ask_and_meets_ctm1(assessment: Any) -> None:
    """``withhold_member``: the lead's member goes, onBehalfOf names whom to ask; ctm-1 and
    the eCAF profile hold."""
    with_assessment_ids(assessment)
    team = fhir.assessment_to_careteam(assessment, base=BASE)
    authority = assessment.child.managing_organisation
    lead = next(p for p in team["participant"] if p["role"][0] == fhir_lead_role())
    fhir.withhold_member(lead, authority, base=BASE)
    assert "member" not in lead
    assert lead["onBehalfOf"]["reference"] == f"Organization/{authority.resource_id}"
    assert ctm1_violations(team, {}) == []
    assert conformance_errors(team) == []


def fhir_lead_role() -> dict[str, Any]:
    """Return the lead-professional role as the mapping writes it."""
    return {"coding": [{"system": OWN.code_system("team-role"), "code": "lead-professional",
                        "display": "Lead professional"}]}


# --- inbound --------------------------------------------------------------------------------

def careteam(*participants: Resource, **extra: Any) -> Resource:
    """Return a minimal child's team CareTeam with ``participants``."""
    return {"resourceType": "CareTeam", "subject": {"reference": "Patient/p"},
            "participant": list(participants), **extra}


def practitioner_role(rid: str, phone: str = "01134960001") -> Resource:
    """Return a GP practice's PractitionerRole with a practitioner and a telephone number."""
    return {"resourceType": "PractitionerRole", "id": rid, "practitioner": DOCTOR,
            "organization": SURGERY, "code": [GP], "telecom": [{"system": "phone",
                                                               "value": phone}]}


def test_another_systems_practitioner_member_with_on_behalf_of_is_read() -> None:
    """ctm-1 allows onBehalfOf beside a Practitioner: the practitioner comes from the
    member, the organisation from onBehalfOf; the involvement is new (no id)."""
    team = careteam({"role": [GP], "member": DOCTOR, "onBehalfOf": SURGERY})
    [involvement], ignored = fhir.careteam_to_involvements(team, base=BASE)
    assert involvement.resource_id is None
    assert (involvement.organisation.resource_id, involvement.organisation.ods_code) == (
        "surgery", "A81001")
    assert (involvement.practitioner.resource_id, involvement.practitioner.local_id) == (
        "doc-1", "GP-17")
    assert ignored == []


def test_on_behalf_of_without_a_member_is_read() -> None:
    """ctm-1 allows onBehalfOf when there is no member (e.g. a withheld lead): a service."""
    [involvement], _ignored = fhir.careteam_to_involvements(
        careteam({"role": [GP], "onBehalfOf": SURGERY}), base=BASE)
    assert involvement.organisation.ods_code == "A81001" and involvement.practitioner is None


@pytest.mark.parametrize("member", [
    {"reference": "PractitionerRole/r1"},
    {"reference": "https://other.example/fhir/PractitionerRole/r1"},
    {"type": "PractitionerRole", "identifier": {"system": "urn:x", "value": "1"}},
    {"reference": "#c1"},
])
def test_on_behalf_of_beside_a_practitioner_role_breaks_ctm1(member: Resource) -> None:
    """Mapping version 1's shape, and any other PractitionerRole member, is refused."""
    team = careteam({"role": [GP]}, {"role": [GP], "member": member, "onBehalfOf": SURGERY},
                    contained=[practitioner_role("c1")])
    team["participant"][0]["member"] = {"reference": "#c1"}
    with pytest.raises(Invalid, match="ctm-1") as caught:
        fhir.careteam_to_involvements(team, {"r1": practitioner_role("r1")}, base=BASE)
    assert caught.value.expression == "CareTeam.participant[1].onBehalfOf"


@pytest.mark.parametrize("participant", [
    {"role": [GP]},
    {"role": [GP], "member": DOCTOR},
    {"role": [GP], "member": {"reference": "urn:uuid:6f1d4a52-4f0e-5d0b-9a7c-2c1f3e0b8d41"}},
    {"role": [GP], "member": {"display": "Dr Who"}},
])
def test_a_participant_without_an_organisation_source_is_refused(participant: Resource) -> None:
    """No PractitionerRole id and no onBehalfOf: the organisation cannot be determined."""
    with pytest.raises(Invalid, match="cannot be determined") as caught:
        fhir.careteam_to_involvements(careteam(participant), base=BASE)
    assert caught.value.expression == "CareTeam.participant[0].member"


def test_a_contained_reference_must_name_a_contained_resource() -> None:
    """``#id`` resolves within the CareTeam (FHIR R4 references.html#contained)."""
    with pytest.raises(Invalid) as caught:
        fhir.careteam_to_involvements(careteam({"role": [GP], "member": {"reference": "#x"}}),
                                      base=BASE)
    assert caught.value.expression == "CareTeam.participant[0].member"


def test_the_organisation_comes_from_the_given_practitioner_role() -> None:
    """A role given by id gives organisation, practitioner and telephone; one not given
    leaves the organisation to the service layer, which resolves the member's id."""
    team = careteam({"role": [GP], "member": {"reference": "PractitionerRole/r1"}},
                    {"role": [GP], "member": {"reference": "PractitionerRole/stored"}})
    given, stored = fhir.careteam_to_involvements(team, {"r1": practitioner_role("r1")},
                                                  base=BASE)[0]
    assert (given.resource_id, given.organisation.ods_code, given.practitioner.local_id,
            given.phone) == ("r1", "A81001", "GP-17", "01134960001")
    assert (stored.resource_id, stored.organisation, stored.practitioner) == (
        "stored", None, None)


def test_a_contained_practitioner_role_makes_a_new_involvement() -> None:
    """A contained PractitionerRole (``#id``) is read like a given one; its involvement has
    no id (new); a contained resource no member reads is listed as not kept."""
    team = careteam({"role": [GP], "member": {"reference": "#c1", "display": "Dr X"}},
                    contained=[practitioner_role("c1", "01134960002"),
                               {"resourceType": "Organization", "id": "unused"}])
    [involvement], ignored = fhir.careteam_to_involvements(team, base=BASE)
    assert (involvement.resource_id, involvement.organisation.ods_code,
            involvement.phone) == (None, "A81001", "01134960002")
    assert ignored == ["CareTeam.contained[1]"]


def test_a_contained_roles_period_is_the_involvements_unless_the_participant_gives_one(
) -> None:
    """PractitionerRole.period is the involvement's period (mappings/
    involvement_to_practitionerrole.toml): a participant without its own period takes its
    contained role's; a participant's period wins over the role's."""
    role = {**practitioner_role("c1"), "period": {"start": "2024-09-01", "end": "2025-07-18"}}
    own = {"start": "2025-01-06"}
    team = careteam({"role": [GP], "member": {"reference": "#c1"}},
                    {"role": [GP], "member": {"reference": "#c1"}, "period": own},
                    contained=[role])
    from_role, from_participant = fhir.careteam_to_involvements(team, base=BASE)[0]
    assert (str(from_role.period_start), str(from_role.period_end)) == (
        "2024-09-01", "2025-07-18")
    assert (str(from_participant.period_start), from_participant.period_end) == (
        "2025-01-06", None)


@settings(max_examples=20, deadline=None)
@given(strategies.children(min_involvements=1))
def test_without_roles_each_involvement_names_its_practitioner_role(child: Any) -> None:
    """Our own CareTeam read back without its PractitionerRoles (``$validate``, or a write
    that refers to stored participants): ids kept, organisations left to the service."""
    with_ids(child)
    involvements, ignored = fhir.careteam_to_involvements(
        fhir.child_to_careteam(child, base=BASE), base=BASE)
    assert [i.resource_id for i in involvements] == [i.resource_id for i in child.involvements]
    assert all(i.organisation is None for i in involvements)
    assert ignored == []


@settings(max_examples=20, deadline=None)
@given(strategies.assessments(min_members=1))
def test_ecaf_lead_and_members_without_roles(assessment: Any) -> None:
    """The eCAF team without PractitionerRoles: the lead's role id (``lead_role_id``) and the
    members' ids come back, their organisations left to the service layer."""
    with_assessment_ids(assessment)
    team = fhir.assessment_to_careteam(assessment, base=BASE)
    read, _ignored = fhir.careteam_to_assessment(team, base=BASE)
    assert read.lead_role_id == lead_role_id(assessment.assessment_id)
    assert read.lead_organisation is None and read.lead_practitioner is None
    assert [m.resource_id for m in read.members] == [m.resource_id for m in assessment.members]
    assert all(m.organisation is None for m in read.members)


@settings(max_examples=20, deadline=None)
@given(strategies.assessments())
def test_ecaf_lead_from_a_contained_role_or_another_systems_practitioner(
        assessment: Any) -> None:
    """The lead's PractitionerRole contained (``lead_role_id`` None: given in the CareTeam), or
    a Practitioner member with onBehalfOf (another system's CareTeam)."""
    with_assessment_ids(assessment)
    team = fhir.assessment_to_careteam(assessment, base=BASE)
    lead = next(p for p in team["participant"] if p["role"][0] == fhir_lead_role())
    contained = copy.deepcopy(team)
    contained["contained"] = [practitioner_role("lead")]
    contained["contained"][0]["code"] = [LEAD]
    next(p for p in contained["participant"] if p["role"][0] == fhir_lead_role())[
        "member"] = {"reference": "#lead"}
    read, ignored = fhir.careteam_to_assessment(contained, base=BASE)
    assert (read.lead_role_id, read.lead_organisation.ods_code, read.phone) == (
        None, "A81001", "01134960001")
    assert ignored == []
    lead["member"], lead["onBehalfOf"] = DOCTOR, SURGERY
    read, _ignored = fhir.careteam_to_assessment(team, base=BASE)
    assert (read.lead_role_id, read.lead_organisation.ods_code,
            read.lead_practitioner.local_id) == (None, "A81001", "GP-17")


def test_the_whom_to_ask_lead_reads_back_as_that_organisation() -> None:
    """A withheld lead (no member, onBehalfOf the managing authority) reads back as it."""
    team = {"resourceType": "CareTeam", "subject": {"reference": "Patient/p"},
            "identifier": [{"system": OWN.ecaf_assessment, "value": "A1"}],
            "status": "active", "participant": [{"role": [LEAD]}]}
    fhir.withhold_member(team["participant"][0], Organisation(
        resource_id="la-1", gss_code="E08000001", name="A Council"), base=BASE)
    read, _ignored = fhir.careteam_to_assessment(team, base=BASE)
    assert (read.lead_role_id, read.lead_organisation.gss_code) == (None, "E08000001")
