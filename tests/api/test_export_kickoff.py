"""Bulk export kick-offs as real clients send them (FHIR Bulk Data Access IG v2, export.html
"Bulk Data Kick-off Request"; smart-on-fhir's bulk-data-client uses both): the Patient-level
``GET|POST /fhir/Patient/$export``, and POST kick-offs at every level with a ``Parameters``
body checked as the GET query is (strict by default, ``Prefer: handling=lenient`` ignores and
reports), the ``patient`` parameter, HEAD starting nothing, and the patient compartments of a
Patient-level export holding only what the client may see, audited per child."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from adapter.db import Database
from adapter.models import Child, ExportJob, Organisation
from tests.api.conftest import Callers
from tests.api.test_export import (
    ASYNC,
    _plant_canaries,
    audits,
    download,
    inline,  # noqa: F401 (autouse: export jobs run inline, threads joined)
    job_folder,
    manifest_of,
    validate,
)

JSON = "application/fhir+json"
PATIENT_EXPORT = "/fhir/Patient/$export"


def parameters(*entries: dict[str, Any]) -> dict[str, Any]:
    """Return a Parameters resource with ``entries`` (none: no ``parameter`` element, as
    FHIR JSON has no empty arrays)."""
    return {"resourceType": "Parameters", **({"parameter": list(entries)} if entries else {})}


def post(client: FlaskClient, path: str, headers: dict[str, str], body: dict[str, Any],
         prefer: str = "respond-async") -> Any:
    """POST a kick-off with a JSON Parameters body."""
    return client.post(path, data=orjson.dumps(body),
                       headers={**headers, "Prefer": prefer, "Content-Type": JSON,
                                "Accept": JSON})


def completed(client: FlaskClient, response: Any,
              headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Poll an accepted kick-off to completion; return its manifest and its files."""
    assert response.status_code == 202, response.json
    manifest = manifest_of(client, response.headers["Content-Location"], headers)
    return manifest, download(client, manifest, headers)


def job_count(db: Database) -> int:
    """Return how many export jobs exist."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count(ExportJob.id))) or 0)


def live_children(db: Database) -> dict[str, bool]:
    """Return the live children's resource ids -> shielded."""
    with db.sessions() as session:
        return {c.resource_id: c.shielded for c in session.scalars(
            select(Child).where(Child.record_status == "live")).unique()}


def subject_ids(careteams: list[dict[str, Any]]) -> set[str]:
    """Return the Patient ids the CareTeams are about."""
    return {t["subject"]["reference"].removeprefix("Patient/") for t in careteams}


def notes_of(files: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Return the diagnostics of the error file's issues."""
    return [i["diagnostics"] for o in files.get("OperationOutcome", []) for i in o["issue"]]


# --- Patient level ------------------------------------------------------------------------

def test_patient_export_by_get_holds_what_the_client_may_see(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database) -> None:
    """GET Patient/$export (not a read of Patient "$export") exports every live child as the
    client reads it: a shielded child's Patient redacted with none of its canaries in any
    file, no CareTeam of a shielded child, no sensitive service's PractitionerRole, the
    organisations and practitioners referred to only; one export audit record per exported
    child."""
    child_id, nhs = _plant_canaries(demo)
    children = live_children(demo)
    before = len(audits(demo))
    response = client.get(PATIENT_EXPORT, headers={**callers.la, **ASYNC})
    manifest, files = completed(client, response, callers.la)
    assert manifest["request"] == "http://localhost/fhir/Patient/$export"
    assert {p["id"] for p in files["Patient"]} == set(children)
    shielded = {i for i, s in children.items() if s}
    assert shielded and child_id in shielded
    for patient in files["Patient"]:
        validate(patient)
        labels = {s["code"] for s in patient.get("meta", {}).get("security", [])}
        if patient["id"] in shielded:
            assert {"R", "REDACTED"} <= labels
            assert "address" not in patient and "telecom" not in patient
    assert files["CareTeam"] and not subject_ids(files["CareTeam"]) & shielded
    with demo.sessions() as session:
        sensitive = {i.resource_id for c in session.scalars(select(Child)).unique()
                     for i in c.involvements if i.sensitive}
    assert sensitive and files["PractitionerRole"]
    assert not sensitive & {r["id"] for r in files["PractitionerRole"]}
    raw = b"".join(p.read_bytes() for p in job_folder(app, response.headers["Content-Location"])
                   .iterdir())
    assert nhs.encode() not in raw and b"ZZ9 9ZZ" not in raw
    referred = {ref.split('"', 1)[0] for t in ("Patient", "CareTeam", "PractitionerRole")
                for r in files[t] for ref in orjson.dumps(r).decode().split('"reference":"')[1:]}
    exported = {f"{t}/{r['id']}" for t in ("Organization", "Practitioner") for r in files[t]}
    assert exported == {r for r in referred if r.split("/")[0] in ("Organization", "Practitioner")}
    with demo.sessions() as session:
        assert len(files["Organization"]) < session.scalar(select(func.count(Organisation.id)))
    records = audits(demo)[before:]
    assert sorted(r.child_ref or "" for r in records) == sorted(children)
    assert not any(r.override for r in records)


def test_admin_patient_export_breaks_the_glass(client: FlaskClient, callers: Callers,
                                               demo: Database) -> None:
    """With the shielding right the shielded children are exported whole, each audited as an
    override and announced in the error file; so the plain client's redaction is real."""
    child_id, nhs = _plant_canaries(demo)
    before = len(audits(demo))
    response = client.get(PATIENT_EXPORT, headers={**callers.admin, **ASYNC})
    _, files = completed(client, response, callers.admin)
    patient = next(p for p in files["Patient"] if p["id"] == child_id)
    assert nhs in {i["value"] for i in patient["identifier"]}
    assert {r.child_ref for r in audits(demo)[before:] if r.override} >= {child_id}
    assert any("override" in n for n in notes_of(files))


@pytest.mark.parametrize("path", ["/fhir/Patient/$export/", "/fhir/$export/"])
def test_trailing_slash_kicks_off(client: FlaskClient, callers: Callers, demo: Database,
                                  path: str) -> None:
    """A kick-off URL with a trailing slash is the same kick-off (never a read)."""
    response = client.get(f"{path}?_type=Patient", headers={**callers.la, **ASYNC})
    _, files = completed(client, response, callers.la)
    assert len(files["Patient"]) == len(live_children(demo))


def test_patient_export_by_post_with_type_and_since(client: FlaskClient, callers: Callers,
                                                    demo: Database) -> None:
    """POST Patient/$export with a Parameters body (as bulk-data-client sends it) takes
    ``_type``, ``_outputFormat`` and ``_since``; the manifest's request is the URL without the
    body's parameters (export.html "Response - Complete Status")."""
    body = parameters({"name": "_type", "valueString": "Patient,CareTeam"},
                      {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
                      {"name": "_since", "valueInstant": "2000-01-01T00:00:00Z"})
    manifest, files = completed(client, post(client, PATIENT_EXPORT, callers.la, body),
                                callers.la)
    assert manifest["request"] == "http://localhost/fhir/Patient/$export"
    assert [o["type"] for o in manifest["output"]] == ["Patient", "CareTeam"]
    assert len(files["Patient"]) == len(live_children(demo))
    body = parameters({"name": "_type", "valueString": "Patient"},
                      {"name": "_since", "valueInstant": "2100-01-01T00:00:00Z"})
    manifest, _ = completed(client, post(client, PATIENT_EXPORT, callers.la, body), callers.la)
    assert manifest["output"] == []


@pytest.mark.parametrize("body", [b"", b'{"resourceType": "Parameters"}',
                                  b'{"resourceType": "Parameters", "parameter": []}'])
def test_post_without_parameters_exports_everything(client: FlaskClient, callers: Callers,
                                                    demo: Database, body: bytes) -> None:
    """A POST kick-off without parameters asks for what a GET without a query does: no body,
    a Parameters without ``parameter``, or with ``"parameter": []`` as bulk-data-client sends
    it when it has none."""
    response = client.post(PATIENT_EXPORT, data=body,
                           headers={**callers.la, **ASYNC, "Content-Type": "application/json"})
    manifest, _ = completed(client, response, callers.la)
    assert [o["type"] for o in manifest["output"]] == \
        ["Patient", "CareTeam", "PractitionerRole", "Organization", "Practitioner"]


def test_patient_parameter_restricts_the_export(client: FlaskClient, callers: Callers,
                                                demo: Database) -> None:
    """``patient`` (relative or this server's absolute reference) restricts the export to
    those Patients' compartments; only they are audited."""
    chosen = sorted(i for i, shielded in live_children(demo).items() if not shielded)[:2]
    body = parameters({"name": "patient", "valueReference": {"reference": f"Patient/{chosen[0]}"}},
                      {"name": "patient", "valueReference":
                       {"reference": f"http://localhost/fhir/Patient/{chosen[1]}"}})
    before = len(audits(demo))
    _, files = completed(client, post(client, PATIENT_EXPORT, callers.la, body), callers.la)
    assert sorted(p["id"] for p in files["Patient"]) == chosen
    assert subject_ids(files.get("CareTeam", [])) <= set(chosen)
    assert sorted(r.child_ref or "" for r in audits(demo)[before:]) == chosen


def test_patient_parameter_in_a_group_export(client: FlaskClient, callers: Callers,
                                             demo: Database) -> None:
    """A Group's POST kick-off takes ``patient`` for its members; a child of another
    authority is no member: 422 naming it."""
    with demo.sessions() as session:
        authority = session.scalar(select(Organisation).where(
            Organisation.gss_code == callers.authority))
        member = session.scalar(select(Child.resource_id).where(
            Child.managing_organisation_id == authority.id, Child.record_status == "live")
            .order_by(Child.id).limit(1))
        stranger = session.scalar(select(Child.resource_id).where(
            Child.managing_organisation_id != authority.id, Child.record_status == "live")
            .order_by(Child.id).limit(1))
    group = f"/fhir/Group/{callers.authority}/$export"
    body = parameters({"name": "_type", "valueString": "Patient"},
                      {"name": "patient", "valueReference": {"reference": f"Patient/{member}"}})
    _, files = completed(client, post(client, group, callers.la, body), callers.la)
    assert [p["id"] for p in files["Patient"]] == [member]
    body = parameters({"name": "patient", "valueReference": {"reference": f"Patient/{stranger}"}})
    response = post(client, group, callers.la, body)
    assert response.status_code == 422
    assert f"Patient/{stranger}" in response.json["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("entry", "status", "expression"), [
    ({"name": "patient", "valueReference": {"reference": "Organization/abc"}}, 400,
     "Parameters.parameter[0].valueReference.reference"),
    ({"name": "patient", "valueReference": {"reference": "Patient/"}}, 400,
     "Parameters.parameter[0].valueReference.reference"),
    ({"name": "patient", "valueReference": {"reference": "https://elsewhere.example/fhir/Patient/a"}},
     400, "Parameters.parameter[0].valueReference.reference"),
    ({"name": "patient", "valueString": "Patient/abc"}, 400,
     "Parameters.parameter[0].valueReference"),
    ({"name": "patient", "valueReference": {"reference": "Patient/no-such-child"}}, 422,
     "http.patient"),
])
def test_bad_patient_references(client: FlaskClient, callers: Callers, demo: Database,
                                entry: dict[str, Any], status: int, expression: str) -> None:
    """A ``patient`` that is not a reference to a Patient of this server is a 400; one that
    names no Patient the client may export is a 422 naming it; no job is created."""
    response = post(client, PATIENT_EXPORT, callers.la, parameters(entry))
    assert response.status_code == status
    assert response.json["resourceType"] == "OperationOutcome"
    found = response.json["issue"][0]
    # errors.issue: FHIRPath into the body is ``expression``; the parameter by name is
    # ``location`` (http.<name>)
    assert found.get("expression", found.get("location")) == [expression]
    assert job_count(demo) == 0


def test_unknown_patient_is_ignored_when_lenient(client: FlaskClient, callers: Callers,
                                                 demo: Database) -> None:
    """Under ``handling=lenient`` an unknown Patient is noted in the error file, and the
    export still holds only the Patients that were named (here: none)."""
    body = parameters({"name": "patient",
                       "valueReference": {"reference": "Patient/no-such-child"}})
    response = post(client, PATIENT_EXPORT, callers.la, body, "respond-async, handling=lenient")
    manifest, files = completed(client, response, callers.la)
    assert manifest["output"] == []
    assert any("Patient/no-such-child" in n for n in notes_of(files))


def test_archived_child_is_no_patient_for_a_plain_client(client: FlaskClient, callers: Callers,
                                                         demo: Database) -> None:
    """An archived entry is invisible to an ordinary client: naming it answers as an unknown
    id does (the answer does not tell that it exists)."""
    with demo.transaction() as session:
        child = session.scalar(select(Child).where(Child.record_status == "live").limit(1))
        child.record_status = "archived"
        archived = child.resource_id
    body = parameters({"name": "patient", "valueReference": {"reference": f"Patient/{archived}"}})
    response = post(client, PATIENT_EXPORT, callers.la, body)
    assert response.status_code == 422
    unknown = post(client, PATIENT_EXPORT, callers.la, parameters(
        {"name": "patient", "valueReference": {"reference": "Patient/no-such-child"}}))
    assert response.json["issue"][0]["diagnostics"].replace(archived, "X") == \
        unknown.json["issue"][0]["diagnostics"].replace("no-such-child", "X")


# --- POST kick-off: the same checks as the GET query ------------------------------------------

def test_system_export_by_post(client: FlaskClient, callers: Callers, demo: Database) -> None:
    """POST /fhir/$export with Parameters: ``_type`` repeated, ``_outputFormat`` abbreviated."""
    body = parameters({"name": "_type", "valueString": "Organization"},
                      {"name": "_type", "valueString": "Patient"},
                      {"name": "_outputFormat", "valueString": "ndjson"})
    manifest, files = completed(client, post(client, "/fhir/$export", callers.la, body),
                                callers.la)
    assert manifest["request"] == "http://localhost/fhir/$export"
    assert [o["type"] for o in manifest["output"]] == ["Patient", "Organization"]
    with demo.sessions() as session:
        assert len(files["Organization"]) == session.scalar(select(func.count(Organisation.id)))


UNSUPPORTED = [
    {"name": "includeAssociatedData", "valueCode": "LatestProvenanceResources"},
    {"name": "_typeFilter", "valueString": "Patient?gender=male"},
    {"name": "_elements", "valueString": "id"},
    {"name": "_type", "valueString": "Observation,Patient"},
]


@pytest.mark.parametrize("entry", UNSUPPORTED, ids=lambda e: e["name"])
@pytest.mark.parametrize("path", ["/fhir/$export", PATIENT_EXPORT])
def test_unsupported_parameters_strict(client: FlaskClient, callers: Callers, demo: Database,
                                       entry: dict[str, Any], path: str) -> None:
    """An unsupported parameter (or value) is a 400 naming it, and no job is created."""
    response = post(client, path, callers.la, parameters(entry))
    assert response.status_code == 400
    outcome = response.json
    assert outcome["resourceType"] == "OperationOutcome"
    # errors.issue: a request parameter is named in ``location`` as ``http.<name>``
    assert outcome["issue"][0]["location"] == [f"http.{entry['name']}"]
    assert entry["name"] in outcome["issue"][0]["diagnostics"]
    assert "handling=lenient" in outcome["issue"][0]["diagnostics"]
    assert job_count(demo) == 0


def test_unsupported_parameters_lenient(client: FlaskClient, callers: Callers,
                                        demo: Database) -> None:
    """Under ``Prefer: handling=lenient`` they are ignored, each reported in the error file."""
    response = post(client, PATIENT_EXPORT, callers.la, parameters(*UNSUPPORTED),
                    "respond-async, handling=lenient")
    manifest, files = completed(client, response, callers.la)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    notes = notes_of(files)
    for name in ("includeAssociatedData", "_typeFilter", "_elements", "Observation"):
        assert any(name in n for n in notes), name


@pytest.mark.parametrize(("path", "body", "prefer", "status"), [
    ("/fhir/$export", parameters({"name": "_outputFormat", "valueString": "text/csv"}),
     "respond-async", 400),
    (PATIENT_EXPORT, parameters({"name": "_since", "valueString": "yesterday"}),
     "respond-async", 400),
    (PATIENT_EXPORT, parameters({"name": "_since"}), "respond-async", 400),
    (PATIENT_EXPORT, parameters({"valueString": "Patient"}), "respond-async", 400),
    (PATIENT_EXPORT, parameters({"name": "_type", "valueString": ""}), "respond-async", 400),
    (PATIENT_EXPORT, {"resourceType": "Patient"}, "respond-async", 400),
    (PATIENT_EXPORT, {"resourceType": "Parameters", "parameter": {}}, "respond-async", 400),
    (PATIENT_EXPORT, parameters(), "return=minimal", 400),  # no Prefer: respond-async
    ("/fhir/$export", parameters({"name": "patient", "valueReference":
                                  {"reference": "Patient/abc"}}), "respond-async", 400),
])
def test_post_kick_off_errors(client: FlaskClient, callers: Callers, demo: Database,
                              path: str, body: dict[str, Any], prefer: str, status: int) -> None:
    """Malformed POST kick-offs get the GET query's 4xx OperationOutcome; ``patient`` does not
    apply to a system-level export; no job is created."""
    response = post(client, path, callers.la, body, prefer)
    assert response.status_code == status, response.json
    assert response.json["resourceType"] == "OperationOutcome"
    assert job_count(demo) == 0


def test_post_kick_off_takes_its_parameters_from_the_body(client: FlaskClient, callers: Callers,
                                                          demo: Database) -> None:
    """A query on a POST kick-off is refused (strict), and ``patient`` in a GET query too;
    a body that is not FHIR JSON/XML is a 415."""
    response = client.post(f"{PATIENT_EXPORT}?_type=Patient", data=b"",
                           headers={**callers.la, **ASYNC})
    assert response.status_code == 400
    assert "Parameters body" in response.json["issue"][0]["diagnostics"]
    response = client.get(f"{PATIENT_EXPORT}?patient=Patient/abc", headers={**callers.la, **ASYNC})
    assert response.status_code == 400
    assert "POST" in response.json["issue"][0]["diagnostics"]
    response = client.post(PATIENT_EXPORT, data=b"_type=Patient",
                           headers={**callers.la, **ASYNC,
                                    "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert job_count(demo) == 0


def test_post_kick_off_in_xml(client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A Parameters body in FHIR XML is read as the JSON one."""
    xml = (b'<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="_type"/>'
           b'<valueString value="Patient"/></parameter></Parameters>')
    response = client.post(PATIENT_EXPORT, data=xml, headers={
        **callers.la, **ASYNC, "Content-Type": "application/fhir+xml"})
    manifest, _ = completed(client, response, callers.la)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]


def test_post_kick_off_checks_scopes(app: Flask, client: FlaskClient, demo: Database) -> None:
    """Each type asked for in a body needs a read scope, as in a query (403)."""
    from tests.api.conftest import bearer

    with demo.sessions() as session:
        gss = session.scalar(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").limit(1))
    patients_only = bearer(client, app, "patients-only", gss or "", scopes="system/Patient.rs")
    body = parameters({"name": "_type", "valueString": "Patient,CareTeam"})
    assert post(client, PATIENT_EXPORT, patients_only, body).status_code == 403
    manifest, _ = completed(client, post(client, PATIENT_EXPORT, patients_only, parameters()),
                            patients_only)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]


# --- HEAD starts nothing ----------------------------------------------------------------------

def test_head_creates_no_job(client: FlaskClient, callers: Callers, demo: Database) -> None:
    """HEAD on a kick-off URL is safe (RFC 9110): 405 with Allow, no job, no audit record;
    without a token it is refused as every request is."""
    before = len(audits(demo))
    for path in ("/fhir/$export", PATIENT_EXPORT, f"/fhir/Group/{callers.authority}/$export"):
        response = client.head(path, headers={**callers.la, **ASYNC})
        assert response.status_code == 405
        assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "POST"}
        assert response.data == b""
        assert client.head(path, headers=ASYNC).status_code == 401
    assert job_count(demo) == 0
    assert len(audits(demo)) == before


# --- the CapabilityStatement ----------------------------------------------------------------

def test_metadata_declares_patient_export(client: FlaskClient) -> None:
    """The Patient entry declares $export with the IG's patient-export definition."""
    rest = client.get("/fhir/metadata").json["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {"name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"} \
        in patient["operation"]


# --- routing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
@pytest.mark.parametrize("path", [PATIENT_EXPORT, f"{PATIENT_EXPORT}/"])
def test_patient_export_is_never_a_read(app: Flask, method: str, path: str) -> None:
    """The URL map sends Patient/$export, with or without a trailing slash, to the kick-off:
    a static segment outranks the read's ``<resource_id>`` whatever other rules are added."""
    endpoint, arguments = app.url_map.bind("localhost").match(path, method)
    assert (endpoint, arguments) == ("fhir.export.patient", {})


BROKEN_BODIES = [
    (b"{", "application/fhir+json"),
    (b"[]", "application/fhir+json"),
    (b'{"resourceType": "Parameters", "parameter": [5, null]}', "application/fhir+json"),
    (b'{"resourceType": "Parameters", "parameter": [{"name": "patient", '
     b'"valueReference": "Patient/x"}]}', "application/fhir+json"),
    (b"<Parameters", "application/fhir+xml"),
    (b"<Parameters xmlns='http://hl7.org/fhir'><parameter><name value='_since'/>"
     b"<valueInstant value='garbage'/></parameter></Parameters>", "application/fhir+xml"),
    (b"<Patient xmlns='http://hl7.org/fhir'/>", "application/fhir+xml"),
    (b"\xff\xfe\x00", "application/fhir+json"),
]


@pytest.mark.parametrize("path", ["/fhir/$export", PATIENT_EXPORT, "/fhir/Group/x1/$export"])
@pytest.mark.parametrize(("body", "media"), BROKEN_BODIES)
def test_a_broken_kick_off_body_is_400(client: FlaskClient, callers: Callers, demo: Database,
                                       path: str, body: bytes, media: str) -> None:
    """A POST kick-off whose body is no Parameters (unreadable JSON or XML, another resource,
    a parameter of the wrong shape) is a 400 OperationOutcome at every kick-off URL, and
    creates no job."""
    response = client.post(path, data=body, headers={**callers.la, "Prefer": "respond-async",
                                                     "Content-Type": media, "Accept": JSON})
    assert response.status_code == 400, response.data[:400]
    assert response.json["resourceType"] == "OperationOutcome"
    assert job_count(demo) == 0
