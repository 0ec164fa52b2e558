"""Practitioners identified the way other systems send them: by national professional numbers
(GMC, GMP, NMC, HCPC, GPhC) and the SDS user id as well as, or instead of, an employer's staff
id. Each is accepted and kept (read back in JSON and XML), its format checked (422 naming the
rule), matched on later writes and references, searchable, and destroyed with the rest of the
practitioner's record. Both databases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter import systems
from adapter.identifiers import resource_id_for
from adapter.systems import DEFAULT_CANONICAL_BASE, OwnSystems
from tests.fhir.fixtures import (
    FHIR_JSON,
    FHIR_XML,
    LA,
    Env,
    fetch,
    ids,
    parsed,
)
from tests.test_cli_import_export import target  # noqa: F401 (fixture: an empty gateway)

FORMATS = ["json", "xml"]
OWN = OwnSystems(DEFAULT_CANONICAL_BASE)

# One valid number per national system, as the regulators issue them.
VALID: dict[str, str] = {
    systems.GMC_NUMBER: "6150129",
    systems.GMP_NUMBER: "G8123456",
    systems.NMC_NUMBER: "12A3456B",
    systems.HCPC_NUMBER: "SW123456",
    systems.GPHC_NUMBER: "2012345",
    systems.SDS_USER_ID: "555086689106",
}
# Values breaking each system's format (the rule's wording is in the message).
INVALID: list[tuple[str, str, str]] = [
    (systems.GMC_NUMBER, "615012", "7 digits"),
    (systems.GMC_NUMBER, "D6150129", "7 digits"),
    (systems.GMP_NUMBER, "G6123456", "G6 or G7"),
    (systems.GMP_NUMBER, "C1234567", "G and 7 digits"),
    (systems.NMC_NUMBER, "12a3456B", "2 digits, a letter"),
    (systems.NMC_NUMBER, "123456B", "2 digits, a letter"),
    (systems.HCPC_NUMBER, "987654", "prefix"),
    (systems.GPHC_NUMBER, "201234", "7 digits"),
    (systems.SDS_USER_ID, "55508668910", "12 digits"),
]


def send(env: Env, method: str, url: str, resource: dict[str, Any], headers: dict[str, str],
         fmt: str = "json", **extra: str) -> Any:
    """Send ``resource`` in ``fmt`` (JSON or XML body, same Accept), asking for the resource
    back unless ``Prefer`` says otherwise."""
    from adapter.fhir.xml import dumps_resource

    media = FHIR_XML if fmt == "xml" else FHIR_JSON
    body = dumps_resource(resource) if fmt == "xml" else json.dumps(resource).encode()
    return env.client.open(url, method=method, data=body,
                           headers={**headers, "Content-Type": media, "Accept": media,
                                    "Prefer": "return=representation", **extra})


def doctor(*identifiers: tuple[str, str], family: str = "Rastall") -> dict[str, Any]:
    """Return a UK Core Practitioner as another system sends it: national identifiers only,
    the profile claimed, elements the directory does not hold."""
    return {"resourceType": "Practitioner",
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/"
                                 "UKCore-Practitioner"]},
            "identifier": [{"system": s, "value": v} for s, v in identifiers],
            "name": [{"family": family, "given": ["Paul"], "prefix": ["Dr"]}],
            "gender": "male"}


def created_id(response: Any) -> str:
    """Return the id of the resource a create answered with."""
    assert response.status_code == 201, response.data[:600]
    location = response.headers["Location"]
    return location.split("/Practitioner/")[1].split("/")[0]


def national(resource: dict[str, Any]) -> dict[str, str]:
    """Return a Practitioner's national identifiers by system."""
    return {i["system"]: i["value"] for i in resource.get("identifier", [])
            if i["system"] in systems.PRACTITIONER_SYSTEMS}


def issue_text(response: Any) -> str:
    """Return the diagnostics of an OperationOutcome response, joined."""
    return " ".join(str(i.get("diagnostics", "")) for i in parsed(response)["issue"])


# --- accepted and kept ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("system", list(VALID))
def test_each_national_system_is_accepted_and_kept(env: Env, fmt: str, system: str) -> None:
    """A Practitioner identified only by one national number is created (by an authority's
    system: nobody employs it here) and read back with it, in JSON and XML."""
    response = send(env, "POST", "/fhir/Practitioner", doctor((system, VALID[system])),
                    env.who.la, fmt)
    rid = created_id(response)
    assert rid == resource_id_for("Practitioner", f"{system}|{VALID[system]}")
    assert national(parsed(response)) == {system: VALID[system]}
    for read_fmt in FORMATS:
        person = fetch(env.client, f"/fhir/Practitioner/{rid}", env.who.reader, read_fmt)
        assert person["identifier"] == [{"system": system, "value": VALID[system]}]
        assert person["name"][0]["family"] == "Rastall"


@pytest.mark.parametrize("fmt", FORMATS)
def test_staff_id_and_every_national_id_together(env: Env, fmt: str) -> None:
    """The employer's staff id comes first (with its assigner), then every national number in
    a fixed order, whatever order they were sent in."""
    body = doctor(*reversed(list(VALID.items())))
    body["identifier"].insert(2, {"system": OWN.local_id(LA), "value": "SW40",
                                  "assigner": {"reference": f"Organization/{env.world.orgs[LA]}"}})
    rid = created_id(send(env, "POST", "/fhir/Practitioner", body, env.who.la, fmt))
    assert rid == resource_id_for("Practitioner", f"{LA}/SW40")
    person = fetch(env.client, f"/fhir/Practitioner/{rid}", env.who.reader, fmt)
    assert person["identifier"][0]["value"] == "SW40"
    assert person["identifier"][1:] == [{"system": s, "value": v} for s, v in VALID.items()]


def test_identifiers_of_other_systems_are_reported_not_kept(env: Env) -> None:
    """An identifier of a system the directory does not hold is not kept, and said so."""
    body = doctor((systems.GMC_NUMBER, "6150129"))
    body["identifier"].append({"system": "https://example.org/Id/roster", "value": "R1"})
    response = send(env, "POST", "/fhir/Practitioner", body, env.who.la,
                    Prefer="return=OperationOutcome")
    assert response.status_code == 201
    assert "Practitioner.identifier[1]" in json.dumps(parsed(response))


# --- refused ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("system", "value", "rule"), INVALID)
def test_a_number_not_in_its_format_is_422(env: Env, system: str, value: str, rule: str) -> None:
    """A national number that breaks its format is 422 naming the system and the rule; the
    value itself is never echoed."""
    response = send(env, "POST", "/fhir/Practitioner", doctor((system, value)), env.who.la)
    assert response.status_code == 422, response.data[:600]
    text = issue_text(response)
    assert rule in text and system in text and value not in text
    assert "Practitioner.identifier" in json.dumps(parsed(response))


def test_no_identifier_the_directory_keeps_is_422(env: Env) -> None:
    """Without a staff id or a national number the message says which identifiers count."""
    body = doctor(("https://example.org/Id/roster", "R1"))
    response = send(env, "POST", "/fhir/Practitioner", body, env.who.la)
    assert response.status_code == 422
    assert "gmc" in issue_text(response) and "sds-user-id" in issue_text(response)


def test_two_numbers_of_one_system_are_422(env: Env) -> None:
    """A practitioner has one number of each system."""
    body = doctor((systems.GMC_NUMBER, "6150129"), (systems.GMC_NUMBER, "6150130"))
    response = send(env, "POST", "/fhir/Practitioner", body, env.who.la)
    assert response.status_code == 422
    assert "one number of each system" in issue_text(response)


# --- matched ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_second_create_finds_the_same_practitioner(env: Env, fmt: str) -> None:
    """POST again: 409 naming the practitioner; with If-None-Exist on the number: that
    practitioner (200); a conditional PUT on the number updates it."""
    body = doctor((systems.GMC_NUMBER, "6150129"))
    rid = created_id(send(env, "POST", "/fhir/Practitioner", body, env.who.la, fmt))
    again = send(env, "POST", "/fhir/Practitioner", body, env.who.other_la, fmt)
    assert again.status_code == 409
    assert f"Practitioner/{rid}" in issue_text(again)
    token = f"{systems.GMC_NUMBER}|6150129"
    found = send(env, "POST", "/fhir/Practitioner", body, env.who.other_la, fmt,
                 **{"If-None-Exist": f"identifier={token}"})
    assert found.status_code == 200 and parsed(found)["id"] == rid
    body["name"][0]["family"] = "Rastall-Smith"
    body["identifier"].append({"system": systems.SDS_USER_ID, "value": "555086689106"})
    updated = send(env, "PUT", f"/fhir/Practitioner?identifier={token}", body, env.who.other_la,
                   fmt)
    assert updated.status_code == 200, updated.data[:600]
    person = fetch(env.client, f"/fhir/Practitioner/{rid}", env.who.reader)
    assert person["name"][0]["family"] == "Rastall-Smith"
    assert person["meta"]["versionId"] == "2"
    assert national(person) == {systems.GMC_NUMBER: "6150129",
                                systems.SDS_USER_ID: "555086689106"}


def test_an_employer_adds_its_staff_id_and_national_ids_are_merged(env: Env) -> None:
    """The employer PUTs its staff id onto a practitioner known by a GMC number: the record
    becomes its; a later PUT that leaves the GMC number out keeps it; the staff id then
    stays (422 to drop it); a body sending a new number of one system replaces that one."""
    rid = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.GMC_NUMBER, "6150129")), env.who.other_la))
    url = f"/fhir/Practitioner/{rid}"
    body = fetch(env.client, url, env.who.la)
    staff = {"system": OWN.local_id(LA), "value": "SW41"}
    body["identifier"] = [staff]
    assert send(env, "PUT", url, body, env.who.la).status_code == 200
    person = fetch(env.client, url, env.who.reader)
    assert person["identifier"][0]["value"] == "SW41"
    assert national(person) == {systems.GMC_NUMBER: "6150129"}
    # Now the employer's: another authority may no longer change it.
    assert send(env, "PUT", url, person, env.who.other_la).status_code == 403
    dropped = dict(person, identifier=[{"system": systems.GMC_NUMBER, "value": "6150129"}])
    response = send(env, "PUT", url, dropped, env.who.la)
    assert response.status_code == 422 and "staff id" in issue_text(response)
    person["identifier"] = [staff, {"system": systems.GMC_NUMBER, "value": "6150130"}]
    assert send(env, "PUT", url, person, env.who.la).status_code == 200
    assert national(fetch(env.client, url, env.who.reader)) == {systems.GMC_NUMBER: "6150130"}
    # The staff id finds it too.
    bundle = fetch(env.client, f"/fhir/Practitioner?identifier={OWN.local_id(LA)}|SW41",
                   env.who.reader)
    assert ids(bundle) == {rid}


def test_identifiers_of_different_practitioners_are_409(env: Env) -> None:
    """A body whose staff id and GMC number belong to two stored practitioners names both."""
    gmc = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.GMC_NUMBER, "6150129")), env.who.la))
    body = doctor((systems.GMC_NUMBER, "6150129"))
    body["identifier"].insert(0, {"system": OWN.local_id(LA), "value": "SW1"})
    response = send(env, "POST", "/fhir/Practitioner", body, env.who.la)
    assert response.status_code == 409
    text = issue_text(response)
    assert f"Practitioner/{gmc}" in text and f"Practitioner/{env.world.people['SW1']}" in text
    # Giving SW1 the GMC number another practitioner holds is a conflict too.
    url = f"/fhir/Practitioner/{env.world.people['SW1']}"
    person = fetch(env.client, url, env.who.la)
    person["identifier"].append({"system": systems.GMC_NUMBER, "value": "6150129"})
    response = send(env, "PUT", url, person, env.who.la)
    assert response.status_code == 409 and f"Practitioner/{gmc}" in issue_text(response)


@pytest.mark.parametrize("fmt", FORMATS)
def test_search_by_national_identifier(env: Env, fmt: str) -> None:
    """identifier=system|value finds by national number; a bare value by any national number
    or staff id; another system's token does not match."""
    rid = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.NMC_NUMBER, "12A3456B"),
                                 (systems.SDS_USER_ID, "555086689106")), env.who.la))
    cases = [
        (f"identifier={systems.NMC_NUMBER}|12A3456B", {rid}),
        (f"identifier={systems.SDS_USER_ID}|555086689106", {rid}),
        ("identifier=12A3456B", {rid}),
        (f"identifier={systems.GMC_NUMBER}|12A3456B", set()),
        (f"identifier={systems.NMC_NUMBER}|12A3456C", set()),
        (f"identifier:not={systems.NMC_NUMBER}|12A3456B",
         set(env.world.people.values())),
    ]
    for query, expected in cases:
        bundle = fetch(env.client, f"/fhir/Practitioner?{query}", env.who.reader, fmt)
        assert ids(bundle) == expected, query


# --- references by national identifier -----------------------------------------------------------

ROLE = "early-help"


def la_role(practitioner: dict[str, Any], org: str, phone: str | None = None,
            ) -> dict[str, Any]:
    """Return a contained PractitionerRole of the authority naming its practitioner by
    ``practitioner`` (a Reference)."""
    role = {"resourceType": "PractitionerRole", "id": "doc",
            "practitioner": practitioner,
            "organization": {"reference": f"Organization/{org}"},
            "code": [{"coding": [{"system": OWN.code_system("involvement-role"),
                                  "code": ROLE}]}]}
    if phone:
        role["telecom"] = [{"system": "phone", "value": phone}]
    return role


def la_participant() -> dict[str, Any]:
    """Return an early-help participant detailed by the contained role ``#doc``."""
    return {"role": [{"coding": [{"system": OWN.code_system("involvement-role"),
                                  "code": ROLE}]}],
            "member": {"reference": "#doc"}, "period": {"start": "2025-02-03"}}


def add_la_worker(env: Env, practitioner: dict[str, Any], fmt: str = "json",
                  phone: str | None = None) -> Any:
    """PUT the child's team (as the managing authority) with its early-help involvement's
    practitioner named by ``practitioner``; return the response."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    team["participant"] = [p for p in team["participant"] if ROLE not in json.dumps(p)]
    team["participant"].append(la_participant())
    team["contained"] = [la_role(practitioner, w.orgs[LA], phone)]
    return send(env, "PUT", f"/fhir/CareTeam/{w.team}", team, env.who.la, fmt)


def gmc_worker_on_the_team(env: Env) -> tuple[str, str]:
    """Create the doctor known only by GMC number 6150129, make them the early-help worker
    of the child's team (named by that number); return their id and the child's ContactPoint
    ID."""
    rid = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.GMC_NUMBER, "6150129")), env.who.la))
    assert add_la_worker(env, {"identifier": {"system": systems.GMC_NUMBER,
                                              "value": "6150129"}}).status_code == 200
    patient = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.admin)
    cpid = next(i["value"] for i in patient["identifier"] if i["system"] == OWN.contactpoint_id)
    return rid, cpid


def la_role_of_team(env: Env) -> dict[str, Any]:
    """Return the PractitionerRole of the child's early-help involvement."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.admin)
    member = next(p["member"]["reference"] for p in team["participant"]
                  if ROLE in json.dumps(p.get("role", [])) and "member" in p)
    return fetch(env.client, f"/fhir/{member}", env.who.admin)


@pytest.mark.parametrize("fmt", FORMATS)
def test_careteam_member_by_national_identifier(env: Env, fmt: str) -> None:
    """A CareTeam's PractitionerRole naming its practitioner by GMC number finds the stored
    practitioner; the role refers to it by id and by that number."""
    rid = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.GMC_NUMBER, "6150129")), env.who.la))
    response = add_la_worker(env, {"identifier": {"system": systems.GMC_NUMBER,
                                                  "value": "6150129"}}, fmt)
    assert response.status_code == 200, response.data[:800]
    role = la_role_of_team(env)
    assert role["practitioner"]["reference"] == f"Practitioner/{rid}"
    assert role["practitioner"]["identifier"] == {"system": systems.GMC_NUMBER,
                                                  "value": "6150129"}
    assert role["practitioner"]["display"] == "Dr Paul Rastall"
    # The same through a reference by id; the team reads back unchanged in both formats.
    response = add_la_worker(env, {"reference": f"Practitioner/{rid}"}, fmt)
    assert response.status_code == 200, response.data[:800]
    assert la_role_of_team(env)["practitioner"]["reference"] == f"Practitioner/{rid}"
    fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.admin, "xml")
    bundle = fetch(env.client, f"/fhir/PractitionerRole?practitioner=Practitioner/{rid}",
                   env.who.admin)
    assert len(bundle.get("entry", [])) == 1


def test_careteam_member_by_unknown_or_bad_national_identifier(env: Env) -> None:
    """A number nobody here holds is 422 (create the Practitioner first); one not in its
    format is 422 with the rule; neither is a 5xx."""
    response = add_la_worker(env, {"identifier": {"system": systems.GMC_NUMBER,
                                                  "value": "6150129"}})
    assert response.status_code == 422, response.data[:600]
    assert "not known here" in issue_text(response)
    response = add_la_worker(env, {"identifier": {"system": systems.GMC_NUMBER,
                                                  "value": "61501"}})
    assert response.status_code == 422, response.data[:600]
    assert "7 digits" in issue_text(response)
    response = add_la_worker(env, {"identifier": {"system": "https://example.org/Id/staff",
                                                  "value": "X1"}})
    assert response.status_code == 422, response.data[:600]
    assert "sds-user-id" in issue_text(response)


def test_history_keeps_the_national_identifier(env: Env) -> None:
    """A superseded version of the child's team (rebuilt from the child's snapshot) still
    names the practitioner known only by a GMC number, and its role the same practitioner."""
    created_id(send(env, "POST", "/fhir/Practitioner",
                    doctor((systems.GMC_NUMBER, "6150129")), env.who.la))
    gmc = {"identifier": {"system": systems.GMC_NUMBER, "value": "6150129"}}
    response = add_la_worker(env, gmc)
    assert response.status_code == 200
    written = parsed(response)["meta"]["versionId"]
    role = la_role_of_team(env)
    assert add_la_worker(env, gmc, phone="0113 496 0777").status_code == 200
    url = f"/fhir/CareTeam/{env.world.team}"
    old = fetch(env.client, f"{url}/_history/{written}", env.who.admin)
    member = next(p["member"] for p in old["participant"] if ROLE in json.dumps(p["role"]))
    assert member["reference"] == f"PractitionerRole/{role['id']}"
    assert "Rastall" in member["display"]
    versions = fetch(env.client, f"{url}/_history", env.who.admin)
    assert written in {e["resource"]["meta"]["versionId"] for e in versions["entry"]
                       if "resource" in e}


def test_directory_xml_names_only_staff_ids(env: Env) -> None:
    """The directory XML keys practitioners by their employer's staff id and has no place for
    national identifiers (schemas/xml/common.xsd): the entry stays valid, the involvement is
    there, a practitioner known only by a GMC number is left out of it, one with a staff id is
    named by it."""
    from lxml import etree

    from adapter.directory.schema import load_schema

    _rid, cpid = gmc_worker_on_the_team(env)
    response = env.client.get(f"/directory/entries/{cpid}", headers=env.who.admin)
    assert response.status_code == 200, response.data[:600]
    document = etree.fromstring(response.data)
    load_schema("directory-entry.xsd").assertValid(document)
    text = response.data.decode()
    assert "early-help" in text and "6150129" not in text and "Rastall" not in text
    assert "<LocalId>SW1</LocalId>" in text.replace("dir:", "")


def test_bulk_export_carries_national_identifiers(app: Any, env: Env) -> None:
    """System-level $export writes the Practitioner with its national identifiers."""
    from tests.api.test_export import download, kick_off, manifest_of

    app.config["EXPORT_INLINE"] = True
    rid = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.HCPC_NUMBER, "SW123456")), env.who.la))
    status = kick_off(env.client, env.who.admin, query="?_type=Practitioner")
    files = download(env.client, manifest_of(env.client, status, env.who.admin), env.who.admin)
    exported = {r["id"]: r for r in files["Practitioner"]}
    assert national(exported[rid]) == {systems.HCPC_NUMBER: "SW123456"}


def test_destruction_removes_national_identifiers(app: Any, env: Env) -> None:
    """Decommissioning's destruction deletes the national identifiers with the practitioners
    (personal data) and counts them for the certificate."""
    import datetime as dt

    from sqlalchemy import func, select

    from adapter.decommission.destruction import destroy
    from adapter.http import settings_of
    from adapter.models import PractitionerIdentifier
    from tests.decommission.test_units import _plan

    created_id(send(env, "POST", "/fhir/Practitioner",
                    doctor((systems.GMC_NUMBER, "6150129"), (systems.SDS_USER_ID,
                                                             "555086689106")), env.who.la))
    _plan(app, env.db, "switched-off")
    with app.app_context():
        done = destroy(env.db, settings_of(app), dt.datetime.now(dt.UTC),
                       override="practitioner identifiers test")
    assert done.before["practitioner_identifier"] == 2
    assert done.after["practitioner_identifier"] == 0
    with env.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PractitionerIdentifier)) == 0



def test_validate_reports_what_a_create_would_refuse(env: Env) -> None:
    """$validate checks the formats as a create does: a bad NMC PIN is an error naming the
    rule; a good one is accepted."""
    bad = send(env, "POST", "/fhir/Practitioner/$validate",
               doctor((systems.NMC_NUMBER, "12A3456")), env.who.la)
    errors = [i for i in parsed(bad)["issue"] if i["severity"] == "error"]
    assert errors and "2 digits, a letter" in errors[0]["diagnostics"]
    good = send(env, "POST", "/fhir/Practitioner/$validate",
                doctor((systems.NMC_NUMBER, "12A3456B")), env.who.la)
    assert not [i for i in parsed(good)["issue"] if i["severity"] in ("error", "fatal")]


def test_transaction_conditional_create_by_national_identifier(env: Env) -> None:
    """In a transaction, a Practitioner created with ifNoneExist on its GMC number is created
    once; the same entry again answers with the same practitioner."""
    token = f"{systems.GMC_NUMBER}|6150129"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:6f0c0f5e-2a8e-4d63-9a7e-3d0b9c1f0a11",
        "resource": doctor((systems.GMC_NUMBER, "6150129")),
        "request": {"method": "POST", "url": "Practitioner",
                    "ifNoneExist": f"identifier={token}"}}]}
    first = send(env, "POST", "/fhir", bundle, env.who.la)
    assert first.status_code == 200, first.data[:600]
    created = parsed(first)["entry"][0]["response"]
    assert created["status"].startswith("201")
    again = parsed(send(env, "POST", "/fhir", bundle, env.who.la))["entry"][0]["response"]
    assert again["status"].startswith("200")
    assert again["location"].split("/_history")[0] == created["location"].split("/_history")[0]
    found = fetch(env.client, f"/fhir/Practitioner?identifier={token}", env.who.reader)
    assert len(ids(found)) == 1


def test_directory_xml_posted_back_keeps_a_practitioner_known_by_national_numbers(
        env: Env) -> None:
    """An entry read as directory XML (its practitioner known only by a GMC number left out,
    the dialect having no place for it) and posted back as it is changes nothing: the
    involvement keeps its practitioner (bad input loses nothing), over HTTP as through the
    ``import`` command's path (the same import)."""
    from lxml import etree

    from adapter.directory.schema import NS

    rid, cpid = gmc_worker_on_the_team(env)
    patient = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.admin)
    read = env.client.get(f"/directory/entries/{cpid}", headers=env.who.la)
    assert read.status_code == 200, read.data[:600]
    posted = env.client.post("/directory/entries", data=read.data,
                             headers={**env.who.la, "Content-Type": "application/xml"})
    assert posted.status_code == 200, posted.data[:600]
    report = etree.fromstring(posted.data)
    assert report.findtext(f".//{{{NS}}}Status") == "unchanged", posted.data[:800]
    assert la_role_of_team(env)["practitioner"]["reference"] == f"Practitioner/{rid}"
    after = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.admin)
    assert after["meta"]["versionId"] == patient["meta"]["versionId"]
    # A record that changes something else is applied and still keeps the practitioner.
    document = etree.fromstring(read.data)
    gender = document.find(f".//{{{NS}}}Gender")
    gender.text = "1" if gender.text == "2" else "2"  # NHS Data Dictionary person stated gender
    changed = etree.tostring(document)
    posted = env.client.post("/directory/entries", data=changed,
                             headers={**env.who.la, "Content-Type": "application/xml"})
    assert etree.fromstring(posted.data).findtext(f".//{{{NS}}}Status") == "updated", \
        posted.data.decode()[-900:]
    assert la_role_of_team(env)["practitioner"]["reference"] == f"Practitioner/{rid}"


def test_assessment_xml_posted_back_keeps_a_lead_known_by_national_numbers(
        env: Env) -> None:
    """An eCAF assessment reference whose lead professional is known only by a GMC number,
    read as directory XML (the lead's Practitioner left out) and posted back as it is,
    changes nothing: the lead keeps its practitioner."""
    from lxml import etree
    from sqlalchemy import select, update

    from adapter.directory.schema import NS
    from adapter.models import Assessment, Practitioner

    rid = created_id(send(env, "POST", "/fhir/Practitioner",
                          doctor((systems.GMC_NUMBER, "6150129")), env.who.la))
    with env.db.write_transaction() as session:
        person = session.scalar(select(Practitioner.id).where(Practitioner.resource_id == rid))
        session.execute(update(Assessment).where(
            Assessment.assessment_id == env.world.ecaf_id).values(lead_practitioner_id=person))
    read = env.client.get(f"/directory/assessments/{env.world.ecaf_id}",
                          headers=env.who.la_sensitive)
    assert read.status_code == 200, read.data[:600]
    assert b"6150129" not in read.data and b"Rastall" not in read.data
    posted = env.client.post("/directory/assessments", data=read.data,
                             headers={**env.who.la_sensitive, "Content-Type": "application/xml"})
    assert posted.status_code == 200, posted.data[:600]
    assert etree.fromstring(posted.data).findtext(f".//{{{NS}}}Status") == "unchanged", \
        posted.data.decode()[-900:]
    with env.db.sessions() as session:
        kept = session.scalar(select(Assessment.lead_practitioner_id).where(
            Assessment.assessment_id == env.world.ecaf_id))
    assert kept == person


def test_ndjson_export_reimports_a_practitioner_known_by_national_numbers(
        app: Any, env: Env, target: Any, tmp_path: Any) -> None:  # noqa: F811
    """An authority's NDJSON export holds a team member known only by a GMC number; imported
    into an empty gateway, the member is still that practitioner, matched and kept by the
    number (the ``import`` command's path for CareTeam roles)."""
    from sqlalchemy import select

    from adapter.models import Involvement, Practitioner, PractitionerIdentifier
    from tests.security.helpers import invoke

    gmc_worker_on_the_team(env)
    out = tmp_path / "out"
    exported = invoke(app, "export", "--authority", LA, "--format", "fhir-ndjson", "--out",
                      str(out), "--quiet")
    assert exported.exit_code == 0, exported.output
    assert b"6150129" in (out / "Practitioner.ndjson").read_bytes()
    imported = invoke(target, "import", str(out), "--quiet")
    assert imported.exit_code == 0, imported.output
    with target.extensions["db"].sessions() as session:
        holders = session.scalars(select(Practitioner).join(PractitionerIdentifier).where(
            PractitionerIdentifier.value == "6150129")).all()
        assert len(holders) == 1 and holders[0].local_id is None
        members = session.scalars(select(Involvement.role).where(
            Involvement.practitioner_id == holders[0].id)).all()
        assert members == [ROLE], "the team member lost its practitioner"
