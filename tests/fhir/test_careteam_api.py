"""CareTeam over FHIR REST (disclosure and audit: docs/architecture.md "Security model"): the
child's team and eCAF Teams Around the Child, every declared interaction and search parameter
in JSON and XML on both databases, with real tokens; shielded and sensitive canaries never
reach callers without the right; every read and search hit is audited."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask import Flask

from adapter.systems import DEFAULT_CANONICAL_BASE, OwnSystems
from tests.fhir.fixtures import (
    CANARIES,
    FHIR_JSON,
    FHIR_XML,
    LA,
    SENSITIVE_CANARIES,
    SHIELDED_CANARIES,
    Env,
    World,
    audit_rows,
    concurrent_puts,
    entries,
    fetch,
    ids,
    labels,
    parsed,
    with_format,
)

FORMATS = ["json", "xml"]
OWN = OwnSystems(DEFAULT_CANONICAL_BASE)
CATEGORY = OWN.code_system("careteam-category")
ECAF_SYSTEM = OWN.ecaf_assessment


def participants(team: dict[str, Any]) -> list[str]:
    """Return the member references (or displays) of a CareTeam's participants."""
    return [p["member"]["reference"] if "member" in p else p["onBehalfOf"]["display"]
            for p in team.get("participant", [])]


def roles_of(team: dict[str, Any]) -> set[str]:
    """Return the exact involvement-role codes of a CareTeam's participants."""
    return {c["code"] for p in team.get("participant", []) for r in p.get("role", [])
            for c in r["coding"] if c["system"].endswith("/involvement-role")}


# --- read -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_read_team_shows_everything_to_a_caller_with_the_rights(env: Env, fmt: str) -> None:
    """The child's team: one participant per involvement, version = the child's, ETag."""
    response = env.client.get(f"/fhir/CareTeam/{env.world.team}",
                              headers=with_format(env.who.la_sensitive, fmt))
    assert response.status_code == 200
    team = parsed(response)
    assert team["id"] == env.world.team
    assert response.headers["ETag"] == f'W/"{team["meta"]["versionId"]}"'
    assert "Last-Modified" in response.headers
    assert roles_of(team) == {"education", "gp", "social-worker", "camhs"}
    assert team["subject"]["reference"] == f"Patient/{env.world.child}"
    assert "REDACTED" not in labels(team)
    assert team["category"][0]["coding"][0]["code"] == "directory-team"


@pytest.mark.parametrize("fmt", FORMATS)
def test_sensitive_involvements_are_removed_and_labelled(env: Env, fmt: str) -> None:
    """Without the sensitive-services right the CAMHS involvement is gone and the team is
    labelled REDACTED (docs/domain.md "Sensitive services")."""
    response = env.client.get(f"/fhir/CareTeam/{env.world.team}",
                              headers=with_format(env.who.la, fmt))
    team = parsed(response)
    assert roles_of(team) == {"education", "gp", "social-worker"}
    assert "REDACTED" in labels(team)
    assert not [c for c in SENSITIVE_CANARIES if c in response.data.decode()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_shielded_team_is_withheld_without_the_right(env: Env, fmt: str) -> None:
    """A shielded child's team shows no participant, labelled restricted and REDACTED; with the
    shielding right it is shown, with the break-glass warning and an override audit."""
    response = env.client.get(f"/fhir/CareTeam/{env.world.shielded_team}",
                              headers=with_format(env.who.la, fmt))
    team = parsed(response)
    assert "participant" not in team
    assert labels(team) == {"R", "REDACTED"}
    assert not [c for c in SHIELDED_CANARIES if c in response.data.decode()]
    response = env.client.get(f"/fhir/CareTeam/{env.world.shielded_team}",
                              headers=with_format(env.who.la_shielded, fmt))
    assert roles_of(parsed(response)) == {"social-worker", "education"}
    assert "199 contactpoint-gateway" in response.headers["Warning"]
    assert audit_rows(env.db)[-1][-1] is True


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_ecaf_team_without_sensitive_member(env: Env, fmt: str) -> None:
    """An eCAF team: its identifier, the lead professional and the members; a sensitive member
    is removed for a caller without the right."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.la, fmt)
    assert team["identifier"][0] == {"system": ECAF_SYSTEM, "value": env.world.ecaf_id}
    assert f"PractitionerRole/{env.world.ecaf_lead}" in participants(team)
    assert roles_of(team) == {"education"}
    assert "REDACTED" in labels(team)
    full = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.la_sensitive, fmt)
    assert roles_of(full) == {"education", "camhs"}
    assert "REDACTED" not in labels(full)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sensitive_lead_is_replaced_by_whom_to_ask(env: Env, fmt: str) -> None:
    """A lead professional from a sensitive service is shown as the managing authority (whom
    to ask), without a reference to its PractitionerRole, which is not found."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf_sensitive_lead}", env.who.la,
                 fmt)
    lead = next(p for p in team["participant"] if "member" not in p)
    assert lead["onBehalfOf"]["identifier"]["value"] == LA
    assert "REDACTED" in labels(team)
    fetch(env.client, f"/fhir/PractitionerRole/{env.world.roles['sensitive_lead']}", env.who.la,
          fmt, status=404)
    full = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf_sensitive_lead}",
                 env.who.la_sensitive, fmt)
    assert "onBehalfOf" not in str(full)  # members are PractitionerRoles (FHIR R4 ctm-1)
    assert f"PractitionerRole/{env.world.roles['sensitive_lead']}" in participants(full)


@pytest.mark.parametrize("fmt", FORMATS)
def test_shielded_childs_ecaf_team_does_not_exist_without_the_right(env: Env, fmt: str) -> None:
    """The eCAF team of a shielded child is withheld (its existence is the CAF indicator)."""
    outcome = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf_shielded}", env.who.la, fmt,
                    status=404)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    bundle = fetch(env.client, "/fhir/CareTeam?category=ecaf-tac", env.who.la, fmt)
    assert env.world.ecaf_shielded not in ids(bundle)
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf_shielded}", env.who.la_shielded,
                 fmt)
    assert "R" in labels(team)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_careteam_is_not_found(env: Env, fmt: str) -> None:
    """An unknown id is a 404 OperationOutcome."""
    outcome = fetch(env.client, "/fhir/CareTeam/no-such-team", env.who.admin, fmt, status=404)
    assert outcome["resourceType"] == "OperationOutcome"


def test_archived_childs_team_is_invisible_to_ordinary_callers(env: Env) -> None:
    """An archived entry's teams are invisible to every ordinary caller (docs/domain.md)."""
    from sqlalchemy import update

    from adapter.models import Child

    with env.db.transaction() as session:
        session.execute(update(Child).where(Child.resource_id == env.world.child)
                        .values(record_status="archived"))
    fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la, status=404)
    fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.la, status=404)
    fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.admin)


# --- vread and history ------------------------------------------------------------------------

def put_team(env: Env, team: dict[str, Any], headers: dict[str, str],
             **extra: str) -> Any:
    """PUT a CareTeam as JSON."""
    return env.client.put(f"/fhir/CareTeam/{team['id']}", json=team,
                          headers={**headers, "Content-Type": FHIR_JSON, **extra})


def without(team: dict[str, Any], role: str) -> dict[str, Any]:
    """Return a copy of a team without the participants of ``role``."""
    changed = copy.deepcopy(team)
    changed["participant"] = [p for p in changed["participant"]
                              if role not in {c["code"] for r in p["role"] for c in r["coding"]}]
    return changed


@pytest.mark.parametrize("fmt", FORMATS)
def test_vread_and_history_of_a_childs_team(env: Env, fmt: str) -> None:
    """A child's team has the child's versions: the previous one is served from the history
    snapshot with the same PractitionerRole ids."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la)
    response = put_team(env, without(team, "social-worker"), env.who.la)
    assert response.status_code == 200, response.json
    first = team["meta"]["versionId"]
    old = fetch(env.client, f"/fhir/CareTeam/{env.world.team}/_history/{first}", env.who.la,
                fmt)
    assert roles_of(old) == {"education", "gp", "social-worker"}
    assert set(participants(old)) == set(participants(team))
    now = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la, fmt)
    assert roles_of(now) == {"education", "gp"}
    current = now["meta"]["versionId"]
    assert int(current) == int(first) + 1  # one change, one version (however many flushes)
    assert fetch(env.client, f"/fhir/CareTeam/{env.world.team}/_history/{current}",
                 env.who.la, fmt)["meta"]["versionId"] == current
    bundle = fetch(env.client, f"/fhir/CareTeam/{env.world.team}/_history", env.who.la, fmt)
    assert bundle["type"] == "history"
    assert [e["response"]["etag"] for e in bundle["entry"]] == [f'W/"{current}"',
                                                                f'W/"{first}"']
    fetch(env.client, f"/fhir/CareTeam/{env.world.team}/_history/99", env.who.la, fmt,
          status=404)


@pytest.mark.parametrize("fmt", FORMATS)
def test_history_never_shows_withheld_participants(env: Env, fmt: str) -> None:
    """Earlier versions are disclosed by the same policy (sensitive removed, REDACTED)."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.admin)
    assert put_team(env, without(team, "gp"), env.who.admin).status_code == 200
    response = env.client.get(f"/fhir/CareTeam/{env.world.team}/_history",
                              headers=with_format(env.who.la, fmt))
    assert not [c for c in SENSITIVE_CANARIES if c in response.data.decode()]
    assert all("REDACTED" in labels(e["resource"]) for e in parsed(response)["entry"])


# --- search -------------------------------------------------------------------------------------

def search_cases(world: World) -> list[tuple[str, set[str]]]:
    """Return (query, CareTeam ids the plain authority caller must get) per parameter."""
    w = world
    mine = {w.team, w.other_team, w.ecaf, w.ecaf_sensitive_lead}
    return [
        (f"patient=Patient/{w.child}", {w.team, w.ecaf, w.ecaf_sensitive_lead}),
        (f"patient={w.child}", {w.team, w.ecaf, w.ecaf_sensitive_lead}),
        (f"subject=Patient/{w.other}", {w.other_team}),
        (f"subject:identifier={OWN.contactpoint_id}|CP000000011",
         {w.team, w.ecaf, w.ecaf_sensitive_lead}),
        ("status=active", {w.team, w.other_team, w.ecaf}),
        ("status=proposed", {w.ecaf_sensitive_lead}),
        ("status:not=active", {w.ecaf_sensitive_lead}),
        (f"category={CATEGORY}|directory-team", {w.team, w.other_team}),
        ("category=ecaf-tac", {w.ecaf, w.ecaf_sensitive_lead}),
        (f"identifier={ECAF_SYSTEM}|{w.ecaf_id}", {w.ecaf}),
        (f"identifier={w.ecaf_id}", {w.ecaf}),
        ("identifier=http://example.org/other|ECAF-201-0000001", set()),
        (f"participant=PractitionerRole/{w.roles['school']}", {w.team}),
        (f"participant=PractitionerRole/{w.ecaf_lead}", {w.ecaf}),
        (f"participant=Practitioner/{w.people['SW1']}", {w.team, w.ecaf}),
        (f"participant=Organization/{w.orgs['100001']}", {w.team, w.other_team, w.ecaf}),
        (f"participant={w.orgs['A81001']}", {w.team, w.ecaf_sensitive_lead}),
        ("participant:identifier=https://fhir.nhs.uk/Id/ods-organization-code|A81001",
         {w.team, w.ecaf_sensitive_lead}),
        (f"participant=Organization/{w.orgs['RCM01']}", set()),
        (f"participant=Practitioner/{w.people['SW9']}", set()),
        (f"participant=PractitionerRole/{w.roles['shield_worker']}", set()),
        (f"_id={w.team},{w.ecaf}", {w.team, w.ecaf}),
        (f"_id={w.shielded_team}", set()),
        ("_lastUpdated=ge2000-01-01", mine),
        ("_lastUpdated=lt2000-01-01", set()),
        ("", mine),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_search_parameter(env: Env, fmt: str) -> None:
    """Each declared parameter finds exactly the teams it should for a caller without rights:
    hidden participants never match and withheld teams are never listed."""
    for query, expected in search_cases(env.world):
        bundle = fetch(env.client, f"/fhir/CareTeam?{query}", env.who.la, fmt)
        assert bundle["type"] == "searchset"
        assert ids(bundle) == expected, query


@pytest.mark.parametrize("fmt", FORMATS)
def test_participant_search_with_the_rights(env: Env, fmt: str) -> None:
    """With the rights, the sensitive and shielded participants match."""
    w = env.world
    cases = [(f"participant=Organization/{w.orgs['RCM01']}",
              {w.team, w.lonely_team, w.ecaf, w.ecaf_sensitive_lead}),
             (f"participant=Practitioner/{w.people['SW9']}", {w.shielded_team, w.ecaf_shielded}),
             (f"patient=Patient/{w.shielded}", {w.shielded_team, w.ecaf_shielded})]
    for query, expected in cases:
        assert ids(fetch(env.client, f"/fhir/CareTeam?{query}", env.who.la_shielded, fmt)) \
            == expected, query


@pytest.mark.parametrize("fmt", FORMATS)
def test_post_search_and_summary_count(env: Env, fmt: str) -> None:
    """POST _search takes a form; _summary=count counts without disclosing (no audit)."""
    response = env.client.post("/fhir/CareTeam/_search", data={"category": "ecaf-tac"},
                               headers=with_format(env.who.la, fmt))
    assert response.status_code == 200
    assert ids(parsed(response)) == {env.world.ecaf, env.world.ecaf_sensitive_lead}
    before = len(audit_rows(env.db))
    bundle = fetch(env.client, "/fhir/CareTeam?_summary=count", env.who.la, fmt)
    assert bundle["total"] == 4
    assert len(audit_rows(env.db)) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_keyset_paging_across_both_kinds(env: Env, fmt: str) -> None:
    """_count=1 pages through the children's teams, then the eCAF teams, by next links."""
    seen: list[str] = []
    url: str | None = "/fhir/CareTeam?_count=1"
    while url:
        bundle = fetch(env.client, url, env.who.admin, fmt)
        seen += [r["id"] for r in entries(bundle)]
        url = next((link["url"].removeprefix("http://localhost") for link in bundle["link"]
                    if link["relation"] == "next"), None)
    w = env.world
    assert len(seen) == len(set(seen))
    assert set(seen) == {w.team, w.shielded_team, w.other_team, w.lonely_team, w.ecaf,
                         w.ecaf_sensitive_lead, w.ecaf_shielded}


def test_a_foreign_cursor_is_a_bad_request(env: Env) -> None:
    """A cursor that is not this search's is 400, never 500."""
    for cursor in ("garbage", "dGVhbXxhYmM", "bm9wZXwx"):
        outcome = fetch(env.client, f"/fhir/CareTeam?_cursor={cursor}", env.who.la, status=400)
        assert outcome["issue"][0]["location"] == ["http._cursor"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_include_participants_and_subjects(env: Env, fmt: str) -> None:
    """_include=CareTeam:participant adds the PractitionerRoles the caller may see;
    _include=CareTeam:subject the Patients; each included child resource is audited."""
    w = env.world
    before = len(audit_rows(env.db))
    bundle = fetch(env.client, f"/fhir/CareTeam?patient={w.child}&_include=CareTeam:participant"
                               "&_include=CareTeam:subject", env.who.la, fmt)
    included = ids(bundle, "include")
    assert {w.roles["school"], w.roles["gp"], w.roles["social_worker"], w.ecaf_lead,
            w.roles["member_school"], w.child} <= included
    assert w.roles["camhs"] not in included and w.roles["member_camhs"] not in included
    assert w.roles["sensitive_lead"] not in included
    assert len(audit_rows(env.db)) - before == len(bundle["entry"])


def test_include_of_a_shielded_team_for_the_right(env: Env) -> None:
    """With the shielding right the shielded child's roles are included (override audited)."""
    w = env.world
    bundle = fetch(env.client, f"/fhir/CareTeam?patient={w.shielded}"
                               "&_include=CareTeam:participant", env.who.la_shielded)
    assert w.roles["shield_worker"] in ids(bundle, "include")
    assert all(row[-1] for row in audit_rows(env.db) if row[3] == w.shielded)


def test_patient_revinclude_uses_the_same_disclosure(env: Env) -> None:
    """Patient?_revinclude=CareTeam:subject adds the child's team and eCAF teams, disclosed;
    a shielded child's teams are not added for a caller without the right."""
    w = env.world
    bundle = fetch(env.client, f"/fhir/Patient?_id={w.child}&_revinclude=CareTeam:subject",
                   env.who.la)
    assert ids(bundle, "include") == {w.team, w.ecaf, w.ecaf_sensitive_lead}
    bundle = fetch(env.client, f"/fhir/Patient?_id={w.shielded}&_revinclude=CareTeam:subject",
                   env.who.la)
    assert ids(bundle, "include") == set()


# --- canaries and audit -----------------------------------------------------------------------

def child_data_urls(world: World) -> list[str]:
    """Return every CareTeam and PractitionerRole URL that can disclose a child's data."""
    w = world
    teams = [w.team, w.shielded_team, w.lonely_team, w.ecaf, w.ecaf_sensitive_lead,
             w.ecaf_shielded]
    urls = [f"/fhir/CareTeam/{t}{suffix}" for t in teams
            for suffix in ("", "/_history", "/_history/1")]
    urls += [f"/fhir/PractitionerRole/{r}" for r in world.roles.values()]
    urls += ["/fhir/CareTeam?_include=CareTeam:participant&_include=CareTeam:subject",
             f"/fhir/CareTeam?participant=Organization/{w.orgs['RCM01']}",
             f"/fhir/CareTeam?patient={w.shielded}&_include=CareTeam:participant",
             "/fhir/PractitionerRole?_count=1000",
             f"/fhir/PractitionerRole?organization={w.orgs['RCM01']}",
             f"/fhir/Patient?_id={w.child},{w.shielded},{w.lonely}"
             "&_revinclude=CareTeam:subject"]
    return urls


@pytest.mark.parametrize("fmt", FORMATS)
def test_canaries_never_reach_callers_without_the_rights(env: Env, fmt: str) -> None:
    """No response to a caller without the shielding and sensitive rights holds a canary."""
    for who in (env.who.la, env.who.other_la, env.who.gp, env.who.reader):
        for url in child_data_urls(env.world):
            response = env.client.get(url, headers=with_format(who, fmt))
            assert response.status_code in (200, 404), (url, response.data[:300])
            body = response.data.decode()
            assert not [c for c in CANARIES if c in body], url


def test_canaries_reach_a_caller_with_the_rights(env: Env) -> None:
    """The canaries are really there: the caller with both rights receives them."""
    body = "".join(env.client.get(url, headers=env.who.la_shielded).data.decode()
                   for url in child_data_urls(env.world))
    assert [c for c in CANARIES if c not in body] == []


def test_every_read_and_search_hit_is_audited_once(env: Env) -> None:
    """One audit record per disclosed CareTeam (read, vread, history version, search hit)."""
    w = env.world
    fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    fetch(env.client, f"/fhir/CareTeam/{w.ecaf}/_history/1", env.who.la)
    assert audit_rows(env.db)[-2:] == [("read", "CareTeam", w.team, w.child, False),
                                       ("vread", "CareTeam", w.ecaf, w.child, False)]
    before = len(audit_rows(env.db))
    bundle = fetch(env.client, "/fhir/CareTeam", env.who.la)
    hits = audit_rows(env.db)[before:]
    assert sorted(r[2] for r in hits) == sorted(ids(bundle))
    assert {r[0] for r in hits} == {"search"}
    fetch(env.client, f"/fhir/CareTeam/{w.ecaf_shielded}", env.who.la, status=404)
    assert len(audit_rows(env.db)) == before + len(hits)


# --- writes: the child's team ---------------------------------------------------------------

def send(env: Env, method: str, url: str, resource: dict[str, Any], headers: dict[str, str],
         fmt: str = "json", **extra: str) -> Any:
    """Send ``resource`` in ``fmt`` (JSON or XML body, same Accept)."""
    from adapter.fhir.xml import dumps_resource

    media = FHIR_XML if fmt == "xml" else FHIR_JSON
    body = dumps_resource(resource) if fmt == "xml" else json.dumps(resource).encode()
    return env.client.open(url, method=method, data=body,
                           headers={**headers, "Content-Type": media, "Accept": media, **extra})


def la_role(world: World, code: str = "early-help") -> dict[str, Any]:
    """Return a contained PractitionerRole of the authority's social worker SW1."""
    return {"resourceType": "PractitionerRole", "id": "new",
            "practitioner": {"reference": f"Practitioner/{world.people['SW1']}"},
            "organization": {"reference": f"Organization/{world.orgs[LA]}"},
            "code": [{"coding": [{"system": OWN.code_system("involvement-role"), "code": code}]}],
            "telecom": [{"system": "phone", "value": "0113 496 0123"}]}


def la_participant(world: World, code: str = "early-help") -> dict[str, Any]:
    """Return a participant of the authority, detailed by the contained role ``#new``."""
    return {"role": [{"coding": [{"system": OWN.code_system("involvement-role"), "code": code}]}],
            "member": {"reference": "#new"}, "period": {"start": "2025-02-03"}}


@pytest.mark.parametrize("fmt", FORMATS)
def test_authority_adds_its_own_involvement_and_keeps_the_rest(env: Env, fmt: str) -> None:
    """The managing authority adds one of its own involvements (details in a contained
    PractitionerRole); the sensitive involvement it cannot see is kept unchanged."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    team["participant"].append(la_participant(w))
    team["contained"] = [la_role(w)]
    version = team["meta"]["versionId"]
    response = send(env, "PUT", f"/fhir/CareTeam/{w.team}", team, env.who.la, fmt,
                    **{"If-Match": f'W/"{version}"', "Prefer": "return=representation"})
    assert response.status_code == 200, response.data[:500]
    assert response.headers["ETag"] == f'W/"{int(version) + 1}"'
    written = parsed(response)
    assert roles_of(written) == {"education", "gp", "social-worker", "early-help"}
    full = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.admin)
    assert roles_of(full) == {"education", "gp", "social-worker", "early-help", "camhs"}
    assert w.roles["school"] in " ".join(participants(full))
    new = next(p for p in written["participant"] if "early-help" in str(p["role"]))
    role = fetch(env.client, f"/fhir/{new['member']['reference']}", env.who.la, fmt)
    assert role["practitioner"]["reference"] == f"Practitioner/{w.people['SW1']}"
    assert role["telecom"] == [{"system": "phone", "value": "0113 496 0123"}]
    assert ("update", "CareTeam", w.team, w.child, False) in audit_rows(env.db)


def test_stale_if_match_is_412_and_writes_nothing(env: Env) -> None:
    """An update naming an older version fails with 412 (no lost update)."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    response = put_team(env, without(team, "gp"), env.who.la, **{"If-Match": 'W/"0"'})
    assert response.status_code == 412
    assert response.json["resourceType"] == "OperationOutcome"
    assert "gp" in roles_of(fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la))


def test_only_the_managing_authority_sets_a_team(env: Env) -> None:
    """Another authority's (or a GP's) system gets 403 and nothing changes."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    for who in (env.who.other_la, env.who.gp):
        response = put_team(env, without(team, "gp"), who)
        assert response.status_code == 403
        assert response.json["issue"][0]["code"] == "forbidden"
    assert fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)["meta"] == team["meta"]


def test_another_organisations_involvement_is_kept_not_changed(env: Env) -> None:
    """Changing the school's involvement is refused (403); leaving it out keeps it."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    changed = copy.deepcopy(team)
    school = next(p for p in changed["participant"] if "education" in str(p["role"]))
    school["period"]["end"] = "2025-07-18"
    assert put_team(env, changed, env.who.la).status_code == 403
    response = put_team(env, without(team, "education"), env.who.la)
    assert response.status_code == 200
    assert "education" in roles_of(fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la))


def test_a_sensitive_involvement_needs_a_consent_basis(env: Env) -> None:
    """A sensitive service's involvement without consent or significant harm is refused (422);
    with a basis it is recorded."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.lonely_team}", env.who.admin)
    participant = la_participant(w, "substance-misuse")
    team["participant"].append(participant)
    team["contained"] = [{"resourceType": "PractitionerRole", "id": "new",
                          "organization": {"reference": f"Organization/{w.orgs['RCM01']}"},
                          "code": participant["role"]}]
    response = put_team(env, team, env.who.admin)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == ["CareTeam.participant[1]"]
    participant["extension"] = [{"url": OWN.extension("ConsentBasis"),
                                 "valueCode": "significant-harm"}]
    assert put_team(env, team, env.who.admin).status_code == 200
    assert "substance-misuse" in roles_of(
        fetch(env.client, f"/fhir/CareTeam/{w.lonely_team}", env.who.la_sensitive))


def test_a_shielded_team_is_written_only_with_the_right(env: Env) -> None:
    """Writing a shielded child's team needs the shielding right."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.shielded_team}", env.who.la_shielded)
    assert put_team(env, team, env.who.la).status_code == 403
    response = put_team(env, without(team, "social-worker"), env.who.la_shielded)
    assert response.status_code == 200
    assert roles_of(fetch(env.client, f"/fhir/CareTeam/{w.shielded_team}",
                          env.who.la_shielded)) == {"education"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_post_sets_a_childs_team(env: Env, fmt: str) -> None:
    """POST of a directory-team CareTeam sets its subject's involvements: a create that
    writes answers 201 (FHIR R4 http.html#create)."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    body = without(team, "social-worker")
    del body["id"], body["meta"]
    response = send(env, "POST", "/fhir/CareTeam", body, env.who.la, fmt)
    assert response.status_code == 201, response.data[:400]
    assert response.headers["Location"].startswith(f"http://localhost/fhir/CareTeam/{w.team}/")
    assert roles_of(fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)) == \
        {"education", "gp"}


def test_team_writes_that_are_invalid(env: Env) -> None:
    """Another subject, an unknown organisation, a role of another team, no category: 422."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    cases = []
    other = copy.deepcopy(team)
    other["subject"] = {"reference": f"Patient/{w.lonely}"}
    cases.append(other)
    unknown = copy.deepcopy(team)
    unknown["participant"].append(la_participant(w))
    unknown["contained"] = [{**la_role(w), "organization": {"reference": "Organization/nowhere"}}]
    cases.append(unknown)
    beside = copy.deepcopy(team)  # onBehalfOf beside a PractitionerRole breaks ctm-1
    beside["participant"][0]["onBehalfOf"] = {"reference": f"Organization/{w.orgs[LA]}"}
    cases.append(beside)
    foreign = copy.deepcopy(team)
    foreign["participant"][0]["member"] = {"reference": f"PractitionerRole/"
                                                        f"{w.roles['other_school']}"}
    cases.append(foreign)
    uncategorised = copy.deepcopy(team)
    del uncategorised["category"]
    cases.append(uncategorised)
    for case in cases:
        response = put_team(env, case, env.who.la)
        assert response.status_code == 422, response.json
        assert response.json["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_childs_team_is_not_deleted(env: Env, fmt: str) -> None:
    """DELETE of a child's team: 405, pointing at the PractitionerRoles."""
    response = env.client.delete(f"/fhir/CareTeam/{env.world.team}",
                                 headers=with_format(env.who.la, fmt))
    assert response.status_code == 405
    outcome = parsed(response)
    assert "PractitionerRole" in outcome["issue"][0]["diagnostics"]


# --- writes: eCAF teams ---------------------------------------------------------------------

def new_ecaf(env: Env, assessment_id: str = "ECAF-201-0000009") -> dict[str, Any]:
    """Return a new eCAF CareTeam led by the authority's SW1 (contained lead role)."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.ecaf}", env.who.admin)
    for key in ("id", "meta"):
        del team[key]
    team["identifier"] = [{"system": ECAF_SYSTEM, "value": assessment_id}]
    lead, school, _camhs = team["participant"]
    lead["member"] = {"reference": "#lead"}
    del school["member"]
    school["onBehalfOf"] = {"reference": f"Organization/{w.orgs['100001']}"}
    team["participant"] = [lead, school]
    role = la_role(w)
    role.update(id="lead", code=[{"coding": [{"system": OWN.code_system("team-role"),
                                              "code": "lead-professional"}]}])
    team["contained"] = [role]
    return team


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_an_ecaf_team(env: Env, fmt: str) -> None:
    """POST creates the assessment reference: 201 with Location; its lead's PractitionerRole
    carries the contained details; a second POST of the same assessment is 409."""
    response = send(env, "POST", "/fhir/CareTeam", new_ecaf(env), env.who.la, fmt)
    assert response.status_code == 201, response.data[:500]
    location = response.headers["Location"].removeprefix("http://localhost")
    created = fetch(env.client, location, env.who.la, fmt)
    assert created["meta"]["versionId"] == "1"
    lead = next(p for p in created["participant"] if "lead-professional" in str(p["role"]))
    role = fetch(env.client, f"/fhir/{lead['member']['reference']}", env.who.la, fmt)
    assert role["telecom"] == [{"system": "phone", "value": "0113 496 0123"}]
    assert role["practitioner"]["reference"] == f"Practitioner/{env.world.people['SW1']}"
    again = send(env, "POST", "/fhir/CareTeam", new_ecaf(env), env.who.la, fmt)
    assert again.status_code == 409
    assert parsed(again)["issue"][0]["code"] == "conflict"


def test_ecaf_writes_need_the_lead_or_the_authority(env: Env) -> None:
    """A GP practice that neither leads nor manages the child gets 403."""
    assert send(env, "POST", "/fhir/CareTeam", new_ecaf(env), env.who.gp).status_code == 403
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.gp)
    response = send(env, "PUT", f"/fhir/CareTeam/{env.world.ecaf}", team, env.who.gp)
    assert response.status_code == 403


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_an_ecaf_team_keeps_what_the_caller_cannot_see(env: Env, fmt: str) -> None:
    """The authority closes the assessment; the sensitive member it cannot see is kept; the
    previous version is in the history; a stale If-Match is 412."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.ecaf}", env.who.la)
    team["period"]["end"] = "2025-06-30"
    team["extension"][0]["valueCode"] = "closed"
    response = send(env, "PUT", f"/fhir/CareTeam/{w.ecaf}", team, env.who.la, fmt,
                    **{"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.data[:500]
    full = fetch(env.client, f"/fhir/CareTeam/{w.ecaf}", env.who.admin, fmt)
    assert full["status"] == "inactive"
    assert roles_of(full) == {"education", "camhs"}
    assert fetch(env.client, f"/fhir/CareTeam/{w.ecaf}/_history/1", env.who.la,
                 fmt)["status"] == "active"
    bundle = fetch(env.client, f"/fhir/CareTeam/{w.ecaf}/_history", env.who.la, fmt)
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"2"', 'W/"1"']
    stale = send(env, "PUT", f"/fhir/CareTeam/{w.ecaf}", team, env.who.la, fmt,
                 **{"If-Match": 'W/"1"'})
    assert stale.status_code == 412


def test_an_ecaf_team_closed_without_a_date_is_invalid(env: Env) -> None:
    """The dates a status needs are checked before anything is stored (422)."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.la)
    team["extension"][0]["valueCode"] = "closed"
    response = send(env, "PUT", f"/fhir/CareTeam/{env.world.ecaf}", team, env.who.la)
    assert response.status_code == 422
    assert response.json["issue"][0]["expression"] == ["CareTeam.period"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_delete_an_ecaf_team_then_create_it_again(env: Env, fmt: str) -> None:
    """DELETE removes the reference (204, then 410 with its history kept); a PUT at the id
    derived from the assessment id creates it again, its versions continuing."""
    w = env.world
    url = f"/fhir/CareTeam/{w.ecaf}"
    team = fetch(env.client, url, env.who.la_sensitive)
    response = env.client.delete(url, headers=with_format(env.who.la, fmt))
    assert response.status_code == 204
    assert fetch(env.client, url, env.who.la, fmt, status=410)["issue"][0]["code"] == "deleted"
    assert env.client.delete(url, headers=env.who.la).status_code == 410
    history = fetch(env.client, f"{url}/_history", env.who.la, fmt)
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert history["entry"][0]["response"]["status"] == "410"
    fetch(env.client, f"{url}/_history/1", env.who.la, fmt)
    del team["meta"]
    for participant, code in zip(team["participant"], (LA, "100001", "RCM01"), strict=True):
        del participant["member"]  # the roles went with the team: name the organisations
        participant["onBehalfOf"] = {"reference": f"Organization/{w.orgs[code]}"}
    response = send(env, "PUT", url, team, env.who.la_sensitive, fmt)
    assert response.status_code == 201, response.data[:400]
    assert response.headers["ETag"] == 'W/"3"'
    assert ("delete", "CareTeam", w.ecaf, w.child, False) in audit_rows(env.db)


def test_put_creates_an_ecaf_team_only_at_its_derived_id(env: Env) -> None:
    """A new eCAF team by PUT elsewhere than at the id its assessment id gives is 422."""
    response = send(env, "PUT", "/fhir/CareTeam/somewhere-else", new_ecaf(env), env.who.la)
    assert response.status_code == 422


@pytest.mark.parametrize("fmt", FORMATS)
def test_conditional_update_by_identifier(env: Env, fmt: str) -> None:
    """PUT CareTeam?identifier=…: updates the one match, or creates when none matches."""
    w = env.world
    team = fetch(env.client, f"/fhir/CareTeam/{w.ecaf}", env.who.la)
    del team["id"]
    team["extension"][1]["valueBoolean"] = False
    query = f"identifier={ECAF_SYSTEM}|{w.ecaf_id}"
    response = send(env, "PUT", f"/fhir/CareTeam?{query}", team, env.who.la, fmt)
    assert response.status_code == 200, response.data[:400]
    assert fetch(env.client, f"/fhir/CareTeam/{w.ecaf}",
                 env.who.la)["extension"][1]["valueBoolean"] is False
    created = send(env, "PUT", f"/fhir/CareTeam?identifier={ECAF_SYSTEM}|ECAF-201-0000009",
                   new_ecaf(env), env.who.la, fmt)
    assert created.status_code == 201, created.data[:400]


def test_conditional_create_returns_the_existing_team(env: Env) -> None:
    """POST with If-None-Exist matching an eCAF team returns it and creates nothing."""
    w = env.world
    response = send(env, "POST", "/fhir/CareTeam", new_ecaf(env, w.ecaf_id), env.who.la,
                    **{"If-None-Exist": f"identifier={ECAF_SYSTEM}|{w.ecaf_id}"})
    assert response.status_code == 200
    assert response.json["id"] == w.ecaf


def test_a_category_that_does_not_match_the_id_is_invalid(env: Env) -> None:
    """An eCAF CareTeam PUT at a child's team id is 422."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.ecaf}", env.who.la)
    team["id"] = env.world.team
    response = send(env, "PUT", f"/fhir/CareTeam/{env.world.team}", team, env.who.la)
    assert response.status_code == 422


# --- $validate ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_validate(env: Env, fmt: str) -> None:
    """$validate answers with the inbound validation's OperationOutcome; nothing is stored."""
    team = fetch(env.client, f"/fhir/CareTeam/{env.world.team}", env.who.la)
    response = send(env, "POST", "/fhir/CareTeam/$validate", team, env.who.la, fmt)
    assert response.status_code == 200
    assert not [i for i in parsed(response)["issue"] if i["severity"] in ("error", "fatal")]
    del team["subject"]
    response = send(env, "POST", "/fhir/CareTeam/$validate", team, env.who.la, fmt)
    assert response.status_code == 200
    assert [i for i in parsed(response)["issue"] if i["severity"] == "error"]


@pytest.mark.parametrize("kind", ["team", "ecaf"])
def test_concurrent_updates_with_the_same_if_match(app: Flask, env: Env, kind: str) -> None:
    """Two clients update the same version at once: exactly one wins, the other gets 412."""
    w = env.world
    url = f"/fhir/CareTeam/{w.team if kind == 'team' else w.ecaf}"
    team = fetch(env.client, url, env.who.la)
    first, second = copy.deepcopy(team), copy.deepcopy(team)
    if kind == "team":
        first = without(team, "social-worker")
        second["participant"].append(la_participant(w))
        second["contained"] = [la_role(w)]
    else:
        first["extension"][1]["valueBoolean"] = False
        second["period"]["start"] = "2025-01-07"
    version = team["meta"]["versionId"]
    statuses = [status for status, _ in concurrent_puts(app, url, [first, second], env.who.la,
                                                         version)]
    assert statuses == [200, 412]
    assert fetch(env.client, url, env.who.la)["meta"]["versionId"] == str(int(version) + 1)


@pytest.mark.parametrize("caller", ["la", "la_shielded"])
def test_every_resource_served_is_valid(app: Flask, env: Env, caller: str) -> None:
    """Every CareTeam, PractitionerRole, Patient, Organization and Practitioner served, redacted
    or not, is valid FHIR (fhir.resources) and conforms to the profiles it claims."""
    from adapter.fhir.validation import profile_issues
    from adapter.mapping.fhir import validate_resource

    who = getattr(env.who, caller)
    served = entries(fetch(env.client, "/fhir/CareTeam?_include=CareTeam:participant"
                                       "&_include=CareTeam:subject", who), "match")
    served += entries(fetch(env.client, "/fhir/CareTeam?_include=CareTeam:participant"
                                        "&_include=CareTeam:subject", who), "include")
    served += [fetch(env.client, f"/fhir/CareTeam/{env.world.shielded_team}", who)]
    for resource_type in ("PractitionerRole", "Organization", "Practitioner"):
        served += entries(fetch(env.client, f"/fhir/{resource_type}?_count=1000", who))
    assert {r["resourceType"] for r in served} == {"CareTeam", "PractitionerRole", "Patient",
                                                   "Organization", "Practitioner"}
    with app.app_context():
        for resource in served:
            validate_resource(resource, resource["resourceType"])
            errors = [i for i in profile_issues(resource, resource["resourceType"])
                      if i["severity"] in ("error", "fatal")]
            assert errors == [], (resource["resourceType"], errors)


IMPOSSIBLE_IDS = ["%00", "a%00b", "a_b", "a%20b", "x" * 65, "%C3%A9"]
ID_TYPES = ["Patient", "CareTeam", "PractitionerRole", "Organization", "Practitioner"]


@pytest.mark.parametrize("url", ["/fhir/CareTeam/%00", "/fhir/CareTeam/a%00b/_history",
                                 "/fhir/PractitionerRole/%00", "/fhir/Organization/%00",
                                 "/fhir/Practitioner/%00/_history/1", "/fhir/Patient/%00",
                                 "/fhir/Patient/a%00b/_history",
                                 "/fhir/Patient/a%00b/_history/1",
                                 "/fhir/Patient/a%00b/$holders",
                                 "/fhir/Subscription/a%00b/$status",
                                 "/fhir/Subscription/a%00b/$events",
                                 "/fhir/Task/a%00b/$purge-list"])
def test_impossible_ids_are_not_found(env: Env, url: str) -> None:
    """An id that cannot be a FHIR id is 404 without reaching the database (PostgreSQL
    refuses a NUL character in text)."""
    assert fetch(env.client, url, env.who.admin, status=404)["resourceType"] == \
        "OperationOutcome"


@pytest.mark.parametrize("resource_type", ID_TYPES)
def test_every_interaction_on_an_impossible_id_is_not_found(env: Env,
                                                            resource_type: str) -> None:
    """Read, vread, history, update and delete of an id that cannot be a FHIR id (FHIR R4
    datatypes.html#id) are 404 NotFound OperationOutcomes, in JSON and XML, whatever the
    body; the id is not echoed back."""
    for rid in IMPOSSIBLE_IDS:
        base = f"/fhir/{resource_type}/{rid}"
        for fmt in ("json", "xml"):
            for url in (base, f"{base}/_history", f"{base}/_history/1"):
                outcome = fetch(env.client, url, env.who.admin, fmt, status=404)
                assert outcome["issue"][0]["code"] == "not-found"
                assert "\x00" not in json.dumps(outcome)
        if resource_type != "PractitionerRole":  # the types with update
            body = {"resourceType": resource_type, "id": "whatever"}
            response = send(env, "PUT", base, body, env.who.admin)
            assert response.status_code == 404, (base, response.status_code)
        if resource_type in ("CareTeam", "PractitionerRole"):  # the types with delete
            response = env.client.delete(base, headers=env.who.admin)
            assert response.status_code == 404, (base, response.status_code)


def test_impossible_ids_in_a_batch_are_not_found(env: Env) -> None:
    """Batch entries naming an id that cannot be a FHIR id answer 404 each, never 500."""
    urls = ["Patient/a\u0000b", "CareTeam/a_b", "Organization/a b/_history/1"]
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": url}} for url in urls]
              + [{"request": {"method": "DELETE", "url": "PractitionerRole/a\u0000b"}}]}
    response = send(env, "POST", "/fhir", bundle, env.who.admin)
    assert response.status_code == 200, response.json
    assert [e["response"]["status"] for e in response.json["entry"]] == ["404"] * 4


@pytest.mark.parametrize("resource_type", ID_TYPES)
@pytest.mark.parametrize("query", ["_id=a%00b", "_id=ok,a%00b", "_id:not=a%00b",
                                   "_cursor=a%00b", "unknown=a%00b", "a%00b=1"])
def test_a_nul_in_a_search_value_is_a_bad_request(env: Env, resource_type: str,
                                                  query: str) -> None:
    """A search parameter holding a NUL character is 400, never 500 nor a search (JSON and
    XML, GET and POST _search)."""
    outcome = fetch(env.client, f"/fhir/{resource_type}?{query}", env.who.admin, status=400)
    assert outcome["issue"][0]["code"] == "invalid"
    fetch(env.client, f"/fhir/{resource_type}?{query}", env.who.admin, "xml", status=400)
    response = env.client.post(f"/fhir/{resource_type}/_search", data=query,
                               headers={**env.who.admin,
                                        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400


def test_a_nul_search_value_names_its_parameter(env: Env) -> None:
    """The 400 names the parameter in its location ("http." + its name)."""
    outcome = fetch(env.client, "/fhir/Patient?family:exact=a%00b", env.who.admin, status=400)
    assert outcome["issue"][0]["location"] == ["http.family"]


def test_a_value_the_database_cannot_hold_is_invalid(env: Env) -> None:
    """A NUL character in a value is 400 naming the element on every backend (XML 1.0 cannot
    carry it, so a stored one could never be rendered as XML), never 500."""
    org = fetch(env.client, f"/fhir/Organization/{env.world.orgs['A81001']}", env.who.admin)
    org["name"] = "Oak\u0000Surgery"
    response = send(env, "PUT", f"/fhir/Organization/{org['id']}", org, env.who.admin)
    assert response.status_code == 400, response.json
    assert response.json["issue"][0]["expression"] == ["Organization.name"]
