"""PractitionerRole over FHIR REST: the involvements of children
and the lead professionals and members of eCAF teams, in JSON and XML on both databases; a role
the caller may not see is not found; reads are audited; an involvement is ended by its own
organisation."""

from __future__ import annotations

import pytest

from adapter.systems import DEFAULT_CANONICAL_BASE, OwnSystems
from tests.fhir.fixtures import (
    FHIR_JSON,
    Env,
    audit_rows,
    fetch,
    ids,
    parsed,
    with_format,
)

FORMATS = ["json", "xml"]
OWN = OwnSystems(DEFAULT_CANONICAL_BASE)


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_vread_and_history_of_an_involvement(env: Env, fmt: str) -> None:
    """An involvement's role: its version is the child's; only the current one is served."""
    w = env.world
    url = f"/fhir/PractitionerRole/{w.roles['social_worker']}"
    response = env.client.get(url, headers=with_format(env.who.la, fmt))
    assert response.status_code == 200
    role = parsed(response)
    assert role["practitioner"]["reference"] == f"Practitioner/{w.people['SW1']}"
    assert role["code"][0]["coding"][-1]["code"] == "social-worker"
    version = role["meta"]["versionId"]
    assert response.headers["ETag"] == f'W/"{version}"'
    assert fetch(env.client, f"{url}/_history/{version}", env.who.la, fmt)["id"] == role["id"]
    fetch(env.client, f"{url}/_history/{int(version) + 1}", env.who.la, fmt, status=404)
    history = fetch(env.client, f"{url}/_history", env.who.la, fmt)
    assert [e["response"]["etag"] for e in history["entry"]] == [f'W/"{version}"']
    assert [r[:3] for r in audit_rows(env.db)] == [
        ("read", "PractitionerRole", role["id"]), ("vread", "PractitionerRole", role["id"]),
        ("history", "PractitionerRole", role["id"])]


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_ecaf_lead_and_member(env: Env, fmt: str) -> None:
    """The lead professional and the members of an eCAF team are roles too."""
    w = env.world
    lead = fetch(env.client, f"/fhir/PractitionerRole/{w.ecaf_lead}", env.who.la, fmt)
    assert lead["code"][0]["coding"][0]["code"] == "lead-professional"
    member = fetch(env.client, f"/fhir/PractitionerRole/{w.roles['member_school']}",
                   env.who.la, fmt)
    assert member["organization"]["identifier"]["value"] == "100001"


@pytest.mark.parametrize("fmt", FORMATS)
def test_withheld_roles_are_not_found(env: Env, fmt: str) -> None:
    """A sensitive service's role, and every role of a shielded child, is 404 for a caller
    without the right (not a hint of existence), and not audited; with the right it is read,
    a shielded child's with the break-glass warning."""
    w = env.world
    hidden = {"camhs": "sensitive", "member_camhs": "sensitive", "sensitive_lead": "sensitive",
              "lonely_camhs": "sensitive", "shield_worker": "shielded",
              "shielded_lead": "shielded"}
    for name in hidden:
        outcome = fetch(env.client, f"/fhir/PractitionerRole/{w.roles[name]}", env.who.la, fmt,
                        status=404)
        assert outcome["issue"][0]["code"] == "not-found"
    assert audit_rows(env.db) == []
    for name in hidden:
        fetch(env.client, f"/fhir/PractitionerRole/{w.roles[name]}", env.who.la_shielded, fmt)
    response = env.client.get(f"/fhir/PractitionerRole/{w.roles['shield_worker']}",
                              headers=with_format(env.who.la_shielded, fmt))
    assert "199 contactpoint-gateway" in response.headers["Warning"]
    assert audit_rows(env.db)[-1][-1] is True


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_search_parameter(env: Env, fmt: str) -> None:
    """Each declared parameter, for a caller without rights: withheld roles never match."""
    w, r = env.world, env.world.roles
    visible = {r["school"], r["gp"], r["social_worker"], r["other_school"], r["member_school"],
               w.ecaf_lead}
    gp_member = fetch(env.client, f"/fhir/PractitionerRole?organization={w.orgs['A81001']}",
                      env.who.la)
    gp_roles = ids(gp_member)
    assert r["gp"] in gp_roles and len(gp_roles) == 2
    visible |= gp_roles
    cases = [
        ("", visible),
        (f"_id={r['school']},{r['camhs']}", {r["school"]}),
        (f"practitioner=Practitioner/{w.people['SW1']}", {r["social_worker"], w.ecaf_lead}),
        (f"practitioner:identifier={OWN.local_id('E09000001')}|SW1",
         {r["social_worker"], w.ecaf_lead}),
        (f"practitioner={w.people['C1']}", set()),
        (f"organization=Organization/{w.orgs['100001']}",
         {r["school"], r["other_school"], r["member_school"]}),
        ("organization:identifier=https://fhir.nhs.uk/Id/ods-organization-code|A81001",
         gp_roles),
        (f"organization={w.orgs['RCM01']}", set()),
        ("role=education", {r["school"], r["other_school"], r["member_school"]}),
        (f"role={OWN.code_system('involvement-role')}|social-worker", {r["social_worker"]}),
        ("role=http://snomed.info/sct|62247001", gp_roles),
        ("role=lead-professional", {w.ecaf_lead}),
        ("role=camhs", set()),
        ("role:not=education", visible - {r["school"], r["other_school"], r["member_school"]}),
    ]
    for query, expected in cases:
        bundle = fetch(env.client, f"/fhir/PractitionerRole?{query}", env.who.la, fmt)
        assert ids(bundle) == expected, query


@pytest.mark.parametrize("fmt", FORMATS)
def test_search_with_the_rights_paging_and_count(env: Env, fmt: str) -> None:
    """With both rights every role is found; _count pages through all three kinds; POST
    _search and _summary=count work; each hit is audited."""
    every = set(env.world.roles.values()) | {env.world.ecaf_lead}
    seen: list[str] = []
    url: str | None = "/fhir/PractitionerRole?_count=4"
    before = len(audit_rows(env.db))
    while url:
        bundle = fetch(env.client, url, env.who.la_shielded, fmt)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"].removeprefix("http://localhost") for link in bundle["link"]
                    if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) and every <= set(seen)
    assert len(audit_rows(env.db)) - before == len(seen)
    total = fetch(env.client, "/fhir/PractitionerRole?_summary=count", env.who.la_shielded, fmt)
    assert total["total"] == len(seen)
    response = env.client.post("/fhir/PractitionerRole/_search", data={"role": "camhs"},
                               headers=with_format(env.who.la_sensitive, fmt))
    assert ids(parsed(response)) == {env.world.roles["camhs"], env.world.roles["member_camhs"],
                                     env.world.roles["lonely_camhs"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_delete_ends_an_involvement(env: Env, fmt: str) -> None:
    """The involvement's own organisation ends it: the child gets a new version whose history
    keeps the involvement; another organisation gets 403; an eCAF role gets 405."""
    w = env.world
    url = f"/fhir/PractitionerRole/{w.roles['gp']}"
    team = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    assert env.client.delete(url, headers=with_format(env.who.la, fmt)).status_code == 403
    response = env.client.delete(url, headers=with_format(env.who.gp, fmt))
    assert response.status_code == 204
    now = fetch(env.client, f"/fhir/CareTeam/{w.team}", env.who.la)
    assert int(now["meta"]["versionId"]) == int(team["meta"]["versionId"]) + 1
    old = fetch(env.client, f"/fhir/CareTeam/{w.team}/_history/{team['meta']['versionId']}",
                env.who.la)
    assert f"PractitionerRole/{w.roles['gp']}" in str(old["participant"])
    assert ("delete", "PractitionerRole", w.roles["gp"], w.child, False) in audit_rows(env.db)
    response = env.client.delete(f"/fhir/PractitionerRole/{w.ecaf_lead}",
                                 headers=with_format(env.who.la, fmt))
    assert response.status_code == 405
    assert parsed(response)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_deleted_role_is_gone(env: Env, fmt: str) -> None:
    """After DELETE the role is 410 Gone (FHIR R4 http.html#read) to read, vread and a second
    DELETE, and its history holds the deletion; an id never used stays 404."""
    w = env.world
    url = f"/fhir/PractitionerRole/{w.roles['gp']}"
    version = fetch(env.client, url, env.who.la)["meta"]["versionId"]
    assert env.client.delete(url, headers=with_format(env.who.gp, fmt)).status_code == 204
    gone = fetch(env.client, url, env.who.la, fmt, status=410)
    assert gone["resourceType"] == "OperationOutcome"
    assert gone["issue"][0]["code"] == "deleted"
    fetch(env.client, f"{url}/_history/{version}", env.who.la, fmt, status=410)
    assert env.client.delete(url, headers=with_format(env.who.gp, fmt)).status_code == 410
    history = fetch(env.client, f"{url}/_history", env.who.la, fmt)
    assert [(e["request"]["method"], e["response"]["status"]) for e in history["entry"]] == \
        [("DELETE", "410")]
    assert history["entry"][0]["response"]["etag"] == f'W/"{int(version) + 1}"'
    fetch(env.client, "/fhir/PractitionerRole/never-was", env.who.la, fmt, status=404)


def test_a_deleted_role_the_caller_could_not_see_is_not_found(env: Env) -> None:
    """A deleted role stays hidden from callers who could not see it (404, not 410): a
    sensitive service's role without the sensitive right, a shielded child's role without the
    shielding right."""
    camhs = f"/fhir/PractitionerRole/{env.world.roles['camhs']}"
    assert env.client.delete(camhs, headers=env.who.admin).status_code == 204
    fetch(env.client, camhs, env.who.la, status=404)
    fetch(env.client, f"{camhs}/_history", env.who.la, status=404)
    fetch(env.client, camhs, env.who.la_sensitive, status=410)
    shielded = f"/fhir/PractitionerRole/{env.world.roles['shield_worker']}"
    assert env.client.delete(shielded, headers=env.who.admin).status_code == 204
    fetch(env.client, shielded, env.who.la, status=404)
    fetch(env.client, shielded, env.who.la_shielded, status=410)


def test_a_withheld_role_cannot_be_deleted(env: Env) -> None:
    """The CAMHS service itself, without the sensitive right, cannot see nor end its hidden
    role (404: nothing about it is disclosed); an administrator can."""
    url = f"/fhir/PractitionerRole/{env.world.roles['camhs']}"
    assert env.client.delete(url, headers=env.who.camhs).status_code == 404
    assert env.client.delete(url, headers=env.who.admin).status_code == 204


@pytest.mark.parametrize("fmt", FORMATS)
def test_unsupported_writes_are_405(env: Env, fmt: str) -> None:
    """Roles are written through their CareTeam: POST and PUT are 405 OperationOutcomes."""
    role = fetch(env.client, f"/fhir/PractitionerRole/{env.world.roles['school']}", env.who.la)
    for method, url in (("POST", "/fhir/PractitionerRole"),
                        ("PUT", f"/fhir/PractitionerRole/{role['id']}")):
        response = env.client.open(url, method=method, json=role,
                                   headers={**with_format(env.who.la, fmt),
                                            "Content-Type": FHIR_JSON})
        assert response.status_code == 405
        assert parsed(response)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate(env: Env, fmt: str) -> None:
    """$validate reports the inbound validation's issues."""
    role = fetch(env.client, f"/fhir/PractitionerRole/{env.world.roles['school']}", env.who.la)
    response = env.client.post("/fhir/PractitionerRole/$validate", json=role,
                               headers={**with_format(env.who.la, fmt),
                                        "Content-Type": FHIR_JSON})
    assert response.status_code == 200
    assert not [i for i in parsed(response)["issue"] if i["severity"] in ("error", "fatal")]
    del role["organization"]
    response = env.client.post("/fhir/PractitionerRole/$validate", json=role,
                               headers={**with_format(env.who.la, fmt),
                                        "Content-Type": FHIR_JSON})
    assert [i for i in parsed(response)["issue"] if i["severity"] == "error"]
