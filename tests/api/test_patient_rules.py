"""The directory's rules on every Patient write path (POST, PUT, conditional create, transaction
and batch entries, JSON and XML, directory XML import, the ``import`` command): the managing
authority an authority's system may leave out, one live entry per NHS number (in the database
too), and the age rules of the 2007 Regulations (docs/domain.md "The directory entry",
"Retention").

Cases and expected outcomes:

- an authority's system POSTs a Patient without ``managingOrganization``: 201, its authority
  manages it; a national client (administrator) or a client of an organisation that is not a
  local authority: 422 naming ``Patient.managingOrganization``, nothing stored;
- a second create with an NHS number a live entry holds: 409 naming that entry (POST, PUT
  onto another entry, transaction entry, batch entry, directory XML record); with
  ``If-None-Exist`` the existing entry is the answer (200); a shielded holder is not named to
  a caller without the shielding right (and ``If-None-Exist`` does not answer with it); two
  concurrent creates: one 201, one 409 naming the winner; the database's index refuses a
  second live entry with the number and allows an archived one;
- a person outside the age rules (an adult born 1970, 25 or over with extended retention,
  died more than a year ago, born in the future): 422 quoting the rule and citing the 2007
  Regulations, in JSON, XML, a transaction, a directory XML import (the record rejected with
  its position, the batch goes on) and the ``import`` command; a care leaver aged 20 with
  extended retention is accepted.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from adapter import identifiers, systems
from adapter.db import Database
from adapter.directory.schema import NS as DIRECTORY_NS
from adapter.fhir.xml import dumps_resource
from adapter.models import Child
from adapter.retention import add_years
from adapter.wellformed import today_in_england
from tests.api.conftest import Callers, bearer, fresh_nhs_number
from tests.api.test_patient import own_patient
from tests.security.helpers import invoke

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
REGULATIONS = "Information Database (England) Regulations 2007"
ONE_LIVE = "One live directory entry per NHS number"
D = "{" + DIRECTORY_NS + "}"


def years_ago(years: int, days: int = 0) -> str:
    """Return the date ``years`` years and ``days`` days before today in England."""
    return (add_years(today_in_england(), -years) - dt.timedelta(days=days)).isoformat()


def patient(managing: dict[str, Any] | None, nhs_number: str | None,
            birth: str | None = None, **extra: Any) -> dict[str, Any]:
    """Return a new Patient as another system sends it (no ContactPoint ID)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient", "gender": "female", "birthDate": birth or years_ago(6),
        "name": [{"use": "official", "family": "Rulewright", "given": ["Tess"]}], **extra}
    if nhs_number:
        resource["identifier"] = [{"system": systems.NHS_NUMBER, "value": nhs_number}]
    if managing is not None:
        resource["managingOrganization"] = managing
    return resource


def managing(client: FlaskClient, callers: Callers) -> dict[str, Any]:
    """Return the first authority's ``managingOrganization`` as the gateway writes it."""
    reference: dict[str, Any] = own_patient(client, callers)["managingOrganization"]
    return reference


def created_id(client: FlaskClient, response: Any, headers: dict[str, str]) -> str:
    """Return the id of the Patient a 201 created (read back from its Location)."""
    assert response.status_code == 201, response.data[:800]
    read = client.get(response.headers["Location"], headers=headers)
    assert read.status_code == 200
    return str(read.json["id"])


def diagnostics(response: Any) -> str:
    """Return the diagnostics of an OperationOutcome answer, joined."""
    assert response.json["resourceType"] == "OperationOutcome", response.json
    return " ".join(i.get("diagnostics", "") for i in response.json["issue"])


def live_with(db: Database, nhs_number: str) -> int:
    """Return how many live entries hold ``nhs_number``."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count(Child.id)).where(
            Child.nhs_number == nhs_number, Child.record_status == "live")) or 0)


# --- the managing authority ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_an_authoritys_system_may_leave_the_managing_authority_out(
        client: FlaskClient, callers: Callers, demo: Database, fmt: str) -> None:
    """An authority's own system: the entry is its authority's, and the answer says so."""
    body = patient(None, fresh_nhs_number(demo))
    data, kind = (orjson.dumps(body), FHIR_JSON) if fmt == "json" else \
        (dumps_resource(body), FHIR_XML)
    response = client.post("/fhir/Patient", data=data, headers={
        **callers.la, "Content-Type": kind, "Prefer": "return=OperationOutcome"})
    assert response.status_code == 201, response.data[:800]
    note = next(i for i in response.json["issue"]
                if i.get("expression") == ["Patient.managingOrganization"])
    assert note["severity"] == "information" and callers.authority in note["diagnostics"]
    stored = client.get(response.headers["Location"], headers=callers.la).json
    assert stored["managingOrganization"]["identifier"]["value"] == callers.authority


def test_an_update_without_the_managing_authority_keeps_it(client: FlaskClient,
                                                          callers: Callers) -> None:
    """A PUT that leaves ``managingOrganization`` out (from any writer) keeps the entry's.
    (The body claims UK Core, as other systems send it: this server's own Patient profile,
    which the read claims, requires the element.)"""
    stored = own_patient(client, callers)
    stored.pop("managingOrganization")
    stored["meta"] = {"profile": [
        "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]}
    stored["gender"] = "unknown" if stored["gender"] != "unknown" else "male"
    response = client.put(f"/fhir/Patient/{stored['id']}", json=stored, headers=callers.admin)
    assert response.status_code == 200, response.json
    current = client.get(f"/fhir/Patient/{stored['id']}", headers=callers.admin).json
    assert current["managingOrganization"]["identifier"]["value"] == callers.authority
    assert current["gender"] == stored["gender"]


def test_a_national_client_must_name_the_managing_authority(
        client: FlaskClient, app: Flask, callers: Callers, demo: Database) -> None:
    """The national directory team (administrator) and a system of an organisation that is
    not a local authority: 422 naming the element, nothing stored; in a transaction too."""
    nhs_number = fresh_nhs_number(demo)
    trust = bearer(client, app, "trust-system", "RR8")
    for headers in (callers.admin, trust):
        response = client.post("/fhir/Patient", json=patient(None, nhs_number),
                               headers=headers)
        assert response.status_code == 422, response.json
        assert response.json["issue"][0]["expression"] == ["Patient.managingOrganization"]
        assert "managingOrganization" in diagnostics(response)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": patient(None, nhs_number), "request": {"method": "POST", "url": "Patient"}}]}
    response = client.post("/fhir", json=bundle, headers=callers.admin)
    assert response.status_code == 422, response.json
    assert response.json["issue"][0]["expression"] == \
        ["Bundle.entry[0].resource.managingOrganization"]
    assert live_with(demo, nhs_number) == 0


# --- one live entry per NHS number ---------------------------------------------------------

def test_a_second_create_is_409_naming_the_existing_entry(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """POST the same Patient twice: 201 then 409 naming the first entry and the rule; with
    If-None-Exist (any condition that does not match) the first entry is the answer."""
    nhs_number = fresh_nhs_number(demo)
    body = patient(managing(client, callers), nhs_number)
    first = created_id(client, client.post("/fhir/Patient", json=body, headers=callers.la),
                       callers.la)
    again = client.post("/fhir/Patient", json=body, headers=callers.la)
    assert again.status_code == 409, again.json
    assert again.json["issue"][0]["code"] == "conflict"
    assert f"Patient/{first}" in diagnostics(again) and ONE_LIVE in diagnostics(again)
    assert "nhs-number" in again.json["issue"][0]["expression"][0]
    answered = client.post("/fhir/Patient", json=body, headers={
        **callers.la, "If-None-Exist": "family=NoSuchFamilyName"})
    assert answered.status_code == 200, answered.json
    assert answered.json["id"] == first
    by_number = client.post("/fhir/Patient", json=body, headers={
        **callers.la, "If-None-Exist": f"identifier={systems.NHS_NUMBER}|{nhs_number}"})
    assert by_number.status_code == 200 and by_number.json["id"] == first
    assert live_with(demo, nhs_number) == 1


def test_put_giving_another_entry_the_number_is_409(client: FlaskClient, callers: Callers,
                                                    demo: Database) -> None:
    """An update that would give a second live entry a held NHS number: 409 naming the
    holder; the entry is unchanged."""
    nhs_number = fresh_nhs_number(demo)
    holder = created_id(client, client.post(
        "/fhir/Patient", json=patient(managing(client, callers), nhs_number),
        headers=callers.la), callers.la)
    other = own_patient(client, callers)
    before = other["meta"]["versionId"]
    other["identifier"] = [i for i in other["identifier"]
                           if i["system"] != systems.NHS_NUMBER] + \
        [{"system": systems.NHS_NUMBER, "value": nhs_number}]
    response = client.put(f"/fhir/Patient/{other['id']}", json=other, headers=callers.admin)
    assert response.status_code == 409, response.json
    assert f"Patient/{holder}" in diagnostics(response)
    current = client.get(f"/fhir/Patient/{other['id']}", headers=callers.admin).json
    assert current["meta"]["versionId"] == before


def shielded_with_nhs_number(client: FlaskClient, callers: Callers) -> dict[str, Any]:
    """Return a shielded demo Patient with an NHS number, as the administrator sees it."""
    bundle = client.get("/fhir/Patient?_count=100", headers=callers.admin).json
    for entry in bundle["entry"]:
        resource = entry["resource"]
        labels = {s["code"] for s in resource["meta"].get("security", [])}
        numbers = [i for i in resource.get("identifier", []) if i["system"] == systems.NHS_NUMBER]
        if "R" in labels and numbers:
            return copy.deepcopy(resource)
    raise AssertionError("no shielded demo patient with an NHS number")


def test_a_shielded_holder_is_named_only_to_callers_with_the_right(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A create with a shielded child's NHS number from a caller without the shielding right:
    409 naming the rule but not the entry (If-None-Exist does not answer with it either);
    the caller with the right is told which entry it is."""
    shielded = shielded_with_nhs_number(client, callers)
    number = next(i["value"] for i in shielded["identifier"] if i["system"] == systems.NHS_NUMBER)
    body = patient(managing(client, callers), number)
    for headers in (callers.la, {**callers.la, "If-None-Exist": "family=NoSuchFamilyName"}):
        response = client.post("/fhir/Patient", json=body, headers=headers)
        assert response.status_code == 409, response.json
        text_ = diagnostics(response)
        assert ONE_LIVE in text_ and shielded["id"] not in text_ and "Patient/" not in text_
    response = client.post("/fhir/Patient", json=body, headers=callers.admin)
    assert response.status_code == 409 and f"Patient/{shielded['id']}" in diagnostics(response)
    assert live_with(demo, number) == 1


def test_two_concurrent_creates_one_wins(app: Flask, client: FlaskClient, callers: Callers,
                                         demo: Database) -> None:
    """Two systems create the same child at once, each on its own connection: one 201, the
    other 409 naming the winner; one live entry."""
    nhs_number = fresh_nhs_number(demo)
    body = patient(managing(client, callers), nhs_number)
    barrier = threading.Barrier(2)

    def post(_: int) -> tuple[int, Any]:
        """POST the Patient once both clients are ready."""
        own = app.test_client()
        barrier.wait()
        response = own.post("/fhir/Patient", json=body, headers=callers.la)
        return response.status_code, response

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = sorted(pool.map(post, range(2)), key=lambda answer: answer[0])
    assert [status for status, _ in answers] == [201, 409], answers
    winner = created_id(client, answers[0][1], callers.la)
    assert f"Patient/{winner}" in diagnostics(answers[1][1])
    assert live_with(demo, nhs_number) == 1


def test_the_database_refuses_a_second_live_entry(demo: Database) -> None:
    """The partial unique index (migration 0011): a second live entry with an NHS number is
    refused by the database itself, an archived one is not."""
    with demo.sessions() as session:
        first, second = session.execute(select(Child.id, Child.nhs_number).where(
            Child.nhs_number.is_not(None), Child.record_status == "live")
            .order_by(Child.id).limit(2)).all()
    give = text("UPDATE child SET nhs_number = :nhs WHERE id = :id")
    with pytest.raises(IntegrityError), demo.engine.begin() as connection:
        connection.execute(give, {"nhs": first.nhs_number, "id": second.id})
    with demo.engine.begin() as connection:
        connection.execute(text("UPDATE child SET record_status = 'archived' WHERE id = :id"),
                           {"id": second.id})
        connection.execute(give, {"nhs": first.nhs_number, "id": second.id})
    assert live_with(demo, first.nhs_number) == 1


def test_transaction_and_batch_entries_meet_the_rule(client: FlaskClient, callers: Callers,
                                                     demo: Database) -> None:
    """A transaction creating two entries with one NHS number fails whole (409 naming the
    entry); in a batch the second entry is 409 and the first created; a conditional create
    entry (ifNoneExist) answers with the existing entry."""
    nhs_number = fresh_nhs_number(demo)
    body = patient(managing(client, callers), nhs_number)
    entries = [{"resource": body, "request": {"method": "POST", "url": "Patient"}}] * 2
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": entries}, headers=callers.la)
    assert response.status_code == 409, response.json
    assert ONE_LIVE in diagnostics(response)
    assert live_with(demo, nhs_number) == 0
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch",
                                          "entry": entries}, headers=callers.la)
    assert response.status_code == 200, response.json
    first, second = response.json["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"].startswith("409")
    holder = first["response"]["location"].split("/")[-3]
    assert f"Patient/{holder}" in orjson.dumps(second["response"]["outcome"]).decode()
    conditional = {"resource": body, "request": {"method": "POST", "url": "Patient",
                                                 "ifNoneExist": "family=NoSuchFamilyName"}}
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": [conditional]}, headers=callers.la)
    assert response.status_code == 200, response.json
    assert response.json["entry"][0]["response"]["location"].split("/")[-3] == holder
    assert live_with(demo, nhs_number) == 1


# --- the age rules -------------------------------------------------------------------------

@pytest.mark.parametrize(("birth", "extra", "expression", "words"), [
    ("1970-05-01", {}, "Patient.birthDate", "18 or older"),
    (years_ago(25, 3), {"extension": "care-leaver"}, "Patient.birthDate", "25 or older"),
    (years_ago(9), {"deceasedDateTime": years_ago(2)}, "Patient.deceasedDateTime",
     "more than a year ago"),
    ((today_in_england() + dt.timedelta(days=30)).isoformat(), {}, "Patient.birthDate",
     "future"),
])
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_person_outside_the_age_rules_is_refused(
        client: FlaskClient, app: Flask, callers: Callers, demo: Database, birth: str,
        extra: dict[str, Any], expression: str, words: str, fmt: str) -> None:
    """422 naming the element and quoting the rule with its source; nothing stored."""
    nhs_number = fresh_nhs_number(demo)
    body = patient(managing(client, callers), nhs_number, birth, **_extras(app, extra))
    data, kind = (orjson.dumps(body), FHIR_JSON) if fmt == "json" else \
        (dumps_resource(body), FHIR_XML)
    response = client.post("/fhir/Patient", data=data,
                           headers={**callers.la, "Content-Type": kind})
    assert response.status_code == 422, response.json
    assert words in diagnostics(response)
    assert response.json["issue"][0]["expression"] == [expression]
    if words != "future":  # the future is refused as malformed, before the rule is quoted
        assert REGULATIONS in diagnostics(response) and "18th birthday" in diagnostics(response)
    assert live_with(demo, nhs_number) == 0


def test_validate_reports_the_age_rule(client: FlaskClient, callers: Callers,
                                      demo: Database) -> None:
    """``$validate`` runs the same age rule as the write: an adult is an error quoting it, a
    child is all OK; nothing is stored."""
    ref = managing(client, callers)
    adult = client.post("/fhir/Patient/$validate", headers=callers.la,
                        json=patient(ref, fresh_nhs_number(demo), "1970-05-01"))
    assert adult.status_code == 200, adult.json
    errors = [i for i in adult.json["issue"] if i["severity"] == "error"]
    assert errors and REGULATIONS in errors[0]["diagnostics"]
    assert errors[0]["expression"] == ["Patient.birthDate"]
    child = client.post("/fhir/Patient/$validate", headers=callers.la,
                        json=patient(ref, fresh_nhs_number(demo)))
    assert not [i for i in child.json["issue"] if i["severity"] == "error"], child.json


def _extras(app: Flask, extra: dict[str, Any]) -> dict[str, Any]:
    """Return Patient elements for a case: the extended retention extension by its code."""
    if "extension" not in extra:
        return extra
    own = systems.OwnSystems(app.config["CANONICAL_BASE"])
    return {"extension": [{"url": own.extension("ExtendedRetention"),
                           "valueCode": extra["extension"]}]}


def test_a_care_leaver_past_18_is_kept(client: FlaskClient, app: Flask, callers: Callers,
                                       demo: Database) -> None:
    """Aged 20 with extended retention (a care leaver, with consent): within the rules."""
    body = patient(managing(client, callers), fresh_nhs_number(demo), years_ago(20),
                   **_extras(app, {"extension": "care-leaver"}))
    created_id(client, client.post("/fhir/Patient", json=body, headers=callers.la), callers.la)


def test_the_age_rule_in_a_transaction(client: FlaskClient, callers: Callers,
                                       demo: Database) -> None:
    """A transaction entry for an adult: 422 naming the entry's birthDate, nothing stored."""
    good, adult = fresh_nhs_number(demo), None
    adult = fresh_nhs_number(demo, {good})
    entries = [{"resource": patient(managing(client, callers), good),
                "request": {"method": "POST", "url": "Patient"}},
               {"resource": patient(managing(client, callers), adult, "1970-05-01"),
                "request": {"method": "POST", "url": "Patient"}}]
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": entries}, headers=callers.la)
    assert response.status_code == 422, response.json
    assert response.json["issue"][0]["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert REGULATIONS in diagnostics(response)
    assert live_with(demo, good) == 0 and live_with(demo, adult) == 0


# --- directory XML import and the import command ---------------------------------------------

def entry_template(client: FlaskClient, callers: Callers) -> etree._Element:
    """Return a DirectoryEntries document of one demo entry of the first authority, without
    its local identifiers (each allocated to one entry only)."""
    source = own_patient(client, callers)
    cpid = next(i["value"] for i in source["identifier"]
                if i["system"].endswith("/Id/contactpoint-id"))
    response = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
    assert response.status_code == 200
    root = etree.fromstring(response.data)
    for local in root.iter(f"{D}LocalIdentifier"):
        local.getparent().remove(local)
    return root


def new_record(template: etree._Element, nhs_number: str, birth: str) -> etree._Element:
    """Return a copy of the template's entry as a new child: a new ContactPoint ID, this NHS
    number and birth date, no version."""
    entry = copy.deepcopy(template.find(f"{D}DirectoryEntry"))
    assert entry is not None
    entry.attrib.pop("version", None)
    entry.find(f"{D}ContactPointId").text = identifiers.allocate_contactpoint_id()
    entry.find(f"{D}NhsNumber").text = nhs_number
    entry.find(f"{D}BirthDate").text = birth
    return entry


def batch_of(template: etree._Element, records: list[etree._Element]) -> bytes:
    """Return a DirectoryEntries batch with the template's header and these records."""
    root = copy.deepcopy(template)
    for old in root.findall(f"{D}DirectoryEntry"):
        root.remove(old)
    root.extend(records)
    return bytes(etree.tostring(root))


def test_directory_xml_import_rejects_each_record_and_goes_on(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A batch of: an adult (rejected, the rule quoted), a good child (created), a child with
    a number a stored live entry holds (rejected naming it), one repeating the good child's
    number (rejected naming its position)."""
    template = entry_template(client, callers)
    good, adult = fresh_nhs_number(demo), None
    adult = fresh_nhs_number(demo, {good})
    held = own_patient(client, callers)
    held_number = next(i["value"] for i in held["identifier"] if i["system"] == systems.NHS_NUMBER)
    body = batch_of(template, [new_record(template, adult, "1970-05-01"),
                               new_record(template, good, years_ago(7)),
                               new_record(template, held_number, years_ago(5)),
                               new_record(template, good, years_ago(4))])
    response = client.post("/directory/entries", data=body,
                           headers={**callers.la, "Content-Type": "application/xml"})
    assert response.status_code == 200, response.data[:800]
    report = etree.fromstring(response.data)
    records = {int(r.findtext(f"{D}RecordNumber") or 0): r for r in report.iter(f"{D}Record")}
    assert {n: r.findtext(f"{D}Status") for n, r in records.items()} == {
        1: "rejected", 2: "created", 3: "rejected", 4: "rejected"}
    reasons = {n: r.find(f"{D}Reason") for n, r in records.items() if n != 2}
    assert REGULATIONS in reasons[1].text and reasons[1].get("expression") == \
        "DirectoryEntry/BirthDate"
    assert f"Patient/{held['id']}" in reasons[3].text and ONE_LIVE in reasons[3].text
    assert "position 2" in reasons[4].text
    assert reasons[4].get("expression") == "DirectoryEntry/NhsNumber"
    assert live_with(demo, good) == 1 and live_with(demo, adult) == 0
    assert live_with(demo, held_number) == 1


def test_the_import_command_meets_the_rules(app: Flask, client: FlaskClient, callers: Callers,
                                            demo: Database, tmp_path: Path) -> None:
    """``import`` of NDJSON Patients as the operator (a national client): one without
    ``managingOrganization``, one adult, one duplicate are each rejected with the element;
    the good one is created."""
    good = fresh_nhs_number(demo)
    ref = managing(client, callers)
    lines = [patient(None, fresh_nhs_number(demo, {good})),
             patient(ref, fresh_nhs_number(demo, {good}), "1970-05-01"),
             patient(ref, good), patient(ref, good)]
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    result = invoke(app, "import", str(path), "--quiet")
    assert result.exit_code == 1, result.output
    assert "managingOrganization" in result.output
    assert REGULATIONS in result.output
    assert ONE_LIVE in result.output
    assert live_with(demo, good) == 1
