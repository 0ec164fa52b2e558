"""The worked examples of docs/vendors.md go in through the live gateway, sent as the page says
(POST or PUT, FHIR JSON or XML, directory XML), by the system the page names, into the seeded
world of tests/fhir (Northmoor Council E09000001, Oak Surgery A81001, Elm Primary 100001, the
social worker SW1); and what the page says is kept is read back, what it says is not kept is
announced with the page's words. What must be live is substituted: the CareTeams' subject is
the child patient.json creates (the gateway allocates the ContactPoint ID). On SQLite and
PostgreSQL."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Final

from flask import Flask
from lxml import etree

from adapter import systems
from adapter.fhir.xml import dumps_resource, loads_resource
from tests.conftest import REPO
from tests.fhir.fixtures import FHIR_JSON, FHIR_XML, GP, LA, Env, bearer, fetch

EXAMPLES: Final = REPO / "docs" / "examples"
PAGE: Final = REPO / "docs" / "vendors.md"
BASE: Final = "https://fhir.contactpoint-gateway.example.org"
DIRECTORY_NS: Final = "urn:contactpoint-gateway:directory:1"
JSON_BODY: Final = {"Content-Type": FHIR_JSON}
NOTES: Final = {"Prefer": "return=OperationOutcome"}


def example(name: str) -> dict[str, Any]:
    """Return a JSON example of docs/examples."""
    value: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return value


def notes(response: Any) -> list[str]:
    """Return the diagnostics of a write answered with its notes."""
    assert response.json["resourceType"] == "OperationOutcome", response.json
    return [i["diagnostics"] for i in response.json["issue"]]


def page_says(*texts: str) -> None:
    """The vendor page states each of ``texts`` (so the words tested are the words shown)."""
    page = " ".join(PAGE.read_text().split())
    for text in texts:
        assert text in page, text


def with_subject(team: dict[str, Any], contactpoint_id: str) -> dict[str, Any]:
    """Return ``team`` about the child with ``contactpoint_id`` (the one patient.json made)."""
    team = copy.deepcopy(team)
    team["subject"]["identifier"]["value"] = contactpoint_id
    return team


def create_patient(env: Env) -> dict[str, Any]:
    """POST patient.json as Northmoor's system; return the Patient as stored."""
    response = env.client.post("/fhir/Patient", json=example("patient.json"),
                               headers={**env.who.la, **JSON_BODY})
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def contactpoint_id(patient: dict[str, Any]) -> str:
    """Return a Patient's ContactPoint ID."""
    (value,) = [i["value"] for i in patient["identifier"]
                if i["system"] == f"{BASE}/Id/contactpoint-id"]
    return str(value)


def test_patient_goes_in_and_keeps_what_the_page_says(env: Env) -> None:
    """patient.json, POSTed by the managing authority's system: 201 with the entry; kept the
    NHS number, name, gender, birth date, home address and the authority (named by its GSS
    code); the notes say what was not kept; a second create is 409 naming the entry, with
    If-None-Exist it is the answer."""
    sent = example("patient.json")
    stored = create_patient(env)
    back = fetch(env.client, f"/fhir/Patient/{stored['id']}", env.who.la)
    assert {"system": systems.NHS_NUMBER, "value": "9990042438"} in back["identifier"]
    assert back["name"][0]["family"] == "Example" and back["name"][0]["given"] == ["Ada"]
    assert (back["gender"], back["birthDate"]) == ("female", "2016-04-12")
    assert back["address"][0]["line"] == ["1 High Street"]
    assert back["address"][0]["postalCode"] == "LS1 4AP" and back["address"][0]["use"] == "home"
    assert back["managingOrganization"]["identifier"]["value"] == LA
    assert back["managingOrganization"]["reference"] == f"Organization/{env.world.orgs[LA]}"
    assert "text" not in back
    assert not [e for e in back.get("extension", []) if "EthnicCategory" in e["url"]]
    # The notes (an update sending the same body: nothing kept changes).
    again = env.client.put(f"/fhir/Patient/{stored['id']}", json={**sent, "id": stored["id"]},
                           headers={**env.who.la, **JSON_BODY, **NOTES})
    assert again.status_code == 200
    said = notes(again)
    assert said[:3] == ["Not kept: Patient.extension.", "Not kept: Patient.name[0].use.",
                        "Not kept: Patient.text."]
    assert said[3].startswith(f"No change: Patient/{stored['id']} already holds everything")
    page_says("Not kept: Patient.extension.", "Not kept: Patient.name[0].use.",
              "Not kept: Patient.text.", "No change:")
    # One live entry per NHS number.
    twice = env.client.post("/fhir/Patient", json=sent, headers={**env.who.la, **JSON_BODY})
    assert twice.status_code == 409 and f"Patient/{stored['id']}" in str(twice.json)
    found = env.client.post("/fhir/Patient", json=sent, headers={
        **env.who.la, **JSON_BODY,
        "If-None-Exist": f"identifier={systems.NHS_NUMBER}|9990042438"})
    assert found.status_code == 200 and found.json["id"] == stored["id"]
    matched = env.client.post("/fhir/Patient", json=sent, headers={
        **env.who.la, **JSON_BODY, **NOTES,
        "If-None-Exist": f"identifier={systems.NHS_NUMBER}|9990042438"})
    assert notes(matched)[-1].startswith(f"Not created: Patient/{stored['id']} matches the "
                                         "If-None-Exist condition")
    page_says("Not created: Patient/<id> matches the If-None-Exist condition")


def test_patient_without_managing_organization(env: Env) -> None:
    """From an authority's system the entry is that authority's; from a national client
    (the admin right) it is 422 naming the element."""
    sent = example("patient.json")
    del sent["managingOrganization"]
    refused = env.client.post("/fhir/Patient", json=sent, headers={**env.who.admin, **JSON_BODY})
    assert refused.status_code == 422
    assert refused.json["issue"][0]["expression"] == ["Patient.managingOrganization"]
    response = env.client.post("/fhir/Patient", json=sent, headers={**env.who.la, **JSON_BODY})
    assert response.status_code == 201
    assert response.json["managingOrganization"]["identifier"]["value"] == LA


def test_careteam_goes_in_with_its_contained_role(env: Env) -> None:
    """careteam.json about the new child, POSTed by its authority: 201; the early-help
    involvement is kept as a PractitionerRole of the social worker SW1 at Northmoor with its
    telephone and period; name and text not kept, the contained member changed into a
    reference."""
    child = contactpoint_id(create_patient(env))
    team = with_subject(example("careteam.json"), child)
    response = env.client.post("/fhir/CareTeam", json=team,
                               headers={**env.who.la, **JSON_BODY, **NOTES})
    assert response.status_code == 201
    said = notes(response)
    assert said[:2] == ["Not kept: CareTeam.name.", "Not kept: CareTeam.text."]
    assert said[2].startswith("Changed: CareTeam.participant[0].member: kept as the "
                              "PractitionerRole of the involvement it describes")
    page_says("Not kept: CareTeam.name.", "Not kept: CareTeam.text.",
              "Changed: CareTeam.participant[0].member")
    team_id = response.headers["Location"].split("/")[-3]
    back = fetch(env.client, f"/fhir/CareTeam/{team_id}", env.who.la)
    assert back["subject"]["identifier"]["value"] == child and "name" not in back
    (participant,) = back["participant"]
    assert "early-help" in json.dumps(participant["role"])
    assert participant["period"] == {"start": "2025-02-03"}
    role = fetch(env.client, f"/fhir/{participant['member']['reference']}", env.who.la)
    assert role["practitioner"]["reference"] == f"Practitioner/{env.world.people['SW1']}"
    assert role["organization"]["reference"] == f"Organization/{env.world.orgs[LA]}"
    assert {"system": "phone", "value": "0113 496 0123"} in [
        {k: t[k] for k in ("system", "value")} for t in role["telecom"]]


def test_ecaf_careteam_goes_in_and_keeps_only_the_reference(env: Env) -> None:
    """ecaf-careteam.json about the new child, POSTed by the authority (the lead's
    organisation): 201; kept the assessment id, status, consent, start, the lead and the school
    as a TAC member; the note and the text not kept; a second create is 409."""
    child = contactpoint_id(create_patient(env))
    team = with_subject(example("ecaf-careteam.json"), child)
    response = env.client.post("/fhir/CareTeam", json=team,
                               headers={**env.who.la, **JSON_BODY, **NOTES})
    assert response.status_code == 201
    said = notes(response)
    assert said[:2] == ["Not kept: CareTeam.note.", "Not kept: CareTeam.text."]
    assert "Changed: CareTeam.participant[1].onBehalfOf: kept as the organization of the " \
           "member's PractitionerRole (FHIR R4 ctm-1)." in said
    page_says("Not kept: CareTeam.note.", "Not kept: CareTeam.text.",
              "Changed: CareTeam.participant[1].onBehalfOf")
    team_id = response.headers["Location"].split("/")[-3]
    back = fetch(env.client, f"/fhir/CareTeam/{team_id}", env.who.la)
    assert back["identifier"][0]["value"] == "ECAF-201-0000042" and "note" not in back
    assert back["period"]["start"] == "2026-03-02"
    extensions = {e["url"].rsplit("-", 1)[-1]: e.get("valueCode", e.get("valueBoolean"))
                  for e in back["extension"]}
    assert extensions["AssessmentStatus"] == "in-progress"
    assert extensions["ConsentToShare"] is True
    members = [fetch(env.client, f"/fhir/{p['member']['reference']}", env.who.la)
               for p in back["participant"]]
    organisations = {m["organization"]["reference"] for m in members}
    assert organisations == {f"Organization/{env.world.orgs[LA]}",
                             f"Organization/{env.world.orgs['100001']}"}
    twice = env.client.post("/fhir/CareTeam", json=team, headers={**env.who.la, **JSON_BODY})
    assert twice.status_code == 409


def test_practitioner_is_matched_by_its_staff_id(env: Env) -> None:
    """practitioner.json names the social worker the directory holds (SW1 of Northmoor): a
    POST is 409 naming that Practitioner; a PUT there by the employer keeps name, telephone,
    e-mail and the staff id, and says what it did not keep."""
    sent = example("practitioner.json")
    held = env.world.people["SW1"]
    posted = env.client.post("/fhir/Practitioner", json=sent,
                             headers={**env.who.la, **JSON_BODY})
    assert posted.status_code == 409 and f"Practitioner/{held}" in str(posted.json)
    response = env.client.put(f"/fhir/Practitioner/{held}", json={**sent, "id": held},
                              headers={**env.who.la, **JSON_BODY, **NOTES})
    assert response.status_code == 200
    kept_out = ["Not kept: Practitioner.active.", "Not kept: Practitioner.gender.",
                "Not kept: Practitioner.qualification.",
                "Not kept: Practitioner.telecom[0].use.", "Not kept: Practitioner.text."]
    assert notes(response) == kept_out
    page_says(*kept_out)
    back = fetch(env.client, f"/fhir/Practitioner/{held}", env.who.la)
    assert back["identifier"][0]["system"] == f"{BASE}/Id/local/{LA}"
    assert back["identifier"][0]["value"] == "SW1"
    assert back["name"][0]["family"] == "Worker"
    assert {(t["system"], t["value"]) for t in back["telecom"]} == {
        ("phone", "0113 496 0100"), ("email", "sam.worker@northmoor.example")}


def gp_practitioner(env: Env) -> None:
    """Create the GP the PractitionerRole example names (Oak Surgery's staff id GP0001), as
    the practice's system does before it refers to it."""
    response = env.client.post("/fhir/Practitioner", headers={**env.who.gp, **JSON_BODY}, json={
        "resourceType": "Practitioner",
        "identifier": [{"system": f"{BASE}/Id/local/{GP}", "value": "GP0001"}],
        "name": [{"prefix": ["Dr"], "given": ["Cian"], "family": "Khalil"}]})
    assert response.status_code == 201, response.json


def test_practitionerrole_is_written_through_a_careteam(env: Env) -> None:
    """practitionerrole.json and .xml: POST and PUT of a PractitionerRole are 405 saying
    where roles are written; $validate checks them (JSON and XML) once the practitioner is
    stored; contained in the child's team, written by the national directory team, the
    role is kept with its practitioner, organisation, role, start and telephone."""
    role_json = example("practitionerrole.json")
    role_xml = (EXAMPLES / "practitionerrole.xml").read_bytes()
    for method, url in (("POST", "/fhir/PractitionerRole"),
                        ("PUT", f"/fhir/PractitionerRole/{env.world.roles['gp']}")):
        for body, media in ((json.dumps(role_json).encode(), FHIR_JSON), (role_xml, FHIR_XML)):
            response = env.client.open(url, method=method, data=body,
                                       headers={**env.who.gp, "Content-Type": media})
            assert response.status_code == 405
            message = notes(response)[0]
            assert message.startswith("A PractitionerRole is created and changed through its "
                                      "CareTeam")
    page_says("A PractitionerRole is created and changed through its CareTeam")
    gp_practitioner(env)
    for body, media in ((json.dumps(role_json).encode(), FHIR_JSON), (role_xml, FHIR_XML)):
        checked = env.client.post("/fhir/PractitionerRole/$validate", data=body,
                                  headers={**env.who.gp, "Content-Type": media})
        assert checked.status_code == 200
        assert notes(checked) == ["Not kept: PractitionerRole.active.",
                                  "Not kept: PractitionerRole.availableTime.",
                                  "Not kept: PractitionerRole.text."]
    for missing in ("organization", "code"):
        short = {k: v for k, v in role_json.items() if k != missing}
        refused = env.client.post("/fhir/PractitionerRole/$validate", json=short,
                                  headers={**env.who.gp, **JSON_BODY})
        assert [i["expression"] for i in refused.json["issue"] if i["severity"] == "error"] \
            == [[f"PractitionerRole.{missing}"]]
    # The XML example, contained in a CareTeam sent as FHIR XML.
    child = contactpoint_id(create_patient(env))
    contained = {**loads_resource(role_xml), "id": "gp"}
    team = {"resourceType": "CareTeam", "contained": [contained], "status": "active",
            "category": example("careteam.json")["category"],
            "subject": {"identifier": {"system": f"{BASE}/Id/contactpoint-id", "value": child}},
            "participant": [{"role": contained["code"], "member": {"reference": "#gp"}}]}
    response = env.client.post("/fhir/CareTeam", data=dumps_resource(team), headers={
        **env.who.admin, "Content-Type": FHIR_XML, "Accept": FHIR_JSON})
    assert response.status_code == 201, response.json
    (participant,) = response.json["participant"]
    role = fetch(env.client, f"/fhir/{participant['member']['reference']}", env.who.admin,
                 "xml")
    assert role["organization"]["reference"] == f"Organization/{env.world.orgs[GP]}"
    assert role["practitioner"]["identifier"]["value"] == "GP0001"
    assert role["period"] == {"start": "2024-09-01"} and "availableTime" not in role
    assert "gp" in json.dumps(role["code"])
    assert {"system": "phone", "value": "0113 496 0783"} in [
        {k: t[k] for k in ("system", "value")} for t in role["telecom"]]


def test_organization_is_matched_by_its_ods_code(env: Env) -> None:
    """organization.json is Oak Surgery, which the directory holds: a POST is 409 naming it;
    a PUT by the practice's own system keeps the ODS code, name, telephone, address and the
    directory's type, and says what it did not keep."""
    sent = example("organization.json")
    held = env.world.orgs[GP]
    posted = env.client.post("/fhir/Organization", json=sent,
                             headers={**env.who.gp, **JSON_BODY})
    assert posted.status_code == 409 and f"Organization/{held}" in str(posted.json)
    response = env.client.put(f"/fhir/Organization/{held}", json={**sent, "id": held},
                              headers={**env.who.gp, **JSON_BODY, **NOTES})
    assert response.status_code == 200
    kept_out = ["Not kept: Organization.active.", "Not kept: Organization.alias.",
                "Not kept: Organization.text."]
    assert notes(response) == kept_out
    page_says(*kept_out)
    back = fetch(env.client, f"/fhir/Organization/{held}", env.who.gp)
    assert {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": GP} in [
        {k: i[k] for k in ("system", "value")} for i in back["identifier"]]
    assert back["name"] == "Oak Surgery" and "alias" not in back
    assert back["address"][0]["postalCode"] == "LS1 4AP"
    assert back["telecom"][0]["value"] == "0113 496 0001"
    assert "gp-practice" in json.dumps(back["type"])
    other = env.client.put(f"/fhir/Organization/{held}", json={**sent, "id": held},
                           headers={**env.who.la, **JSON_BODY})
    assert other.status_code == 403


def test_subscription_goes_in_and_keeps_its_channel(env: Env) -> None:
    """subscription.json, POSTed by Northmoor's system: 201 with the subscription and its
    signing secret (even under Prefer: return=minimal); kept the topic, the filter, the
    endpoint, payload and content, heartbeat and timeout; status requested until the
    handshake; an update sending it again says nothing changed."""
    sent = example("subscription.json")
    response = env.client.post("/fhir/Subscription", json=sent, headers={
        **env.who.la, **JSON_BODY, "Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=representation"
    assert "SubscriptionSecret" in json.dumps(response.json["channel"]["extension"])
    sub_id = response.json["id"]
    back = fetch(env.client, f"/fhir/Subscription/{sub_id}", env.who.la)
    assert back["status"] == "requested" and back["criteria"] == sent["criteria"]
    assert back["_criteria"] == sent["_criteria"]
    for key in ("type", "endpoint", "payload", "_payload"):
        assert back["channel"][key] == sent["channel"][key], key
    assert back["channel"]["extension"] == sent["channel"]["extension"]
    again = env.client.put(f"/fhir/Subscription/{sub_id}", json={**sent, "id": sub_id},
                           headers={**env.who.la, **JSON_BODY, **NOTES})
    assert again.status_code == 200
    assert notes(again)[-1].startswith(f"No change: Subscription/{sub_id}")
    page_says("Preference-Applied: return=representation")


def import_report(response: Any) -> dict[str, str]:
    """Return the status of each record of an ImportReport (by ContactPoint ID)."""
    assert response.status_code == 200
    report = etree.fromstring(response.data)
    return {record.findtext(f"{{{DIRECTORY_NS}}}ContactPointId") or "":
            (record.findtext(f"{{{DIRECTORY_NS}}}Status") or "")
            + (record.findtext(f"{{{DIRECTORY_NS}}}Reason") or "")
            for record in report.iter(f"{{{DIRECTORY_NS}}}Record")}


def test_directory_xml_examples_are_imported(env: Env, app: Flask) -> None:
    """directory-entries.xml then assessment-references.xml, POSTed by the managing
    authority's system (Northfield, E08000990): each record created; the entry reads back
    with its NHS number, lead professional and the involvements' organisations introduced;
    the assessment reference refers to it. Posted again, nothing changes."""
    northfield = bearer(env.client, app, "northfield", "E08000990")
    xml = {**northfield, "Content-Type": "application/xml"}
    entries = (EXAMPLES / "directory-entries.xml").read_bytes()
    assessments = (EXAMPLES / "assessment-references.xml").read_bytes()
    assert import_report(env.client.post("/directory/entries", data=entries, headers=xml)) == {
        "CP590G0YXXR": "created"}
    assert import_report(env.client.post("/directory/assessments", data=assessments,
                                         headers=xml)) == {"CP590G0YXXR": "created"}
    patient = fetch(env.client, f"/fhir/Patient?identifier={BASE}/Id/contactpoint-id|"
                    "CP590G0YXXR", northfield)["entry"][0]["resource"]
    assert {"system": systems.NHS_NUMBER, "value": "9994100262"} in [
        {k: i[k] for k in ("system", "value")} for i in patient["identifier"]]
    teams = fetch(env.client, f"/fhir/CareTeam?subject=Patient/{patient['id']}", northfield)
    kinds = sorted(re.findall(r"directory-team|ecaf-tac", json.dumps(teams)))
    assert "ecaf-tac" in kinds and "directory-team" in kinds
    assert import_report(env.client.post("/directory/entries", data=entries, headers=xml)) == {
        "CP590G0YXXR": "unchanged"}
    assert import_report(env.client.post("/directory/assessments", data=assessments,
                                         headers=xml)) == {"CP590G0YXXR": "unchanged"}
