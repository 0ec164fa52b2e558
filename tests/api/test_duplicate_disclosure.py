"""A refused write whose 409 names the live entry holding an NHS number tells the caller which
child's entry that is: the answer is audited as ``duplicate-refused`` (outcome 4) against
that child, exactly once, on every write path that can name it (docs/domain.md "Who used it";
``adapter.security.audit.record_duplicate``).

Paths, from the write routes and the import paths that apply Patients: POST (JSON and XML),
PUT onto another entry, a transaction Bundle (rolled back whole), a batch Bundle entry, a
directory XML batch by HTTP, the ``import`` command with an NDJSON file and with a directory
XML file. A shielded holder not named to the caller is recorded too, as not named; a
duplicate within one batch (no stored entry) records nothing, and a conditional create
answered with the existing entry nothing beside the read of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import func, select

from adapter import systems
from adapter.db import Database
from adapter.fhir.xml import dumps_resource
from adapter.models import AuditRecord
from adapter.security.audit import DUPLICATE
from tests.api.conftest import Callers, fresh_nhs_number
from tests.api.test_patient_rules import (
    batch_of,
    created_id,
    entry_template,
    managing,
    new_record,
    patient,
    shielded_with_nhs_number,
    years_ago,
)
from tests.security.helpers import invoke


def disclosures(db: Database, holder: str) -> list[tuple[str, str, str]]:
    """Return (action, outcome, client) of the duplicate-refused records naming ``holder``."""
    return [row[:3] for row in recorded(db, holder)]


def recorded(db: Database, holder: str) -> list[tuple[str, str, str, str]]:
    """Return (action, outcome, client, detail) of the duplicate-refused records of
    ``holder``, oldest first."""
    with db.sessions() as session:
        return [tuple(row) for row in session.execute(
            select(AuditRecord.action, AuditRecord.outcome, AuditRecord.client_id,
                   AuditRecord.detail)
            .where(AuditRecord.action == DUPLICATE, AuditRecord.child_ref == holder,
                   AuditRecord.resource_id == holder).order_by(AuditRecord.id))]


def total(db: Database) -> int:
    """Return how many duplicate-refused records there are."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(AuditRecord)
                                  .where(AuditRecord.action == DUPLICATE)) or 0)


def held_entry(client: FlaskClient, callers: Callers, demo: Database
               ) -> tuple[dict[str, Any], str]:
    """Create an entry with a fresh NHS number; return a Patient repeating it and its id."""
    body = patient(managing(client, callers), fresh_nhs_number(demo))
    holder = created_id(client, client.post("/fhir/Patient", json=body, headers=callers.la),
                        callers.la)
    return body, holder


def test_rest_writes_record_the_named_entry_once(client: FlaskClient, callers: Callers,
                                                 demo: Database) -> None:
    """POST in JSON and in XML and a PUT giving another entry the number: each 409 names the
    holder and leaves one record of it, with the caller and outcome 4."""
    body, holder = held_entry(client, callers, demo)
    assert client.post("/fhir/Patient", json=body, headers=callers.la).status_code == 409
    assert disclosures(demo, holder) == [(DUPLICATE, "4", "la-one")]
    xml = client.post("/fhir/Patient", data=dumps_resource(body), headers={
        **callers.la, "Content-Type": "application/fhir+xml"})
    assert xml.status_code == 409 and f"Patient/{holder}".encode() in xml.data
    assert len(disclosures(demo, holder)) == 2
    other = client.get("/fhir/Patient?_count=1&_sort=-_lastUpdated", headers=callers.admin)
    target = next(e["resource"] for e in other.json["entry"] if e["resource"]["id"] != holder)
    target["identifier"] = [i for i in target.get("identifier", [])
                            if i["system"] != systems.NHS_NUMBER] + [
        {"system": systems.NHS_NUMBER, "value": next(
            i["value"] for i in body["identifier"] if i["system"] == systems.NHS_NUMBER)}]
    put = client.put(f"/fhir/Patient/{target['id']}", json=target, headers=callers.admin)
    assert put.status_code == 409 and f"Patient/{holder}" in put.text
    assert len(disclosures(demo, holder)) == 3


def test_bundles_record_the_named_entry_once(client: FlaskClient, callers: Callers,
                                             demo: Database) -> None:
    """A transaction that fails on the duplicate (rolled back whole) and a batch whose entry
    is refused: one record each; a conditional create answered with the entry: none."""
    body, holder = held_entry(client, callers, demo)
    entry = {"resource": body, "request": {"method": "POST", "url": "Patient"}}
    for kind, status in (("transaction", 409), ("batch", 200)):
        response = client.post("/fhir", json={"resourceType": "Bundle", "type": kind,
                                              "entry": [entry]}, headers=callers.la)
        assert response.status_code == status, response.json
    assert len(disclosures(demo, holder)) == 2
    conditional = {"resource": body, "request": {"method": "POST", "url": "Patient",
                                                 "ifNoneExist": "family=NoSuchFamilyName"}}
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": [conditional]}, headers=callers.la)
    assert response.status_code == 200, response.json
    response = client.post("/fhir/Patient", json=body, headers={
        **callers.la, "If-None-Exist": "family=NoSuchFamilyName"})
    assert response.status_code == 200
    assert len(disclosures(demo, holder)) == 2


def test_a_shielded_holder_not_named_is_still_recorded(client: FlaskClient, callers: Callers,
                                                        demo: Database) -> None:
    """A shielded holder is not named to a caller without the right, but the 409 still tells
    that caller the number is a live child's: recorded against the child, its detail saying
    the entry was not named; the administrator, who is told which, is recorded as named."""
    shielded = shielded_with_nhs_number(client, callers)
    number = next(i["value"] for i in shielded["identifier"] if i["system"] == systems.NHS_NUMBER)
    body = patient(managing(client, callers), number)
    response = client.post("/fhir/Patient", json=body, headers=callers.la)
    assert response.status_code == 409 and shielded["id"] not in response.text
    assert client.post("/fhir/Patient", json=body, headers=callers.admin).status_code == 409
    (la, admin) = recorded(demo, shielded["id"])
    assert la[:3] == (DUPLICATE, "4", "la-one") and "not which" in la[3]
    assert admin[2] != "la-one" and "was named" in admin[3]


def test_a_duplicate_within_one_batch_names_no_stored_entry(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """Two records of one batch with the same new NHS number: the second is refused naming
    its position, no stored entry, so no child's record is written for it."""
    body = patient(managing(client, callers), fresh_nhs_number(demo))
    template = entry_template(client, callers)
    number = next(i["value"] for i in body["identifier"] if i["system"] == systems.NHS_NUMBER)
    before = total(demo)
    batch = batch_of(template, [new_record(template, number, years_ago(5)),
                                new_record(template, number, years_ago(5))])
    response = client.post("/directory/entries", data=batch,
                           headers={**callers.la, "Content-Type": "application/xml"})
    assert response.status_code == 200 and b"position 1" in response.data
    assert total(demo) == before


def test_imports_record_the_named_entry_once(app: Flask, client: FlaskClient,
                                             callers: Callers, demo: Database,
                                             tmp_path: Path) -> None:
    """A directory XML batch by HTTP, and the ``import`` command with NDJSON and with
    directory XML: each record refused for the holder's number is recorded once; the rest
    of the batch goes on."""
    body, holder = held_entry(client, callers, demo)
    number = next(i["value"] for i in body["identifier"] if i["system"] == systems.NHS_NUMBER)
    template = entry_template(client, callers)
    batch = batch_of(template, [new_record(template, number, years_ago(5)),
                                new_record(template, fresh_nhs_number(demo), years_ago(6))])
    response = client.post("/directory/entries", data=batch,
                           headers={**callers.la, "Content-Type": "application/xml"})
    assert response.status_code == 200 and f"Patient/{holder}".encode() in response.data
    assert len(disclosures(demo, holder)) == 1
    ndjson = tmp_path / "Patient.ndjson"
    ndjson.write_bytes(orjson.dumps(body) + b"\n")
    assert invoke(app, "import", str(ndjson), "--quiet").exit_code == 1
    assert len(disclosures(demo, holder)) == 2
    xml = tmp_path / "entries.xml"
    xml.write_bytes(batch_of(template, [new_record(template, number, years_ago(5))]))
    assert invoke(app, "import", str(xml), "--quiet").exit_code == 1
    found = disclosures(demo, holder)
    assert len(found) == 3 and {outcome for _, outcome, _ in found} == {"4"}


def test_the_record_is_an_audit_event(client: FlaskClient, callers: Callers,
                                      demo: Database) -> None:
    """The auditor sees it as an AuditEvent of the child: a RESTful event, action R (what
    the caller learnt), outcome 4, subtype ``duplicate-refused``."""
    body, holder = held_entry(client, callers, demo)
    assert client.post("/fhir/Patient", json=body, headers=callers.la).status_code == 409
    bundle = client.get(f"/fhir/AuditEvent?patient=Patient/{holder}&subtype={DUPLICATE}",
                        headers=callers.admin)
    assert bundle.status_code == 200, bundle.json
    events = [e["resource"] for e in bundle.json.get("entry", [])]
    assert len(events) == 1, events
    event = events[0]
    assert event["action"] == "R" and event["outcome"] == "4"
    assert DUPLICATE in {c.get("code") for c in event.get("subtype", [])}
    assert etree.fromstring(client.get(
        f"/fhir/AuditEvent/{event['id']}", headers={
            **callers.admin, "Accept": "application/fhir+xml"}).data) is not None
