"""A small directory for the CareTeam, PractitionerRole, Organization and Practitioner API
tests: two authorities, a child with every kind of involvement and two eCAF teams, a shielded
child and another authority's child, with canary values planted where only callers with the
right may see them; and callers with real tokens for each combination of rights."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.identifiers import make_contactpoint_id, make_test_nhs_number, resource_id_for
from adapter.identity import lead_role_id
from adapter.models import (
    Assessment,
    Carer,
    Child,
    ChildName,
    Involvement,
    Organisation,
    Practitioner,
    TeamMember,
)
from adapter.store.records import apply_assessment, apply_child
from tests.security.helpers import get_token, register

LA: Final = "E09000001"
OTHER_LA: Final = "E09000002"
GP: Final = "A81001"
CAMHS: Final = "RCM01"
SCHOOL_URN: Final = "100001"
FHIR_JSON: Final = "application/fhir+json"
FHIR_XML: Final = "application/fhir+xml"
# Values only a caller with the matching right may ever receive.
SENSITIVE_CANARIES: Final = ("Canaryclinic", "0113 496 0999", "canary.camhs@nhs.example",
                             "Sensitivecanary")
SHIELDED_CANARIES: Final = ("Shieldcanary", "0113 496 0888", "shield.canary@la.example",
                            "Shieldschool")
CANARIES: Final = SENSITIVE_CANARIES + SHIELDED_CANARIES


def _organisations() -> dict[str, Organisation]:
    """Return the transient organisations of the world by short name."""
    return {
        "la": Organisation(name="Northmoor Council", type="local-authority", gss_code=LA,
                           la_number="201"),
        "other_la": Organisation(name="Southmoor Council", type="local-authority",
                                 gss_code=OTHER_LA, la_number="202"),
        "gp": Organisation(name="Oak Surgery", type="gp-practice", ods_code=GP),
        "camhs": Organisation(name="Canaryclinic CAMHS", type="nhs-trust", ods_code=CAMHS,
                              phone="0113 496 0999"),
        "school": Organisation(name="Elm Primary", type="school", urn=SCHOOL_URN),
        "shield_school": Organisation(name="Shieldschool Academy", type="school", urn="100002"),
    }


def _practitioners(orgs: dict[str, Organisation]) -> dict[str, Practitioner]:
    """Return the transient practitioners of the world by short name."""
    return {
        "social_worker": Practitioner(local_id="SW1", given=["Sam"], family="Worker",
                                      organisation=orgs["la"], phone="0113 496 0100"),
        "camhs": Practitioner(local_id="C1", given=["Sensitivecanary"], family="Therapist",
                              organisation=orgs["camhs"], email="canary.camhs@nhs.example"),
        "shield_worker": Practitioner(local_id="SW9", given=["Shieldcanary"], family="Worker",
                                      organisation=orgs["la"], phone="0113 496 0888",
                                      email="shield.canary@la.example"),
    }


def _child(number: int, family: str, authority: Organisation, *, shielded: bool = False,
           born: dt.date = dt.date(2015, 3, 1)) -> Child:
    """Return a transient child with a name and a carer."""
    child = Child(contactpoint_id=make_contactpoint_id(number), gender="2", birth_date=born,
                  nhs_number=make_test_nhs_number(number), shielded=shielded,
                  address_status="current", address_paon="1", address_street="High Street",
                  address_town="Northmoor", address_postcode="LS1 4AP",
                  managing_organisation=authority)
    child.names = [ChildName(use="current", given=["Ada"], family=family)]
    child.carers = [Carer(relation="mother", given=["Ann"], family=family,
                          parental_responsibility=True)]
    return child


def _involvement(role: str, org: Organisation, person: Practitioner | None = None,
                 **extra: Any) -> Involvement:
    """Return a transient involvement."""
    return Involvement(role=role, organisation=org, practitioner=person,
                       period_start=dt.date(2024, 9, 1), **extra)


@dataclass
class World:
    """The ids of the seeded records."""

    child: str = ""
    team: str = ""
    shielded: str = ""
    shielded_team: str = ""
    other: str = ""
    other_team: str = ""
    lonely: str = ""
    lonely_team: str = ""
    ecaf: str = ""
    ecaf_lead: str = ""
    ecaf_sensitive_lead: str = ""
    ecaf_shielded: str = ""
    ecaf_id: str = "ECAF-201-0000001"
    roles: dict[str, str] = field(default_factory=dict)
    orgs: dict[str, str] = field(default_factory=dict)
    people: dict[str, str] = field(default_factory=dict)


def _teams(orgs: dict[str, Organisation],
           people: dict[str, Practitioner]) -> dict[str, Child]:
    """Return the transient children with their involvements."""
    child = _child(1, "Lovelace", orgs["la"])
    child.involvements = [
        _involvement("education", orgs["school"]),
        _involvement("gp", orgs["gp"]),
        _involvement("social-worker", orgs["la"], people["social_worker"],
                     lead_professional=True, caf_completed=True, phone="0113 496 0100"),
        _involvement("camhs", orgs["camhs"], people["camhs"], sensitive=True,
                     consent_basis="child-consent", phone="0113 496 0999",
                     email="canary.camhs@nhs.example"),
    ]
    shielded = _child(2, "Hopper", orgs["la"], shielded=True)
    shielded.involvements = [
        _involvement("social-worker", orgs["la"], people["shield_worker"],
                     phone="0113 496 0888", email="shield.canary@la.example"),
        _involvement("education", orgs["shield_school"]),
    ]
    other = _child(3, "Noether", orgs["other_la"])
    other.involvements = [_involvement("education", orgs["school"])]
    lonely = _child(4, "Curie", orgs["la"])
    lonely.involvements = [_involvement("camhs", orgs["camhs"], sensitive=True,
                                        consent_basis="carer-consent")]
    return {"child": child, "shielded": shielded, "other": other, "lonely": lonely}


def _assessment(assessment_id: str, lead: Organisation, person: Practitioner | None,
                members: list[TeamMember], status: str = "in-progress") -> Assessment:
    """Return a transient assessment reference."""
    record = Assessment(assessment_id=assessment_id, status=status,
                        started_date=dt.date(2025, 1, 6), consent_to_share=True,
                        lead_organisation=lead, lead_practitioner=person,
                        phone="0113 496 0100" if person else None)
    record.members = members
    return record


def seed(db: Database) -> World:
    """Write the world into ``db`` and return its ids."""
    world = World()
    orgs = _organisations()
    people = _practitioners(orgs)
    children = _teams(orgs, people)
    with db.write_transaction() as session:
        _add_directory(session, orgs, people)
        stored = {name: apply_child(session, record, None)[0]
                  for name, record in children.items()}
        session.flush()
        child = stored["child"]
        ecafs = {
            "ecaf": (_assessment(world.ecaf_id, orgs["la"], people["social_worker"], [
                TeamMember(role="education", organisation=orgs["school"]),
                TeamMember(role="camhs", organisation=orgs["camhs"],
                           practitioner=people["camhs"], email="canary.camhs@nhs.example"),
            ]), child),
            "ecaf_sensitive_lead": (_assessment("ECAF-201-0000002", orgs["camhs"],
                                                people["camhs"], [
                TeamMember(role="gp", organisation=orgs["gp"])], status="draft"), child),
            "ecaf_shielded": (_assessment("ECAF-201-0000003", orgs["la"],
                                          people["shield_worker"], [
                TeamMember(role="education", organisation=orgs["shield_school"])]),
                stored["shielded"]),
        }
        saved = {name: apply_assessment(session, record, owner, None)[0]
                 for name, (record, owner) in ecafs.items()}
        session.flush()
        _fill_ids(world, stored, saved)
        _fill_directory_ids(session, world)
    return world


def _add_directory(session: Any, orgs: dict[str, Organisation],
                   people: dict[str, Practitioner]) -> None:
    """Store the organisations and practitioners first (records then refer to them)."""
    for org in orgs.values():
        org.resource_id = resource_id_for("Organization", org.ods_code or org.urn or org.gss_code)
        session.add(org)
    for person in people.values():
        org = person.organisation
        code = org.ods_code or org.urn or org.gss_code
        person.resource_id = resource_id_for("Practitioner", f"{code}/{person.local_id}")
        session.add(person)
    session.flush()


def _fill_ids(world: World, children: dict[str, Child],
              assessments: dict[str, Assessment]) -> None:
    """Record the resource ids of the seeded children, teams and roles."""
    for name in ("child", "shielded", "other", "lonely"):
        setattr(world, name, children[name].resource_id)
        setattr(world, f"{name}_team" if name != "child" else "team",
                resource_id_for("CareTeam", "team/" + children[name].contactpoint_id))
    for name, assessment in assessments.items():
        setattr(world, name, assessment.resource_id)
    world.ecaf_lead = lead_role_id(world.ecaf_id)
    roles = {"school": 0, "gp": 1, "social_worker": 2, "camhs": 3}
    for name, index in roles.items():
        world.roles[name] = children["child"].involvements[index].resource_id
    world.roles["shield_worker"] = children["shielded"].involvements[0].resource_id
    world.roles["other_school"] = children["other"].involvements[0].resource_id
    world.roles["lonely_camhs"] = children["lonely"].involvements[0].resource_id
    ecaf = assessments["ecaf"]
    world.roles["member_school"] = ecaf.members[0].resource_id
    world.roles["member_camhs"] = ecaf.members[1].resource_id
    world.roles["sensitive_lead"] = lead_role_id("ECAF-201-0000002")
    world.roles["shielded_lead"] = lead_role_id("ECAF-201-0000003")


def _fill_directory_ids(session: Any, world: World) -> None:
    """Record the ids of the organisations and practitioners by code / staff id."""
    for org in session.scalars(select(Organisation)):
        world.orgs[org.ods_code or org.urn or org.gss_code] = org.resource_id
    for person in session.scalars(select(Practitioner)):
        world.people[person.local_id] = person.resource_id


@dataclass
class Callers:
    """Authorization headers of callers with different organisations and rights."""

    la: dict[str, str]
    la_sensitive: dict[str, str]
    la_shielded: dict[str, str]
    admin: dict[str, str]
    other_la: dict[str, str]
    camhs: dict[str, str]
    gp: dict[str, str]
    reader: dict[str, str]


def bearer(client: FlaskClient, app: Flask, client_id: str, organisation: str,
           rights: list[str] | None = None, scopes: str = "system/*.cruds") -> dict[str, str]:
    """Register a client and return its Authorization header (a real token)."""
    who = register(app, client_id, organisation=organisation, scopes=scopes, rights=rights)
    return {"Authorization": f"Bearer {get_token(client, who, scopes)}"}


def callers(app: Flask, client: FlaskClient) -> Callers:
    """Register the test callers."""
    return Callers(
        la=bearer(client, app, "la", LA),
        la_sensitive=bearer(client, app, "la-sensitive", LA, ["sensitive"]),
        la_shielded=bearer(client, app, "la-shielded", LA, ["shielded", "sensitive"]),
        admin=bearer(client, app, "admin", LA, ["shielded", "sensitive", "audit", "admin"]),
        other_la=bearer(client, app, "other-la", OTHER_LA),
        camhs=bearer(client, app, "camhs", CAMHS),
        gp=bearer(client, app, "gp", GP),
        reader=bearer(client, app, "reader", LA, scopes="system/*.rs"),
    )


def with_format(headers: dict[str, str], fmt: str) -> dict[str, str]:
    """Return ``headers`` asking for ``fmt`` (json or xml) through Accept."""
    return {**headers, "Accept": FHIR_XML if fmt == "xml" else FHIR_JSON}


def parsed(response: Any) -> dict[str, Any]:
    """Return a response's FHIR resource, from JSON or XML."""
    if "xml" in response.content_type:
        from adapter.fhir.xml import loads_resource

        return loads_resource(response.data)
    body: dict[str, Any] = response.json
    return body


def fetch(client: FlaskClient, url: str, headers: dict[str, str], fmt: str = "json",
          status: int = 200) -> dict[str, Any]:
    """GET ``url`` in ``fmt``, check the status and the content type, return the resource."""
    response = client.get(url, headers=with_format(headers, fmt))
    assert response.status_code == status, response.data[:600]
    assert response.content_type.startswith(FHIR_XML if fmt == "xml" else FHIR_JSON)
    return parsed(response)


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    """Return the resources of a search Bundle's entries in ``mode``."""
    return [e["resource"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == mode]


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    """Return the ids of a search Bundle's resources in ``mode``."""
    return {r["id"] for r in entries(bundle, mode)}


def labels(resource: dict[str, Any]) -> set[str]:
    """Return the security label codes of a resource."""
    return {s["code"] for s in resource.get("meta", {}).get("security", [])}


def audit_rows(db: Database) -> list[tuple[str, str | None, str | None, str | None, bool]]:
    """Return every audit record as (action, resource type, resource id, child, override)."""
    from adapter.models import AuditRecord

    with db.sessions() as session:
        return [(r.action, r.resource_type, r.resource_id, r.child_ref, r.override)
                for r in session.scalars(select(AuditRecord).where(
                    AuditRecord.child_ref.is_not(None)).order_by(AuditRecord.id))]


def concurrent_puts(app: Flask, url: str, bodies: list[dict[str, Any]],
                    headers: dict[str, str], version: str) -> list[tuple[int, Any]]:
    """PUT each body to ``url`` at once, each from its own client (and connection) with the
    same ``If-Match``; return (status, JSON answer) pairs sorted by status."""
    barrier = threading.Barrier(len(bodies))

    def put(body: dict[str, Any]) -> tuple[int, Any]:
        """PUT ``body`` once every client is ready."""
        client = app.test_client()
        barrier.wait()
        response = client.put(url, json=body, headers={
            **headers, "Content-Type": FHIR_JSON, "If-Match": f'W/"{version}"'})
        return response.status_code, response.json

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return sorted(pool.map(put, bodies), key=lambda answer: answer[0])


@dataclass
class Env:
    """The app's test client, database, seeded ids and callers (the ``env`` fixture)."""

    client: FlaskClient
    db: Database
    world: World
    who: Callers
