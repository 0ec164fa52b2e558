"""Resources written the way other systems send them — a UK Core profile claimed, a narrative,
extensions and elements the directory does not hold, national identifiers, literal and
absolute references, no ``managingOrganization`` from an authority's own system — for
Patient, Practitioner, PractitionerRole, Organization and CareTeam.

Each case says who sends it, what the gateway answers and what it keeps: it goes in unless a
documented directory rule refuses it (docs/vendors.md, docs/domain.md), and each refusal is a
4xx naming the rule and the element. The cases are modelled on the published UK Core examples
(HL7 UK, UKCore-Patient-RichardSmith-Example, UKCore-Practitioner-ConsultantSandraGose-Example,
UKCore-CareTeam-Example) with the directory's own children in place of adults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pytest

from adapter import systems
from adapter.fhir.xml import dumps_resource
from tests.api.conftest import fresh_nhs_number
from tests.fhir.fixtures import FHIR_JSON, FHIR_XML, GP, LA, Env, fetch, parsed

OWN_BASE: Final = "http://localhost/fhir"  # GATEWAY_PUBLIC_URL of the test app
UKCORE: Final = "https://fhir.hl7.org.uk/StructureDefinition/"
NARRATIVE: Final = {"status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">A record.</div>'}
GMC: Final = "https://fhir.hl7.org.uk/Id/gmc-number"
SDS_USER: Final = "https://fhir.nhs.uk/Id/sds-user-id"
ODS: Final = "https://fhir.nhs.uk/Id/ods-organization-code"
VENDOR_EXTENSION: Final = {"url": "https://vendor.example.org/fhir/ext/case-reference",
                           "valueString": "CASE-0042"}


def years_ago(years: int) -> str:
    """Return the ISO date ``years`` years and a month before today."""
    today = dt.date.today()
    return dt.date(today.year - years, 1 if today.month > 1 else 2, 15).isoformat()


def uk_core_patient(nhs_number: str, birth: str) -> dict[str, Any]:
    """A Patient as a local authority's case system sends it: UK Core claimed, a narrative,
    UK Core extensions the directory does not hold, the NHS number with its verification
    status, a contact and a language, and no ``managingOrganization``."""
    return {
        "resourceType": "Patient", "meta": {"profile": [UKCORE + "UKCore-Patient"]},
        "text": NARRATIVE,
        "extension": [
            {"url": UKCORE + "Extension-UKCore-EthnicCategory", "valueCodeableConcept": {
                "coding": [{"system": "https://fhir.hl7.org.uk/CodeSystem/"
                                      "UKCore-EthnicCategoryEngland", "code": "G"}]}},
            {"url": UKCORE + "Extension-UKCore-ContactPreference", "extension": [
                {"url": "PreferredWrittenCommunicationFormat", "valueCodeableConcept": {
                    "coding": [{"system": "https://fhir.hl7.org.uk/CodeSystem/"
                                          "UKCore-PreferredWrittenCommunicationFormat",
                                "code": "11"}]}}]},
            VENDOR_EXTENSION],
        "identifier": [{
            "extension": [{"url": UKCORE + "Extension-UKCore-NHSNumberVerificationStatus",
                           "valueCodeableConcept": {"coding": [{
                               "system": "https://fhir.hl7.org.uk/CodeSystem/"
                                         "UKCore-NHSNumberVerificationStatusEngland",
                               "code": "01"}]}}],
            "system": systems.NHS_NUMBER, "value": nhs_number}],
        "name": [{"use": "official", "family": "Othersystem", "given": ["Robin"]}],
        "telecom": [{"system": "phone", "value": "0113 496 0555"}],
        "gender": "male", "birthDate": birth,
        "address": [{"line": ["4 Sandmoor Drive"], "city": "Northmoor",
                     "postalCode": "LS17 7DF"}],
        "contact": [{"relationship": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
            "name": {"family": "Othersystem", "given": ["Jane"]}}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                    "code": "bfi"}]}}],
    }


def uk_core_practitioner(identifiers: list[dict[str, str]]) -> dict[str, Any]:
    """A Practitioner as an NHS system sends it (UKCore-Practitioner-ConsultantSandraGose:
    the SDS user id or a registration number, a prefix, a work address, a qualification)."""
    return {"resourceType": "Practitioner",
            "meta": {"profile": [UKCORE + "UKCore-Practitioner"]}, "text": NARRATIVE,
            "extension": [VENDOR_EXTENSION], "identifier": identifiers,
            "name": [{"family": "Gose", "given": ["Sandra"], "prefix": ["Mrs"]}],
            "telecom": [{"system": "phone", "value": "0113 496 3211", "use": "work"}],
            "address": [{"line": ["Admissions Department"], "city": "Leeds",
                         "postalCode": "LS9 7TF"}],
            "gender": "female",
            "qualification": [{"code": {"text": "MB ChB"}}]}


def uk_core_organization(ods_code: str) -> dict[str, Any]:
    """An Organization as an NHS system sends it: the ODS code, a type, an alias, a part-of
    reference the directory does not hold."""
    return {"resourceType": "Organization",
            "meta": {"profile": [UKCORE + "UKCore-Organization"]}, "text": NARRATIVE,
            "extension": [VENDOR_EXTENSION],
            "identifier": [{"system": ODS, "value": ods_code}], "active": True,
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "organization-type", "code": "prov"}]}],
            "name": "Birch Lane Medical Centre", "alias": ["Birch Lane"],
            "telecom": [{"system": "phone", "value": "0113 496 0002"}],
            "address": [{"line": ["2 Birch Lane"], "city": "Northmoor",
                         "postalCode": "LS1 4AQ"}]}


def uk_core_role(env: Env, practitioner: dict[str, Any]) -> dict[str, Any]:
    """A PractitionerRole as a GP system sends it: the practitioner by its GMC number, the
    practice by a literal reference, times the directory does not hold."""
    return {"resourceType": "PractitionerRole", "id": "gp-role",
            "meta": {"profile": [UKCORE + "UKCore-PractitionerRole"]},
            "practitioner": practitioner,
            "organization": {"reference": f"Organization/{env.world.orgs[GP]}"},
            "code": [{"coding": [{"system": OWN_CODES + "involvement-role", "code": "gp"}]}],
            "availableTime": [{"daysOfWeek": ["mon", "tue"]}],
            "telecom": [{"system": "phone", "value": "0113 496 0783"}]}


OWN_CODES: Final = "https://fhir.contactpoint-gateway.example.org/CodeSystem/"


@dataclass
class Sent:
    """What a case sends: method, path, body, caller (an attribute of ``Env.who``), format."""

    method: str
    path: str
    body: dict[str, Any]
    caller: str = "la"
    fmt: str = "json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One resource as another system sends it, the answer expected and what is kept (a check
    of the answer's resource), or the rule a refusal names and the element."""

    name: str
    build: Callable[[Env], Sent]
    status: int
    kept: Callable[[Env, dict[str, Any]], None] | None = None
    rule: str = ""
    element: str = ""


def send(env: Env, sent: Sent) -> Any:
    """Send ``sent`` as its caller, in its format, asking for the resource back."""
    media = FHIR_XML if sent.fmt == "xml" else FHIR_JSON
    data = dumps_resource(sent.body) if sent.fmt == "xml" else _json(sent.body)
    headers = {**getattr(env.who, sent.caller), "Content-Type": media, "Accept": media,
               **sent.headers}
    return env.client.open(sent.path, method=sent.method, data=data, headers=headers)


def _json(body: dict[str, Any]) -> bytes:
    """Return ``body`` as JSON bytes."""
    import json

    return json.dumps(body).encode()


def identifier_values(resource: dict[str, Any]) -> dict[str, str]:
    """Return a resource's identifiers as system -> value."""
    return {i["system"]: i["value"] for i in resource.get("identifier", [])}


# --- Patient ---------------------------------------------------------------------------------

def patient_from_authority(env: Env) -> Sent:
    """The authority's own system, no managingOrganization."""
    return Sent("POST", "/fhir/Patient", uk_core_patient(fresh_nhs_number(env.db), years_ago(7)))


def patient_from_authority_xml(env: Env) -> Sent:
    """The same in FHIR XML."""
    return Sent("POST", "/fhir/Patient",
                uk_core_patient(fresh_nhs_number(env.db), years_ago(9)), fmt="xml")


def patient_with_literal_references(env: Env) -> Sent:
    """managingOrganization as ``Organization/<id>``, generalPractitioner as this server's
    absolute URL."""
    body = uk_core_patient(fresh_nhs_number(env.db), years_ago(4))
    body["managingOrganization"] = {"reference": f"Organization/{env.world.orgs[LA]}"}
    body["generalPractitioner"] = [{"reference": f"{OWN_BASE}/Organization/{env.world.orgs[GP]}"}]
    return Sent("POST", "/fhir/Patient", body)


def patient_from_national_client(env: Env) -> Sent:
    """A national client (the admin right) belongs to no authority: it must name one."""
    return Sent("POST", "/fhir/Patient", uk_core_patient(fresh_nhs_number(env.db), years_ago(7)),
                caller="admin")


def patient_as_published(env: Env) -> Sent:
    """UKCore-Patient-RichardSmith-Example's birth date: an adult."""
    return Sent("POST", "/fhir/Patient", uk_core_patient(fresh_nhs_number(env.db), "1970-09-11"))


def patient_without_birth_date(env: Env) -> Sent:
    """No birth date: the directory cannot apply its age rules."""
    body = uk_core_patient(fresh_nhs_number(env.db), years_ago(5))
    del body["birthDate"]
    return Sent("POST", "/fhir/Patient", body)


def patient_twice(env: Env) -> Sent:
    """An NHS number a live entry already holds (the seeded child's)."""
    child = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.la)
    number = identifier_values(child)[systems.NHS_NUMBER]
    return Sent("POST", "/fhir/Patient", uk_core_patient(number, years_ago(6)))


def patient_kept(env: Env, patient: dict[str, Any]) -> None:
    """The NHS number, name, birth date, address and the carer (``contact``) are kept; the
    authority is the caller's; the narrative, language and the vendor's extension are not."""
    assert systems.NHS_NUMBER in identifier_values(patient)
    assert patient["name"][0]["family"] == "Othersystem"
    assert patient["address"][0]["postalCode"] == "LS17 7DF"
    assert patient["managingOrganization"]["identifier"]["value"] == LA
    assert patient["contact"][0]["name"]["family"] == "Othersystem"
    assert "communication" not in patient
    assert "A record." not in str(patient.get("text", ""))
    urls = {e["url"] for e in patient.get("extension", [])}
    assert VENDOR_EXTENSION["url"] not in urls


def patient_references_kept(env: Env, patient: dict[str, Any]) -> None:
    """Both literal references resolved: the authority and the GP practice."""
    patient_kept(env, patient)
    gp = patient["generalPractitioner"][0]
    assert gp["reference"] == f"Organization/{env.world.orgs[GP]}"


# --- Practitioner ----------------------------------------------------------------------------

def practitioner_by_sds(env: Env) -> Sent:
    """UKCore-Practitioner-ConsultantSandraGose: the SDS user id only."""
    return Sent("POST", "/fhir/Practitioner",
                uk_core_practitioner([{"system": SDS_USER, "value": "123456789012"}]))


def practitioner_by_gmc(env: Env) -> Sent:
    """A GMC number and an SDS user id, from a GP system."""
    return Sent("POST", "/fhir/Practitioner", uk_core_practitioner(
        [{"system": GMC, "value": "7654321"}, {"system": SDS_USER, "value": "210987654321"}]),
        caller="gp")


def practitioner_by_local_id(env: Env) -> Sent:
    """The authority's own staff id (its local identifier system)."""
    return Sent("POST", "/fhir/Practitioner", uk_core_practitioner(
        [{"system": f"https://fhir.contactpoint-gateway.example.org/Id/local/{LA}",
          "value": "SW77"}]))


def practitioner_without_identifier(env: Env) -> Sent:
    """No identifier the directory can match a practitioner by."""
    body = uk_core_practitioner([])
    del body["identifier"]
    return Sent("POST", "/fhir/Practitioner", body)


def practitioner_bad_gmc(env: Env) -> Sent:
    """A GMC number that is not one (GMC numbers are seven digits)."""
    return Sent("POST", "/fhir/Practitioner",
                uk_core_practitioner([{"system": GMC, "value": "GMC-12"}]))


def kept_identifiers(*wanted: str) -> Callable[[Env, dict[str, Any]], None]:
    """Return a check that the Practitioner kept its name and the identifier systems."""
    def check(_env: Env, practitioner: dict[str, Any]) -> None:
        assert set(wanted) <= set(identifier_values(practitioner))
        assert practitioner["name"][0]["family"] == "Gose"
        assert "qualification" not in practitioner and "address" not in practitioner
    return check


# --- Organization ----------------------------------------------------------------------------

def organization_by_ods(env: Env) -> Sent:
    """A GP practice the directory does not hold yet, by its ODS code."""
    return Sent("POST", "/fhir/Organization", uk_core_organization("B86099"), caller="admin")


def organization_without_identifier(env: Env) -> Sent:
    """No ODS code, URN or GSS code: nothing the directory keys an organisation by."""
    body = uk_core_organization("B86098")
    del body["identifier"]
    return Sent("POST", "/fhir/Organization", body, caller="admin")


def organization_kept(_env: Env, organization: dict[str, Any]) -> None:
    """The ODS code, name and phone are kept; the alias and extensions are not."""
    assert identifier_values(organization)[ODS] == "B86099"
    assert organization["name"] == "Birch Lane Medical Centre"
    assert "alias" not in organization


# --- PractitionerRole ------------------------------------------------------------------------

def role_on_its_own(env: Env) -> Sent:
    """A standalone PractitionerRole: the directory's roles are a child's involvements."""
    return Sent("POST", "/fhir/PractitionerRole",
                uk_core_role(env, {"reference": f"Practitioner/{env.world.people['SW1']}"}))


def role_validated(env: Env) -> Sent:
    """The same PractitionerRole checked with $validate (nothing stored): it is valid."""
    return Sent("POST", "/fhir/PractitionerRole/$validate",
                uk_core_role(env, {"reference": f"Practitioner/{env.world.people['SW1']}"}))


def validated_without_errors(_env: Env, outcome: dict[str, Any]) -> None:
    """$validate found no error."""
    assert outcome["resourceType"] == "OperationOutcome"
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")], outcome


# --- CareTeam --------------------------------------------------------------------------------

def team_from_authority_system(env: Env) -> Sent:
    """The child's team as the authority's case system sends it: UK Core CareTeam claimed, a
    narrative, a vendor extension, the subject and managing organisation as literal
    references, and a new involvement whose contained PractitionerRole names its practitioner
    by a GMC number only (a practitioner created through the API just before)."""
    gmc = {"system": GMC, "value": "6543210"}
    created = send(env, Sent("POST", "/fhir/Practitioner", uk_core_practitioner([gmc])))
    assert created.status_code == 201, created.json
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la)
    team["meta"] = {"profile": [UKCORE + "UKCore-CareTeam"]}
    team["text"] = NARRATIVE
    team["extension"] = [VENDOR_EXTENSION]
    team["subject"] = {"reference": f"Patient/{env.world.child}"}
    team["managingOrganization"] = [{"reference": f"Organization/{env.world.orgs[LA]}"}]
    team["contained"] = [{
        "resourceType": "PractitionerRole", "id": "early-help",
        "meta": {"profile": [UKCORE + "UKCore-PractitionerRole"]},
        "practitioner": {"identifier": gmc},
        "organization": {"reference": f"Organization/{env.world.orgs[LA]}"},
        "code": [{"coding": [{"system": OWN_CODES + "involvement-role", "code": "early-help"}]}],
        "availableTime": [{"daysOfWeek": ["mon", "tue"]}],
        "telecom": [{"system": "phone", "value": "0113 496 0123"}]}]
    team["participant"].append({
        "role": [{"coding": [{"system": OWN_CODES + "involvement-role", "code": "early-help"}]}],
        "member": {"reference": "#early-help"}, "period": {"start": "2025-02-03"}})
    return Sent("PUT", f"/fhir/CareTeam/{env.world.team}", team)


def team_as_published(env: Env) -> Sent:
    """UKCore-CareTeam-Example as published: its references name resources this server does
    not hold."""
    return Sent("POST", "/fhir/CareTeam", {
        "resourceType": "CareTeam", "meta": {"profile": [UKCORE + "UKCore-CareTeam"]},
        "status": "inactive", "name": "Weight management team",
        "category": [{"coding": [{"system": OWN_CODES + "careteam-category",
                                  "code": "directory-team"}]}],
        "subject": {"reference": "Patient/UKCore-Patient-Example"},
        "participant": [{"member": {"reference": "Practitioner/UKCore-Practitioner-Example"}}],
        "managingOrganization": [{"reference": "Organization/UKCore-Organisation-Example"}]})


def team_as_published_with_role(env: Env) -> Sent:
    """The same with the member as a PractitionerRole: every reference names nothing here."""
    sent = team_as_published(env)
    sent.body["participant"] = [
        {"role": [{"coding": [{"system": OWN_CODES + "involvement-role", "code": "gp"}]}],
         "member": {"reference": "PractitionerRole/UKCore-PractitionerRole-Example"}}]
    return sent


def team_kept(env: Env, team: dict[str, Any]) -> None:
    """The new involvement is kept: one of the team's PractitionerRoles is now that of the
    practitioner the contained role named by its GMC number; the narrative and the vendor's
    extension are not kept."""
    roles = [fetch(env.client, f"/fhir/{p['member']['reference']}", env.who.la)
             for p in team["participant"]
             if p.get("member", {}).get("reference", "").startswith("PractitionerRole/")]
    named = [r.get("practitioner", {}) for r in roles]
    gmc_people = fetch(env.client, f"/fhir/Practitioner?identifier={GMC}|6543210", env.who.la)
    person = gmc_people["entry"][0]["resource"]["id"]
    assert any(p.get("reference") == f"Practitioner/{person}" for p in named), roles
    assert "A record." not in str(team.get("text", ""))
    assert not [e for e in team.get("extension", []) if e["url"] == VENDOR_EXTENSION["url"]]


CASES: Final = [
    Case("Patient: UK Core, from the authority's system, no managingOrganization",
         patient_from_authority, 201, patient_kept),
    Case("Patient: the same in FHIR XML", patient_from_authority_xml, 201, patient_kept),
    Case("Patient: literal and absolute references", patient_with_literal_references, 201,
         patient_references_kept),
    Case("Patient: a national client must name the managing authority",
         patient_from_national_client, 422, rule="managingOrganization",
         element="Patient.managingOrganization"),
    Case("Patient: an adult (the published example's birth date)", patient_as_published, 422,
         rule="regulation 8", element="Patient.birthDate"),
    Case("Patient: no birth date", patient_without_birth_date, 422, rule="birth",
         element="Patient.birthDate"),
    Case("Patient: an NHS number a live entry holds", patient_twice, 409,
         rule="One live directory entry per NHS number"),
    Case("Practitioner: by SDS user id only", practitioner_by_sds, 201,
         kept_identifiers(SDS_USER)),
    Case("Practitioner: by GMC number and SDS user id, from a GP system", practitioner_by_gmc,
         201, kept_identifiers(GMC, SDS_USER)),
    Case("Practitioner: by the employer's staff id", practitioner_by_local_id, 201,
         kept_identifiers(f"https://fhir.contactpoint-gateway.example.org/Id/local/{LA}")),
    Case("Practitioner: no identifier", practitioner_without_identifier, 422,
         rule="identifier", element="Practitioner.identifier"),
    Case("Practitioner: a GMC number out of format", practitioner_bad_gmc, 422,
         rule="GMC", element="Practitioner.identifier"),
    Case("Organization: UK Core, by ODS code", organization_by_ods, 201, organization_kept),
    Case("Organization: no identifier", organization_without_identifier, 422,
         rule="needs an ODS code, a school URN or a GSS code", element="Organization.identifier"),
    Case("PractitionerRole: on its own (roles are a child's involvements)", role_on_its_own,
         405, rule="through its CareTeam"),
    Case("PractitionerRole: $validate", role_validated, 200, validated_without_errors),
    Case("CareTeam: from the authority's system, a new role's practitioner by GMC number",
         team_from_authority_system, 200, team_kept),
    Case("CareTeam: UK Core example as published (a Practitioner member with no organisation)",
         team_as_published, 422, rule="ctm-1", element="CareTeam.participant[0].member"),
    Case("CareTeam: UK Core example with a PractitionerRole member (references to nothing "
         "held)", team_as_published_with_role, 422, rule="Patient/UKCore-Patient-Example",
         element="CareTeam.subject"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_what_other_systems_send(env: Env, case: Case) -> None:
    """Each case: the expected status; a success keeps what the case says; a refusal is a 4xx
    OperationOutcome naming the rule and the element."""
    sent = case.build(env)
    response = send(env, sent)
    answer = parsed(response)
    assert response.status_code == case.status, answer
    if case.status < 400:
        assert case.kept is not None
        case.kept(env, answer)
        if case.status == 201:
            read = fetch(env.client, response.headers["Location"].split("/_history")[0],
                         getattr(env.who, sent.caller if sent.caller != "gp" else "admin"))
            case.kept(env, read)
        return
    assert answer["resourceType"] == "OperationOutcome"
    first = answer["issue"][0]
    assert case.rule in first["diagnostics"], first
    if case.element:
        assert case.element in " ".join(first.get("expression", [])), first
