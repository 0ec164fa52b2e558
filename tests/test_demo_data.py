"""Synthetic demo data: valid by every rule, deterministic per seed, with every rare case."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapter import codes, identity
from adapter import identifiers as ids
from adapter.db import Database
from adapter.demo import REFERENCE_DATE, count_children, load_demo_data
from adapter.demo.children import nhs_number_for
from adapter.imports.rows import insert_entries
from adapter.models import Base, Child, Involvement, Organisation, TeamMember
from adapter.models.canonical import canonical_dump, normalise_name
from adapter.retention import is_purgeable, record_status_on, retention_date
from adapter.security.caller import Caller
from adapter.security.scopes import parse_scopes
from adapter.store.records import part_key
from tests.conftest import BACKENDS, POSTGRES_URL, PostgresSchema

CHILDREN = 400  # one block of the generator's quotas: every rare case is in it
AUTHORITIES = 3
SEED = 7
Rows = dict[str, list[dict[str, Any]]]


def _plain(value: Any) -> Any:
    """Return a value in a form that compares equal across backends (UTC times, ISO dates)."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def dump(db: Database) -> Rows:
    """Return every row of every table of the model, ordered by id, as plain values."""
    with db.engine.connect() as connection:
        return {name: [{k: _plain(v) for k, v in row.items()}
                       for row in connection.execute(select(table).order_by(table.c.id))
                       .mappings()]
                for name, table in Base.metadata.tables.items()
                if "id" in table.c and name not in ("client", "audit_record", "used_assertion")}


def _load(database: Database) -> Rows:
    """Migrate ``database``, load the demo data and return its dump."""
    database.upgrade()
    assert load_demo_data(database, children=CHILDREN, authorities=AUTHORITIES, seed=SEED,
                          progress=False) == CHILDREN
    assert count_children(database) == CHILDREN
    return dump(database)


@pytest.fixture(scope="module", params=BACKENDS)
def demo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rows]:
    """Demo data loaded once per backend (the tests only read it), dumped."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'gateway.db'}")
        yield _load(database)
        database.dispose()
        return
    assert POSTGRES_URL
    with PostgresSchema(POSTGRES_URL) as schema:
        database = Database(POSTGRES_URL, **schema.engine_options())
        yield _load(database)
        database.dispose()


@pytest.fixture
def demo_db(db: Database) -> tuple[Database, Rows]:
    """A database of its own loaded with the demo data, for tests that write more."""
    return db, _load(db)


def _by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Index rows by id."""
    return {row["id"]: row for row in rows}


def _check_contact(row: dict[str, Any]) -> None:
    """Phone, e-mail and postcode, where present, pass their validators unchanged."""
    if row.get("phone"):
        assert ids.validate_phone(row["phone"]) == row["phone"]
    if row.get("email"):
        assert ids.validate_email(row["email"]) == row["email"]
        assert row["email"].split("@")[1].split(".")[-1] in ("example", "com", "net", "org")
        assert "example" in row["email"].split("@")[1]
    if row.get("address_postcode"):
        assert ids.validate_postcode(row["address_postcode"]) == row["address_postcode"]


def _natural_key(demo: Rows, part: dict[str, Any]) -> str:
    """Return an involvement's or team member's natural key from the rows, written out here
    (role, organisation's ODS code else URN else GSS code, staff id, start date) so that the
    test does not take the rule from the code it checks."""
    org = _by_id(demo["organisation"])[part["organisation_id"]]
    staff = _by_id(demo["practitioner"])[part["practitioner_id"]]["local_id"] \
        if part["practitioner_id"] is not None else ""
    start = part.get("period_start") or ""
    return f"{part['role']}/{org['ods_code'] or org['urn'] or org['gss_code']}/{staff}/{start}"


def test_counts(demo: Rows) -> None:
    """The requested number of children, over the requested authorities."""
    assert len(demo["child"]) == CHILDREN
    authorities = [o for o in demo["organisation"] if o["type"] == "local-authority"]
    assert len(authorities) == AUTHORITIES
    assert {c["managing_organisation_id"] for c in demo["child"]} == \
        {a["id"] for a in authorities}


def test_organisations_pass_every_validator(demo: Rows) -> None:
    """Authorities, schools, practices and services carry valid codes and contacts."""
    types = Counter(o["type"] for o in demo["organisation"])
    assert {"local-authority", "school", "nursery", "college", "gp-practice", "nhs-trust",
            "social-care", "youth-justice", "voluntary", "other"} <= set(types)
    for org in demo["organisation"]:
        code = org["gss_code"] or org["urn"] or org["ods_code"]
        assert org["resource_id"] == ids.resource_id_for("Organization", code)
        if org["type"] == "local-authority":
            assert ids.validate_gss_code(org["gss_code"]) == org["gss_code"]
            assert ids.validate_la_number(org["la_number"]) == org["la_number"]
        elif org["type"] in ("school", "nursery", "college"):
            assert ids.validate_urn(org["urn"]) == org["urn"]
        elif org["type"] == "gp-practice":
            assert ids.validate_gp_practice_code(org["ods_code"]) == org["ods_code"]
        else:
            assert ids.validate_ods_code(org["ods_code"]) == org["ods_code"]
        assert org["phone"] and org["email"] and org["address_postcode"]
        _check_contact(org)
    for practitioner in demo["practitioner"]:
        assert practitioner["phone"] and practitioner["email"] and practitioner["family"]
        _check_contact(practitioner)
        org = _by_id(demo["organisation"])[practitioner["organisation_id"]]
        key = f"{org['gss_code'] or org['urn'] or org['ods_code']}/{practitioner['local_id']}"
        assert practitioner["resource_id"] == ids.resource_id_for("Practitioner", key)


def test_children_pass_every_validator(demo: Rows) -> None:
    """Identifiers are valid (NHS numbers in the 999 test range), unique, and derived ids match."""
    orgs = _by_id(demo["organisation"])
    for child in demo["child"]:
        cpid = child["contactpoint_id"]
        assert ids.validate_contactpoint_id(cpid) == cpid
        assert child["resource_id"] == ids.resource_id_for("Patient", cpid)
        if child["nhs_number"]:
            assert ids.validate_nhs_number(child["nhs_number"]) == child["nhs_number"]
            assert child["nhs_number"].startswith("999")
        if child["upn"]:
            assert ids.validate_upn(child["upn"]) == child["upn"]
            la = orgs[child["managing_organisation_id"]]["la_number"]
            assert child["upn"][1:4] == la
        if child["address_status"] in codes.ADDRESS_STATUSES_WITH_ADDRESS:
            assert child["address_postcode"] and child["address_street"]
        _check_contact(child)
    for column in ("contactpoint_id", "resource_id", "nhs_number", "upn"):
        values = [c[column] for c in demo["child"] if c[column]]
        assert len(values) == len(set(values)), column
    assert sum(1 for c in demo["child"] if c["nhs_number"]) > 0.9 * CHILDREN


def test_names_carers_and_involvements_pass_every_validator(demo: Rows) -> None:
    """Names have their search keys; carers and services have valid contacts."""
    children = _by_id(demo["child"])
    for name in demo["child_name"]:
        assert name["family_norm"] == normalise_name(name["family"])
        assert name["given_norm"] == normalise_name(" ".join(name["given"]))
        assert name["given"] and len(name["family"]) <= 35
    assert {n["child_id"] for n in demo["child_name"] if n["use"] == "current"} == set(children)
    for carer in demo["carer"]:
        _check_contact(carer)
    carers = Counter(c["child_id"] for c in demo["carer"])
    assert set(carers) == set(children) and set(carers.values()) <= {1, 2, 3, 4}
    assert max(carers.values()) == 4
    cpids = {c["id"]: c["contactpoint_id"] for c in demo["child"]}
    for involvement in demo["involvement"]:
        _check_contact(involvement)
        key = f"{cpids[involvement['child_id']]}/{_natural_key(demo, involvement)}"
        assert involvement["resource_id"] == ids.resource_id_for("PractitionerRole", key)
        assert involvement["phone"] and involvement["email"]


def test_most_children_have_a_school_and_a_gp(demo: Rows) -> None:
    """Education and GP for most; 0-6 further involvements; realistic role rates."""
    by_child: dict[int, list[str]] = {c["id"]: [] for c in demo["child"]}
    for involvement in demo["involvement"]:
        by_child[involvement["child_id"]].append(involvement["role"])
    with_gp = sum("gp" in roles for roles in by_child.values())
    assert with_gp > 0.9 * CHILDREN
    school_age = {c["id"] for c in demo["child"]
                  if 5 <= (REFERENCE_DATE - dt.date.fromisoformat(c["birth_date"])).days / 365.25
                  < 16 and c["record_status"] == "live"}
    with_school = sum("education" in by_child[c] for c in school_age)
    assert with_school > 0.85 * len(school_age)
    further = [len([r for r in roles if r not in ("education", "gp")])
               for roles in by_child.values()]
    assert max(further) <= 6 and min(further) == 0
    assert 0.2 < sum(1 for f in further if f) / CHILDREN < 0.7


def test_rare_cases_are_present(demo: Rows) -> None:
    """Shielded, sensitive with consent, former names, deceased, extended, archived, statements."""
    children = demo["child"]
    shielded = sum(c["shielded"] for c in children)
    assert 0.01 <= shielded / CHILDREN <= 0.02
    sensitive = [i for i in demo["involvement"] if i["sensitive"]]
    assert 0.02 <= len({i["child_id"] for i in sensitive}) / CHILDREN <= 0.05
    assert all(i["consent_basis"] in codes.CONSENT_BASES for i in sensitive)
    assert all(i["role"] in codes.SENSITIVE_ROLES for i in sensitive)
    assert {i["role"] for i in demo["involvement"] if not i["sensitive"]}.isdisjoint(
        codes.SENSITIVE_ROLES)
    assert any(n["use"] == "former" for n in demo["child_name"])
    deceased = [c for c in children if c["death_date"]]
    assert {c["record_status"] for c in deceased} == {"live", "archived"}
    extended = [c for c in children if c["extended_retention"]]
    assert extended and all(c["record_status"] == "live" for c in extended)
    assert any(c["record_status"] == "archived" and not c["death_date"] for c in children)
    statuses = Counter(c["address_status"] for c in children)
    assert statuses["current"] > 0.95 * CHILDREN and len(statuses) > 2
    assert sum(1 for i in demo["involvement"] if i["lead_professional"]) > 0


def test_young_adults_have_carers_only(demo: Rows) -> None:
    """An entry kept on past 18 lists carers without parental responsibility (docs/domain.md)."""
    extended = {c["id"] for c in demo["child"] if c["extended_retention"]}
    carers = [c for c in demo["carer"] if c["child_id"] in extended]
    assert carers and not any(c["parental_responsibility"] for c in carers)


def test_assessments_in_every_status_with_a_team_and_lead(demo: Rows) -> None:
    """eCAF references for 5-10% of children, each status, a lead professional and a TAC."""
    assessments = demo["assessment"]
    assert {a["status"] for a in assessments} == set(codes.ASSESSMENT_STATUSES)
    assert 0.05 <= len(assessments) / CHILDREN <= 0.10
    members: dict[int, list[dict[str, Any]]] = {}
    for member in demo["team_member"]:
        members.setdefault(member["assessment_id"], []).append(member)
    leads = {(i["child_id"], i["practitioner_id"]): i for i in demo["involvement"]
             if i["lead_professional"]}
    for assessment in assessments:
        key = "ecaf/" + assessment["assessment_id"]
        assert assessment["resource_id"] == ids.resource_id_for("CareTeam", key)
        assert assessment["lead_practitioner_id"] is not None
        lead = leads[(assessment["child_id"], assessment["lead_practitioner_id"])]
        assert lead["caf_completed"] == (assessment["status"] in ("completed", "closed"))
        team = sorted(members[assessment["id"]], key=lambda m: m["position"])
        assert team[0]["practitioner_id"] == assessment["lead_practitioner_id"]
        for member in team:
            member_key = f"ecaf/{assessment['assessment_id']}/{_natural_key(demo, member)}"
            assert member["resource_id"] == ids.resource_id_for("PractitionerRole", member_key)
            _check_contact(member)
        _check_contact(assessment)
        dates = [assessment[k] for k in ("started_date", "completed_date", "closed_date")
                 if assessment[k]]
        assert dates == sorted(dates) and dates[-1] <= REFERENCE_DATE.isoformat()


def test_dates_are_consistent(demo: Rows) -> None:
    """Nothing after the reference date; periods ordered; death after birth."""
    ref = REFERENCE_DATE.isoformat()
    for child in demo["child"]:
        assert child["birth_date"] < ref
        assert child["death_date"] is None or child["birth_date"] <= child["death_date"] <= ref
        assert child["created"] <= child["last_updated"]
        if child["address_start"] and child["address_end"]:
            assert child["address_start"] <= child["address_end"]
    for table in ("child_name", "involvement"):
        for row in demo[table]:
            assert row["period_start"] is None or row["period_start"] <= ref
            if row["period_start"] and row["period_end"]:
                assert row["period_start"] <= row["period_end"] <= ref


def test_retention_follows_the_rules(demo: Rows) -> None:
    """Retention dates and record statuses are what adapter.retention says on the reference day."""
    for child in demo["child"]:
        birth = dt.date.fromisoformat(child["birth_date"])
        death = dt.date.fromisoformat(child["death_date"]) if child["death_date"] else None
        expected = retention_date(birth, death, child["extended_retention"])
        assert child["retention_date"] == expected.isoformat()
        assert child["record_status"] == record_status_on(expected, REFERENCE_DATE)

        class Entry:
            record_status = child["record_status"]
            retention_date = expected

        assert not is_purgeable(Entry(), REFERENCE_DATE)


def test_same_seed_same_data_on_every_backend(demo: Rows, tmp_path: Path) -> None:
    """The same seed writes identical rows (ids, resource ids, timestamps) into another
    database, here a fresh SQLite file; a different seed writes different children."""
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    different = Database(f"sqlite:///{tmp_path / 'different.db'}")
    try:
        for database, seed in ((other, SEED), (different, SEED + 1)):
            database.upgrade()
            load_demo_data(database, children=CHILDREN, authorities=AUTHORITIES, seed=seed,
                           progress=False)
        again = dump(other)
        assert json.dumps(again, sort_keys=True) == json.dumps(demo, sort_keys=True)
        changed = dump(different)
        assert changed["organisation"] == demo["organisation"]
        assert changed["child_name"] != demo["child_name"]
    finally:
        other.dispose()
        different.dispose()


def test_second_run_reuses_and_extends_organisations(demo_db: tuple[Database, Rows]) -> None:
    """A second run (another seed, one more authority) adds children without clashing, reuses
    the organisations it knows, and leaves PostgreSQL's sequences past the new ids."""
    db, demo = demo_db
    load_demo_data(db, children=50, authorities=AUTHORITIES + 1, seed=SEED + 1, progress=False)
    after = dump(db)
    assert len(after["child"]) == CHILDREN + 50
    for column in ("contactpoint_id", "nhs_number", "upn"):
        values = [c[column] for c in after["child"] if c[column]]
        assert len(values) == len(set(values)), column
    assert after["organisation"][:len(demo["organisation"])] == demo["organisation"]
    authorities = [o for o in after["organisation"] if o["type"] == "local-authority"]
    assert len(authorities) == AUTHORITIES + 1
    with db.transaction() as session:
        session.add(Organisation(resource_id="added-later", name="Later", type="school",
                                 urn="999999"))
    with db.transaction() as session:
        added = session.scalars(select(Organisation).where(Organisation.urn == "999999")).one()
        assert added.id == len(after["organisation"]) + 1


@pytest.mark.parametrize(("children", "authorities"), [(-1, 1), (10, 0), (10, 151)])
def test_sizes_out_of_range_are_refused(db: Database, children: int, authorities: int) -> None:
    """Negative children or an authority count outside 1..150 is refused before writing."""
    with pytest.raises(ValueError, match="children|authorities"):
        load_demo_data(db, children=children, authorities=authorities, seed=1, progress=False)
    assert count_children(db) == 0


def test_demo_nhs_numbers_are_distinct_for_a_million_children() -> None:
    """The directory holds one live entry per NHS number (migration 0011): the demo gives no
    two children the same number, up to a million of them (the 999 range's valid numbers run
    out beyond that). Ids a half-million apart share a serial, so both halves of a window are
    checked together; every number is a valid test number."""
    window = [*range(1, 20_001), *range(500_001, 520_001), *range(980_001, 1_000_001)]
    numbers = [nhs_number_for(child_id) for child_id in window]
    given = [number for number in numbers if number]
    assert len(given) == len(set(given))
    assert all(ids.validate_nhs_number(n) == n and n.startswith("999") for n in given)
    assert all(numbers[:20_000])  # the first half-million all have one
    assert 0.75 < len([n for n in numbers[20_000:] if n]) / 40_000 < 0.9
    assert nhs_number_for(1_000_001) is None


def test_demo_role_ids_are_the_ids_an_import_gives(demo_db: tuple[Database, Rows]) -> None:
    """Demo children taken out and imported again (the bulk import of directory entries) get
    back the very PractitionerRole ids the demo data gave their involvements, and each eCAF
    team member's id is the one a FHIR write of its team gives (``records.apply_assessment``)."""
    db, demo = demo_db
    with_team = {a["child_id"] for a in demo["assessment"]}
    chosen = [c["contactpoint_id"] for c in demo["child"]
              if c["id"] not in with_team and c["record_status"] == "live"][:40]
    with db.transaction() as session:
        children = session.scalars(select(Child).where(Child.contactpoint_id.in_(chosen))).all()
        entries = [canonical_dump(child, meta=False) for child in children]
        before = {(c.contactpoint_id, i.resource_id) for c in children for i in c.involvements}
        for child in children:
            session.delete(child)
    assert len(before) > len(chosen)
    caller = Caller("test-import", "E09000001", parse_scopes("system/*.cruds"), frozenset(),
                    None, None)
    with db.transaction() as session:
        insert_entries(session, entries, caller, "demo ids test")
    with db.transaction() as session:
        after = {(cpid, rid) for cpid, rid in session.execute(
            select(Child.contactpoint_id, Involvement.resource_id).join(Involvement.child)
            .where(Child.contactpoint_id.in_(chosen)))}
        assert after == before
        for member in session.scalars(select(TeamMember)):
            aid = member.assessment.assessment_id
            assert member.resource_id == identity.member_role_id(aid, part_key(member))
