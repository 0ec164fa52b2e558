"""What cannot be stored and rendered again is refused at the door, in every inbound dialect,
with the element's path: characters XML 1.0 cannot carry (a name with U+0001 or U+0000 once
made every XML rendering of the child answer 500), empty names, JSON nulls, empty elements,
birth dates in the future (once stored, and then failing the gateway's own ``$validate`` and
XSD). FHIR JSON and XML bodies, ``$validate``, transaction and batch Bundles, NDJSON through
the CLI import and directory XML, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import func, select

from adapter.db import Database
from adapter.directory.schema import ENTRY_XSD, NS, load_schema
from adapter.fhir.xml import dumps_resource
from adapter.models import Child
from adapter.wellformed import content_flaws, shape_flaws
from tests.api.conftest import Callers
from tests.api.test_patient import own_patient
from tests.test_cli_import_export import invoke

FUTURE = (dt.date.today() + dt.timedelta(days=400)).isoformat()


def new_patient(client: FlaskClient, callers: Callers) -> dict[str, Any]:
    """Return a Patient of the first authority to create: no id, meta or identifiers (the
    gateway allocates the ContactPoint ID)."""
    patient = own_patient(client, callers)
    for key in ("id", "meta", "identifier"):
        patient.pop(key, None)
    return patient


def stored(db: Database) -> int:
    """Return how many children the directory holds."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Child)) or 0)


def refused(response: Any, status: int, expression: str) -> None:
    """Assert an OperationOutcome refusal with ``status`` naming ``expression``."""
    assert response.status_code == status, response.json
    issue = response.json["issue"][0]
    assert response.json["resourceType"] == "OperationOutcome" and issue["severity"] == "error"
    assert issue["expression"] == [expression], issue
    assert expression.rpartition(".resource.")[2] in issue["diagnostics"]


def set_family(value: str) -> Any:
    """Return a change setting the current name's family name."""
    return lambda p: p["name"][0].__setitem__("family", value)


# (name, change, status, expression): the defects as written, and their kin.
BAD: list[tuple[str, Any, int, str]] = [
    ("U+0001 in a name", set_family("Smi\u0001th"), 400, "Patient.name[0].family"),
    ("U+0000 in a name", set_family("Smi\u0000th"), 400, "Patient.name[0].family"),
    ("U+001F in a name", set_family("Smith\u001f"), 400, "Patient.name[0].family"),
    ("U+FFFE in a name", set_family("\ufffeSmith"), 400, "Patient.name[0].family"),
    ("blank family name", set_family("   "), 400, "Patient.name[0].family"),
    ("empty family name", set_family(""), 400, "Patient.name[0].family"),
    ("name: []", lambda p: p.__setitem__("name", []), 400, "Patient.name"),
    ("a name of nothing", lambda p: p.__setitem__("name", [{"use": "usual"}]), 422,
     "Patient.name[0]"),
    ("an empty name", lambda p: p["name"].append({}), 400, "Patient.name[1]"),
    ("null gender", lambda p: p.__setitem__("gender", None), 400, "Patient.gender"),
    ("null in given", lambda p: p["name"][0].__setitem__("given", ["Ann", None]), 400,
     "Patient.name[0].given[1]"),
    ("meta: {}", lambda p: p.__setitem__("meta", {}), 400, "Patient.meta"),
    ("address: [{}]", lambda p: p.__setitem__("address", [{}]), 400, "Patient.address[0]"),
    ("future birth date", lambda p: p.__setitem__("birthDate", FUTURE), 422,
     "Patient.birthDate"),
    ("future birth year", lambda p: p.__setitem__("birthDate", FUTURE[:4]), 422,
     "Patient.birthDate"),
    ("six given names", lambda p: p["name"][0].__setitem__("given", list("ABCDEF")), 422,
     "Patient.name[0].given"),
    ("a line break in a name", set_family("Smi\nth"), 422, "Patient.name[0].family"),
]


@pytest.mark.parametrize(("change", "status", "expression"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_post_patient_refuses_what_cannot_be_rendered(client: FlaskClient, callers: Callers,
                                                      demo: Database, change: Any, status: int,
                                                      expression: str) -> None:
    """``POST /fhir/Patient`` (the defects as written): 400/422 OperationOutcome naming the
    element, nothing stored; the same Patient without the change is created."""
    patient = new_patient(client, callers)
    before = stored(demo)
    bad = copy.deepcopy(patient)
    change(bad)
    refused(client.post("/fhir/Patient", json=bad, headers=callers.admin), status, expression)
    assert stored(demo) == before
    created = client.post("/fhir/Patient", json=patient, headers=callers.admin)
    assert created.status_code == 201, created.json
    assert stored(demo) == before + 1


def test_surrounding_white_space_is_not_kept(client: FlaskClient, callers: Callers,
                                             demo: Database) -> None:
    """A name with white space around it is stored trimmed (FHIR R4 datatypes.html#string:
    it SHOULD be removed), so that it renders as directory XML, whose text types allow none."""
    patient = new_patient(client, callers)
    patient["name"][0]["family"], patient["name"][0]["given"] = "  Padded\t", [" Ann"]
    response = client.post("/fhir/Patient", json=patient, headers=callers.admin)
    assert response.status_code == 201, response.json
    read = client.get(response.headers["Location"], headers=callers.admin).json
    assert (read["name"][0]["family"], read["name"][0]["given"]) == ("Padded", ["Ann"])
    cpid = next(i["value"] for i in read["identifier"] if i["system"].endswith("/contactpoint-id"))
    entry = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
    load_schema(ENTRY_XSD).assertValid(etree.fromstring(entry.data))


def test_xml_bodies_meet_the_same_door(client: FlaskClient, callers: Callers,
                                       demo: Database) -> None:
    """FHIR XML: a character reference XML 1.0 cannot carry is malformed XML (400), an empty
    value is refused with its path (400), a future birth date too (422); nothing stored."""
    patient = new_patient(client, callers)
    before = stored(demo)
    xml = dumps_resource(patient)
    headers = {**callers.admin, "Content-Type": "application/fhir+xml"}
    family = patient["name"][0]["family"].encode()
    control = xml.replace(b'value="' + family + b'"', b'value="Smi&#1;th"', 1)
    assert control != xml
    response = client.post("/fhir/Patient", data=control, headers=headers)
    assert response.status_code == 400 and "Malformed XML" in response.json["issue"][0][
        "diagnostics"]
    future = copy.deepcopy(patient)
    future["birthDate"] = FUTURE
    refused(client.post("/fhir/Patient", data=dumps_resource(future), headers=headers), 422,
            "Patient.birthDate")
    blank = xml.replace(b'value="' + family + b'"', b'value="  "', 1)
    refused(client.post("/fhir/Patient", data=blank, headers=headers), 400,
            "Patient.name[0].family")
    assert stored(demo) == before


def test_validate_reports_what_a_write_refuses(client: FlaskClient, callers: Callers,
                                               demo: Database) -> None:
    """``$validate`` answers as a write would: the shape refused (400) with its path, a
    business rule as an error issue with its path; a good Patient is all OK."""
    patient = new_patient(client, callers)
    url = "/fhir/Patient/$validate"
    null = {**patient, "gender": None}
    refused(client.post(url, json=null, headers=callers.admin), 400, "Patient.gender")
    future = {**patient, "birthDate": FUTURE}
    outcome = client.post(url, json=future, headers=callers.admin).json
    errors = [i for i in outcome["issue"] if i["severity"] == "error"]
    assert errors and errors[0]["expression"] == ["Patient.birthDate"]
    good = client.post(url, json=patient, headers=callers.admin).json
    assert not [i for i in good["issue"] if i["severity"] == "error"], good


def bundle(kind: str, *resources: dict[str, Any]) -> dict[str, Any]:
    """Return a transaction or batch Bundle creating ``resources``."""
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": r, "request": {"method": "POST", "url": "Patient"}} for r in resources]}


def test_transaction_refuses_all_naming_the_entry(client: FlaskClient, callers: Callers,
                                                  demo: Database) -> None:
    """A transaction with one bad entry: 400 naming ``Bundle.entry[1].resource...`` (a
    FHIRPath), nothing stored."""
    good, bad = new_patient(client, callers), new_patient(client, callers)
    bad["name"][0]["family"] = "Smi\u0001th"
    before = stored(demo)
    response = client.post("/fhir", json=bundle("transaction", good, bad),
                           headers=callers.admin)
    refused(response, 400, "Bundle.entry[1].resource.name[0].family")
    assert stored(demo) == before


def test_batch_refuses_the_bad_entry_only(client: FlaskClient, callers: Callers,
                                          demo: Database) -> None:
    """A batch: the good entry is created, each bad one answered with its status and an
    OperationOutcome naming the element inside the entry."""
    good = new_patient(client, callers)
    control, future = new_patient(client, callers), new_patient(client, callers)
    control["name"][0]["family"] = "Smi\u0000th"
    future["birthDate"] = FUTURE
    before = stored(demo)
    response = client.post("/fhir", json=bundle("batch", control, good, future),
                           headers=callers.admin)
    assert response.status_code == 200, response.json
    entries = response.json["entry"]
    assert entries[1]["response"]["status"].startswith("201")
    assert entries[0]["response"]["status"] == "400"
    assert entries[0]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[0].resource.name[0].family"]
    assert entries[2]["response"]["status"] == "422"
    assert entries[2]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[2].resource.birthDate"]
    assert stored(demo) == before + 1


def test_ndjson_import_reports_bad_lines_and_applies_good_ones(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database,
        tmp_path: Path) -> None:
    """CLI ``import`` of NDJSON: a line with a null, one with U+0001, one with a future birth
    date are rejected with their line and path (exit 1); the good line is applied."""
    good = new_patient(client, callers)
    lines = [orjson.dumps({**good, "gender": None}), orjson.dumps(good)]
    control = copy.deepcopy(good)
    control["name"][0]["family"] = "Smi\u0001th"
    lines += [orjson.dumps(control), orjson.dumps({**good, "birthDate": FUTURE})]
    (tmp_path / "Patient.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    before = stored(demo)
    result = invoke(app, "import", str(tmp_path / "Patient.ndjson"), "--quiet")
    assert result.exit_code == 1, result.output
    assert stored(demo) == before + 1
    for line, path in ((1, "Patient.gender"), (3, "Patient.name[0].family"),
                       (4, "Patient.birthDate")):
        assert any(f"line {line}" in row and path in row
                   for row in result.output.splitlines()), result.output
    assert "Smi" not in result.output  # the value is never repeated


def test_directory_xml_refuses_a_future_birth_date(client: FlaskClient, callers: Callers,
                                                   demo: Database) -> None:
    """``POST /directory/entries``: an entry born in the future is rejected in the report
    with its path; nothing changes."""
    with demo.sessions() as session:
        cpid = session.scalar(select(Child.contactpoint_id).where(
            Child.shielded.is_(False), Child.record_status == "live").order_by(Child.id))
    document = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
    assert document.status_code == 200
    root = etree.fromstring(document.data)
    birth = root.find(f".//{{{NS}}}BirthDate")
    assert birth is not None
    birth.text = FUTURE
    response = client.post("/directory/entries", data=etree.tostring(root),
                           headers={**callers.admin, "Content-Type": "application/xml"})
    assert response.status_code == 200
    report = etree.fromstring(response.data)
    record = report.find(f".//{{{NS}}}Record")
    assert record is not None and record.findtext(f"{{{NS}}}Status") == "rejected"
    assert "DirectoryEntry/BirthDate" in etree.tostring(record).decode()


# --- the rules themselves (FHIR R4 json.html) ----------------------------------------------

def test_null_placeholders_of_primitive_arrays_follow_json_html() -> None:
    """A null is allowed only where the ``_name`` companion has a value at that index; the
    two arrays must have the same length; nulls in both at one index are refused."""
    extension = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    ok = {"resourceType": "Patient", "name": [{"family": "A", "given": ["B", None],
                                               "_given": [None, extension]}]}
    assert shape_flaws(ok) == []
    both = {"resourceType": "Patient", "name": [{"family": "A", "given": ["B", None],
                                                 "_given": [None, None]}]}
    assert [f.expression for f in shape_flaws(both)] == ["Patient.name[0].given[1]"] * 2
    short = {"resourceType": "Patient", "name": [{"family": "A", "given": ["B", "C"],
                                                  "_given": [extension]}]}
    assert [f.expression for f in shape_flaws(short)] == ["Patient.name[0].given"]


def test_lone_surrogates_and_unknown_shapes() -> None:
    """A lone surrogate (which JSON parsers refuse anyway), a key XML cannot carry and
    contained resources are all checked; a name of text only names someone."""
    assert shape_flaws({"resourceType": "Patient", "id": "a\ud800"})[0].expression == \
        "Patient.id"
    assert shape_flaws({"resourceType": "Patient", "a\u0001": 1})[0].expression == "Patient"
    contained = {"resourceType": "CareTeam", "contained": [
        {"resourceType": "Practitioner", "name": [{"use": "official"}]}]}
    assert [f.expression for f in content_flaws(contained)] == [
        "CareTeam.contained[0].name[0]"]
    assert content_flaws({"resourceType": "Patient", "name": [{"text": "Ann Smith"}]}) == []
