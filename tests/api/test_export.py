"""Bulk FHIR export (FHIR Bulk Data Access IG v2, export.html): kick-off, status polling, file
download, deletion and expiry; ``_type``, ``_since``, Group export; the disclosure policy and
the audit trail in exported files; the threaded runner and the stall timeout."""

from __future__ import annotations

import datetime as dt
import importlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import func, select

from adapter.cli import main
from adapter.db import Database
from adapter.export import exporter as exporter_module
from adapter.export import routes as export_routes
from adapter.export.exporter import Exporter
from adapter.export.jobs import ExportSettings, destroy_exports
from adapter.export.runner import join_jobs
from adapter.identifiers import make_test_nhs_number
from adapter.mapping.fhir import R4B_MODELS
from adapter.models import AuditRecord, Carer, Child, ExportJob, Organisation
from adapter.models.base import utcnow
from tests.api.conftest import Callers, bearer

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
TYPES = ("Patient", "CareTeam", "PractitionerRole", "Organization", "Practitioner")
MODELS = {**R4B_MODELS, "OperationOutcome": "fhir.resources.R4B.operationoutcome.OperationOutcome"}
CANARY_POSTCODE = "ZZ9 9ZZ"
CANARY_PHONE = "01632 960999"


@pytest.fixture(autouse=True)
def inline(app: Flask) -> Iterator[None]:
    """Run export jobs inline (deterministic); join any export thread a test started."""
    app.config["EXPORT_INLINE"] = True
    yield
    join_jobs(timeout=60)


def kick_off(client: FlaskClient, headers: dict[str, str], path: str = "/fhir/$export",
             query: str = "") -> str:
    """Start an export and return its absolute status URL."""
    response = client.get(f"{path}{query}", headers={**headers, **ASYNC})
    assert response.status_code == 202, response.json
    location = response.headers["Content-Location"]
    assert location.startswith("http://localhost/fhir/$export-status/")
    return location


def manifest_of(client: FlaskClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll a status URL until the export is complete and return its manifest."""
    for _ in range(100):
        response = client.get(url, headers=headers)
        if response.status_code == 200:
            assert response.mimetype == "application/json"
            assert "Expires" in response.headers
            body: dict[str, Any] = response.json  # type: ignore[assignment]
            return body
        assert response.status_code == 202, response.json
        join_jobs(timeout=10)
    raise AssertionError("the export did not complete")


def download(client: FlaskClient, manifest: dict[str, Any],
             headers: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Download every output and error file; check each count and line; return by type."""
    files: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"] + manifest["error"]:
        assert item["url"].startswith("http://localhost/fhir/$export-file/")
        with client.get(item["url"], headers=headers) as response:
            assert response.status_code == 200
            assert response.mimetype == "application/fhir+ndjson"
            lines = response.data.decode("utf-8").splitlines()
        assert len(lines) == item["count"] > 0
        resources = [orjson.loads(line) for line in lines]
        assert {r["resourceType"] for r in resources} == {item["type"]}
        files.setdefault(item["type"], []).extend(resources)
    return files


def export(client: FlaskClient, headers: dict[str, str], path: str = "/fhir/$export",
           query: str = "") -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Run an export to completion; return its manifest and its files' resources."""
    manifest = manifest_of(client, kick_off(client, headers, path, query), headers)
    return manifest, download(client, manifest, headers)


def validate(resource: dict[str, Any]) -> None:
    """Validate one resource with its fhir.resources R4B model."""
    module, _, name = MODELS[resource["resourceType"]].rpartition(".")
    getattr(importlib.import_module(module), name).model_validate(resource)


def references_in(resource: dict[str, Any]) -> list[str]:
    """Return the relative references of a resource (``Type/id``)."""
    return [ref.split('"', 1)[0]
            for ref in orjson.dumps(resource).decode().split('"reference":"')[1:]]


def audits(db: Database) -> list[AuditRecord]:
    """Return the export audit records."""
    with db.sessions() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.action == "export")))


def job_folder(app: Flask, status_url: str) -> Path:
    """Return the folder of the job behind a status URL."""
    return Path(app.config["INSTANCE_PATH"]) / "exports" / status_url.rsplit("/", 1)[-1]


# --- the flow ------------------------------------------------------------------------------

def test_kick_off_poll_and_download(client: FlaskClient, callers: Callers,
                                    demo: Database) -> None:
    """A system export answers 202 with an absolute Content-Location; the manifest has the
    IG's fields with absolute URLs; every file's count is its number of lines, every line a
    valid R4 resource of the file's type; references resolve within the export."""
    manifest, files = export(client, callers.admin)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == "http://localhost/fhir/$export"
    assert manifest["transactionTime"].endswith("Z")
    assert [o["type"] for o in manifest["output"]] == list(TYPES)
    assert manifest["error"] == [] or manifest["error"][0]["type"] == "OperationOutcome"
    for resources in files.values():
        for resource in resources:
            validate(resource)
    with demo.sessions() as session:
        children = session.scalar(select(func.count(Child.id)))
    assert len(files["Patient"]) == children
    ids = {(t, r["id"]) for t in TYPES for r in files[t]}
    assert len(ids) == sum(len(files[t]) for t in TYPES)
    for resource in files["Patient"] + files["PractitionerRole"] + files["CareTeam"]:
        for ref in references_in(resource):
            assert tuple(ref.split("/")) in ids, ref
    with demo.sessions() as session:
        assert len(files["Organization"]) == session.scalar(select(func.count(Organisation.id)))


def test_type_and_output_format(client: FlaskClient, callers: Callers, demo: Database) -> None:
    """``_type`` limits the files to those types; the NDJSON abbreviations are accepted."""
    manifest, files = export(client, callers.la,
                             query="?_type=Organization,Patient&_outputFormat=ndjson")
    assert [o["type"] for o in manifest["output"]] == ["Patient", "Organization"]
    assert set(files) <= {"Patient", "Organization", "OperationOutcome"}
    refs = {p["managingOrganization"]["reference"] for p in files["Patient"]}
    assert refs <= {f"Organization/{o['id']}" for o in files["Organization"]}


def test_since_exports_what_changed(client: FlaskClient, callers: Callers,
                                    demo: Database) -> None:
    """``_since`` exports only the entries changed after that instant (the zone's '+' may
    arrive unencoded)."""
    moment = utcnow() - dt.timedelta(seconds=1)
    with demo.transaction() as session:
        child = session.scalar(select(Child).where(Child.shielded.is_(False),
                                                   Child.record_status == "live").limit(1))
        child.address_town = "Changedtown"
        changed = child.resource_id
    since = moment.isoformat(timespec="seconds")
    _, files = export(client, callers.la, query=f"?_type=Patient,CareTeam&_since={since}")
    assert [p["id"] for p in files["Patient"]] == [changed]
    assert len(files["CareTeam"]) >= 1
    _, files = export(client, callers.la, query="?_since=2100-01-01T00:00:00Z")
    assert set(files) <= {"OperationOutcome"}


def test_group_export_is_one_authority(client: FlaskClient, callers: Callers,
                                       demo: Database) -> None:
    """A Group export, named by GSS code or Organization id, has that authority's live
    children only; an unknown Group is a 404."""
    with demo.sessions() as session:
        authority = session.scalar(select(Organisation).where(
            Organisation.gss_code == callers.authority))
        live = session.scalar(select(func.count(Child.id)).where(
            Child.managing_organisation_id == authority.id, Child.record_status == "live"))
        org_id = authority.resource_id
    for group in (callers.authority, org_id):
        manifest, files = export(client, callers.la, f"/fhir/Group/{group}/$export",
                                 "?_type=Patient")
        assert manifest["request"] == f"http://localhost/fhir/Group/{group}/$export?_type=Patient"
        assert len(files["Patient"]) == live
        assert {p["managingOrganization"]["reference"] for p in files["Patient"]} == \
            {f"Organization/{org_id}"}
    _, files = export(client, callers.la, f"/fhir/Group/{callers.authority}/$export")
    referenced = {ref for t in ("Patient", "CareTeam", "PractitionerRole") for r in files[t]
                  for ref in references_in(r)}
    directory = {f"{t}/{r['id']}" for t in ("Organization", "Practitioner") for r in files[t]}
    assert directory == {ref for ref in referenced if ref.split("/")[0] in
                         ("Organization", "Practitioner")}
    response = client.get("/fhir/Group/E09999999/$export", headers={**callers.la, **ASYNC})
    assert response.status_code == 404
    assert response.json["resourceType"] == "OperationOutcome"


# --- the disclosure policy and the audit trail ----------------------------------------------

def _plant_canaries(db: Database) -> tuple[str, str]:
    """Give a live shielded child a unique postcode, NHS number and carer phone; return its
    resource id and NHS number."""
    with db.transaction() as session:
        taken = set(session.scalars(select(Child.nhs_number)))
        nhs = next(n for n in (make_test_nhs_number(s) for s in range(900_000, 901_000))
                   if n not in taken)
        child = session.scalar(select(Child).where(Child.shielded.is_(True),
                                                   Child.record_status == "live").limit(1))
        assert child is not None
        child.address_status, child.address_postcode = "current", CANARY_POSTCODE
        child.nhs_number, child.nhs_number_status = nhs, "01"
        child.carers.append(Carer(position=len(child.carers), relation="guardian",
                                  given=["Canary"], family="Keeper", phone=CANARY_PHONE))
        return child.resource_id, nhs


def test_shielded_child_canaries_never_reach_a_plain_client(app: Flask, client: FlaskClient,
                                                            callers: Callers,
                                                            demo: Database) -> None:
    """A client without the shielding right gets a shielded child's Patient redacted and
    none of its canary values in any file; the admin's export has them (so the canaries are
    real)."""
    child_id, nhs = _plant_canaries(demo)
    plain_status = kick_off(client, callers.la)
    plain = manifest_of(client, plain_status, callers.la)
    files = download(client, plain, callers.la)
    raw = b"".join(p.read_bytes() for p in job_folder(app, plain_status).iterdir())
    for canary in (CANARY_POSTCODE, nhs, CANARY_PHONE):
        assert canary.encode() not in raw
    patient = next(p for p in files["Patient"] if p["id"] == child_id)
    assert {"R", "REDACTED"} <= {s["code"] for s in patient["meta"]["security"]}
    admin_status = kick_off(client, callers.admin)
    manifest_of(client, admin_status, callers.admin)
    raw = b"".join(p.read_bytes() for p in job_folder(app, admin_status).iterdir())
    for canary in (CANARY_POSTCODE, nhs, CANARY_PHONE):
        assert canary.encode() in raw


def test_sensitive_involvements_are_withheld(client: FlaskClient, callers: Callers,
                                             demo: Database) -> None:
    """A sensitive service's PractitionerRole is exported only to a client with the right."""
    with demo.sessions() as session:
        sensitive = {i.resource_id for c in session.scalars(select(Child)).unique()
                     for i in c.involvements if i.sensitive}
    assert sensitive
    _, plain = export(client, callers.la, query="?_type=PractitionerRole")
    _, admin = export(client, callers.admin, query="?_type=PractitionerRole")
    assert not sensitive & {r["id"] for r in plain["PractitionerRole"]}
    assert sensitive & {r["id"] for r in admin["PractitionerRole"]}


def test_one_audit_record_per_exported_child(client: FlaskClient, callers: Callers,
                                             demo: Database,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every exported child has exactly one export audit record (across several batches);
    the shielded ones read with the right are overrides, and the error file says so."""
    monkeypatch.setattr(exporter_module, "BATCH_SIZE", 7)
    before = len(audits(demo))
    _, files = export(client, callers.admin, query="?_type=Patient")
    records = audits(demo)[before:]
    assert sorted(r.child_ref or "" for r in records) == sorted(p["id"] for p in files["Patient"])
    assert all(r.client_id == "admin" and r.resource_type == "Patient" for r in records)
    shielded = {p["id"] for p in files["Patient"]
                if "R" in {s["code"] for s in p["meta"].get("security", [])}}
    assert shielded and {r.child_ref for r in records if r.override} == shielded
    warnings = [i["diagnostics"] for o in files["OperationOutcome"] for i in o["issue"]]
    assert any("override" in w for w in warnings)


def test_a_child_that_cannot_be_mapped_is_reported(client: FlaskClient, callers: Callers,
                                                   demo: Database,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-child failure is an OperationOutcome in the error file; the rest is exported
    (export.html: partial success is a 200 with ``error`` files) and it is not audited."""
    from adapter.export import resources

    real = resources.render_patient
    with demo.sessions() as session:
        broken = session.scalar(select(Child.resource_id).where(
            Child.record_status == "live").order_by(Child.id).limit(1))

    def failing(session: Any, child: Child, *args: Any) -> Any:
        if child.resource_id == broken:
            raise ValueError("mapping failed")
        return real(session, child, *args)

    monkeypatch.setattr(resources, "render_patient", failing)
    before = len(audits(demo))
    _, files = export(client, callers.la, query="?_type=Patient")
    assert broken not in {p["id"] for p in files["Patient"]}
    assert any(broken in i["diagnostics"] for o in files["OperationOutcome"] for i in o["issue"])
    assert broken not in {r.child_ref for r in audits(demo)[before:]}
    assert len(audits(demo)) - before == len(files["Patient"])


# --- who may have the files, deletion, expiry -------------------------------------------------

def test_files_and_status_only_for_the_client_that_asked(client: FlaskClient, callers: Callers,
                                                         demo: Database) -> None:
    """Another client gets 403 for the status and the files; no token gets 401."""
    status_url = kick_off(client, callers.la, query="?_type=Patient")
    manifest = manifest_of(client, status_url, callers.la)
    file_url = manifest["output"][0]["url"]
    for url in (status_url, file_url):
        assert client.get(url, headers=callers.other_la).status_code == 403
        assert client.get(url).status_code == 401
    assert client.delete(status_url, headers=callers.other_la).status_code == 403
    with client.get(file_url, headers=callers.la) as response:
        assert response.status_code == 200
    missing = file_url.rsplit("/", 1)[0] + "/..%2F..%2Fgateway.db"
    assert client.get(missing, headers=callers.la).status_code == 404


def test_delete_cancels_and_removes_files(app: Flask, client: FlaskClient, callers: Callers,
                                          demo: Database) -> None:
    """DELETE on the status URL answers 202 and removes the files; then 404 for both."""
    status_url = kick_off(client, callers.la, query="?_type=Patient")
    file_url = manifest_of(client, status_url, callers.la)["output"][0]["url"]
    assert job_folder(app, status_url).is_dir()
    assert client.delete(status_url, headers=callers.la).status_code == 202
    assert not job_folder(app, status_url).exists()
    assert client.get(status_url, headers=callers.la).status_code == 404
    assert client.get(file_url, headers=callers.la).status_code == 404
    assert client.delete(status_url, headers=callers.la).status_code == 404


def test_expired_jobs_files_are_deleted(app: Flask, client: FlaskClient, callers: Callers,
                                        demo: Database) -> None:
    """An expired job's files are deleted on access, and by the sweep of the CLI and of the
    next kick-off."""
    first = kick_off(client, callers.la, query="?_type=Patient")
    manifest_of(client, first, callers.la)
    second = kick_off(client, callers.la, query="?_type=Patient")
    manifest_of(client, second, callers.la)
    with demo.transaction() as session:
        for job in session.scalars(select(ExportJob)):
            job.expires = utcnow() - dt.timedelta(seconds=1)
    assert client.get(first, headers=callers.la).status_code == 404
    assert not job_folder(app, first).exists()
    assert job_folder(app, second).is_dir()
    result = CliRunner().invoke(main, ["export-sweep"], obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0, result.output
    assert "1 expired" in result.output
    assert not job_folder(app, second).exists()
    with demo.sessions() as session:
        assert session.scalar(select(func.count(ExportJob.id))) == 0


def test_ttl_setting_expires_jobs(app: Flask, client: FlaskClient, callers: Callers,
                                  demo: Database) -> None:
    """With EXPORT_TTL_SECONDS = 0 a finished job expires at once: 404, files gone."""
    app.config["EXPORT_TTL_SECONDS"] = 0
    status_url = kick_off(client, callers.la, query="?_type=Patient")
    assert client.get(status_url, headers=callers.la).status_code == 404
    assert not job_folder(app, status_url).exists()


def test_destruction_removes_every_export(app: Flask, client: FlaskClient, callers: Callers,
                                          demo: Database) -> None:
    """The decommissioning's destruction deletes every job and export file."""
    status_url = kick_off(client, callers.la, query="?_type=Patient")
    manifest_of(client, status_url, callers.la)
    settings = ExportSettings.of(app.config)
    assert destroy_exports(demo, settings) == 1
    assert not settings.root.exists()
    assert client.get(status_url, headers=callers.la).status_code == 404


# --- kick-off errors and scopes ----------------------------------------------------------------

@pytest.mark.parametrize(("query", "headers", "status"), [
    ("", {"Accept": "application/fhir+json"}, 400),  # no Prefer: respond-async
    ("?_outputFormat=text/csv", ASYNC, 400),
    ("?_since=yesterday", ASYNC, 400),
    ("?_since=2026-01-01", ASYNC, 400),  # an instant needs a time and a zone
    ("?_since=2026-02-30T00:00:00Z", ASYNC, 400),
    ("?_since=9999-12-31T23:59:59-01:00", ASYNC, 400),  # beyond year 9999 in UTC
    ("?_type=Observation", ASYNC, 400),
    ("?_type=", ASYNC, 400),
    ("?_typeFilter=Patient%3Fgender%3Dmale", ASYNC, 400),
    ("?_elements=id", ASYNC, 400),
])
def test_kick_off_errors(client: FlaskClient, callers: Callers, query: str,
                         headers: dict[str, str], status: int) -> None:
    """Malformed or unsupported kick-off requests get a 4xx OperationOutcome."""
    response = client.get(f"/fhir/$export{query}", headers={**callers.la, **headers})
    assert response.status_code == status
    assert response.json["resourceType"] == "OperationOutcome"


def test_lenient_handling_ignores_and_reports(client: FlaskClient, callers: Callers,
                                              demo: Database) -> None:
    """With Prefer: handling=lenient, unsupported types and parameters are ignored and
    reported in the error file."""
    headers = {**callers.la, "Prefer": "respond-async, handling=lenient"}
    response = client.get("/fhir/$export?_type=Patient,Observation&_elements=id",
                          headers=headers)
    assert response.status_code == 202
    manifest = manifest_of(client, response.headers["Content-Location"], callers.la)
    files = download(client, manifest, callers.la)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    notes = [i["diagnostics"] for o in files["OperationOutcome"] for i in o["issue"]]
    assert any("Observation" in n for n in notes) and any("_elements" in n for n in notes)


def test_scopes_limit_the_types(app: Flask, client: FlaskClient, demo: Database) -> None:
    """Each requested type needs a read scope (403); without ``_type`` the export has the
    types the scopes allow; with none of them, 403."""
    with demo.sessions() as session:
        gss = session.scalar(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").limit(1))
    patients_only = bearer(client, app, "patients-only", gss or "", scopes="system/Patient.rs")
    response = client.get("/fhir/$export?_type=Patient,CareTeam",
                          headers={**patients_only, **ASYNC})
    assert response.status_code == 403
    manifest, _ = export(client, patients_only)
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    writer = bearer(client, app, "writer", gss or "", scopes="system/Patient.cud")
    assert client.get("/fhir/$export", headers={**writer, **ASYNC}).status_code == 403


def test_metadata_declares_the_export_operations(client: FlaskClient) -> None:
    """The CapabilityStatement declares system and Group $export with the IG's definitions."""
    statement = client.get("/fhir/metadata").json
    rest = statement["rest"][0]
    assert {"name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} \
        in rest["operation"]
    group = next(r for r in rest["resource"] if r["type"] == "Group")
    assert group["operation"][0]["definition"] == \
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in \
        statement["instantiates"]
    validate_capability = importlib.import_module("fhir.resources.R4B.capabilitystatement")
    validate_capability.CapabilityStatement.model_validate(statement)


# --- the background thread and the stall timeout ------------------------------------------

def test_threaded_job_reports_progress_then_completes(app: Flask, client: FlaskClient,
                                                      callers: Callers, demo: Database,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without EXPORT_INLINE the job runs in a background thread: status polls answer 202
    with X-Progress and Retry-After until it completes."""
    app.config["EXPORT_INLINE"] = False
    release = threading.Event()
    real_start = Exporter._start

    def held_start(self: Exporter) -> None:
        release.wait(30)
        real_start(self)

    monkeypatch.setattr(Exporter, "_start", held_start)
    status_url = kick_off(client, callers.la, query="?_type=Patient,CareTeam")
    response = client.get(status_url, headers=callers.la)
    assert response.status_code == 202
    assert response.headers["X-Progress"] == "queued"
    assert int(response.headers["Retry-After"]) > 0
    release.set()
    join_jobs(timeout=60)
    manifest = manifest_of(client, status_url, callers.la)
    assert {o["type"] for o in manifest["output"]} == {"Patient", "CareTeam"}
    download(client, manifest, callers.la)


def test_a_stalled_job_fails_and_says_so(app: Flask, client: FlaskClient, callers: Callers,
                                         demo: Database,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose process died (no progress past EXPORT_STALL_SECONDS) is marked failed: the
    status request answers an OperationOutcome saying so instead of 202 for ever."""
    monkeypatch.setattr(export_routes, "start_job", lambda *args: None)  # the process "died"
    status_url = kick_off(client, callers.la)
    assert client.get(status_url, headers=callers.la).status_code == 202
    app.config["EXPORT_STALL_SECONDS"] = 0
    response = client.get(status_url, headers=callers.la)
    assert response.status_code == 500
    assert response.json["resourceType"] == "OperationOutcome"
    assert "stopped making progress" in response.json["issue"][0]["diagnostics"]
    with demo.sessions() as session:
        assert session.scalar(select(ExportJob.state)) == "failed"
