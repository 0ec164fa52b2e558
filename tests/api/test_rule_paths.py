"""The write rules on the paths that reach them less directly than a POST or PUT: the
``import`` command with directory XML files and FHIR Bundles (transaction, batch) and NDJSON,
a directory XML update, and an archived entry made live again (FHIR PUT of its RecordStatus
extension, directory XML RecordStatus).

Cases and expected outcomes:

- ``import`` of a directory XML file (an adult, a number a live entry holds): each record
  rejected with the rule (2007 Regulations quoted; "One live directory entry per NHS number"
  naming the holder), exit 1; of a transaction Bundle giving a held number: nothing applied,
  the rule named; of a batch Bundle with an adult: that entry rejected with the rule;
- ``import`` of resources the directory keeps otherwise (a narrative): the record's notes
  ("Not kept: Patient.text.") are printed with its number, for NDJSON and Bundle entries;
- ``import`` of an NDJSON Practitioner known only by a GMC number: created, then matched
  by it (a second import with another id form is unchanged) and keeps the number;
- a directory XML update giving an entry another live entry's NHS number: rejected naming
  the holder (HTTP and ``import``);
- an archived entry made live again, by FHIR PUT or directory XML, whose NHS number a live
  entry now holds: 409 / rejected naming that entry; whose person is outside the age rules:
  422 / rejected quoting the rule.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import update

from adapter import systems
from adapter.db import Database
from adapter.models import Child
from tests.api.conftest import Callers, fresh_nhs_number
from tests.api.test_patient import own_patient
from tests.api.test_patient_rules import (
    ONE_LIVE,
    REGULATIONS,
    D,
    batch_of,
    created_id,
    entry_template,
    live_with,
    managing,
    new_record,
    patient,
    years_ago,
)
from tests.security.helpers import invoke

NARRATIVE = {"status": "generated",
             "div": '<div xmlns="http://www.w3.org/1999/xhtml">Sent by a case system</div>'}


def nhs_number_of(resource: dict[str, Any]) -> str:
    """Return the NHS number of a Patient."""
    return str(next(i["value"] for i in resource["identifier"]
                    if i["system"] == systems.NHS_NUMBER))


def other_patient(client: FlaskClient, callers: Callers, not_id: str) -> dict[str, Any]:
    """Return another live, non-shielded Patient of the first authority with an NHS number."""
    bundle = client.get("/fhir/Patient?_count=100", headers=callers.admin).json
    for entry in bundle["entry"]:
        resource = entry["resource"]
        labels = {s["code"] for s in resource["meta"].get("security", [])}
        if resource["id"] != not_id and "R" not in labels and resource.get("active", True) \
                and resource["managingOrganization"]["identifier"]["value"] == callers.authority \
                and any(i["system"] == systems.NHS_NUMBER for i in resource["identifier"]):
            return copy.deepcopy(resource)
    raise AssertionError("no second suitable demo patient")


def archive(db: Database, resource_id: str, **values: Any) -> None:
    """Archive an entry (as the retention job does), setting ``values`` too."""
    with db.write_transaction() as session:
        session.execute(update(Child).where(Child.resource_id == resource_id)
                        .values(record_status="archived", **values))


# --- the import command ------------------------------------------------------------------------

def test_import_of_directory_xml_and_bundles_meets_the_entry_rules(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database,
        tmp_path: Path) -> None:
    """Directory XML through the command: the adult and the held number rejected, the good
    record created; a transaction giving a held number applies nothing; a batch with an
    adult rejects that entry and applies the other."""
    template = entry_template(client, callers)
    held = own_patient(client, callers)
    good = fresh_nhs_number(demo)
    adult = fresh_nhs_number(demo, {good})
    xml = tmp_path / "entries.xml"
    xml.write_bytes(batch_of(template, [new_record(template, adult, "1970-05-01"),
                                        new_record(template, good, years_ago(7)),
                                        new_record(template, nhs_number_of(held),
                                                   years_ago(5))]))
    result = invoke(app, "import", str(xml), "--quiet")
    assert result.exit_code == 1, result.output
    assert "record 1, line" in result.output and REGULATIONS in result.output
    assert f"Patient/{held['id']}" in result.output and ONE_LIVE in result.output
    assert live_with(demo, good) == 1 and live_with(demo, adult) == 0

    ref = managing(client, callers)
    fresh = fresh_nhs_number(demo, {good, adult})
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(ref, fresh), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient(ref, nhs_number_of(held)),
         "request": {"method": "POST", "url": "Patient"}}]}
    (tmp_path / "transaction.json").write_bytes(orjson.dumps(transaction))
    result = invoke(app, "import", str(tmp_path / "transaction.json"), "--quiet")
    assert result.exit_code == 1 and "nothing was applied" in result.output, result.output
    assert ONE_LIVE in result.output
    assert live_with(demo, fresh) == 0

    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(ref, fresh, "1970-05-01"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient(ref, fresh), "request": {"method": "POST", "url": "Patient"}}]}
    (tmp_path / "batch.json").write_bytes(orjson.dumps(batch))
    result = invoke(app, "import", str(tmp_path / "batch.json"), "--quiet")
    assert result.exit_code == 1, result.output
    assert "record 1:" in result.output and REGULATIONS in result.output
    assert live_with(demo, fresh) == 1


def test_import_reports_what_each_record_did_not_keep(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database,
        tmp_path: Path) -> None:
    """A narrative is not kept: the command says so once per file with how many records and
    the first (an NDJSON line, transaction entries), and the records are applied (exit 0)."""
    ref = managing(client, callers)
    first = fresh_nhs_number(demo)
    second = fresh_nhs_number(demo, {first})
    third = fresh_nhs_number(demo, {first, second})
    ndjson = tmp_path / "Patient.ndjson"
    ndjson.write_bytes(orjson.dumps(patient(ref, first, text=NARRATIVE)) + b"\n")
    result = invoke(app, "import", str(ndjson), "--quiet")
    assert result.exit_code == 0, result.output
    assert "Patient.ndjson: 1 record(s), first record 1, line 1: Not kept: Patient.text." in \
        result.output.splitlines()
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(ref, number, text=NARRATIVE),
         "request": {"method": "POST", "url": "Patient"}} for number in (second, third)]}
    (tmp_path / "transaction.json").write_bytes(orjson.dumps(transaction))
    result = invoke(app, "import", str(tmp_path / "transaction.json"), "--quiet")
    assert result.exit_code == 0, result.output
    assert "transaction.json: 2 record(s), first record 1: Not kept: Patient.text." in \
        result.output.splitlines()
    assert "Sent by a case system" not in result.output
    assert live_with(demo, first) == 1 and live_with(demo, second) == 1
    assert live_with(demo, third) == 1


def test_import_matches_a_practitioner_by_its_national_number(
        app: Flask, client: FlaskClient, callers: Callers, tmp_path: Path) -> None:
    """An NDJSON Practitioner known only by a GMC number is created and keeps it; the same
    practitioner imported again is matched by that number (unchanged), not created twice."""
    gmc = {"system": systems.GMC_NUMBER, "value": "7012345"}
    person = {"resourceType": "Practitioner", "identifier": [gmc],
              "name": [{"family": "Okafor", "given": ["Ada"]}]}
    path = tmp_path / "Practitioner.ndjson"
    path.write_bytes(orjson.dumps(person) + b"\n")
    result = invoke(app, "import", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 created" in result.output
    found = client.get(f"/fhir/Practitioner?identifier={gmc['system']}|{gmc['value']}",
                       headers=callers.la).json
    assert found["total"] == 1 if "total" in found else len(found["entry"]) == 1
    kept = found["entry"][0]["resource"]
    assert gmc in kept["identifier"]
    path.write_bytes(orjson.dumps({**person, "id": kept["id"]}) + b"\n")
    result = invoke(app, "import", str(path), "--quiet")
    assert result.exit_code == 0, result.output
    assert "0 created, 0 updated, 1 unchanged" in result.output
    again = client.get(f"/fhir/Practitioner?identifier={gmc['value']}", headers=callers.la)
    assert len(again.json["entry"]) == 1


# --- a directory XML update giving an entry another's number -----------------------------------

def test_directory_xml_update_to_a_held_number_is_rejected(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database,
        tmp_path: Path) -> None:
    """An entry sent back with another live entry's NHS number is rejected naming that entry,
    over HTTP and through the ``import`` command; the entry keeps its own number."""
    template = entry_template(client, callers)
    own = own_patient(client, callers)
    other = other_patient(client, callers, own["id"])
    template.find(f"{D}DirectoryEntry/{D}NhsNumber").text = nhs_number_of(other)
    body = bytes(etree.tostring(template))
    response = client.post("/directory/entries", data=body,
                           headers={**callers.la, "Content-Type": "application/xml"})
    assert response.status_code == 200, response.data[:600]
    report = etree.fromstring(response.data)
    assert report.findtext(f".//{D}Status") == "rejected"
    reason = report.find(f".//{D}Reason")
    assert ONE_LIVE in reason.text and f"Patient/{other['id']}" in reason.text
    assert reason.get("expression") == "DirectoryEntry/NhsNumber"
    (tmp_path / "entries.xml").write_bytes(body)
    result = invoke(app, "import", str(tmp_path / "entries.xml"), "--quiet")
    assert result.exit_code == 1 and f"Patient/{other['id']}" in result.output, result.output
    assert live_with(demo, nhs_number_of(own)) == 1
    assert live_with(demo, nhs_number_of(other)) == 1


# --- an archived entry made live again ------------------------------------------------------

def live_again(resource: dict[str, Any]) -> dict[str, Any]:
    """Return a Patient with its RecordStatus extension set to live."""
    changed = copy.deepcopy(resource)
    for extension in changed.get("extension", []):
        if extension["url"].endswith("RecordStatus"):
            extension["valueCode"] = "live"
    changed.pop("active", None)
    return changed


def test_an_archived_entry_made_live_meets_the_entry_rules(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """Archived, its NHS number given to a new live entry (allowed: one live entry per
    number), the entry cannot be made live again (FHIR PUT and directory XML): 409 naming the
    new holder; once the number is free again, an archived adult cannot be made live: 422
    quoting the 2007 Regulations."""
    own = own_patient(client, callers)
    template = entry_template(client, callers)
    number = nhs_number_of(own)
    archive(demo, own["id"])
    archived = client.get(f"/fhir/Patient/{own['id']}", headers=callers.admin).json
    assert any(e["url"].endswith("RecordStatus") and e["valueCode"] == "archived"
               for e in archived["extension"])
    newcomer = client.post("/fhir/Patient", json=patient(managing(client, callers), number),
                           headers={**callers.la, "Content-Type": "application/fhir+json"})
    holder = created_id(client, newcomer, callers.la)
    refused = client.put(f"/fhir/Patient/{own['id']}", json=live_again(archived),
                         headers={**callers.admin, "Content-Type": "application/fhir+json"})
    assert refused.status_code == 409, refused.json
    assert f"Patient/{holder}" in refused.json["issue"][0]["diagnostics"]
    entry = template.find(f"{D}DirectoryEntry")
    entry.attrib.pop("version", None)
    entry.find(f"{D}RecordStatus").text = "live"
    response = client.post("/directory/entries", data=etree.tostring(template),
                           headers={**callers.admin, "Content-Type": "application/xml"})
    reason = etree.fromstring(response.data).find(f".//{D}Reason")
    assert reason is not None and f"Patient/{holder}" in reason.text, response.data[:600]
    assert live_with(demo, number) == 1

    archive(demo, holder)
    archive(demo, own["id"], birth_date=dt.date(1970, 5, 1))
    adult = client.get(f"/fhir/Patient/{own['id']}", headers=callers.admin).json
    refused = client.put(f"/fhir/Patient/{own['id']}", json=live_again(adult),
                         headers={**callers.admin, "Content-Type": "application/fhir+json"})
    assert refused.status_code == 422, refused.json
    assert REGULATIONS in refused.json["issue"][0]["diagnostics"]
    assert refused.json["issue"][0]["expression"] == ["Patient.birthDate"]
    entry.find(f"{D}BirthDate").text = "1970-05-01"
    response = client.post("/directory/entries", data=etree.tostring(template),
                           headers={**callers.admin, "Content-Type": "application/xml"})
    reason = etree.fromstring(response.data).find(f".//{D}Reason")
    assert reason is not None and REGULATIONS in reason.text, response.data[:600]
    assert live_with(demo, number) == 0


def test_import_as_an_authoritys_system_implies_its_authority(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database,
        tmp_path: Path) -> None:
    """``import --as`` an authority's registered client: a Patient without
    ``managingOrganization`` is created under that authority, and the command says so; as
    the operator (a national client) it is rejected naming the element."""
    number = fresh_nhs_number(demo)
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(orjson.dumps(patient(None, number)) + b"\n")
    refused = invoke(app, "import", str(path), "--quiet")
    assert refused.exit_code == 1 and "Patient.managingOrganization" in refused.output
    result = invoke(app, "import", str(path), "--quiet", "--as", "la-one")
    assert result.exit_code == 0, result.output
    assert f"managed by your authority ({callers.authority})" in result.output
    found = client.get(f"/fhir/Patient?identifier={systems.NHS_NUMBER}|{number}",
                       headers=callers.la).json["entry"][0]["resource"]
    assert found["managingOrganization"]["identifier"]["value"] == callers.authority
