"""References in, every form, at every element the gateway reads one from
(``adapter.fhir.references``): a literal reference to what this server stores resolves and
is kept (POST, PUT, transaction; JSON and XML); anything it cannot follow — an unknown id, a
wrong type, another server's URL, a contained or urn:uuid reference where none can resolve,
malformed strings, empty objects, non-objects — is a 4xx OperationOutcome naming the element,
never a 5xx; and ``$validate`` reports the same issue as the write."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapter.db import Database
from adapter.fhir.xml import dumps_resource
from adapter.identifiers import make_test_nhs_number
from adapter.security.clients import set_limits
from adapter.systems import DEFAULT_CANONICAL_BASE, NHS_NUMBER, ODS_CODE, OwnSystems
from tests.fhir.fixtures import (
    FHIR_JSON,
    FHIR_XML,
    GP,
    LA,
    Env,
    World,
    callers,
    fetch,
    parsed,
    seed,
)
from tests.fhir.test_organisation_api import gp_practice, staff

OWN = OwnSystems(DEFAULT_CANONICAL_BASE)
OWN_BASE = "http://localhost/fhir"  # GATEWAY_PUBLIC_URL of the test app (tests/conftest.py)


@pytest.fixture
def env(app: Flask, client: FlaskClient, db: Database) -> Env:
    """The seeded directory of the FHIR API tests and its callers; the administrator's rate
    limit is raised for the property test's few hundred requests."""
    world, who = seed(db), callers(app, client)
    with db.transaction() as session:
        set_limits(session, "admin", rate_limit_per_minute=100_000)
    return Env(client, db, world, who)


def send(env: Env, method: str, url: str, resource: Any, headers: dict[str, str],
         fmt: str = "json", **extra: str) -> Any:
    """Send ``resource`` as FHIR JSON or XML (the same Accept)."""
    media = FHIR_XML if fmt == "xml" else FHIR_JSON
    body = dumps_resource(resource) if fmt == "xml" else json.dumps(resource).encode()
    return env.client.open(url, method=method, data=body,
                           headers={**headers, "Content-Type": media, "Accept": media, **extra})


def transaction(env: Env, entries: list[dict[str, Any]], headers: dict[str, str]) -> Any:
    """POST a transaction Bundle of ``entries``."""
    return env.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": entries},
                           headers={**headers, "Content-Type": FHIR_JSON})


def validate(env: Env, resource: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    """Return the issues ``$validate`` finds in ``resource`` (a body that is not well-formed
    FHIR is 400, like a write of it)."""
    response = env.client.post(f"/fhir/{resource['resourceType']}/$validate", json=resource,
                               headers={**headers, "Content-Type": FHIR_JSON})
    assert response.status_code in (200, 400), response.data[:400]
    issues: list[dict[str, Any]] = response.json["issue"]
    return issues


def errors(issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the error issues."""
    return [i for i in issues if i["severity"] in ("error", "fatal")]


def new_patient(serial: int, authority: str, gp: dict[str, Any]) -> dict[str, Any]:
    """Return a Patient as an authority's system sends it: literal references only."""
    return {"resourceType": "Patient",
            "identifier": [{"system": NHS_NUMBER, "value": make_test_nhs_number(700 + serial)}],
            "name": [{"family": "Franklin", "given": ["Rosalind"]}], "gender": "female",
            "birthDate": "2016-04-25",
            "managingOrganization": {"reference": f"Organization/{authority}"},
            "generalPractitioner": [gp]}


def stored(env: Env, resource_type: str, resource_id: str) -> dict[str, Any]:
    """Return a resource as its administrator reads it, without id-independent bookkeeping."""
    return fetch(env.client, f"/fhir/{resource_type}/{resource_id}", env.who.admin)


def created_practice(env: Env) -> str:
    """Create a GP practice through the API and return its id."""
    response = send(env, "POST", "/fhir/Organization", gp_practice(), env.who.admin,
                    Prefer="return=representation")
    assert response.status_code == 201, response.data[:400]
    return str(parsed(response)["id"])


# --- literal references to what the API created resolve and are kept -----------------------

@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_patient_post_keeps_a_literal_reference(env: Env, fmt: str, form: str) -> None:
    """POST: ``Organization/<id>`` (or this server's absolute URL) of a practice created
    through the API, as generalPractitioner, and of the authority as managingOrganization,
    resolve; the read shows both with their identifiers; ``$validate`` agreed beforehand."""
    practice = created_practice(env)
    literal = f"Organization/{practice}"
    gp = {"reference": literal if form == "relative" else f"{OWN_BASE}/{literal}"}
    patient = new_patient(1, env.world.orgs[LA], gp)
    assert errors(validate(env, copy.deepcopy(patient), env.who.la)) == []
    response = send(env, "POST", "/fhir/Patient", patient, env.who.la, fmt,
                    Prefer="return=representation")
    assert response.status_code == 201, response.data[:600]
    read = stored(env, "Patient", parsed(response)["id"])
    assert read["generalPractitioner"] == [{
        "reference": literal, "identifier": {"system": ODS_CODE, "value": "B82002"},
        "display": "Ash Surgery"}]
    assert read["managingOrganization"]["reference"] == f"Organization/{env.world.orgs[LA]}"
    assert read["managingOrganization"]["identifier"]["value"] == LA


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_patient_put_keeps_a_literal_reference(env: Env, fmt: str) -> None:
    """PUT: the child's GP becomes the practice created through the API, by literal reference;
    the PUT and the read show it; an unknown id is 422 naming the element, as $validate said."""
    practice = created_practice(env)
    patient = stored(env, "Patient", env.world.child)
    patient.pop("meta")
    patient["generalPractitioner"] = [{"reference": f"Organization/{practice}"}]
    response = send(env, "PUT", f"/fhir/Patient/{env.world.child}", patient, env.who.la, fmt)
    assert response.status_code == 200, response.data[:600]
    read = stored(env, "Patient", env.world.child)
    assert [g["reference"] for g in read["generalPractitioner"]] == [f"Organization/{practice}"]
    patient["generalPractitioner"] = [{"reference": "Organization/no-such-practice"}]
    said = errors(validate(env, copy.deepcopy(patient), env.who.la))
    response = send(env, "PUT", f"/fhir/Patient/{env.world.child}", patient, env.who.la, fmt)
    assert response.status_code == 422
    outcome = parsed(response)["issue"][0]
    assert outcome["expression"] == ["Patient.generalPractitioner[0]"]
    assert "Organization/no-such-practice is not known here" in outcome["diagnostics"]
    assert [(i["expression"], i["diagnostics"]) for i in said] == \
        [(outcome["expression"], outcome["diagnostics"])]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_managing_organisation_must_be_a_local_authority(env: Env, fmt: str) -> None:
    """``managingOrganization`` naming a stored organisation that is not a local authority (a
    GP practice) is 422 naming the element, in JSON and XML and as $validate says; it used to
    be stored, answering 500 in XML and ``"value": null`` in JSON."""
    patient = stored(env, "Patient", env.world.child)
    patient.pop("meta")
    patient["managingOrganization"] = {"reference": f"Organization/{env.world.orgs[GP]}"}
    said = errors(validate(env, copy.deepcopy(patient), env.who.admin))
    response = send(env, "PUT", f"/fhir/Patient/{env.world.child}", patient, env.who.admin, fmt)
    assert response.status_code == 422, response.data[:400]
    outcome = parsed(response)["issue"][0]
    assert outcome["expression"] == ["Patient.managingOrganization"]
    assert "is not a local authority" in outcome["diagnostics"]
    assert [(i["expression"], i["diagnostics"]) for i in said] == \
        [(outcome["expression"], outcome["diagnostics"])]
    read = stored(env, "Patient", env.world.child)
    assert read["managingOrganization"]["identifier"]["value"] == LA


def test_transaction_keeps_literal_and_urn_references(env: Env) -> None:
    """In a transaction: a literal reference to a practice the API created, and a urn:uuid to
    a practice created in the same Bundle, both resolve and are kept (201 each)."""
    practice = created_practice(env)
    urn = f"urn:uuid:{uuid.uuid4()}"
    entries = [
        {"fullUrl": urn, "resource": gp_practice("B82003", "Birch Surgery"),
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": new_patient(2, env.world.orgs[LA], {"reference": urn}),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": new_patient(3, env.world.orgs[LA],
                                 {"reference": f"Organization/{practice}"}),
         "request": {"method": "POST", "url": "Patient"}},
    ]
    response = transaction(env, entries, env.who.admin)
    assert response.status_code == 200, response.data[:600]
    answers = response.json["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["201", "201", "201"]
    birch = answers[0]["resource"]["id"]
    for answer, org in ((answers[1], birch), (answers[2], practice)):
        read = stored(env, "Patient", answer["resource"]["id"])
        assert read["generalPractitioner"][0]["reference"] == f"Organization/{org}"


def test_transaction_resolves_the_senders_full_url_of_a_create(env: Env) -> None:
    """A create whose fullUrl is the sender's own absolute URL: references to that URL in the
    same transaction are replaced by the id this server assigned (FHIR R4 http.html#trules),
    whatever order the entries come in; another URL of that server is not followed."""
    theirs = "https://case-system.example.org/fhir/Organization/local-7"
    patient = new_patient(5, env.world.orgs[LA], {"reference": theirs})
    entries = [{"resource": patient, "request": {"method": "POST", "url": "Patient"}},
               {"fullUrl": theirs, "resource": gp_practice("B82005", "Elder Surgery"),
                "request": {"method": "POST", "url": "Organization"}}]
    response = transaction(env, entries, env.who.admin)
    assert response.status_code == 200, response.data[:600]
    practice, child = (a["resource"]["id"] for a in reversed(response.json["entry"]))
    read = stored(env, "Patient", child)
    assert read["generalPractitioner"][0]["reference"] == f"Organization/{practice}"
    other = new_patient(6, env.world.orgs[LA], {"reference": theirs.replace("7", "8")})
    response = transaction(env, [{"resource": other,
                                  "request": {"method": "POST", "url": "Patient"}}],
                           env.who.admin)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == \
        ["Bundle.entry[0].resource.generalPractitioner[0]"]


def test_transaction_refuses_an_unknown_reference_naming_it(env: Env) -> None:
    """A transaction entry with an unknown literal reference fails the whole Bundle with 422
    naming the entry's element; nothing is created."""
    entries = [{"resource": gp_practice("B82004", "Cedar Surgery"),
                "request": {"method": "POST", "url": "Organization"}},
               {"resource": new_patient(4, env.world.orgs[LA],
                                        {"reference": "Organization/nowhere"}),
                "request": {"method": "POST", "url": "Patient"}}]
    response = transaction(env, entries, env.who.admin)
    assert response.status_code == 422, response.data[:400]
    issue = response.json["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.generalPractitioner[0]"]
    found = env.client.get(f"/fhir/Organization?identifier={ODS_CODE}|B82004",
                           headers=env.who.admin)
    assert found.json.get("total", 0) == 0 and "entry" not in found.json


def test_careteam_keeps_a_practitioner_created_through_the_api(env: Env) -> None:
    """A CareTeam participant whose member is ``Practitioner/<id>`` of a practitioner the API
    created, on behalf of ``Organization/<id>``, resolves; its PractitionerRole names both."""
    person = send(env, "POST", "/fhir/Practitioner", staff(env.world, "SW7", "Newcomer"),
                  env.who.la, Prefer="return=representation")
    assert person.status_code == 201, person.data[:400]
    person_id = parsed(person)["id"]
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la)
    team.pop("meta")  # another system's team claims no profile of this service
    team["participant"].append({
        "role": [{"coding": [{"system": "http://snomed.info/sct", "code": "106328005"}]}],
        "member": {"reference": f"Practitioner/{person_id}"},
        "onBehalfOf": {"reference": f"{OWN_BASE}/Organization/{env.world.orgs[LA]}"}})
    assert errors(validate(env, copy.deepcopy(team), env.who.la)) == []
    response = send(env, "PUT", f"/fhir/CareTeam/{env.world.team}", team, env.who.la)
    assert response.status_code == 200, response.data[:600]
    roles = [fetch(env.client, f"/fhir/{p['member']['reference']}", env.who.admin)
             for p in stored(env, "CareTeam", env.world.team)["participant"]]
    mine = [r for r in roles if r.get("practitioner", {}).get("reference")
            == f"Practitioner/{person_id}"]
    assert len(mine) == 1
    assert mine[0]["organization"]["reference"] == f"Organization/{env.world.orgs[LA]}"


def test_another_servers_url_beside_an_identifier_uses_the_identifier(env: Env) -> None:
    """Another server's URL is not followed; beside an identifier the identifier resolves
    (and the URL is reported as not kept); alone it is 422 naming the element."""
    patient = stored(env, "Patient", env.world.child)
    patient.pop("meta")
    patient["generalPractitioner"] = [{"reference": "https://gp.example.org/fhir/Organization/9",
                                       "identifier": {"system": ODS_CODE, "value": GP}}]
    notes = validate(env, copy.deepcopy(patient), env.who.la)
    assert errors(notes) == []
    assert "Patient.generalPractitioner[0].reference" in [i.get("expression", [None])[0]
                                                          for i in notes]
    response = send(env, "PUT", f"/fhir/Patient/{env.world.child}", patient, env.who.la)
    assert response.status_code == 200, response.data[:600]
    read = stored(env, "Patient", env.world.child)
    assert read["generalPractitioner"][0]["reference"] == f"Organization/{env.world.orgs[GP]}"
    del patient["generalPractitioner"][0]["identifier"]
    response = send(env, "PUT", f"/fhir/Patient/{env.world.child}", patient, env.who.la)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == ["Patient.generalPractitioner[0]"]
    assert "another server" in response.json["issue"][0]["diagnostics"]


# --- every reference-bearing element x every form: never a 5xx ------------------------------

@dataclass(frozen=True)
class Element:
    """A reference-bearing element: how to put a value there in a stored resource, its
    FHIRPath, the type it names, and whether only ``$validate`` reaches it."""

    expression: str
    target: str
    place: Callable[[dict[str, Any], Any, World], None]
    validate_only: bool = False
    base: str = ""  # the stored resource it is written into: its type, or "eCAF"

    @property
    def resource_type(self) -> str:
        """Return the type of the resource holding the element."""
        return self.expression.split(".", 1)[0]

    @property
    def written_into(self) -> str:
        """Return the key of the stored resource the element is written into."""
        return self.base or self.resource_type


def _participant(team: dict[str, Any], member: Any, on_behalf: Any = None) -> None:
    """Make the team's first participant's member ``member`` (and onBehalfOf)."""
    first = team["participant"][0]
    first["member"] = member
    if on_behalf is not None:
        first["onBehalfOf"] = on_behalf


def _contained(team: dict[str, Any], key: str, value: Any, world: World) -> None:
    """Add a participant detailed by a contained PractitionerRole whose ``key`` is ``value``."""
    role = {"resourceType": "PractitionerRole", "id": "new",
            "practitioner": {"reference": f"Practitioner/{world.people['SW1']}"},
            "organization": {"reference": f"Organization/{world.orgs[LA]}"}, key: value,
            "code": [{"coding": [{"system": OWN.code_system("involvement-role"),
                                  "code": "early-help"}]}]}
    team["contained"] = [role]
    team["participant"].append({"member": {"reference": "#new"}, "role": [{"coding": [{
        "system": "http://snomed.info/sct", "code": "106328005"}]}]})


ELEMENTS = [
    Element("Patient.managingOrganization", "Organization",
            lambda r, v, _w: r.__setitem__("managingOrganization", v)),
    Element("Patient.generalPractitioner[0]", "Organization",
            lambda r, v, _w: r.__setitem__("generalPractitioner", [v])),
    Element("CareTeam.subject", "Patient", lambda r, v, _w: r.__setitem__("subject", v)),
    Element("CareTeam.participant[0].member", "PractitionerRole",
            lambda r, v, _w: _participant(r, v)),
    Element("CareTeam.participant[0].onBehalfOf", "Organization",
            lambda r, v, w: _participant(r, {"reference": f"Practitioner/{w.people['SW1']}"},
                                         v)),
    Element("CareTeam.managingOrganization[0]", "Organization",
            lambda r, v, _w: r.__setitem__("managingOrganization", [v])),
    Element("CareTeam.contained[0].organization", "Organization",
            lambda r, v, w: _contained(r, "organization", v, w)),
    Element("CareTeam.contained[0].practitioner", "Practitioner",
            lambda r, v, w: _contained(r, "practitioner", v, w)),
    Element("CareTeam.subject", "Patient", lambda r, v, _w: r.__setitem__("subject", v),
            base="eCAF"),
    Element("CareTeam.participant[0].member", "PractitionerRole",
            lambda r, v, _w: r["participant"][0].__setitem__("member", v), base="eCAF"),
    Element("CareTeam.participant[1].member", "PractitionerRole",
            lambda r, v, _w: r["participant"][1].__setitem__("member", v), base="eCAF"),
    Element("PractitionerRole.organization", "Organization",
            lambda r, v, _w: r.__setitem__("organization", v), validate_only=True),
    Element("PractitionerRole.practitioner", "Practitioner",
            lambda r, v, _w: r.__setitem__("practitioner", v), validate_only=True),
]
WRONG: dict[str, str] = {"Organization": "Patient", "Patient": "Organization",
                         "PractitionerRole": "Organization", "Practitioner": "Patient"}
IDS = st.from_regex(r"[A-Za-z0-9\-.]{1,40}", fullmatch=True)


@dataclass(frozen=True)
class Form:
    """A value for a reference element and whether the gateway can never follow it."""

    name: str
    value: Any
    refused: bool


def _known(kind: str, world: World) -> str:
    """Return the id of a stored resource of ``kind``."""
    return {"Organization": world.orgs[GP], "Patient": world.child,
            "PractitionerRole": world.roles["school"], "Practitioner": world.people["SW1"]}[kind]


def fixed_forms(element: Element, world: World) -> list[Form]:
    """Return one value of every form of reference for ``element``: known and unknown
    literal, this and another server's URL (alone and beside an identifier), an unknown
    identifier, a wrong type, contained, urn, a search, empty, not an object, display only."""
    kind, known = element.target, _known(element.target, world)
    elsewhere = f"https://elsewhere.example.org/fhir/{kind}/1"
    return [
        Form("known", {"reference": f"{kind}/{known}"}, False),
        Form("known, versioned", {"reference": f"{kind}/{known}/_history/1"}, False),
        Form("own absolute", {"reference": f"{OWN_BASE}/{kind}/{known}"}, False),
        Form("unknown", {"reference": f"{kind}/unknown"}, True),
        Form("own absolute unknown", {"reference": f"{OWN_BASE}/{kind}/unknown"}, True),
        Form("another server", {"reference": elsewhere}, True),
        Form("another server + identifier", {
            "reference": elsewhere, "identifier": {"system": ODS_CODE, "value": GP}}, False),
        Form("unknown identifier", {"identifier": {"system": ODS_CODE, "value": "Y99999"}},
             kind == "Organization"),
        Form("wrong type", {"reference": f"{WRONG[kind]}/{known}"}, True),
        Form("wrong Reference.type", {"type": WRONG[kind],
                                      "identifier": {"system": ODS_CODE, "value": GP}}, True),
        Form("contained, none", {"reference": "#nothing-here"}, True),
        Form("urn", {"reference": "urn:uuid:9d1c4a36-27e2-4b43-9d36-1d4f7c0e8a11"}, True),
        Form("search", {"reference": f"{kind}?identifier={ODS_CODE}|{GP}"}, True),
        Form("malformed", {"reference": f"{kind}/"}, True),
        Form("empty", {}, False),
        Form("empty reference", {"reference": ""}, False),
        Form("not an object", f"{kind}/{known}", False),
        Form("display only", {"display": "Somebody"}, False),
    ]


def forms(element: Element, world: World) -> st.SearchStrategy[Form]:
    """Return the forms of reference for ``element``, with generated ids, URLs and strings."""
    kind = element.target
    unknown = IDS.map(lambda i: f"{kind}/unknown-{i}")
    return st.one_of(
        st.sampled_from(fixed_forms(element, world)),
        unknown.map(lambda r: Form("unknown", {"reference": r}, True)),
        unknown.map(lambda r: Form("own absolute unknown", {"reference": f"{OWN_BASE}/{r}"},
                                   True)),
        IDS.map(lambda i: Form("another server", {
            "reference": f"https://elsewhere.example.org/fhir/{kind}/{i}"}, True)),
        IDS.map(lambda i: Form("wrong type", {"reference": f"{WRONG[kind]}/{i}"}, True)),
        st.uuids().map(lambda u: Form("urn", {"reference": f"urn:uuid:{u}"}, True)),
        st.text(max_size=30).map(lambda t: Form("malformed", {"reference": t}, False)),
        st.sampled_from([5, True, [], None, [{"reference": "x"}]]).map(
            lambda v: Form("not an object", v, False)),
    )


def _base_resources(env: Env) -> dict[str, tuple[str, dict[str, Any]]]:
    """Return (URL, stored resource without meta) of each resource type the test writes."""
    w = env.world
    out = {}
    for key, kind, rid in (("Patient", "Patient", w.child), ("CareTeam", "CareTeam", w.team),
                           ("eCAF", "CareTeam", w.ecaf),
                           ("PractitionerRole", "PractitionerRole", w.roles["member_school"])):
        resource = stored(env, kind, rid)
        resource.pop("meta")
        out[key] = (f"/fhir/{kind}/{rid}", resource)
    return out


def _check_outcome(response: Any, expression: str, refused: bool) -> dict[str, Any] | None:
    """Check one write's answer: never 5xx; an error names the element (for a refused form:
    422); return the error issue, if any (None, and the changed flag set, for a success)."""
    assert response.status_code < 500, response.data[:400]
    if response.status_code < 400:
        assert not refused, (expression, response.data[:300])
        CHANGED.add(expression)
        return None
    outcome = parsed(response)
    assert outcome["resourceType"] == "OperationOutcome"
    if refused:
        assert response.status_code == 422, response.data[:400]
        issue: dict[str, Any] = outcome["issue"][0]
        assert issue["expression"][0].startswith(expression), (issue, expression)
        return issue
    return None


CHANGED: set[str] = set()  # the elements whose writes went in since the bases were read


def _xml_body(resource: dict[str, Any]) -> bytes | None:
    """Return ``resource`` as FHIR XML, or None when XML cannot carry the value (a non-object
    where an object is due, a character XML 1.0 cannot hold)."""
    try:
        return dumps_resource(resource)
    except ValueError:
        return None


def test_no_reference_form_answers_5xx(env: Env) -> None:
    """Every reference-bearing element x every reference form, in JSON and XML writes, a
    transaction and ``$validate``: never a 5xx; a form the gateway can never follow is 422
    naming the element, and ``$validate`` reports the same issue."""
    bases = _base_resources(env)

    @settings(max_examples=20, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.sampled_from(ELEMENTS).flatmap(
        lambda e: st.tuples(st.just(e), forms(e, env.world))))
    def throw(case: tuple[Element, Form]) -> None:
        element, form = case
        url, base = bases[element.written_into]
        resource = copy.deepcopy(base)
        element.place(resource, copy.deepcopy(form.value), env.world)
        said = validate(env, copy.deepcopy(resource), env.who.admin)
        if element.validate_only:
            if form.refused:
                assert any(i["expression"][0].startswith(element.expression)
                           for i in errors(said)), said
            return
        written = _check_outcome(send(env, "PUT", url, copy.deepcopy(resource), env.who.admin),
                                 element.expression, form.refused)
        if written is not None:
            assert (written["expression"], written["diagnostics"]) in \
                [(i["expression"], i["diagnostics"]) for i in errors(said)], (written, said)
        xml = _xml_body(copy.deepcopy(resource))
        if xml is not None:
            response = env.client.put(url, data=xml, headers={
                **env.who.admin, "Content-Type": FHIR_XML, "Accept": FHIR_XML})
            _check_outcome(response, element.expression, form.refused)
        entry = {"resource": resource, "request": {"method": "PUT", "url": url[len("/fhir/"):]}}
        _check_outcome(transaction(env, [entry], env.who.admin),
                       f"Bundle.entry[0].resource.{element.expression.split('.', 1)[1]}",
                       form.refused)
        if CHANGED:  # a write that went in changed what the next ones start from
            bases.update(_base_resources(env))
            CHANGED.clear()

    for element in ELEMENTS:  # every element with every form, then generated ones
        for form in fixed_forms(element, env.world):
            throw = example((element, form))(throw)
    throw()


# --- reference search parameters read the same forms -----------------------------------------

def test_reference_search_values_in_every_form(env: Env) -> None:
    """A reference search value (FHIR R4 search.html#reference) may be the id, ``Type/id``
    (also versioned) or this server's URL; another server's URL names nothing stored here
    (no match); a wrong type or a value that is no reference is 400 naming the parameter."""
    w = env.world
    child_team = {w.team}
    gp_roles = {e["resource"]["id"] for e in fetch(
        env.client, f"/fhir/PractitionerRole?organization=Organization/{w.orgs[GP]}",
        env.who.admin)["entry"]}
    assert w.roles["gp"] in gp_roles
    cases = [
        (f"CareTeam?subject=Patient/{w.child}&category=directory-team", child_team),
        (f"CareTeam?subject={OWN_BASE}/Patient/{w.child}&category=directory-team", child_team),
        (f"CareTeam?subject=https://elsewhere.example.org/fhir/Patient/{w.child}", set()),
        (f"CareTeam?participant={OWN_BASE}/Practitioner/{w.people['SW1']}", {w.team, w.ecaf}),
        (f"CareTeam?participant=Practitioner/{w.people['SW1']}/_history/1", {w.team, w.ecaf}),
        (f"PractitionerRole?organization={OWN_BASE}/Organization/{w.orgs[GP]}", gp_roles),
        (f"PractitionerRole?organization=https://elsewhere.example.org/fhir/Organization/"
         f"{w.orgs[GP]}", set()),
    ]
    for query, expected in cases:
        bundle = fetch(env.client, f"/fhir/{query}", env.who.admin)
        assert {e["resource"]["id"] for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode") == "match"} == expected, query
    for query, name in (("CareTeam?participant=Patient/x", "participant"),
                        ("CareTeam?subject=Organization/x", "subject"),
                        ("PractitionerRole?organization=urn:uuid:x/y", "organization")):
        outcome = fetch(env.client, f"/fhir/{query}", env.who.admin, status=400)
        # errors.issue: a search parameter is named in ``location`` as http.<name>
        assert outcome["issue"][0]["location"] == [f"http.{name}"], query
