"""A stored record that cannot be rendered (a name holding U+0001, written before the inbound
checks existed: planted here with a direct ORM write) never takes down a page or an export of
the others: FHIR JSON and XML search pages, history, directory XML pages, ``$export`` and the
CLI export leave it out and say so, naming its id; its own read answers an OperationOutcome;
the operators are told in the log by id, never by name. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select

from adapter.db import Database
from adapter.directory.schema import ASSESSMENT_XSD, ENTRY_XSD, NS, load_schema
from adapter.export.runner import join_jobs
from adapter.models import Child, Organisation
from tests.api.conftest import Callers
from tests.api.test_export import export
from tests.fhir_validity import r4_schema, xsd_errors
from tests.test_cli_import_export import invoke

CANARY = "Unrenderable\u0001Canary"
FHIR = {"f": "http://hl7.org/fhir"}


@pytest.fixture
def planted(demo: Database, callers: Callers) -> str:
    """Give a live, unshielded child of the first authority a family name XML 1.0 cannot
    carry, as data stored before the door was built; return the child's FHIR id."""
    with demo.write_transaction() as session:
        child = session.scalar(select(Child).join(Child.managing_organisation).where(
            Organisation.gss_code == callers.authority, Child.shielded.is_(False),
            Child.record_status == "live").order_by(Child.id).limit(1))
        assert child is not None
        child.names[0].family = CANARY
        return child.resource_id


def told_operators(caplog: pytest.LogCaptureFixture, resource_id: str) -> None:
    """Assert the log names the record by id and never holds its data."""
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(resource_id in message for message in logged), logged
    assert not any("Canary" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("resource_type", ["Patient", "CareTeam", "PractitionerRole",
                                           "Organization", "Practitioner"])
def test_the_demo_directory_renders_whole(client: FlaskClient, callers: Callers,
                                          resource_type: str) -> None:
    """Nothing the demo data (written through the same writers) holds is left out."""
    response = client.get(f"/fhir/{resource_type}?_count=1000", headers=callers.admin)
    assert response.status_code == 200, response.json
    modes = {e["search"]["mode"] for e in response.json.get("entry", [])}
    assert modes == {"match"}, response.json["entry"][-1]


def test_json_search_page_leaves_it_out_and_says_so(client: FlaskClient, callers: Callers,
                                                    planted: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The JSON page holds every other match and an outcome entry (warning) naming it."""
    response = client.get("/fhir/Patient?_count=100", headers=callers.admin)
    assert response.status_code == 200, response.json
    entries = response.json["entry"]
    matches = [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]
    assert planted not in matches and len(matches) >= 10
    outcomes = [i for e in entries if e["search"]["mode"] == "outcome"
                for i in e["resource"]["issue"]]
    assert any(i["severity"] == "warning" and f"Patient/{planted}" in i["diagnostics"]
               for i in outcomes), outcomes
    assert b"Canary" not in response.data
    told_operators(caplog, planted)


def test_xml_search_page_is_valid_and_holds_the_others(client: FlaskClient, callers: Callers,
                                                       planted: str) -> None:
    """The XML page (once a 500 for every caller) is valid against the official R4 schema."""
    response = client.get("/fhir/Patient?_count=100&_format=xml", headers=callers.admin)
    assert response.status_code == 200, response.data[:300]
    root = etree.fromstring(response.data)
    assert xsd_errors(r4_schema(), root) == []
    ids = [e.get("value") for e in root.iterfind("f:entry/f:resource/f:Patient/f:id", FHIR)]
    assert planted not in ids and len(ids) >= 10
    assert f"Patient/{planted}".encode() in response.data


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_its_read_answers_an_operation_outcome(client: FlaskClient, callers: Callers,
                                               planted: str, fmt: str) -> None:
    """A read of the record itself: an OperationOutcome in the negotiated format naming the
    record and saying the operators were told (docs/architecture.md), no stack trace, no
    value; its history keeps the entry without the resource, saying why."""
    response = client.get(f"/fhir/Patient/{planted}?_format={fmt}", headers=callers.admin)
    assert response.status_code == 500
    assert response.mimetype == f"application/fhir+{fmt}"
    assert f"Patient/{planted}".encode() in response.data and b"operators" in response.data
    assert b"Canary" not in response.data and b"Traceback" not in response.data
    history = client.get(f"/fhir/Patient/{planted}/_history?_format={fmt}",
                         headers=callers.admin)
    assert history.status_code == 200 and b"Canary" not in history.data
    if fmt == "xml":
        assert xsd_errors(r4_schema(), history.data) == []


def test_directory_xml_page_leaves_it_out(client: FlaskClient, callers: Callers,
                                          planted: str) -> None:
    """The authority's directory XML page is a valid batch of the others, its header counting
    them, and a Warning header names the record left out."""
    response = client.get(f"/directory/entries?authority={callers.authority}&_count=1000",
                          headers=callers.admin)
    assert response.status_code == 200
    root = etree.fromstring(response.data)
    load_schema(ENTRY_XSD).assertValid(root)
    records = root.findall(f"{{{NS}}}DirectoryEntry")
    assert int(root.findtext(f"{{{NS}}}Header/{{{NS}}}Count") or -1) == len(records) > 0
    assert f"Patient/{planted}" in response.headers["Warning"]
    assert b"Canary" not in response.data


def test_its_directory_xml_read_answers_an_operation_outcome(client: FlaskClient,
                                                             callers: Callers, demo: Database,
                                                             planted: str) -> None:
    """``GET /directory/entries/{id}`` of the record: an OperationOutcome naming it, as the
    FHIR read answers; never a batch that pretends it does not exist."""
    with demo.sessions() as session:
        cpid = session.scalar(select(Child.contactpoint_id).where(Child.resource_id == planted))
    response = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
    assert response.status_code == 500
    assert response.json["resourceType"] == "OperationOutcome"
    assert f"Patient/{planted}" in response.json["issue"][0]["diagnostics"]
    assert b"Canary" not in response.data


def test_bulk_export_reports_it_in_the_error_file(app: Flask, client: FlaskClient,
                                                  callers: Callers, planted: str) -> None:
    """``$export``: the others are exported, the record is an OperationOutcome line of the
    error file (Bulk Data IG export.html: partial success is reported in ``error``)."""
    app.config["EXPORT_INLINE"] = True
    try:
        _manifest, files = export(client, callers.admin, query="?_type=Patient")
    finally:
        join_jobs(timeout=60)
    assert planted not in {p["id"] for p in files["Patient"]} and len(files["Patient"]) >= 10
    assert any(planted in i["diagnostics"] for o in files["OperationOutcome"]
               for i in o["issue"])


@pytest.mark.parametrize("fmt", ["directory-xml", "fhir-ndjson"])
def test_cli_export_completes_the_files_and_exits_1(app: Flask, callers: Callers,
                                                    planted: str, tmp_path: Path,
                                                    fmt: str) -> None:
    """CLI ``export``: complete files of the others (never a truncated one), the record named
    on stderr, exit 1 (the export is incomplete)."""
    out = tmp_path / "out"
    result = invoke(app, "export", "--authority", callers.authority, "--format", fmt,
                    "--out", str(out), "--quiet")
    assert result.exit_code == 1, result.output
    assert f"Patient/{planted}" in result.output and "Canary" not in result.output
    if fmt == "directory-xml":
        entries = etree.parse(str(out / "directory-entries.xml")).getroot()
        load_schema(ENTRY_XSD).assertValid(entries)
        load_schema(ASSESSMENT_XSD).assertValid(
            etree.parse(str(out / "assessment-references.xml")).getroot())
        assert len(entries.findall(f"{{{NS}}}DirectoryEntry")) > 0
    else:
        patients = [orjson.loads(line) for line in
                    (out / "Patient.ndjson").read_bytes().splitlines()]
        assert planted not in {p["id"] for p in patients} and len(patients) > 0
    assert not any(b"Canary" in path.read_bytes() for path in out.iterdir())
