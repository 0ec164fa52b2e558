"""PractitionerRole ids by natural key everywhere (adapter/identity.py), and migration 0014:
ids once derived from list positions are recomputed, the old ones kept as aliases that
answer 301 Moved Permanently to the new id (README "Identifiers")."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from adapter import identity
from adapter.db import Database, alembic_config
from adapter.demo import load_demo_data
from adapter.identifiers import resource_id_for
from adapter.models import Assessment, Child, Involvement, Organisation, ResourceAlias, TeamMember
from adapter.models.canonical import build_child, canonical_dump
from adapter.security.caller import Caller
from adapter.security.scopes import parse_scopes
from adapter.store import history
from adapter.store.records import apply_child, part_key
from tests.api.conftest import bearer

ADAPTER = Path(__file__).resolve().parent.parent / "adapter"
CALL = re.compile(r"\bresource_id_for\(")


def test_only_identity_derives_resource_ids() -> None:
    """No module but adapter/identity.py calls the hash of ids (adapter/identifiers.py only
    defines it): every id rule has one home."""
    callers = sorted(str(path.relative_to(ADAPTER)) for path in ADAPTER.rglob("*.py")
                     if CALL.search(path.read_text(encoding="utf-8")))
    assert callers == ["identifiers.py", "identity.py"]
    definition = (ADAPTER / "identifiers.py").read_text(encoding="utf-8")
    assert [m.start() for m in CALL.finditer(definition)] == \
        [definition.index("def resource_id_for(") + len("def ")]


def test_involvement_role_id_is_the_natural_key_id() -> None:
    """The rule as README "Identifiers" states it: UUIDv5 of ``PractitionerRole/<ContactPoint
    ID>/<role>/<organisation code>/<staff id>/<start>``."""
    key = identity.involvement_key("gp", "A81001", "GP0001", "2020-01-02")
    assert key == "gp/A81001/GP0001/2020-01-02"
    assert identity.involvement_role_id("CP0000000AB", key) == resource_id_for(
        "PractitionerRole", "CP0000000AB/gp/A81001/GP0001/2020-01-02")
    assert identity.member_role_id("ECAF-1", identity.team_member_key("gp", "A81001", "")) \
        == resource_id_for("PractitionerRole", "ecaf/ECAF-1/gp/A81001//")
    assert identity.organisation_key({"urn": "100001", "gss_code": "E09000001"}) == \
        ("urn", "100001")


def test_history_rebuilds_role_ids_by_natural_key(db: Database) -> None:
    """A child rebuilt from a version snapshot gives each involvement the id it is stored
    with (its natural key's), whatever its place in the list."""
    load_demo_data(db, children=12, authorities=1, seed=3, progress=False)
    with db.sessions() as session:
        child = next(c for c in session.scalars(select(Child)) if len(c.involvements) >= 3)
        stored = [i.resource_id for i in child.involvements]
        snapshot = history.child_snapshot(child)
        snapshot.snapshot = dict(snapshot.snapshot or {})
        snapshot.snapshot["involvements"] = list(reversed(snapshot.snapshot["involvements"]))
        rebuilt = history.child_from_snapshot(snapshot)
        assert [i.resource_id for i in rebuilt.involvements] == list(reversed(stored))
        assert all(i.resource_id == identity.involvement_role_id(child.contactpoint_id,
                                                                 part_key(i))
                   for i in rebuilt.involvements)


def _downgrade(db: Database, revision: str) -> None:
    """Migrate ``db`` down to ``revision``."""
    with db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _position_ids(db: Database) -> dict[str, str]:
    """Give every involvement and team member the id the demo data used to derive from its
    list position; return the old ids by row (``involvement/<id>``, ``member/<id>``)."""
    old: dict[str, str] = {}
    with db.engine.begin() as connection:
        rows = connection.execute(select(Involvement.id, Involvement.position,
                                         Child.contactpoint_id).join(Child)).all()
        for row_id, position, cpid in rows:
            old[f"involvement/{row_id}"] = resource_id_for("PractitionerRole",
                                                           f"{cpid}/{position}")
            connection.execute(update(Involvement).where(Involvement.id == row_id)
                               .values(resource_id=old[f"involvement/{row_id}"]))
        members = connection.execute(select(TeamMember.id, TeamMember.position,
                                            Assessment.assessment_id).join(Assessment)).all()
        for row_id, position, aid in members:
            old[f"member/{row_id}"] = resource_id_for("PractitionerRole",
                                                      f"ecaf/{aid}/{position}")
            connection.execute(update(TeamMember).where(TeamMember.id == row_id)
                               .values(resource_id=old[f"member/{row_id}"]))
    return old


def _migrated(db: Database) -> dict[str, str]:
    """Load demo data at revision 0013 with position-derived role ids, migrate to the head,
    and return the old ids by row."""
    _downgrade(db, "0013_bulk")
    load_demo_data(db, children=16, authorities=1, seed=5, progress=False)
    old = _position_ids(db)
    db.upgrade()
    return old


def test_migration_gives_natural_key_ids_and_aliases_the_old(db: Database) -> None:
    """After 0014 each involvement's and team member's id is its natural key's, the one a
    FHIR write of the child gives (``apply_child``), and each old id is an alias of it."""
    old = _migrated(db)
    with db.transaction() as session:
        aliases = {a.old_id: a.new_id for a in session.scalars(select(ResourceAlias))}
        assert set(aliases) == set(old.values())
        for involvement in session.scalars(select(Involvement)):
            cpid = involvement.child.contactpoint_id
            assert involvement.resource_id == identity.involvement_role_id(
                cpid, part_key(involvement))
            assert aliases[old[f"involvement/{involvement.id}"]] == involvement.resource_id
        for member in session.scalars(select(TeamMember)):
            assert member.resource_id == identity.member_role_id(
                member.assessment.assessment_id, part_key(member))
            assert aliases[old[f"member/{member.id}"]] == member.resource_id
        child = next(c for c in session.scalars(select(Child)) if c.involvements)
        migrated = {i.resource_id for i in child.involvements}
        record, _builder = build_child(canonical_dump(child, meta=False))
        child.involvements.clear()
        session.flush()
        written, _status = apply_child(session, record, child)
        session.flush()
        assert {i.resource_id for i in written.involvements} == migrated


def test_old_role_ids_redirect_to_the_new(app: Flask, db: Database,
                                          client: FlaskClient) -> None:
    """A read, vread or history of an old PractitionerRole id answers 301 with the same
    interaction on the new id in Location and an OperationOutcome; a DELETE of it deletes
    nothing; the new id reads."""
    old = _migrated(db)
    with db.sessions() as session:
        involvement = session.scalars(select(Involvement).order_by(Involvement.id)).first()
        assert involvement is not None
        new_id, version = involvement.resource_id, involvement.child.version
        authority = session.scalar(select(Organisation.gss_code).where(
            Organisation.type == "local-authority"))
    assert authority is not None
    old_id = old[f"involvement/{involvement.id}"]
    headers = bearer(client, app, "role-reader", authority, ["shielded", "sensitive"])
    for suffix in ("", f"/_history/{version}", "/_history"):
        answer = client.get(f"/fhir/PractitionerRole/{old_id}{suffix}", headers=headers)
        assert answer.status_code == 301, suffix
        location = answer.headers["Location"]
        assert location.endswith(f"/fhir/PractitionerRole/{new_id}{suffix}")
        outcome = orjson.loads(answer.data)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "information"
        assert new_id in outcome["issue"][0]["diagnostics"]
    deleted = client.delete(f"/fhir/PractitionerRole/{old_id}", headers=headers)
    assert deleted.status_code == 301 and deleted.headers["Location"].endswith(new_id)
    moved = client.get(f"/fhir/PractitionerRole/{new_id}", headers=headers)
    assert moved.status_code == 200 and orjson.loads(moved.data)["id"] == new_id
    assert client.get("/fhir/PractitionerRole/no-such-role", headers=headers).status_code == 404


def test_old_role_ids_of_unseen_children_are_not_found(app: Flask, db: Database,
                                                       client: FlaskClient) -> None:
    """An alias says no more than the resource: a caller who may not see the role gets the
    404 of an unknown id for its old id, with no Location."""
    old = _migrated(db)
    old_id = next(iter(old.values()))
    headers = bearer(client, app, "stranger", "E09000999")
    answer = client.get(f"/fhir/PractitionerRole/{old_id}", headers=headers)
    assert answer.status_code == 404 and "Location" not in answer.headers
    assert old_id in orjson.loads(answer.data)["issue"][0]["diagnostics"]


def test_downgrade_gives_the_old_ids_back(db: Database) -> None:
    """Reverting 0014 puts every aliased role's old id back and drops the aliases."""
    old = _migrated(db)
    _downgrade(db, "0013_bulk")
    with db.engine.connect() as connection:
        ids = {f"involvement/{i}": rid for i, rid in connection.execute(
            select(Involvement.id, Involvement.resource_id))}
        ids |= {f"member/{i}": rid for i, rid in connection.execute(
            select(TeamMember.id, TeamMember.resource_id))}
    assert ids == old
    db.upgrade()


def _team_with_old_id(app: Flask, db: Database,
                      client: FlaskClient) -> tuple[dict[str, str], dict[str, Any], str, str]:
    """Migrate demo data; return the managing authority's headers, the team CareTeam of the
    first involvement's child as that authority reads it with that participant named by its
    old PractitionerRole id, the old id and the new one."""
    old = _migrated(db)
    with db.sessions() as session:
        involvement = session.scalars(select(Involvement).order_by(Involvement.id)).first()
        assert involvement is not None
        new_id, careteam_id = involvement.resource_id, involvement.child.careteam_id
        authority = involvement.child.managing_organisation.gss_code
    assert authority is not None
    old_id = old[f"involvement/{involvement.id}"]
    headers = bearer(client, app, "team-writer", authority, ["shielded", "sensitive"])
    team = client.get(f"/fhir/CareTeam/{careteam_id}", headers=headers)
    assert team.status_code == 200, team.json
    resource = orjson.loads(team.data)
    named = [p["member"] for p in resource["participant"]
             if p.get("member", {}).get("reference") == f"PractitionerRole/{new_id}"]
    assert len(named) == 1
    named[0]["reference"] = f"PractitionerRole/{old_id}"
    return headers, resource, old_id, new_id


def _members(resource: dict[str, Any]) -> list[str]:
    """Return the member references of a CareTeam's participants."""
    return sorted(p["member"]["reference"] for p in resource["participant"])


def test_writes_naming_an_old_role_id_name_the_role(app: Flask, db: Database,
                                                    client: FlaskClient) -> None:
    """A CareTeam update whose participant names a PractitionerRole by its old id is applied
    as if it named the new id (nothing changes), and its OperationOutcome says which id was
    read; $validate of it finds no error and says the same."""
    headers, resource, old_id, new_id = _team_with_old_id(app, db, client)
    before = _members({**resource, "participant": [
        {**p, "member": {"reference": f"PractitionerRole/{new_id}"}}
        if p["member"]["reference"] == f"PractitionerRole/{old_id}" else p
        for p in resource["participant"]]})
    url = f"/fhir/CareTeam/{resource['id']}"
    checked = client.post("/fhir/CareTeam/$validate", json=resource, headers=headers)
    assert checked.status_code == 200, checked.json
    issues = orjson.loads(checked.data)["issue"]
    assert not [i for i in issues if i["severity"] in ("error", "fatal")], issues
    assert any(old_id in i["diagnostics"] and new_id in i["diagnostics"]
               and i["severity"] == "information" for i in issues)
    written = client.put(url, json=resource,
                         headers={**headers, "Prefer": "return=OperationOutcome"})
    assert written.status_code == 200, written.json
    notes = orjson.loads(written.data)["issue"]
    moved = [i for i in notes if old_id in i["diagnostics"]]
    assert len(moved) == 1 and moved[0]["severity"] == "information"
    assert f"PractitionerRole/{new_id}" in moved[0]["diagnostics"]
    assert _members(orjson.loads(client.get(url, headers=headers).data)) == before


def test_bundles_naming_an_old_role_id_name_the_role(app: Flask, db: Database,
                                                     client: FlaskClient) -> None:
    """A transaction that updates the CareTeam with a participant named by its old id
    succeeds as the same update with the new id does."""
    headers, resource, old_id, new_id = _team_with_old_id(app, db, client)
    url = f"CareTeam/{resource['id']}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource,
         "request": {"method": "PUT", "url": url}}]}
    answer = client.post("/fhir", json=bundle, headers=headers)
    assert answer.status_code == 200, answer.json
    assert orjson.loads(answer.data)["entry"][0]["response"]["status"].startswith("200")
    team = orjson.loads(client.get(f"/fhir/{url}", headers=headers).data)
    assert f"PractitionerRole/{new_id}" in _members(team)
    assert f"PractitionerRole/{old_id}" not in _members(team)


def test_an_old_id_of_a_role_the_writer_may_not_see_stays_unknown(
        app: Flask, db: Database, client: FlaskClient) -> None:
    """An alias tells a writer no more than the role does: the old id of a sensitive
    service's role, named by a writer without the sensitive-services right, is refused as an
    unknown role (422), its new id named nowhere in the answer."""
    old = _migrated(db)
    with db.sessions() as session:
        involvement = session.scalars(select(Involvement).join(Child).where(
            Involvement.sensitive.is_(True), Child.shielded.is_(False))
            .order_by(Involvement.id)).first()
        assert involvement is not None
        new_id, careteam_id = involvement.resource_id, involvement.child.careteam_id
        authority = involvement.child.managing_organisation.gss_code
    assert authority is not None
    old_id = old[f"involvement/{involvement.id}"]
    headers = bearer(client, app, "plain-writer", authority)
    team = client.get(f"/fhir/CareTeam/{careteam_id}", headers=headers)
    assert team.status_code == 200, team.json
    resource = orjson.loads(team.data)
    assert f"PractitionerRole/{new_id}" not in _members(resource)
    resource["participant"].append({"role": resource["participant"][0]["role"],
                                    "member": {"reference": f"PractitionerRole/{old_id}"}})
    answer = client.put(f"/fhir/CareTeam/{careteam_id}", json=resource, headers=headers)
    assert answer.status_code == 422, answer.json
    text = answer.get_data(as_text=True)
    assert f"PractitionerRole/{old_id} is not known here" in text
    assert new_id not in text


def test_imports_naming_an_old_role_id_name_the_role(app: Flask, db: Database,
                                                     client: FlaskClient) -> None:
    """An NDJSON import of the CareTeam (applied through its provider, as the ``import``
    command applies it) reads the old id as the new one and reports so in its notes."""
    from adapter.fhir.file_import import Line, apply_resources

    _headers, resource, old_id, new_id = _team_with_old_id(app, db, client)
    with db.sessions() as session:
        child = session.scalar(select(Child).where(Child.careteam_id == resource["id"]))
        assert child is not None
        authority = child.managing_organisation.gss_code
    assert authority is not None
    caller = Caller("team-importer", authority, parse_scopes("system/*.cruds"),
                    frozenset({"shielded", "sensitive"}))
    with app.app_context():
        [outcome] = list(apply_resources([Line(1, 1, resource)], caller))
    assert outcome.status == "unchanged", outcome
    assert any(old_id in note and new_id in note for note in outcome.notes)
