"""Organization and Practitioner over FHIR REST: every declared interaction and
search parameter in JSON and XML on both databases, with real tokens; writes by an
administrator or by the organisation itself; If-Match; 404/405/409/412/422 as
OperationOutcome."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask import Flask

from adapter.identifiers import resource_id_for
from adapter.systems import DEFAULT_CANONICAL_BASE, ODS_CODE, OwnSystems
from tests.fhir.fixtures import (
    FHIR_JSON,
    FHIR_XML,
    LA,
    Env,
    World,
    audit_rows,
    concurrent_puts,
    fetch,
    ids,
    parsed,
    with_format,
)

FORMATS = ["json", "xml"]
OWN = OwnSystems(DEFAULT_CANONICAL_BASE)


def send(env: Env, method: str, url: str, resource: dict[str, Any], headers: dict[str, str],
         fmt: str = "json", **extra: str) -> Any:
    """Send ``resource`` in ``fmt`` (JSON or XML body, same Accept)."""
    from adapter.fhir.xml import dumps_resource

    media = FHIR_XML if fmt == "xml" else FHIR_JSON
    body = dumps_resource(resource) if fmt == "xml" else json.dumps(resource).encode()
    return env.client.open(url, method=method, data=body,
                           headers={**headers, "Content-Type": media, "Accept": media, **extra})


def gp_practice(code: str = "B82002", name: str = "Ash Surgery") -> dict[str, Any]:
    """Return a new GP practice Organization."""
    return {"resourceType": "Organization",
            "identifier": [{"system": ODS_CODE, "value": code}],
            "type": [{"coding": [{"system": OWN.code_system("organisation-type"),
                                  "code": "gp-practice"}]}],
            "name": name, "telecom": [{"system": "phone", "value": "0113 496 0200"}]}


def staff(world: World, local_id: str = "SW2", family: str = "Carer") -> dict[str, Any]:
    """Return a new practitioner of the first authority."""
    return {"resourceType": "Practitioner",
            "identifier": [{"system": OWN.local_id(LA), "value": local_id,
                            "assigner": {"reference": f"Organization/{world.orgs[LA]}"}}],
            "name": [{"family": family, "given": ["Zoë", "Alex"]}]}


# --- Organization -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_read_vread_and_history_of_an_organization(env: Env, fmt: str) -> None:
    """An organisation is read by any caller (not a child's data: no audit)."""
    url = f"/fhir/Organization/{env.world.orgs['A81001']}"
    response = env.client.get(url, headers=with_format(env.who.reader, fmt))
    assert response.status_code == 200
    org = parsed(response)
    assert org["name"] == "Oak Surgery"
    assert response.headers["ETag"] == 'W/"1"'
    assert fetch(env.client, f"{url}/_history/1", env.who.reader, fmt)["id"] == org["id"]
    fetch(env.client, f"{url}/_history/2", env.who.reader, fmt, status=404)
    history = fetch(env.client, f"{url}/_history", env.who.reader, fmt)
    assert [e["request"]["method"] for e in history["entry"]] == ["POST"]
    outcome = fetch(env.client, "/fhir/Organization/nowhere", env.who.reader, fmt, status=404)
    assert outcome["issue"][0]["code"] == "not-found"
    assert audit_rows(env.db) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_organization_search_parameter(env: Env, fmt: str) -> None:
    """identifier (each system, and bare), name (starts with, case-insensitive, :exact),
    type (own code or its translation), _id; paging and _summary=count."""
    o = env.world.orgs
    schools = {o["100001"], o["100002"]}
    cases = [
        (f"identifier={ODS_CODE}|A81001", {o["A81001"]}),
        (f"identifier={OWN.gss_code}|{LA}", {o[LA]}),
        (f"identifier={OWN.school_urn}|100001", {o["100001"]}),
        (f"identifier={OWN.la_number}|202", {o["E09000002"]}),
        ("identifier=RCM01", {o["RCM01"]}),
        ("identifier=http://example.org/x|A81001", set()),
        ("name=oak", {o["A81001"]}),
        ("name=NORTH", {o[LA]}),
        ("name:exact=Elm Primary", {o["100001"]}),
        ("name:exact=elm primary", set()),
        ("name:contains=surgery", {o["A81001"]}),
        ("name=100%", set()),
        (f"type={OWN.code_system('organisation-type')}|school", schools),
        ("type=http://terminology.hl7.org/CodeSystem/organization-type|edu", schools),
        ("type=local-authority", {o[LA], o["E09000002"]}),
        ("type:not=school", set(o.values()) - schools),
        (f"_id={o['A81001']},{o['RCM01']}", {o["A81001"], o["RCM01"]}),
    ]
    for query, expected in cases:
        bundle = fetch(env.client, f"/fhir/Organization?{query}", env.who.reader, fmt)
        assert ids(bundle) == expected, query
    seen: list[str] = []
    url: str | None = "/fhir/Organization?_count=2"
    while url:
        bundle = fetch(env.client, url, env.who.reader, fmt)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"].removeprefix("http://localhost") for link in bundle["link"]
                    if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(o.values())
    assert fetch(env.client, "/fhir/Organization?_summary=count&type=school", env.who.reader,
                 fmt)["total"] == 2
    response = env.client.post("/fhir/Organization/_search", data={"name": "elm"},
                               headers=with_format(env.who.reader, fmt))
    assert ids(parsed(response)) == {o["100001"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_an_organization(env: Env, fmt: str) -> None:
    """An administrator creates an organisation at the id derived from its code (201,
    Location); a second create is 409; a plain caller creating another's record is 403."""
    assert send(env, "POST", "/fhir/Organization", gp_practice(), env.who.la, fmt).status_code \
        == 403
    response = send(env, "POST", "/fhir/Organization", gp_practice(), env.who.admin, fmt,
                    Prefer="return=representation")
    assert response.status_code == 201, response.data[:400]
    created = parsed(response)
    assert created["id"] == resource_id_for("Organization", "B82002")
    assert response.headers["Location"] == \
        f"http://localhost/fhir/Organization/{created['id']}/_history/1"
    again = send(env, "POST", "/fhir/Organization", gp_practice(), env.who.admin, fmt)
    assert again.status_code == 409
    assert parsed(again)["issue"][0]["code"] == "conflict"


def test_an_organisation_creates_its_own_record(env: Env) -> None:
    """A caller whose organisation is the record's own may create it; If-None-Exist returns
    an existing match instead."""
    from tests.fhir.fixtures import bearer

    app = env.client.application
    surgery = bearer(env.client, app, "ash-surgery", "B82002")  # type: ignore[arg-type]
    assert send(env, "POST", "/fhir/Organization", gp_practice(), surgery).status_code == 201
    response = send(env, "POST", "/fhir/Organization", gp_practice(), surgery,
                    **{"If-None-Exist": f"identifier={ODS_CODE}|B82002"})
    assert response.status_code == 200


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_an_organization(env: Env, fmt: str) -> None:
    """The organisation itself updates its record (If-Match; a stale one is 412); another
    organisation gets 403; an id that differs from the URL is 422."""
    url = f"/fhir/Organization/{env.world.orgs['A81001']}"
    org = fetch(env.client, url, env.who.gp)
    org["name"] = "Oak Surgery and Health Centre"
    assert send(env, "PUT", url, org, env.who.la, fmt).status_code == 403
    response = send(env, "PUT", url, org, env.who.gp, fmt, **{"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.data[:400]
    assert response.headers["ETag"] == 'W/"2"'
    assert fetch(env.client, url, env.who.reader, fmt)["name"] == org["name"]
    stale = send(env, "PUT", url, org, env.who.gp, fmt, **{"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert parsed(stale)["resourceType"] == "OperationOutcome"
    moved = copy.deepcopy(org)
    moved["id"] = env.world.orgs["RCM01"]
    assert send(env, "PUT", url, moved, env.who.gp, fmt).status_code == 422


@pytest.mark.parametrize("fmt", FORMATS)
def test_put_creates_at_the_derived_id_and_conditional_update(env: Env, fmt: str) -> None:
    """PUT at the id derived from the code creates (201); elsewhere it is 422; PUT with search
    parameters updates the one match."""
    org = gp_practice()
    derived = resource_id_for("Organization", "B82002")
    assert send(env, "PUT", "/fhir/Organization/elsewhere", org, env.who.admin,
                fmt).status_code == 422
    assert send(env, "PUT", f"/fhir/Organization/{derived}", org, env.who.admin,
                fmt).status_code == 201
    org["name"] = "Ash Surgery (branch)"
    response = send(env, "PUT", f"/fhir/Organization?identifier={ODS_CODE}|B82002", org,
                    env.who.admin, fmt)
    assert response.status_code == 200
    assert fetch(env.client, f"/fhir/Organization/{derived}", env.who.reader)["name"] == \
        "Ash Surgery (branch)"


def test_invalid_organizations_are_422(env: Env) -> None:
    """No code this directory keys organisations by, or a local authority without its GSS code:
    422 with the offending element."""
    nameless = gp_practice()
    del nameless["identifier"]
    response = send(env, "POST", "/fhir/Organization", nameless, env.who.admin)
    assert response.status_code == 422
    authority = gp_practice()
    authority["type"][0]["coding"][0]["code"] = "local-authority"
    response = send(env, "POST", "/fhir/Organization", authority, env.who.admin)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == ["Organization.identifier"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_organizations_are_not_deleted(env: Env, fmt: str) -> None:
    """DELETE is not an interaction of Organization or Practitioner: 405 OperationOutcome."""
    for url in (f"/fhir/Organization/{env.world.orgs['A81001']}",
                f"/fhir/Practitioner/{env.world.people['SW1']}"):
        response = env.client.delete(url, headers=with_format(env.who.admin, fmt))
        assert response.status_code == 405
        assert parsed(response)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_an_organization(env: Env, fmt: str) -> None:
    """$validate answers with issues; nothing is stored."""
    response = send(env, "POST", "/fhir/Organization/$validate", gp_practice(), env.who.la, fmt)
    assert response.status_code == 200
    assert not [i for i in parsed(response)["issue"] if i["severity"] in ("error", "fatal")]
    broken = gp_practice()
    broken["telecom"] = [{"system": "phone", "value": "not a number"}]
    response = send(env, "POST", "/fhir/Organization/$validate", broken, env.who.la, fmt)
    assert [i for i in parsed(response)["issue"] if i["severity"] == "error"]
    assert fetch(env.client, "/fhir/Organization?identifier=B82002", env.who.la)["link"]
    assert ids(fetch(env.client, "/fhir/Organization?identifier=B82002", env.who.la)) == set()


# --- Practitioner -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_read_vread_and_history_of_a_practitioner(env: Env, fmt: str) -> None:
    """A practitioner is read by any caller; only the current version is served."""
    url = f"/fhir/Practitioner/{env.world.people['SW1']}"
    person = fetch(env.client, url, env.who.reader, fmt)
    assert person["identifier"][0]["value"] == "SW1"
    assert fetch(env.client, f"{url}/_history/1", env.who.reader, fmt)["id"] == person["id"]
    fetch(env.client, f"{url}/_history/7", env.who.reader, fmt, status=404)
    assert len(fetch(env.client, f"{url}/_history", env.who.reader, fmt)["entry"]) == 1
    fetch(env.client, "/fhir/Practitioner/nobody", env.who.reader, fmt, status=404)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_practitioner_search_parameter(env: Env, fmt: str) -> None:
    """identifier (staff id with or without its employer's system), name (family or any given
    name, starts with, case-insensitive), _id."""
    p = env.world.people
    assert send(env, "POST", "/fhir/Practitioner", staff(env.world), env.who.la).status_code \
        == 201
    new = resource_id_for("Practitioner", f"{LA}/SW2")
    cases = [
        (f"identifier={OWN.local_id(LA)}|SW1", {p["SW1"]}),
        ("identifier=SW9", {p["SW9"]}),
        (f"identifier={OWN.local_id('RCM01')}|SW1", set()),
        ("identifier=http://example.org/x|SW1", set()),
        ("name=worker", {p["SW1"], p["SW9"]}),
        ("name=SAM", {p["SW1"]}),
        ("name=alex", {new}),
        ("name=zo", {new}),
        ("name=zoë", {new}),
        ("name=car", {new}),
        ("name=a_", set()),
        ("name:exact=Worker", {p["SW1"], p["SW9"]}),
        ("name:exact=Sam", {p["SW1"]}),
        ("name:exact=sam", set()),
        ("name:exact=Zoë", {new}),
        ("name:contains=ork", {p["SW1"], p["SW9"]}),
        ("name:contains=lex", {new}),
        (f"_id={p['C1']}", {p["C1"]}),
    ]
    for query, expected in cases:
        bundle = fetch(env.client, f"/fhir/Practitioner?{query}", env.who.reader, fmt)
        assert ids(bundle) == expected, query
    assert fetch(env.client, "/fhir/Practitioner?_summary=count", env.who.reader,
                 fmt)["total"] == 4
    response = env.client.post("/fhir/Practitioner/_search", data={"name": "therapist"},
                               headers=with_format(env.who.reader, fmt))
    assert ids(parsed(response)) == {p["C1"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_practitioners(env: Env, fmt: str) -> None:
    """The employer creates and updates its staff (If-Match, 412); another organisation gets
    403; a second create is 409; the identifier cannot change (422)."""
    w = env.world
    body = staff(w)
    assert send(env, "POST", "/fhir/Practitioner", body, env.who.gp, fmt).status_code == 403
    response = send(env, "POST", "/fhir/Practitioner", body, env.who.la, fmt)
    assert response.status_code == 201, response.data[:400]
    url = response.headers["Location"].removeprefix("http://localhost").rsplit("/_history",
                                                                             1)[0]
    assert send(env, "POST", "/fhir/Practitioner", body, env.who.la, fmt).status_code == 409
    person = fetch(env.client, url, env.who.la)
    person["telecom"] = [{"system": "email", "value": "sw2@la.example"}]
    response = send(env, "PUT", url, person, env.who.la, fmt, **{"If-Match": 'W/"1"'})
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"2"'
    assert send(env, "PUT", url, person, env.who.la, fmt,
                **{"If-Match": 'W/"1"'}).status_code == 412
    renamed = copy.deepcopy(person)
    renamed["identifier"][0]["value"] = "SW3"
    assert send(env, "PUT", url, renamed, env.who.la, fmt).status_code == 422


@pytest.mark.parametrize("fmt", FORMATS)
def test_practitioner_put_create_and_conditional_update(env: Env, fmt: str) -> None:
    """PUT at the derived id creates; PUT with search parameters updates the match; a
    practitioner of an unknown organisation is 422."""
    body = staff(env.world, "SW5")
    derived = resource_id_for("Practitioner", f"{LA}/SW5")
    assert send(env, "PUT", "/fhir/Practitioner/elsewhere", body, env.who.la,
                fmt).status_code == 422
    assert send(env, "PUT", f"/fhir/Practitioner/{derived}", body, env.who.la,
                fmt).status_code == 201
    body["name"][0]["family"] = "Renamed"
    response = send(env, "PUT", f"/fhir/Practitioner?identifier={OWN.local_id(LA)}|SW5", body,
                    env.who.la, fmt)
    assert response.status_code == 200
    assert fetch(env.client, f"/fhir/Practitioner/{derived}",
                 env.who.reader)["name"][0]["family"] == "Renamed"
    stranger = staff(env.world, "X1")
    stranger["identifier"][0]["system"] = OWN.local_id("Z99999")
    del stranger["identifier"][0]["assigner"]
    assert send(env, "POST", "/fhir/Practitioner", stranger, env.who.admin,
                fmt).status_code == 422


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_a_practitioner(env: Env, fmt: str) -> None:
    """$validate answers with issues; a practitioner without a name is an error."""
    body = staff(env.world)
    response = send(env, "POST", "/fhir/Practitioner/$validate", body, env.who.la, fmt)
    assert not [i for i in parsed(response)["issue"] if i["severity"] in ("error", "fatal")]
    del body["name"]
    response = send(env, "POST", "/fhir/Practitioner/$validate", body, env.who.la, fmt)
    assert [i for i in parsed(response)["issue"] if i["severity"] == "error"]


@pytest.mark.parametrize("resource_type", ["Organization", "Practitioner"])
def test_concurrent_updates_with_the_same_if_match(app: Flask, env: Env,
                                                  resource_type: str) -> None:
    """Two clients update the same version at once, each on its own connection: exactly one
    wins, the other gets 412 (never 409 or 500)."""
    rid = env.world.orgs[LA] if resource_type == "Organization" else env.world.people["C1"]
    url = f"/fhir/{resource_type}/{rid}"
    current = fetch(env.client, url, env.who.admin)
    version = current["meta"]["versionId"]
    first, second = copy.deepcopy(current), copy.deepcopy(current)
    first["telecom"] = [{"system": "phone", "value": "0113 496 0001"}]
    second["telecom"] = [{"system": "phone", "value": "0113 496 0002"}]
    statuses = [status for status, _ in concurrent_puts(app, url, [first, second],
                                                         env.who.admin, version)]
    assert statuses == [200, 412]
    assert fetch(env.client, url, env.who.admin)["meta"]["versionId"] == str(int(version) + 1)


def test_read_only_scope_cannot_write(env: Env) -> None:
    """A token without write scopes gets 403 on create (scopes checked per interaction)."""
    response = send(env, "POST", "/fhir/Organization", gp_practice(), env.who.reader)
    assert response.status_code == 403
