"""The conformance kit: ``contactpoint-gateway validate`` accepts every example of
docs/vendors.md and every file the gateway itself exports (FHIR JSON and XML reads, a search
Bundle, a ``$export`` NDJSON run, directory XML exports), offline and without a database;
it reports each planted defect of a broken copy with its position, path and message, with
the exit codes CI relies on; ``POST /directory/entries/$validate`` answers the same checks as
an OperationOutcome and stores nothing. On SQLite and PostgreSQL (the exports)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import func, select

from adapter import create_app
from adapter.cli import main
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.directory.check import check_directory_body
from adapter.directory.cli import cli_caller
from adapter.errors import BadRequest
from adapter.export.runner import join_jobs
from adapter.findings import outcome_issues
from adapter.kit.check import check_file
from adapter.kit.cli import exit_code
from adapter.models import AuditRecord, Child, Organisation
from tests.api.conftest import bearer
from tests.conftest import REPO
from tests.fhir_validity import r4_schema, r4b_model, xsd_errors

EXAMPLES: Final = REPO / "docs" / "examples"
FHIR_JSON: Final = "application/fhir+json"
FHIR_XML: Final = "application/fhir+xml"
TYPES: Final = ("Patient", "CareTeam", "PractitionerRole", "Organization", "Practitioner")
ISSUE_LINE: Final = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-line"


def invoke(app: Flask, *args: str) -> Result:
    """Run the CLI against ``app``."""
    return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


def as_json(result: Result) -> dict[str, Any]:
    """Return the JSON report a ``--format json`` run printed."""
    value: dict[str, Any] = orjson.loads(result.output)
    return value


def findings(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Return the error findings of the file called ``name`` in a JSON report."""
    (found,) = [f for f in report["files"] if Path(f["file"]).name == name]
    return [f for f in found["findings"] if f["severity"] in ("error", "fatal")]


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[Flask, Path]]:
    """An app whose database does not exist (and must not be created by the kit)."""
    absent = tmp_path / "absent" / "gateway.db"
    yield create_app({"DATABASE_URL": f"sqlite:///{absent}",
                      "INSTANCE_PATH": str(tmp_path / "instance"), "TESTING": True}), absent


# --- (i) the examples of docs/vendors.md ------------------------------------------------------

EXAMPLE_KINDS: Final = {
    "patient.json": "fhir-json", "careteam.json": "fhir-json",
    "ecaf-careteam.json": "fhir-json", "practitioner.json": "fhir-json",
    "practitionerrole.json": "fhir-json", "practitionerrole.xml": "fhir-xml",
    "organization.json": "fhir-json",
    "subscription.json": "fhir-json", "directory-entries.xml": "directory-entries",
    "assessment-references.xml": "directory-assessments",
}


def test_every_example_passes_offline_without_a_database(offline: tuple[Flask, Path]) -> None:
    """Every file of docs/examples (one per type the gateway accepts) is valid (exit 0), with
    no database at all: none is opened or created."""
    app, absent = offline
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(EXAMPLE_KINDS)
    result = invoke(app, "validate", str(EXAMPLES), "--format", "json")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert report["exitCode"] == 0 and report["summary"]["errors"] == 0
    assert {Path(f["file"]).name: f["kind"] for f in report["files"]} == EXAMPLE_KINDS
    assert all(f["records"] == 1 and f["errors"] == 0 for f in report["files"])
    assert not absent.exists()
    # The XML example is FHIR R4 XML by the official schema, as sent.
    assert xsd_errors(r4_schema(), (EXAMPLES / "practitionerrole.xml").read_bytes()) == []


def test_examples_claim_uk_core_and_say_what_is_not_kept(offline: tuple[Flask, Path]) -> None:
    """The examples are written as other systems send them: a UK Core profile claimed,
    narrative, elements the directory does not hold; the kit says what is not kept."""
    app, _absent = offline
    claimed = {json.loads(p.read_text())["resourceType"]: json.loads(p.read_text())
               for p in EXAMPLES.glob("*.json")}
    for kind in TYPES:
        assert claimed[kind]["meta"]["profile"][0].startswith(
            "https://fhir.hl7.org.uk/StructureDefinition/UKCore-"), kind
        assert claimed[kind]["text"]["status"] == "generated", kind
    result = invoke(app, "validate", str(EXAMPLES / "patient.json"))
    assert result.exit_code == 0, result.output
    assert "information: Not kept: Patient.extension." in result.output
    assert "information: Not kept: Patient.text." in result.output
    assert "1 record(s), 0 with errors" in result.output
    assert "Not checked offline (FHIR" in result.output
    quiet = invoke(app, "validate", str(EXAMPLES / "patient.json"), "--errors-only")
    assert "Not kept" not in quiet.output and quiet.exit_code == 0


# --- (ii) what the gateway itself exports ---------------------------------------------------

@pytest.fixture
def demo_app(db: Database, app: Flask) -> tuple[Flask, str]:
    """The app on 30 demo children over two authorities; the first authority's GSS code."""
    load_demo_data(db, children=30, authorities=2, seed=14, progress=False)
    with db.sessions() as session:
        gss = session.scalars(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").order_by(Organisation.id)).first()
    assert gss is not None
    return app, gss


@pytest.fixture
def admin(demo_app: tuple[Flask, str], client: FlaskClient) -> dict[str, str]:
    """Bearer header of an administrator of the first authority."""
    app, gss = demo_app
    return bearer(client, app, "kit-admin", gss, ["shielded", "sensitive", "audit", "admin"])


def save(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name``; return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def fetch(client: FlaskClient, url: str, headers: dict[str, str], media: str) -> bytes:
    """GET ``url`` in ``media``; return the body (200 expected)."""
    with client.get(url, headers={**headers, "Accept": media}) as response:
        assert response.status_code == 200, response.data[:300]
        return response.data


def read_exports(client: FlaskClient, headers: dict[str, str], folder: Path) -> None:
    """Save one read of each type in JSON and XML, and a search page Bundle of each."""
    for kind in TYPES:
        page = orjson.loads(fetch(client, f"/fhir/{kind}?_count=5", headers, FHIR_JSON))
        resource_id = page["entry"][0]["resource"]["id"]
        for media, suffix in ((FHIR_JSON, "json"), (FHIR_XML, "xml")):
            save(folder, f"{kind}.{suffix}",
                 fetch(client, f"/fhir/{kind}/{resource_id}", headers, media))
            save(folder, f"{kind}-search.{suffix}",
                 fetch(client, f"/fhir/{kind}?_count=5", headers, media))


def bulk_export(app: Flask, client: FlaskClient, headers: dict[str, str], folder: Path) -> None:
    """Run a ``$export`` to completion and save its NDJSON files."""
    app.config["EXPORT_INLINE"] = True
    response = client.get("/fhir/$export", headers={**headers, "Prefer": "respond-async",
                                                     "Accept": FHIR_JSON})
    assert response.status_code == 202, response.data[:300]
    status_url = response.headers["Content-Location"]
    for _ in range(100):
        status = client.get(status_url, headers=headers)
        if status.status_code == 200:
            break
        join_jobs(timeout=10)
    assert status.status_code == 200
    manifest = orjson.loads(status.data)
    assert {item["type"] for item in manifest["output"]} == set(TYPES)
    for number, item in enumerate(manifest["output"]):
        save(folder, f"{number}-{item['type']}.ndjson",
             fetch(client, item["url"], headers, "application/fhir+ndjson"))


@pytest.fixture
def exported(demo_app: tuple[Flask, str], client: FlaskClient, admin: dict[str, str],
             tmp_path: Path) -> Path:
    """A folder of what the gateway exports: FHIR reads and searches in JSON and XML, a bulk
    NDJSON export, the CLI's directory XML export and a directory XML page."""
    app, gss = demo_app
    folder = tmp_path / "exported"
    read_exports(client, admin, folder / "fhir")
    bulk_export(app, client, admin, folder / "ndjson")
    result = invoke(app, "export", "--authority", gss, "--format", "directory-xml", "--out",
                    str(folder / "directory"), "--quiet")
    assert result.exit_code == 0, result.output
    save(folder / "directory", "page.xml",
         fetch(client, f"/directory/entries?authority={gss}&_count=10", admin, "application/xml"))
    join_jobs(timeout=60)
    return folder


def test_everything_the_gateway_exports_passes(exported: Path, demo_app: tuple[Flask, str],
                                               db: Database) -> None:
    """Every exported file is valid (exit 0), each of its kind, every record counted."""
    app, _gss = demo_app
    folders = [str(exported / name) for name in ("fhir", "ndjson", "directory")]
    result = invoke(app, "validate", *folders, "--format", "json")
    report = as_json(result)
    assert result.exit_code == 0, [(f["file"], f["findings"][:3]) for f in report["files"]
                                   if f["errors"]]
    kinds = {Path(f["file"]).name: f["kind"] for f in report["files"]}
    assert kinds["Patient.json"] == "fhir-json" and kinds["Patient.xml"] == "fhir-xml"
    assert kinds["Patient-search.json"] == "bundle-json"
    assert kinds["Patient-search.xml"] == "bundle-xml"
    assert kinds["directory-entries.xml"] == kinds["page.xml"] == "directory-entries"
    assert kinds["assessment-references.xml"] == "directory-assessments"
    assert sum(1 for k in kinds.values() if k == "ndjson") == len(TYPES)
    with db.sessions() as session:
        children = int(session.scalar(select(func.count()).select_from(Child)) or 0)
    ndjson = sum(f["records"] for f in report["files"] if f["kind"] == "ndjson"
                 and "Patient" in f["file"])
    assert ndjson == children  # the administrator's export holds every child


# --- (iii) a broken copy: each planted defect reported where it is -------------------------

def plant_ndjson(source: Path, target: Path) -> None:
    """Copy an NDJSON file with a code outside its value set on line 3."""
    lines = source.read_text().splitlines()
    patient = json.loads(lines[2])
    patient["gender"] = "sometimes"
    lines[2] = json.dumps(patient)
    target.write_text("\n".join(lines) + "\n")


def plant_bundle(source: Path, target: Path) -> str:
    """Copy a search Bundle with entry 2's Patient missing its required birthDate; return
    that entry's fullUrl."""
    bundle = json.loads(source.read_text())
    del bundle["entry"][1]["resource"]["birthDate"]
    target.write_text(json.dumps(bundle, indent=1))
    return str(bundle["entry"][1]["fullUrl"])


def plant_directory(source: Path, target: Path) -> int:
    """Copy a directory XML batch with an XSD violation (a Gender code the schema does not
    list) in record 4; return the line that record starts on."""
    text = source.read_text()
    starts = [m.start() for m in re.finditer(r"<DirectoryEntry[ >]", text)]
    begin, end = starts[3], starts[4]
    record = re.sub(r"<Gender>[^<]*</Gender>", "<Gender>Q</Gender>", text[begin:end], count=1)
    target.write_text(text[:begin] + record + text[end:])
    return text[:begin].count("\n") + 1


def plant_xml(source: Path, target: Path) -> int:
    """Copy a FHIR XML Patient with an element FHIR does not define; return its line."""
    text = source.read_text()
    at = text.index("<gender ")
    target.write_text(f'{text[:at]}\n<favouriteColour value="blue"/>\n{text[at:]}')
    return text[:at].count("\n") + 2


def test_each_planted_defect_is_reported_with_its_position(exported: Path,
                                                           demo_app: tuple[Flask, str],
                                                           tmp_path: Path) -> None:
    """Bad code on line 3 of NDJSON, a required element missing in entry 2 of a Bundle, an
    XSD violation in record 4 of directory XML, an unknown element in FHIR XML: each is
    reported at its position with its path (exit 1), and nothing else is."""
    app, _gss = demo_app
    broken = tmp_path / "broken"
    broken.mkdir()
    patients = next((exported / "ndjson").glob("*-Patient.ndjson"))
    plant_ndjson(patients, broken / "patients.ndjson")
    full_url = plant_bundle(exported / "fhir" / "Patient-search.json", broken / "bundle.json")
    line = plant_directory(exported / "directory" / "directory-entries.xml",
                           broken / "entries.xml")
    xml_line = plant_xml(exported / "fhir" / "Patient.xml", broken / "patient.xml")
    result = invoke(app, "validate", str(broken), "--format", "json")
    assert result.exit_code == 1, result.output
    report = as_json(result)
    assert report["exitCode"] == 1

    ndjson = findings(report, "patients.ndjson")
    assert ndjson and {(f["line"], f["path"]) for f in ndjson} == {(3, "Patient.gender")}
    bundle = findings(report, "bundle.json")
    assert bundle and {(f["record"], f.get("fullUrl"), f["path"]) for f in bundle} == \
        {(2, full_url, "Bundle.entry[1].resource.birthDate")}
    assert bundle[0]["position"] == f"entry 2 ({full_url})"
    directory = findings(report, "entries.xml")
    assert [(f["record"], f["line"], f["path"]) for f in directory] == \
        [(4, line, "DirectoryEntry/Gender")]
    assert directory[0]["position"] == f"record 4, line {line}"
    assert "allowed codes" in directory[0]["message"]
    fhir_xml = findings(report, "patient.xml")
    assert [(f["line"], f["path"]) for f in fhir_xml] == [(xml_line, "Patient.favouriteColour")]
    assert "unknown element" in fhir_xml[0]["message"]

    text = invoke(app, "validate", str(broken / "entries.xml"))
    assert text.exit_code == 1
    assert (f"entries.xml: record 4, line {line}: error: the value is not one of the allowed "
            "codes [DirectoryEntry/Gender]") in text.output
    assert "1 with errors" in text.output and "organisations and practitioners" in text.output
    # The import rejects the same record with the same words: one checker.
    imported = invoke(app, "import", str(broken / "entries.xml"), "--quiet")
    assert imported.exit_code == 1
    assert (f"entries.xml: record 4, line {line}: the value is not one of the allowed codes "
            "[DirectoryEntry/Gender]") in imported.output


def test_the_vendor_page_links_what_exists() -> None:
    """docs/vendors.md is linked from the README; every example it links exists, and every
    example is linked from it."""
    page = (REPO / "docs" / "vendors.md").read_text()
    assert "docs/vendors.md" in (REPO / "README.md").read_text()
    linked = set(re.findall(r"\]\((examples/[^)]+)\)", page))
    assert {f"examples/{name}" for name in EXAMPLE_KINDS} <= linked
    assert all((REPO / "docs" / target).is_file() for target in linked)
    for section in ("Patient", "CareTeam: a child's team", "CareTeam: an eCAF Team Around",
                    "Practitioner", "PractitionerRole", "Organization", "Subscription",
                    "Directory XML"):
        assert f"\n## {section}" in page, section


def test_exit_codes(offline: tuple[Flask, Path], tmp_path: Path) -> None:
    """0 valid; 1 an error; 2 a file none of the kinds, a missing path, or no file at all."""
    app, _absent = offline
    (tmp_path / "notes.json").write_text("hello\n")
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "Observation", "status": "final"}))
    assert invoke(app, "validate", str(EXAMPLES / "patient.json")).exit_code == 0
    wrong = invoke(app, "validate", str(bad))
    assert wrong.exit_code == 1
    assert "Observation is not a resource type this gateway accepts" in wrong.output
    unusable = invoke(app, "validate", str(tmp_path / "notes.json"), str(bad))
    assert unusable.exit_code == 2 and "notes.json: unusable: neither XML nor a JSON object" in \
        unusable.output
    batch = (EXAMPLES / "directory-entries.xml").read_text()
    cut = tmp_path / "cut.xml"
    cut.write_text(batch[:batch.index("</Carer>")])  # the document ends inside record 1
    stopped = invoke(app, "validate", str(cut), "--format", "json")
    assert stopped.exit_code == 1
    (fatal,) = findings(as_json(stopped), "cut.xml")
    assert fatal["severity"] == "fatal" and fatal["record"] == 1 and fatal["line"]
    assert fatal["message"].startswith("the document is unreadable from here on")
    assert invoke(app, "validate", str(tmp_path / "missing.json")).exit_code == 2
    assert invoke(app, "validate", str(tmp_path / "empty")).exit_code == 2
    assert invoke(app, "validate").exit_code == 2


def test_a_transaction_is_read_as_post_fhir_reads_it(offline: tuple[Flask, Path],
                                                    tmp_path: Path) -> None:
    """A transaction's ``urn:uuid`` references stand for the entries they name (a CareTeam
    about a Patient created in the same transaction is valid); an entry without a request
    is named."""
    app, _absent = offline
    patient = json.loads((EXAMPLES / "patient.json").read_text())
    team = json.loads((EXAMPLES / "careteam.json").read_text())
    child = "urn:uuid:6d1f1b0e-4c1a-4b8e-9a52-0f1c2d3e4f50"
    team["subject"] = {"reference": child}
    entries = [{"fullUrl": child, "resource": patient,
                "request": {"method": "POST", "url": "Patient"}},
               {"fullUrl": "urn:uuid:6d1f1b0e-4c1a-4b8e-9a52-0f1c2d3e4f51", "resource": team,
                "request": {"method": "POST", "url": "CareTeam"}}]
    path = tmp_path / "transaction.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction",
                                "entry": entries}))
    valid = invoke(app, "validate", str(path), "--errors-only")
    assert valid.exit_code == 0, valid.output
    del entries[1]["request"]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction",
                                "entry": entries}))
    result = invoke(app, "validate", str(path), "--format", "json")
    assert result.exit_code == 1
    found = findings(as_json(result), "transaction.json")
    assert [(f["record"], f["path"]) for f in found] == [(2, "Bundle.entry[1].request")]


# --- POST /directory/entries/$validate -----------------------------------------------------

def post_validate(client: FlaskClient, body: bytes, headers: dict[str, str],
                  family: str = "entries", accept: str = FHIR_JSON) -> Any:
    """POST a body to the $validate route of ``family``."""
    return client.post(f"/directory/{family}/$validate", data=body,
                       headers={**headers, "Content-Type": "application/xml", "Accept": accept})


def stored_state(db: Database) -> tuple[int, int, int]:
    """Return (children, sum of their versions, audit records): what a write would change."""
    with db.sessions() as session:
        return (int(session.scalar(select(func.count()).select_from(Child)) or 0),
                int(session.scalar(select(func.sum(Child.version))) or 0),
                int(session.scalar(select(func.count()).select_from(AuditRecord)) or 0))


def test_directory_validate_reports_each_bad_record_and_stores_nothing(
        exported: Path, client: FlaskClient, admin: dict[str, str], db: Database,
        tmp_path: Path) -> None:
    """A valid export answers 200 with only information; a broken copy names record 4, its
    line and element; nothing is stored either time."""
    source = exported / "directory" / "directory-entries.xml"
    before = stored_state(db)
    valid = post_validate(client, source.read_bytes(), admin)
    assert valid.status_code == 200, valid.data[:400]
    assert valid.json["resourceType"] == "OperationOutcome"
    assert {i["severity"] for i in valid.json["issue"]} == {"information"}
    assert "nothing was stored" in valid.json["issue"][-1]["diagnostics"]
    line = plant_directory(source, tmp_path / "entries.xml")
    broken = post_validate(client, (tmp_path / "entries.xml").read_bytes(), admin)
    assert broken.status_code == 200
    errors = [i for i in broken.json["issue"] if i["severity"] == "error"]
    assert len(errors) == 1
    assert errors[0]["location"] == ["DirectoryEntry/Gender"]
    assert errors[0]["diagnostics"].startswith(f"record 4, line {line}: ")
    assert errors[0]["extension"] == [{"url": ISSUE_LINE, "valueInteger": line}]
    assert "expression" not in errors[0]  # an XPath is not FHIRPath: it goes in location
    as_xml = post_validate(client, (tmp_path / "entries.xml").read_bytes(), admin,
                           accept=FHIR_XML)
    assert as_xml.status_code == 200
    assert xsd_errors(r4_schema(), as_xml.data) == []  # the official FHIR R4 schema
    r4b_model(broken.json)
    assert stored_state(db) == before


def test_directory_validate_takes_one_record_and_answers_xml(
        client: FlaskClient, admin: dict[str, str]) -> None:
    """One DirectoryEntry document is checked as a record; the outcome comes as FHIR XML
    when asked; an AssessmentReferences batch goes to the assessments route."""
    entry = (REPO / "tests" / "golden" / "plain-child" / "directory.xml").read_bytes()
    response = post_validate(client, entry, admin, accept=FHIR_XML)
    assert response.status_code == 200
    root = etree.fromstring(response.data)
    assert root.tag == "{http://hl7.org/fhir}OperationOutcome"
    severities = root.findall("{http://hl7.org/fhir}issue/{http://hl7.org/fhir}severity")
    assert {s.get("value") for s in severities} == {"information"}
    references = (EXAMPLES / "assessment-references.xml").read_bytes()
    answered = post_validate(client, references, admin, "assessments")
    assert answered.status_code == 200
    assert "1 record(s) checked, 0 with errors" in answered.json["issue"][-1]["diagnostics"]


def test_directory_validate_refusals(client: FlaskClient, admin: dict[str, str],
                                     demo_app: tuple[Flask, str]) -> None:
    """Not a batch of the route's family: 400; not XML: 415; no token: 401; a token
    without the Patient read scope: 403 — each an OperationOutcome."""
    app, gss = demo_app
    references = (EXAMPLES / "assessment-references.xml").read_bytes()
    wrong = post_validate(client, references, admin)
    assert wrong.status_code == 400
    assert "DirectoryEntries" in wrong.json["issue"][0]["diagnostics"]
    json_body = client.post("/directory/entries/$validate", data=b"{}",
                            headers={**admin, "Content-Type": FHIR_JSON})
    assert json_body.status_code == 415
    anonymous = post_validate(client, references, {})
    assert anonymous.status_code == 401
    assert anonymous.json["resourceType"] == "OperationOutcome"
    careteam_only = bearer(client, app, "kit-careteams", gss, scopes="system/CareTeam.rs")
    assert post_validate(client, references, careteam_only).status_code == 403
    assert post_validate(client, references, careteam_only, "assessments").status_code == 200


# --- hostile files -------------------------------------------------------------------------

HEADS: Final = (b"", b"<?xml version='1.0'?>",
                b"<DirectoryEntries xmlns='urn:contactpoint-gateway:directory:1'>",
                b"<DirectoryEntry xmlns='urn:contactpoint-gateway:directory:1'>",
                b"<AssessmentReferences xmlns='urn:contactpoint-gateway:directory:1'><Header>",
                b"<Bundle xmlns='http://hl7.org/fhir'><type value='transaction'/><entry>",
                b"<Patient xmlns='http://hl7.org/fhir'>", b'{"resourceType": "Bundle", ',
                b'{"resourceType": "Patient"}\n{', b'{"resourceType": "CareTeam", "x": ')


@given(head=st.sampled_from(HEADS), tail=st.binary(max_size=300),
       suffix=st.sampled_from([".json", ".xml", ".ndjson", ".txt"]))
@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_file_crashes_the_kit(offline: tuple[Flask, Path], tmp_path: Path, head: bytes,
                                 tail: bytes, suffix: str) -> None:
    """Whatever a file holds, the kit reports on it (a finding or "unusable"): it never
    fails with an exception of its own."""
    app, _absent = offline
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(head + tail)
    with app.app_context():
        report = check_file(path, cli_caller(None))
    assert report.unusable or report.findings  # none of these is a valid record
    assert exit_code([report]) == (2 if report.unusable else 1 if report.errors else 0)


@given(head=st.sampled_from(HEADS), tail=st.binary(max_size=300),
       family=st.sampled_from(["entries", "assessments"]))
@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_body_crashes_the_directory_validate(offline: tuple[Flask, Path], head: bytes,
                                                tail: bytes, family: str) -> None:
    """A request body is a 400 (not directory XML of the route's family) or a report."""
    app, _absent = offline
    with app.app_context():
        try:
            report = check_directory_body(io.BytesIO(head + tail), family)
        except BadRequest as refused:
            assert "namespace urn:contactpoint-gateway:directory:1" in refused.message
            return
    assert report.kind.startswith("directory-") and report.findings
    assert outcome_issues(report)[-1]["severity"] == "information"


def test_a_patient_without_its_managing_authority_is_left_to_the_live_gateway(
        offline: tuple[Flask, Path], tmp_path: Path) -> None:
    """Offline the kit cannot tell who sends a Patient without ``managingOrganization`` (an
    authority's system may, a national client may not): the record passes and the report
    says the live gateway decides."""
    app, _absent = offline
    resource = json.loads((EXAMPLES / "patient.json").read_text())
    resource.pop("managingOrganization", None)
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(resource))
    result = invoke(app, "validate", str(path))
    assert result.exit_code == 0, result.output
    assert "a Patient without managingOrganization comes from a local authority's own system" \
        in result.output


def test_the_age_rule_is_reported_for_directory_xml_as_for_fhir(
        offline: tuple[Flask, Path], client: FlaskClient, admin: dict[str, str],
        tmp_path: Path) -> None:
    """A live DirectoryEntry of a person born in 1970 is an error quoting the 2007
    Regulations at ``DirectoryEntry/BirthDate``, from the kit and ``POST
    /directory/entries/$validate`` (as a FHIR Patient's ``$validate`` says); archived, the
    rule does not apply."""
    app, _absent = offline
    entry = etree.fromstring(
        (REPO / "tests" / "golden" / "plain-child" / "directory.xml").read_bytes())
    ns = entry.nsmap.get(None) or entry.nsmap.get("dir")
    entry.find(f".//{{{ns}}}BirthDate").text = "1970-05-01"
    adult = etree.tostring(entry)
    path = save(tmp_path, "adult.xml", adult)
    result = invoke(app, "validate", str(path), "--format", "json")
    assert result.exit_code == 1, result.output
    (found,) = findings(as_json(result), "adult.xml")
    assert "Regulations 2007" in found["message"]
    assert found["path"] == "DirectoryEntry/BirthDate"
    answered = post_validate(client, adult, admin)
    errors = [i for i in answered.json["issue"] if i["severity"] == "error"]
    assert len(errors) == 1 and "Regulations 2007" in errors[0]["diagnostics"]
    assert errors[0]["location"] == ["DirectoryEntry/BirthDate"]
    entry.find(f".//{{{ns}}}RecordStatus").text = "archived"
    archived = save(tmp_path, "archived.xml", etree.tostring(entry))
    assert invoke(app, "validate", str(archived)).exit_code == 0
