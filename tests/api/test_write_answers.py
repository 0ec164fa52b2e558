"""What a create or update answers (FHIR R4 http.html#ins-return): the resource by default
and with ``Prefer: return=representation``, an empty body with ``minimal``, the write's notes
with ``OperationOutcome`` — what was not kept, what was kept otherwise, that nothing changed
— for every writable type, in JSON and XML; in transaction and batch responses 201 for
creates and the notes in each entry's ``response.outcome``. Notes name elements and never
repeat a personal value or a secret."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.fhir.xml import dumps_resource
from adapter.models import AuditRecord, Subscription
from adapter.systems import DEFAULT_CANONICAL_BASE, OwnSystems
from tests.api.conftest import bearer
from tests.decommission.test_holders import holding, switch_off
from tests.fhir.fixtures import FHIR_JSON, FHIR_XML, LA, Env, fetch, parsed
from tests.notify.helpers import SECRET_EXT, subscription

OWN: Final = OwnSystems(DEFAULT_CANONICAL_BASE)
NARRATIVE: Final = {"status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">Sent by a case system</div>'}
PREFERENCES: Final = ["", "return=representation", "return=minimal", "return=OperationOutcome"]
# An R5 Subscription.parameter (an HTTP header of the rest-hook) sent as its R4 extension.
R5_PARAMETER: Final = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.parameter"
BEARER_SECRET: Final = "Bearer s3cr3t-t0ken-never-echoed"
HOOK: Final = "https://receiver.example.org/hook"
DAYS: Final = itertools.count()


@dataclass
class Write:
    """One write to try: its method, URL and body (made from the world)."""

    method: str
    url: str
    body: dict[str, Any]
    created: bool


def send(env: Env, write: Write, headers: dict[str, str], fmt: str = "json",
         prefer: str = "") -> Any:
    """Send ``write`` in ``fmt`` (the body and Accept), with ``Prefer`` when given."""
    media = FHIR_XML if fmt == "xml" else FHIR_JSON
    data = dumps_resource(write.body) if fmt == "xml" else json.dumps(write.body).encode()
    extra = {"Prefer": prefer} if prefer else {}
    return env.client.open(write.url, method=write.method, data=data,
                           headers={**headers, "Content-Type": media, "Accept": media, **extra})


def outcome_of(env: Env, write: Write, headers: dict[str, str]) -> list[str]:
    """Send ``write`` asking for the OperationOutcome; return its diagnostics."""
    response = send(env, write, headers, prefer="return=OperationOutcome")
    assert response.status_code in (200, 201), response.json
    assert response.json["resourceType"] == "OperationOutcome"
    return [i["diagnostics"] for i in response.json["issue"]]


def with_text(resource: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``resource`` with a narrative (which the directory does not keep)."""
    changed = copy.deepcopy(resource)
    changed["text"] = NARRATIVE
    return changed


# --- the writes of every writable type ---------------------------------------------------------

def patient_put(env: Env) -> Write:
    """A Patient update by its managing authority, with a narrative."""
    patient = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.la)
    patient["gender"] = "male"
    return Write("PUT", f"/fhir/Patient/{env.world.child}", with_text(patient), False)


def patient_post(env: Env) -> Write:
    """A new child of the authority (a copy of one without its identifiers)."""
    patient = fetch(env.client, f"/fhir/Patient/{env.world.lonely}", env.who.la)
    for key in ("id", "meta", "identifier"):
        patient.pop(key)
    patient["name"][0]["family"] = "Franklin"
    return Write("POST", "/fhir/Patient", with_text(patient), True)


def team_put(env: Env) -> Write:
    """A child's team sent back as read, with a narrative."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la)
    return Write("PUT", f"/fhir/CareTeam/{env.world.team}", with_text(team), False)


def new_involvement(env: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a participant of the authority's social worker, starting on a day no earlier
    one did (so that each is a new involvement), and its contained PractitionerRole."""
    start = dt.date(2025, 2, 1) + dt.timedelta(days=next(DAYS))
    role = [{"coding": [{"system": OWN.code_system("involvement-role"), "code": "early-help"}]}]
    return ({"role": role, "member": {"reference": "#new"},
             "period": {"start": start.isoformat()}},
            {"resourceType": "PractitionerRole", "id": "new",
             "practitioner": {"reference": f"Practitioner/{env.world.people['SW1']}"},
             "organization": {"reference": f"Organization/{env.world.orgs[LA]}"},
             "code": role})


def team_post(env: Env) -> Write:
    """A child's team POSTed with a new involvement of the authority."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la)
    for key in ("id", "meta"):
        team.pop(key)
    participant, role = new_involvement(env)
    team["participant"].append(participant)
    team["contained"] = [role]
    return Write("POST", "/fhir/CareTeam", with_text(team), True)


def ecaf_put(env: Env) -> Write:
    """An eCAF team update with its consent withdrawn."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.la_sensitive)
    for extension in team["extension"]:
        if extension["url"].endswith("ConsentToShare"):
            extension["valueBoolean"] = False
    return Write("PUT", f"/fhir/CareTeam/{env.world.ecaf}", with_text(team), False)


def organization_put(env: Env) -> Write:
    """The authority's own Organization, renamed."""
    org = fetch(env.client, f"/fhir/Organization/{env.world.orgs[LA]}", env.who.la)
    org["name"] = "Northmoor Borough Council"
    return Write("PUT", f"/fhir/Organization/{env.world.orgs[LA]}", with_text(org), False)


def practitioner_put(env: Env) -> Write:
    """The authority's social worker, with another given name."""
    rid = env.world.people["SW1"]
    person = fetch(env.client, f"/fhir/Practitioner/{rid}", env.who.la)
    person["name"][0]["given"] = ["Samuel"]
    return Write("PUT", f"/fhir/Practitioner/{rid}", with_text(person), False)


def subscription_post(env: Env) -> Write:
    """A Subscription to entry changes."""
    body = subscription("directory-entry-changed", HOOK)
    return Write("POST", "/fhir/Subscription", with_text(body), True)


def subscription_put(env: Env) -> Write:
    """An update of an existing Subscription, paused."""
    response = env.client.post("/fhir/Subscription",
                               json=subscription("directory-entry-changed", HOOK),
                               headers={**env.who.la, "Content-Type": FHIR_JSON})
    assert response.status_code == 201
    body = response.json
    body["channel"]["extension"] = [e for e in body["channel"].get("extension", [])
                                    if e["url"] != SECRET_EXT] or None
    if body["channel"]["extension"] is None:
        del body["channel"]["extension"]
    body["status"] = "off"
    return Write("PUT", f"/fhir/Subscription/{body['id']}", with_text(body), False)


WRITES: Final[dict[str, Callable[[Env], Write]]] = {
    "Patient PUT": patient_put, "Patient POST": patient_post, "CareTeam PUT": team_put,
    "CareTeam POST": team_post, "eCAF CareTeam PUT": ecaf_put,
    "Organization PUT": organization_put, "Practitioner PUT": practitioner_put,
    "Subscription POST": subscription_post, "Subscription PUT": subscription_put}


def writer(env: Env, name: str) -> dict[str, str]:
    """The caller that may make the write ``name`` (the eCAF team: with the sensitive right,
    which its sensitive member needs to be kept)."""
    return env.who.la_sensitive if name.startswith("eCAF") else env.who.la


# --- Prefer: return= ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("name", list(WRITES))
def test_every_write_answers_per_prefer(env: Env, name: str, fmt: str) -> None:
    """Without Prefer and with return=representation: the resource written (even though its
    narrative was not kept); minimal: no body; OperationOutcome: the notes, which say the
    narrative was not kept. Location, ETag and Last-Modified every time."""
    make = WRITES[name]
    for prefer in PREFERENCES:
        write = make(env)
        response = send(env, write, writer(env, name), fmt, prefer)
        assert response.status_code == (201 if write.created else 200), response.data[:600]
        resource_type = write.url.split("/")[2]
        for header in ("Location", "ETag", "Last-Modified"):
            assert header in response.headers, (prefer, header)
        assert response.headers["Location"].startswith(
            f"http://localhost/fhir/{resource_type}/")
        shown_once = name == "Subscription POST"  # its secret: always the resource (below)
        if prefer == "return=minimal" and not shown_once:
            assert response.data == b""
            assert "Content-Type" not in response.headers  # no body, no text/html
            continue
        body = parsed(response)
        assert response.content_type.startswith(FHIR_XML if fmt == "xml" else FHIR_JSON)
        if prefer == "return=OperationOutcome" and not shown_once:
            assert body["resourceType"] == "OperationOutcome"
            assert f"Not kept: {resource_type}.text." in [i["diagnostics"]
                                                          for i in body["issue"]]
        else:
            assert body["resourceType"] == resource_type
            assert response.headers["ETag"] == f'W/"{body["meta"]["versionId"]}"'


def test_a_new_subscription_is_always_answered_with_its_secret(env: Env) -> None:
    """The signing secret is shown once, in the create's answer: a Subscription create answers
    with the resource whatever Prefer asks (RFC 7240: a preference may be not applied), and
    says which it applied."""
    for prefer in PREFERENCES[1:]:
        response = send(env, subscription_post(env), env.who.la, prefer=prefer)
        assert response.status_code == 201
        assert SECRET_EXT in str(response.json)
        assert response.headers["Preference-Applied"] == "return=representation"


def test_a_shielded_childs_update_answers_with_the_child(env: Env) -> None:
    """A PUT on a shielded child (by a caller with the right) answers with the Patient and the
    break-glass warning in a Warning header, not with an OperationOutcome."""
    rid = env.world.shielded
    patient = fetch(env.client, f"/fhir/Patient/{rid}", env.who.la_shielded)
    patient["gender"] = "male"
    response = send(env, Write("PUT", f"/fhir/Patient/{rid}", patient, False),
                    env.who.la_shielded)
    assert response.status_code == 200
    assert response.json["resourceType"] == "Patient"
    assert response.json["gender"] == "male"
    assert "199 contactpoint-gateway" in response.headers["Warning"]
    minimal = send(env, Write("PUT", f"/fhir/Patient/{rid}", patient, False),
                   env.who.la_shielded, prefer="return=minimal")
    assert minimal.status_code == 200 and minimal.data == b""


def test_an_unknown_return_preference_is_ignored(env: Env) -> None:
    """RFC 7240: a preference the server does not know is ignored (the resource is returned);
    preferences are read case-insensitively, among others in one or several headers."""
    write = patient_put(env)
    response = send(env, write, env.who.la, prefer="return=everything")
    assert response.json["resourceType"] == "Patient"
    assert "Preference-Applied" not in response.headers
    response = send(env, write, env.who.la, prefer='handling=strict, RETURN="operationoutcome"')
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.headers["Preference-Applied"] == "return=OperationOutcome"


# --- the notes ----------------------------------------------------------------------------------

def test_an_update_that_changes_nothing_says_so(env: Env) -> None:
    """Sending back what was read changes nothing: 200, the version stays, "No change"; the
    same for a Patient, a child's team, an eCAF team, an Organization and a Subscription."""
    w = env.world
    urls = [f"/fhir/Patient/{w.child}", f"/fhir/CareTeam/{w.team}", f"/fhir/CareTeam/{w.ecaf}",
            f"/fhir/Organization/{w.orgs[LA]}"]
    for url in urls:
        read = fetch(env.client, url, env.who.la_sensitive)
        notes = outcome_of(env, Write("PUT", url, read, False), env.who.la_sensitive)
        assert any(n.startswith("No change: ") and f"version {read['meta']['versionId']}" in n
                   for n in notes), (url, notes)
        after = fetch(env.client, url, env.who.la_sensitive)
        assert after["meta"]["versionId"] == read["meta"]["versionId"]
    write = subscription_put(env)
    write.body.pop("text")
    first = send(env, write, env.who.la)
    assert first.json["meta"]["versionId"] == "2"
    again = send(env, write, env.who.la, prefer="return=OperationOutcome")
    assert any(i["diagnostics"].startswith("No change: ") for i in again.json["issue"])
    assert again.headers["ETag"] == 'W/"2"'


def test_an_update_that_changes_something_does_not_say_no_change(env: Env) -> None:
    """A real change bumps the version and its notes hold no "No change"."""
    notes = outcome_of(env, patient_put(env), env.who.la)
    assert not [n for n in notes if n.startswith("No change")]
    assert "Not kept: Patient.text." in notes


def test_a_patients_active_flag_is_decided_by_its_record_status(env: Env) -> None:
    """``active: false`` beside the record status ``live`` keeps the entry live: a "Changed"
    note says so (and "No change", as nothing the directory keeps changed); the same in a
    transaction entry's outcome."""
    patient = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.la)
    patient["active"] = False
    notes = outcome_of(env, Write("PUT", f"/fhir/Patient/{env.world.child}", patient, False),
                       env.who.la)
    assert any(n.startswith("Changed: Patient.active from 'false' to 'true': a child's entry "
                            "is active while its record status") for n in notes), notes
    assert any(n.startswith("No change: ") for n in notes)
    response = env.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                              "entry": [{"resource": patient, "request": {
                                                  "method": "PUT",
                                                  "url": f"Patient/{patient['id']}"}}]},
                               headers={**env.who.la, "Content-Type": FHIR_JSON})
    issues = response.json["entry"][0]["response"]["outcome"]["issue"]
    assert any(i["diagnostics"].startswith("Changed: Patient.active") for i in issues)


def test_a_childs_team_announces_what_it_keeps_otherwise(env: Env) -> None:
    """A child's team keeps the entry's status and managing authority and the directory's
    displays, and a contained role becomes a PractitionerRole: each is a "Changed" note; the
    text and an unknown extension are "Not kept"; no name is repeated."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    team["status"] = "inactive"
    authority = {"identifier": team["managingOrganization"][0]["identifier"]}
    team["managingOrganization"] = [{"reference": f"Organization/{w.orgs['A81001']}"}]
    team["subject"]["display"] = "Augusta Ada King"
    team["participant"][0]["member"]["display"] = "Someone else"
    team["extension"] = [{"url": "https://vendor.example.org/ext/case-ref",
                          "valueString": "CASE-42"}]
    notes = outcome_of(env, Write("PUT", f"/fhir/CareTeam/{w.team}", with_text(team), False),
                       env.who.la)
    joined = " ".join(notes)
    assert "Changed: CareTeam.status from 'inactive' to 'active'" in joined
    assert f"Changed: CareTeam.managingOrganization[0]: a child's team is managed by the " \
           f"child's managing authority, Organization/{w.orgs[LA]}." in notes
    assert any(n.startswith("Changed: CareTeam.subject.display: ") for n in notes)
    assert any(n.startswith("Changed: CareTeam.participant[0].member.display: ") for n in notes)
    assert "Not kept: CareTeam.text." in notes
    assert any(n.startswith("Not kept: CareTeam.extension") for n in notes)
    for value in ("Augusta", "Someone else", "CASE-42"):
        assert value not in joined
    stored = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    assert stored["status"] == "active"
    stored["managingOrganization"] = [authority]  # the authority named by its identifier
    notes = outcome_of(env, Write("PUT", f"/fhir/CareTeam/{w.team}", stored, False),
                       env.who.la)
    assert not [n for n in notes if "managingOrganization" in n]


def test_a_contained_member_and_an_ecaf_status_are_announced(env: Env) -> None:
    """A participant described by a contained PractitionerRole is kept as the involvement's
    PractitionerRole; an eCAF team's status follows its assessment status."""
    notes = outcome_of(env, team_post(env), env.who.la)
    index = len(fetch(env.client, f"/fhir/CareTeam/{env.world.team}",
                      env.who.la)["participant"]) - 1
    assert any(n.startswith(f"Changed: CareTeam.participant[{index}].member: kept as the "
                            "PractitionerRole") for n in notes), notes
    ecaf = ecaf_put(env)
    ecaf.body["status"] = "inactive"
    notes = outcome_of(env, ecaf, env.who.la_sensitive)
    assert any(n.startswith("Changed: CareTeam.status from 'inactive' to 'active': an eCAF "
                            "team's status follows its assessment status") for n in notes)


def test_a_subscription_announces_what_it_does_not_keep_and_never_echoes_a_secret(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """A Subscription asking to be active, with a timeout over the cap, a JSON payload type,
    the narrative, a contact and an R5 authorization-header parameter: the status, timeout
    and payload are "Changed" (codes shown), the rest "Not kept" naming the element; the
    header's value appears in no answer, stored row, audit record or log line."""
    body = subscription("directory-entry-changed", HOOK, timeout=90, status="active",
                        payload="application/json")
    body["text"] = NARRATIVE
    body["contact"] = [{"system": "email", "value": "ops@vendor.example.org"}]
    body["extension"] = [{"url": R5_PARAMETER, "extension": [
        {"url": "name", "valueString": "Authorization"},
        {"url": "value", "valueString": BEARER_SECRET}]}]
    answers = []
    for prefer in PREFERENCES:
        response = send(env, Write("POST", "/fhir/Subscription", body, True), env.who.la,
                        prefer=prefer)
        assert response.status_code == 201
        answers.append(response.data.decode())
        notes = [i["diagnostics"] for i in response.json.get("issue", [])]
        assert not notes  # the create answers with the resource (its secret)
    outcome = env.client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": body, "request": {"method": "POST", "url": "Subscription"}}]},
        headers={**env.who.la, "Content-Type": FHIR_JSON})
    answers.append(outcome.data.decode())
    notes = [i["diagnostics"] for i in outcome.json["entry"][0]["response"]["outcome"]["issue"]]
    joined = " ".join(notes)
    assert "Changed: Subscription.status from 'active' to 'requested'" in joined
    assert "Changed: Subscription.channel.extension[0].valueUnsignedInt from '90' to '60'" \
        in joined
    assert "Changed: Subscription.channel.payload from 'application/json' to " \
           "'application/fhir+json'" in joined
    assert "Not kept: Subscription.text." in notes
    assert any(n.startswith("Not kept: Subscription.contact") for n in notes)
    assert any(n.startswith(f"Not kept: Subscription.extension[0] (extension {R5_PARAMETER})")
               and "channel.header" in n for n in notes)
    assert "ops@vendor.example.org" not in joined
    for text in [*answers, caplog.text]:
        assert "s3cr3t" not in text
    with env.db.sessions() as session:
        rows = [repr(vars(s)) for s in session.scalars(select(Subscription))]
        rows += [repr(vars(a)) for a in session.scalars(select(AuditRecord))]
    assert rows and not [r for r in rows if "s3cr3t" in r]


def test_a_subscription_header_is_kept_and_not_repeated_in_notes(env: Env) -> None:
    """An authorization header sent the R4 way (channel.header) is kept; no note repeats it."""
    body = subscription("directory-entry-changed", HOOK, headers=(f"Authorization: "
                                                                  f"{BEARER_SECRET}",))
    body["channel"]["header"].append("X-Case: 1")
    response = env.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                              "entry": [{"resource": body, "request": {
                                                  "method": "POST", "url": "Subscription"}}]},
                               headers={**env.who.la, "Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.json
    entry = response.json["entry"][0]
    assert entry["response"]["status"] == "201 Created"
    assert "outcome" not in entry["response"]
    assert entry["resource"]["channel"]["header"] == body["channel"]["header"]


# --- Subscription.end ---------------------------------------------------------------------------

def test_a_subscription_ending_in_the_past_is_refused(env: Env) -> None:
    """An end that has passed is 422 naming Subscription.end, on create and on update (in
    JSON and XML, in a transaction); an end in the future is kept."""
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat(timespec="seconds")
    body = {**subscription("directory-entry-changed", HOOK), "end": past}
    for fmt in ("json", "xml"):
        response = send(env, Write("POST", "/fhir/Subscription", body, True), env.who.la, fmt)
        assert response.status_code == 422
        assert parsed(response)["issue"][0]["expression"] == ["Subscription.end"]
    response = env.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                              "entry": [{"resource": body, "request": {
                                                  "method": "POST", "url": "Subscription"}}]},
                               headers={**env.who.la, "Content-Type": FHIR_JSON})
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == ["Bundle.entry[0].resource.end"]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).replace(microsecond=0)
    write = subscription_put(env)
    write.body["end"] = future.isoformat().replace("+00:00", "Z")
    response = send(env, write, env.who.la)
    assert response.status_code == 200
    assert dt.datetime.fromisoformat(response.json["end"]) == future
    write.body["end"] = past
    response = send(env, write, env.who.la)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == ["Subscription.end"]
    assert "s3cr3t" not in response.data.decode()


# --- transaction and batch ----------------------------------------------------------------------

def _new_child_and_team(env: Env) -> list[dict[str, Any]]:
    """Return transaction entries creating a child (with a narrative) and its team."""
    patient = patient_post(env).body
    participant, role = new_involvement(env)
    team = {"resourceType": "CareTeam", "text": NARRATIVE, "contained": [role],
            "category": [{"coding": [{"system": OWN.code_system("careteam-category"),
                                      "code": "directory-team"}]}],
            "subject": {"reference": "urn:uuid:7d1c6f0e-2a8b-4c55-9e0d-3b6f1a2c4d5e"},
            "participant": [participant]}
    return [{"fullUrl": "urn:uuid:7d1c6f0e-2a8b-4c55-9e0d-3b6f1a2c4d5e", "resource": patient,
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": team, "request": {"method": "POST", "url": "CareTeam"}}]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("prefer", PREFERENCES)
def test_bundle_creates_are_201_with_their_notes(env: Env, kind: str, prefer: str) -> None:
    """A Patient and its CareTeam created in one Bundle each answer 201 Created, their notes
    in response.outcome; the resource in the entry unless Prefer asks for minimal or the
    OperationOutcome (which always has an issue)."""
    entries = _new_child_and_team(env)
    if kind == "batch":  # a batch has no urn:uuid resolution: the team of an existing child
        entries[1]["resource"] = team_post(env).body
    headers = {**env.who.la, "Content-Type": FHIR_JSON, **({"Prefer": prefer} if prefer else {})}
    response = env.client.post("/fhir", json={"resourceType": "Bundle", "type": kind,
                                              "entry": entries}, headers=headers)
    assert response.status_code == 200, response.json
    answers = response.json["entry"]
    assert [a["response"]["status"] for a in answers] == ["201 Created", "201 Created"]
    for answer, resource_type in zip(answers, ("Patient", "CareTeam"), strict=True):
        notes = [i["diagnostics"] for i in answer["response"]["outcome"]["issue"]]
        assert f"Not kept: {resource_type}.text." in notes
        assert answer["response"]["location"].startswith(
            f"http://localhost/fhir/{resource_type}/")
        if prefer in ("", "return=representation"):
            assert answer["resource"]["resourceType"] == resource_type
        else:
            assert "resource" not in answer


def test_bundle_update_that_changes_nothing_says_so(env: Env) -> None:
    """A batch PUT of what was read: 200 OK, the version stays, "No change" in the outcome;
    an update that changes something has none; in XML too."""
    patient = fetch(env.client, f"/fhir/Patient/{env.world.child}", env.who.la)
    changed = fetch(env.client, f"/fhir/Patient/{env.world.lonely}", env.who.la)
    changed["gender"] = "male"
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient, "request": {"method": "PUT", "url": f"Patient/{patient['id']}"}},
        {"resource": changed, "request": {"method": "PUT", "url": f"Patient/{changed['id']}"}}]}
    response = env.client.post("/fhir", data=dumps_resource(bundle), headers={
        **env.who.la, "Content-Type": FHIR_XML, "Accept": FHIR_XML})
    assert response.status_code == 200
    same, other = parsed(response)["entry"]
    assert same["response"]["status"] == "200 OK"
    assert same["response"]["etag"] == f'W/"{patient["meta"]["versionId"]}"'
    assert same["response"]["outcome"]["issue"][-1]["diagnostics"].startswith("No change: ")
    assert other["response"]["status"] == "200 OK"
    assert not [i for i in other["response"].get("outcome", {}).get("issue", [])
                if i["diagnostics"].startswith("No change")]


# --- a purge Task's answer -------------------------------------------------------------------

def test_a_purge_task_answer_announces_what_the_holder_cannot_set(app: Flask,
                                                                  client: FlaskClient,
                                                                  db: Database) -> None:
    """The holder sets status, statusReason and the purge count; a note it adds is "Not
    kept", the description it rewrites "Changed" (not repeated); sending the same answer again
    is "No change" at the same version; without Prefer the answer is the Task."""
    holder = bearer(client, app, "la-holder", "E09000033", scopes="system/Task.rus")
    holding(app, db, {"la-holder": 2})
    switch_off(app)
    task = client.get("/fhir/Task?status=requested", headers=holder).json["entry"][0]["resource"]
    answer = {**task, "status": "accepted", "note": [{"text": "Ticket 4711"}],
              "description": "Rewritten by the holder"}
    url = f"/fhir/Task/{task['id']}"
    headers = {**holder, "Content-Type": FHIR_JSON}
    first = client.put(url, json=answer, headers=headers)
    assert first.status_code == 200 and first.json["resourceType"] == "Task"
    assert first.json["status"] == "accepted"
    again = client.put(url, json=answer, headers={**headers, "Prefer": "return=OperationOutcome"})
    notes = [i["diagnostics"] for i in again.json["issue"]]
    assert any(n.startswith("Not kept: Task.note[0] (the gateway issues the purge Task")
               for n in notes), notes
    assert any(n.startswith("Changed: Task.description: the gateway issues") for n in notes)
    assert any(n.startswith("No change: ") for n in notes)
    assert again.headers["ETag"] == first.headers["ETag"]
    assert "Ticket 4711" not in again.data.decode()
    assert "Rewritten" not in again.data.decode()


def test_a_bundle_import_tells_an_unchanged_entry_from_an_updated_one() -> None:
    """The ``import`` command reads a Bundle's answers: 200 with "No change" is unchanged,
    200 without it updated, 201 created."""
    from adapter.fhir.file_import import _response_outcome

    same = {"response": {"status": "200 OK", "outcome": {"resourceType": "OperationOutcome",
                                                         "issue": [{"diagnostics":
                                                                    "No change: Patient/x"}]}}}
    assert _response_outcome(0, same).status == "unchanged"
    assert _response_outcome(1, {"response": {"status": "200 OK"}}).status == "updated"
    assert _response_outcome(2, {"response": {"status": "201 Created"}}).status == "created"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_conditional_writes_answer_the_same_way(env: Env, fmt: str) -> None:
    """A conditional update (PUT with search parameters) answers per Prefer as a PUT by id;
    a create whose If-None-Exist matches answers 200 with the resource found, and with
    Prefer: return=OperationOutcome says it created nothing."""
    w = env.world
    org = organization_put(env)
    org.url = f"/fhir/Organization?_id={w.orgs[LA]}"
    response = send(env, org, env.who.la, fmt)
    assert response.status_code == 200
    assert parsed(response)["resourceType"] == "Organization"
    notes = [i["diagnostics"] for i in parsed(send(env, org, env.who.la, fmt,
                                                   "return=OperationOutcome"))["issue"]]
    assert "Not kept: Organization.text." in notes
    assert any(n.startswith("No change: ") for n in notes)
    patient = fetch(env.client, f"/fhir/Patient/{w.child}", env.who.la)
    found = Write("POST", "/fhir/Patient", patient, False)
    condition = {"If-None-Exist": f"_id={w.child}"}
    response = send(env, found, {**env.who.la, **condition}, fmt)
    assert response.status_code == 200
    assert parsed(response)["id"] == w.child
    response = send(env, found, {**env.who.la, **condition}, fmt, "return=OperationOutcome")
    assert [i["diagnostics"] for i in parsed(response)["issue"]] == [
        f"Not created: Patient/{w.child} matches the If-None-Exist condition (FHIR R4 "
        "http.html#ccreate); it is returned unchanged."]


def test_a_warning_about_what_was_sent_never_breaks_the_answer(env: Env) -> None:
    """An extension whose URL is not US-ASCII draws a warning that no header can carry: the
    answer is still the resource (no Warning header), and the notes name the extension."""
    write = patient_put(env)
    write.body["extension"].append({"url": "https://vendor.example.org/ext/straße",
                                    "valueString": "x"})
    response = send(env, write, env.who.la)
    assert response.status_code == 200, response.json
    assert response.json["resourceType"] == "Patient"
    assert "Warning" not in response.headers
    notes = outcome_of(env, write, env.who.la)
    assert any("straße" in n for n in notes)
