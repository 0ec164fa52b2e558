"""Property: whatever hostile-but-plausible record a caller writes (control characters, empty
or white-space names, nulls, empty objects, dates in the future or at the edges, long strings,
any Unicode), through every inbound dialect — FHIR JSON, FHIR XML, a transaction Bundle, an
NDJSON file through the import, directory XML — the gateway either refuses it with a 4xx (or
a rejected record) naming where, or what it stored renders and validates: the gateway's own
``$validate``, FHIR JSON through fhir.resources, FHIR XML against the official R4 schema and
directory XML against the gateway's XSD. Bounded (a few examples per dialect) to stay fast."""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import select

from adapter.db import Database
from adapter.directory.schema import ENTRY_XSD, NS, load_schema
from adapter.fhir.xml import dumps_resource
from adapter.models import Child
from tests.api.conftest import Callers
from tests.api.test_patient import own_patient
from tests.fhir_validity import r4_schema, r4b_model, xsd_errors
from tests.test_cli_import_export import invoke

TODAY = dt.date.today()
EDGE_TEXTS = ["", " ", "\t\n", "\u0000", "Ann\u0001e", "\u000bX", "\ufffe", "\uffff", "\u00a0",
              "\u200b", "Zoë", "O'Brien", "Łukasz-Ørsted", "A" * 35, "A" * 36, "B" * 300,
              "日本", "\U0001f600", "  padded  ", "Ann\nSmith"]
PLAUSIBLE = st.text(st.sampled_from(list("AaBbCcÉéßøŁ-' ")), min_size=1, max_size=14)
TEXTS = st.one_of(PLAUSIBLE, st.sampled_from(EDGE_TEXTS),
                  st.text(st.characters(codec="utf-8"), max_size=40))
VALUES = st.one_of(TEXTS, st.none(), st.just({}), st.just([]))
DATES = st.one_of(
    st.dates(dt.date(1900, 1, 1), dt.date(2199, 12, 31)).map(dt.date.isoformat),
    st.sampled_from([TODAY.isoformat(), (TODAY + dt.timedelta(days=1)).isoformat(),
                     str(TODAY.year + 1), f"{TODAY.year}-{TODAY.month:02d}", "2020-02-29",
                     "2019-02-29", "0001-01-01"]))
Change = Callable[[dict[str, Any]], None]


def _set(path: tuple[Any, ...], value: Any) -> Change:
    """Return a change setting the element at ``path`` (keys and indexes) to ``value``."""
    def change(resource: dict[str, Any]) -> None:
        node: Any = resource
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    return change


CHANGES: st.SearchStrategy[Change] = st.one_of(
    VALUES.map(lambda v: _set(("name", 0, "family"), v)),
    st.lists(VALUES, max_size=7).map(lambda v: _set(("name", 0, "given"), v)),
    st.sampled_from([[], [{}], [{"use": "usual"}], None]).map(lambda v: _set(("name",), v)),
    st.one_of(DATES, VALUES).map(lambda v: _set(("birthDate",), v)),
    VALUES.map(lambda v: _set(("gender",), v)),
    st.sampled_from([{}, None, {"tag": []}]).map(lambda v: _set(("meta",), v)),
    VALUES.map(lambda v: _set(("address",), [{"line": [v], "postalCode": "SW1A 1AA"}])),
    VALUES.map(lambda v: _set(("telecom",), [{"system": "phone", "value": v}])),
)


# The defects as once found, always among the examples: U+0001 and U+0000 in a name, no name,
# a null, an empty meta, a birth date in the future.
DEFECTS: list[list[Change]] = [
    [_set(("name", 0, "family"), "Ann\u0001e")], [_set(("name", 0, "given"), ["\u0000"])],
    [_set(("name",), [])], [_set(("gender",), None), _set(("meta",), {})],
    [_set(("birthDate",), (TODAY + dt.timedelta(days=30)).isoformat())],
]


def with_defects(test: Any) -> Any:
    """Add the ``DEFECTS`` as explicit examples of a property."""
    for changes in DEFECTS:
        test = example(changes)(test)
    return test


def hostile(base: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
    """Return ``base`` with ``changes`` applied."""
    resource = copy.deepcopy(base)
    for change in changes:
        change(resource)
    return resource


def new_patient(client: FlaskClient, callers: Callers) -> dict[str, Any]:
    """Return a demo Patient to create anew (the gateway allocates its ContactPoint ID)."""
    patient = own_patient(client, callers)
    for key in ("id", "meta", "identifier"):
        patient.pop(key, None)
    return patient


def renders_and_validates(client: FlaskClient, headers: dict[str, str], patient_id: str) -> None:
    """Assert the stored child renders and validates in every outbound dialect."""
    read = client.get(f"/fhir/Patient/{patient_id}", headers=headers)
    assert read.status_code == 200, read.json
    resource = read.json
    r4b_model(resource)
    outcome = client.post("/fhir/Patient/$validate", json=resource, headers=headers).json
    assert not [i for i in outcome["issue"] if i["severity"] == "error"], outcome
    xml = client.get(f"/fhir/Patient/{patient_id}?_format=xml", headers=headers)
    assert xml.status_code == 200 and xsd_errors(r4_schema(), xml.data) == []
    cpid = next(i["value"] for i in resource["identifier"]
                if i["system"].endswith("/contactpoint-id"))
    entry = client.get(f"/directory/entries/{cpid}", headers=headers)
    assert entry.status_code == 200
    load_schema(ENTRY_XSD).assertValid(etree.fromstring(entry.data))


def refused_with_path(response: Any) -> None:
    """Assert a 4xx OperationOutcome naming an element."""
    assert 400 <= response.status_code < 500, response.json
    issue = response.json["issue"][0]
    assert issue["severity"] == "error" and issue.get("expression"), issue


def created_id(response: Any) -> str:
    """Return the Patient id of a create's Location."""
    found = re.search(r"/Patient/([^/]+)/_history", response.headers["Location"])
    assert found is not None
    return found.group(1)


def write_json(client: FlaskClient, headers: dict[str, str], patient: dict[str, Any]) -> None:
    """FHIR JSON: POST /fhir/Patient."""
    response = client.post("/fhir/Patient", data=orjson.dumps(patient),
                           headers={**headers, "Content-Type": "application/fhir+json"})
    if response.status_code == 201:
        renders_and_validates(client, headers, created_id(response))
    else:
        refused_with_path(response)


def write_xml(client: FlaskClient, headers: dict[str, str], patient: dict[str, Any]) -> None:
    """FHIR XML: POST /fhir/Patient (what FHIR XML cannot even carry is not sent)."""
    try:
        body = dumps_resource(patient)
    except (ValueError, TypeError, AttributeError):
        return
    response = client.post("/fhir/Patient", data=body,
                           headers={**headers, "Content-Type": "application/fhir+xml"})
    if response.status_code == 201:
        renders_and_validates(client, headers, created_id(response))
    else:
        assert 400 <= response.status_code < 500, response.json
        assert response.json["resourceType"] == "OperationOutcome"


def write_transaction(client: FlaskClient, headers: dict[str, str],
                      patient: dict[str, Any]) -> None:
    """A transaction Bundle of one create."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient, "request": {"method": "POST", "url": "Patient"}}]}
    response = client.post("/fhir", data=orjson.dumps(bundle),
                           headers={**headers, "Content-Type": "application/fhir+json"})
    if response.status_code == 200:
        location = response.json["entry"][0]["response"]["location"]
        renders_and_validates(client, headers, location.split("/Patient/")[1].split("/")[0])
    else:
        refused_with_path(response)


DIALECTS = {"fhir-json": write_json, "fhir-xml": write_xml, "transaction": write_transaction}


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_fhir_writes_are_refused_or_render(client: FlaskClient, callers: Callers,
                                           demo: Database, dialect: str) -> None:
    """FHIR JSON, FHIR XML and transaction writes of hostile Patients."""
    base = new_patient(client, callers)

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(CHANGES, min_size=1, max_size=3))
    @with_defects
    def check(changes: list[Change]) -> None:
        DIALECTS[dialect](client, callers.admin, hostile(base, changes))

    check()


def test_ndjson_import_rejects_or_stores_renderable(app: Flask, client: FlaskClient,
                                                    callers: Callers, demo: Database,
                                                    tmp_path: Path) -> None:
    """NDJSON through the import: each line is rejected with its line and path, or what was
    stored renders and validates."""
    base = new_patient(client, callers)
    counter = iter(range(10_000))

    @settings(max_examples=10, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(CHANGES, min_size=1, max_size=3))
    @with_defects
    def check(changes: list[Change]) -> None:
        path = tmp_path / f"{next(counter)}.ndjson"
        path.write_bytes(orjson.dumps(hostile(base, changes)) + b"\n")
        before = newest_child(demo)
        result = invoke(app, "import", str(path), "--quiet")
        if result.exit_code == 0:
            created = newest_child(demo)
            assert created != before
            renders_and_validates(client, callers.admin, created)
        else:
            assert result.exit_code == 1, result.output
            assert re.search(r"record 1, line 1: .+ \[\S+\]", result.output), result.output

    check()


def newest_child(db: Database) -> str:
    """Return the FHIR id of the child stored last."""
    with db.sessions() as session:
        found = session.scalar(select(Child.resource_id).order_by(Child.id.desc()).limit(1))
    assert found is not None
    return found


DIRECTORY_TEXTS = st.one_of(PLAUSIBLE, st.sampled_from(EDGE_TEXTS))


def _directory_change(tag: str, text: str) -> Callable[[etree._Element], bool]:
    """Return a change setting the first ``tag`` element's text; False when XML cannot
    carry the text (such a document cannot be sent at all)."""
    def change(root: etree._Element) -> bool:
        element = root.find(f".//{{{NS}}}{tag}")
        if element is None:
            return True
        try:
            element.text = text
        except ValueError:
            return False
        return True
    return change


DIRECTORY_CHANGES = st.one_of(
    DIRECTORY_TEXTS.map(lambda t: _directory_change("PersonFamilyName", t)),
    DIRECTORY_TEXTS.map(lambda t: _directory_change("PersonGivenName", t)),
    DATES.map(lambda d: _directory_change("BirthDate", d)),
    DIRECTORY_TEXTS.map(lambda t: _directory_change("TelephoneNumber", t)),
    DIRECTORY_TEXTS.map(lambda t: _directory_change("StreetDescription", t)),
)


def test_directory_xml_rejects_or_stores_renderable(client: FlaskClient, callers: Callers,
                                                    demo: Database) -> None:
    """``POST /directory/entries`` of a hostile entry: rejected in the report with its
    path, or the stored child renders and validates in every dialect."""
    bundle = client.get("/fhir/Patient?_count=1", headers=callers.admin).json
    first = bundle["entry"][0]["resource"]
    cpid = next(i["value"] for i in first["identifier"]
                if i["system"].endswith("/contactpoint-id"))
    original = client.get(f"/directory/entries/{cpid}", headers=callers.admin).data

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(DIRECTORY_CHANGES, min_size=1, max_size=3))
    def check(changes: list[Callable[[etree._Element], bool]]) -> None:
        root = etree.fromstring(original)
        if not all(change(root) for change in changes):
            return
        response = client.post("/directory/entries", data=etree.tostring(root),
                               headers={**callers.admin, "Content-Type": "application/xml"})
        assert response.status_code == 200, response.data[:400]
        record = etree.fromstring(response.data).find(f".//{{{NS}}}Record")
        assert record is not None
        if record.findtext(f"{{{NS}}}Status") == "rejected":
            reason = record.find(f"{{{NS}}}Reason")
            assert reason is not None and reason.get("expression"), etree.tostring(record)
        else:
            renders_and_validates(client, callers.admin, first["id"])

    check()
