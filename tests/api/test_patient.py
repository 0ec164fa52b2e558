"""The Patient REST interactions: read, vread, history, search, create, update, conditional
interactions, versioning headers, and the errors, in JSON and XML."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import func, select

from adapter.db import Database
from adapter.directory.schema import NS as DIRECTORY_NS
from adapter.models import AuditRecord, Child, Organisation, Practitioner
from tests.api.conftest import Callers
from tests.fhir.fixtures import concurrent_puts

FHIR_NS = {"f": "http://hl7.org/fhir"}


def first_patient(client: FlaskClient, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    """Return the first Patient of a search."""
    response = client.get(f"/fhir/Patient?_count=1{query}", headers=headers)
    assert response.status_code == 200, response.json
    resource: dict[str, Any] = response.json["entry"][0]["resource"]
    return resource


def own_patient(client: FlaskClient, callers: Callers) -> dict[str, Any]:
    """Return a non-shielded Patient managed by the first authority, as its admin sees it."""
    bundle = client.get("/fhir/Patient?_count=100", headers=callers.admin).json
    for entry in bundle["entry"]:
        resource = entry["resource"]
        labels = {s["code"] for s in resource["meta"].get("security", [])}
        authority = resource["managingOrganization"]["identifier"]["value"]
        if "R" not in labels and authority == callers.authority:
            return copy.deepcopy(resource)
    raise AssertionError("no suitable demo patient")


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_read_with_version_headers(client: FlaskClient, callers: Callers, fmt: str) -> None:
    """A read answers the Patient with ETag W/"n" and Last-Modified, in JSON or XML."""
    patient = first_patient(client, callers.admin)
    response = client.get(f"/fhir/Patient/{patient['id']}?_format={fmt}", headers=callers.admin)
    assert response.status_code == 200
    assert response.headers["ETag"] == f'W/"{patient["meta"]["versionId"]}"'
    assert response.headers["Last-Modified"].endswith("GMT")
    if fmt == "xml":
        assert response.mimetype == "application/fhir+xml"
        root = etree.fromstring(response.data)
        assert root.find("f:id", FHIR_NS).get("value") == patient["id"]
    else:
        assert response.mimetype == "application/fhir+json"
        assert response.json["id"] == patient["id"]


def test_conditional_read_answers_304(client: FlaskClient, callers: Callers) -> None:
    """If-None-Match with the current ETag, or If-Modified-Since after it, gives 304."""
    patient = first_patient(client, callers.admin)
    url = f"/fhir/Patient/{patient['id']}"
    etag = client.get(url, headers=callers.admin).headers["ETag"]
    assert client.get(url, headers={**callers.admin, "If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={**callers.admin, "If-None-Match": 'W/"999"'}) \
        .status_code == 200
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert client.get(url, headers={**callers.admin, "If-Modified-Since": later}) \
        .status_code == 304


def test_unknown_and_malformed_ids(client: FlaskClient, callers: Callers) -> None:
    """An unknown id is a 404 OperationOutcome; a non-numeric version a 400."""
    response = client.get("/fhir/Patient/no-such-id", headers=callers.admin)
    assert response.status_code == 404
    assert response.json["resourceType"] == "OperationOutcome"
    patient = first_patient(client, callers.admin)
    response = client.get(f"/fhir/Patient/{patient['id']}/_history/x", headers=callers.admin)
    assert response.status_code == 400


def test_update_versions_history_and_vread(client: FlaskClient, callers: Callers) -> None:
    """An update makes version n+1; vread gives both versions and _history lists them."""
    patient = own_patient(client, callers)
    version = int(patient["meta"]["versionId"])
    patient["name"][0]["given"] = ["Renamed"]
    url = f"/fhir/Patient/{patient['id']}"
    response = client.put(url, json=patient, headers={**callers.admin,
                                                      "If-Match": f'W/"{version}"'})
    assert response.status_code == 200, response.json
    assert response.headers["ETag"] == f'W/"{version + 1}"'
    assert response.headers["Location"].startswith("http://localhost/fhir/Patient/")
    old = client.get(f"{url}/_history/{version}", headers=callers.admin).json
    new = client.get(f"{url}/_history/{version + 1}", headers=callers.admin).json
    assert old["name"][0]["given"] != ["Renamed"]
    assert new["name"][0]["given"] == ["Renamed"]
    history = client.get(f"{url}/_history", headers=callers.admin).json
    assert history["type"] == "history"
    assert [e["response"]["etag"] for e in history["entry"]] == \
        [f'W/"{version + 1}"', f'W/"{version}"']


def test_same_body_twice_changes_nothing(client: FlaskClient, callers: Callers) -> None:
    """PUT of the current content keeps the version."""
    patient = own_patient(client, callers)
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=callers.admin)
    assert response.status_code == 200
    assert response.headers["ETag"] == f'W/"{patient["meta"]["versionId"]}"'


def test_stale_if_match_is_412(client: FlaskClient, callers: Callers) -> None:
    """If-Match naming an older version is refused: no lost update."""
    patient = own_patient(client, callers)
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient,
                          headers={**callers.admin, "If-Match": 'W/"0"'})
    assert response.status_code == 412
    assert response.json["resourceType"] == "OperationOutcome"


def test_concurrent_updates_with_the_same_if_match(app: Flask, client: FlaskClient,
                                                  callers: Callers) -> None:
    """Two clients update the same version at once, each on its own connection: exactly one
    wins (200) and the other gets 412 PreconditionFailed, never 409 or 500; the history
    holds one new version."""
    patient = own_patient(client, callers)
    version = int(patient["meta"]["versionId"])
    first, second = copy.deepcopy(patient), copy.deepcopy(patient)
    first["name"][0]["given"] = ["First"]
    second["name"][0]["given"] = ["Second"]
    url = f"/fhir/Patient/{patient['id']}"
    answers = concurrent_puts(app, url, [first, second], callers.admin, str(version))
    assert [status for status, _body in answers] == [200, 412], answers
    loser = answers[1][1]
    assert loser["resourceType"] == "OperationOutcome"
    assert loser["issue"][0]["code"] == "conflict"
    current = client.get(url, headers=callers.admin).json
    assert current["meta"]["versionId"] == str(version + 1)
    assert current["name"][0]["given"] == answers[0][1]["name"][0]["given"]
    history = client.get(f"{url}/_history", headers=callers.admin).json
    assert [e["response"]["etag"] for e in history["entry"]] == \
        [f'W/"{version + 1}"', f'W/"{version}"']


def test_create_allocates_contactpoint_id_and_reports_what_was_not_kept(
        client: FlaskClient, callers: Callers) -> None:
    """A Patient without a ContactPoint ID gets one; elements not held are reported."""
    patient = own_patient(client, callers)
    for key in ("id", "meta"):
        patient.pop(key)
    patient["identifier"] = [i for i in patient["identifier"]
                             if not i["system"].endswith("/Id/contactpoint-id")
                             and not i["system"].endswith("/nhs-number")
                             and not i["system"].endswith("/Id/upn")]
    if not patient["identifier"]:  # FHIR R4 json.html: no empty arrays
        del patient["identifier"]
    patient["maritalStatus"] = {"text": "single"}
    response = client.post("/fhir/Patient", json=patient,
                           headers={**callers.admin, "Prefer": "return=OperationOutcome"})
    assert response.status_code == 201, response.json
    outcome = response.json
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("maritalStatus" in (i.get("expression") or [""])[0] for i in outcome["issue"])
    created = client.get(response.headers["Location"], headers=callers.admin).json
    systems = {i["system"].rsplit("/", 1)[-1]: i["value"] for i in created["identifier"]}
    assert systems["contactpoint-id"].startswith("CP")


def test_an_organisation_not_held_here_is_invalid(client: FlaskClient, callers: Callers,
                                                  demo: Database) -> None:
    """A Patient naming a GP practice this directory does not hold (a Reference carries its
    key, not its details) is 422 naming the organisation, never a 409; nothing is stored."""
    patient = own_patient(client, callers)
    patient["generalPractitioner"] = [{"identifier": {
        "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y98765"}}]
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=callers.admin)
    assert response.status_code == 422, response.json
    assert "Y98765" in response.json["issue"][0]["diagnostics"]
    with demo.sessions() as session:
        assert session.scalar(select(func.count(Organisation.id)).where(
            Organisation.ods_code == "Y98765")) == 0


def test_a_new_organisation_named_twice_in_an_entry_is_created_once(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A directory entry naming an organisation and a practitioner not held yet twice (in its
    GP practice's and its health visitor's involvements) creates one Organisation and one
    Practitioner, which both involvements (and the Patient's generalPractitioner) refer to."""
    ns = "{" + DIRECTORY_NS + "}"
    patient = own_patient(client, callers)
    cpid = next(i["value"] for i in patient["identifier"]
                if i["system"].endswith("/Id/contactpoint-id"))
    response = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
    assert response.status_code == 200
    root = etree.fromstring(response.data)
    entry = root.find(f"{ns}DirectoryEntry")
    assert entry is not None
    anchor = entry.find(f"{ns}Involvement")
    assert anchor is not None
    for role in ("gp", "health-visitor"):
        anchor.addprevious(etree.fromstring(
            f'<Involvement xmlns="{DIRECTORY_NS}"><Role>{role}</Role><Organisation>'
            "<Name>Elm Surgery</Name><Type>gp-practice</Type><OdsCode>Y98765</OdsCode>"
            "</Organisation><Practitioner><LocalId>ELM-0001</LocalId><PersonName>"
            "<PersonFamilyName>Ash</PersonFamilyName></PersonName></Practitioner>"
            "<LeadProfessional>false</LeadProfessional>"
            "<CafCompleted>false</CafCompleted></Involvement>"))
    response = client.post("/directory/entries", data=etree.tostring(root),
                           headers={**callers.admin, "Content-Type": "application/xml"})
    assert response.status_code == 200, response.data[:600]
    assert b"<Updated>1</Updated>" in response.data, response.data[:1200]
    with demo.sessions() as session:
        assert session.scalar(select(func.count(Organisation.id)).where(
            Organisation.ods_code == "Y98765")) == 1
        assert session.scalar(select(func.count(Practitioner.id)).where(
            Practitioner.local_id == "ELM-0001")) == 1
    stored = client.get(f"/fhir/Patient/{patient['id']}", headers=callers.admin).json
    assert "Y98765" in [g["identifier"]["value"] for g in stored["generalPractitioner"]]


def test_conditional_create_finds_the_existing_entry(client: FlaskClient,
                                                    callers: Callers) -> None:
    """If-None-Exist matching an entry answers it instead of creating a duplicate."""
    patient = own_patient(client, callers)
    cpid = next(i for i in patient["identifier"] if i["system"].endswith("contactpoint-id"))
    query = f"identifier={cpid['system']}|{cpid['value']}"
    response = client.post("/fhir/Patient", json=patient,
                           headers={**callers.admin, "If-None-Exist": query})
    assert response.status_code == 200
    assert response.json["id"] == patient["id"]


def test_conditional_update_by_identifier(client: FlaskClient, callers: Callers) -> None:
    """PUT /fhir/Patient?identifier=… updates the one match."""
    patient = own_patient(client, callers)
    cpid = next(i for i in patient["identifier"] if i["system"].endswith("contactpoint-id"))
    patient["gender"] = "unknown" if patient["gender"] != "unknown" else "male"
    response = client.put(f"/fhir/Patient?identifier={cpid['system']}|{cpid['value']}",
                          json=patient, headers=callers.admin)
    assert response.status_code == 200, response.json
    assert response.json["gender"] == patient["gender"]


def test_create_of_existing_contactpoint_id_conflicts(client: FlaskClient,
                                                     callers: Callers) -> None:
    """POST of an entry that exists is a 409 telling the caller to PUT."""
    patient = own_patient(client, callers)
    response = client.post("/fhir/Patient", json=patient, headers=callers.admin)
    assert response.status_code == 409


def test_delete_is_not_allowed(client: FlaskClient, callers: Callers) -> None:
    """Entries are archived, never deleted by callers: 405."""
    patient = first_patient(client, callers.admin)
    response = client.delete(f"/fhir/Patient/{patient['id']}", headers=callers.admin)
    assert response.status_code == 405
    assert response.json["resourceType"] == "OperationOutcome"


def test_other_authority_cannot_write(client: FlaskClient, callers: Callers) -> None:
    """A client writes only entries its own organisation manages."""
    patient = own_patient(client, callers)
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient,
                          headers=callers.other_la)
    assert response.status_code == 403


def test_invalid_patient_is_422_with_expression(client: FlaskClient, callers: Callers) -> None:
    """A Patient that breaks the FHIR rules is refused with where it is wrong."""
    patient = own_patient(client, callers)
    patient["birthDate"] = "2015-13-45"
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=callers.admin)
    assert response.status_code == 422
    assert "birthDate" in response.json["issue"][0]["expression"][0]


@pytest.mark.parametrize(("content_type", "status"), [
    ("text/plain", 415), ("application/fhir+json", 400), ("application/fhir+xml", 400)])
def test_bad_bodies(client: FlaskClient, callers: Callers, content_type: str,
                    status: int) -> None:
    """Wrong content types and malformed bodies get clear 4xx OperationOutcomes."""
    response = client.post("/fhir/Patient", data=b"{not json<", headers={
        **callers.admin, "Content-Type": content_type})
    assert response.status_code == status
    assert response.json["resourceType"] == "OperationOutcome"


def test_unauthenticated_calls_get_401(client: FlaskClient, demo: Database) -> None:
    """No token: 401 with a Bearer challenge; metadata stays public."""
    response = client.get("/fhir/Patient")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/fhir/metadata").status_code == 200


def test_every_read_and_search_hit_is_audited_once(client: FlaskClient, callers: Callers,
                                                   demo: Database) -> None:
    """A read writes one audit record; a search writes one per match."""
    def audits() -> int:
        with demo.sessions() as session:
            return int(session.scalar(select(func.count(AuditRecord.id))) or 0)
    before = audits()
    patient = first_patient(client, callers.admin)  # a search with one match
    client.get(f"/fhir/Patient/{patient['id']}", headers=callers.admin)
    bundle = client.get("/fhir/Patient?_count=7", headers=callers.admin).json
    assert audits() == before + 1 + 1 + len(bundle["entry"])


def test_archived_entries_are_invisible_to_ordinary_callers(client: FlaskClient,
                                                            callers: Callers,
                                                            demo: Database) -> None:
    """Archived entries are found by admins only."""
    with demo.sessions() as session:
        archived = session.scalar(select(Child.resource_id).where(
            Child.record_status == "archived").limit(1))
    if archived is None:
        with demo.transaction() as session:
            child = session.scalar(select(Child).limit(1))
            child.record_status = "archived"
            archived = child.resource_id
    assert client.get(f"/fhir/Patient/{archived}", headers=callers.la).status_code == 404
    assert client.get(f"/fhir/Patient/{archived}", headers=callers.admin).status_code == 200


def test_metadata_declares_patient(client: FlaskClient, app: Flask) -> None:
    """The CapabilityStatement declares Patient with its interactions and the token URL."""
    statement = client.get("/fhir/metadata").json
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert {"read", "vread", "history-instance", "search-type", "create", "update"} <= codes
    token = rest["security"]["extension"][0]["extension"][0]["valueUri"]
    assert token == "http://localhost/auth/token"


def test_nul_in_id_or_search_is_a_400(client: FlaskClient, callers: Callers) -> None:
    """A NUL character (refused by PostgreSQL) is never a 500: in an id a 404 (it cannot be a
    FHIR id), in a search value a 400 naming the parameter, on both databases."""
    response = client.get("/fhir/Patient/a%00b", headers=callers.admin)
    assert response.status_code == 404
    assert response.json["resourceType"] == "OperationOutcome"
    response = client.get("/fhir/Patient?family=a%00b", headers=callers.admin)
    assert response.status_code == 400
    assert response.json["issue"][0]["location"] == ["http.family"]


def test_nul_in_a_value_is_refused_on_every_backend(client: FlaskClient,
                                                    callers: Callers) -> None:
    """A Patient whose name holds a NUL character is 400 naming the element on every backend
    (XML 1.0 cannot carry it, so a stored one could never be rendered as XML), never a 500."""
    patient = own_patient(client, callers)
    patient["name"][0]["family"] = "Lo\u0000velace"
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=callers.admin)
    assert response.status_code == 400, response.json
    assert response.json["issue"][0]["expression"] == ["Patient.name[0].family"]


def test_malformed_cursor_and_nested_resource_are_4xx(client: FlaskClient,
                                                      callers: Callers) -> None:
    """A cursor not made by this server, or a contained resource of an unknown type, is a
    4xx OperationOutcome, never a 500."""
    response = client.get("/fhir/Patient?_cursor=YWJj", headers=callers.admin)
    assert response.status_code == 400
    patient = own_patient(client, callers)
    patient["contained"] = [{"resourceType": "NoSuchThing", "id": "x"}]
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=callers.admin)
    assert 400 <= response.status_code < 500
    assert response.json["resourceType"] == "OperationOutcome"
