"""The canonical model: migrations on both databases, every constraint of the directory tables,
and versioning (docs/architecture.md "One canonical model")."""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    CheckConstraint,
    Connection,
    ForeignKeyConstraint,
    Table,
    UniqueConstraint,
    inspect,
    null,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from adapter.db import Database, alembic_config
from adapter.models import (
    Assessment,
    Base,
    Carer,
    Child,
    ChildName,
    Involvement,
    Organisation,
    TeamMember,
)
from adapter.models.directory import SEARCH_INDEXES
from tests.conftest import BACKENDS, POSTGRES_URL, PostgresSchema

DIRECTORY_TABLES = ("organisation", "practitioner", "practitioner_identifier", "child",
                    "child_name", "local_identifier", "carer", "involvement", "assessment",
                    "team_member")
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _table(name: str) -> Table:
    """Return a table of the model."""
    return Base.metadata.tables[name]


# --- migrations ------------------------------------------------------------------------------

def _constraint_names(connection: Connection, table: str) -> set[str]:
    """Return the names of the CHECK, UNIQUE and FOREIGN KEY constraints the database has."""
    inspector = inspect(connection)
    found = {c["name"] for c in inspector.get_check_constraints(table)}
    found |= {c["name"] for c in inspector.get_foreign_keys(table)}
    found |= {c["name"] for c in inspector.get_unique_constraints(table)}
    return {name for name in found if name}


def _model_constraint_names(table: str) -> set[str]:
    """Return the names of the CHECK, UNIQUE and FOREIGN KEY constraints the model declares."""
    kinds = (CheckConstraint, UniqueConstraint, ForeignKeyConstraint)
    return {str(c.name) for c in _table(table).constraints if isinstance(c, kinds)}


def _not_a_search_index(name: str | None, kind: str, _parent: Any) -> bool:
    """Leave the migration's per-database prefix-search indexes out of the comparison."""
    return not (kind == "index" and name in SEARCH_INDEXES)


def _index_names(connection: Connection) -> set[str]:
    """Return the names of the indexes in the database (expression indexes included)."""
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    return {str(row[0]) for row in connection.exec_driver_sql(query)}


def test_migrations_build_the_model(empty_db: Database) -> None:
    """Upgrading from nothing gives exactly the model's tables, columns, indexes and
    constraints (Alembic compares all but CHECKs, which are compared by name)."""
    empty_db.upgrade()
    with empty_db.engine.connect() as connection, warnings.catch_warnings():
        # SQLite's reflection skips the expression index of SEARCH_INDEXES, with a warning.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_name": _not_a_search_index})
        assert compare_metadata(context, Base.metadata) == []
        # SQLite serves the family-name prefix from the model's plain ix_child_name_family_norm.
        expected = set(SEARCH_INDEXES) - ({"ix_child_name_family_prefix"}
                                          if empty_db.is_sqlite else set())
        assert expected <= _index_names(connection)
        for table in DIRECTORY_TABLES:
            assert _constraint_names(connection, table) == _model_constraint_names(table), table


def test_migrations_downgrade_and_upgrade_again(empty_db: Database) -> None:
    """Every migration reverses cleanly and applies again."""
    empty_db.upgrade()
    with empty_db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    empty_db.upgrade()
    with empty_db.engine.connect() as connection:
        assert set(DIRECTORY_TABLES) <= set(inspect(connection).get_table_names())


# --- constraints ---------------------------------------------------------------------------

_serial = itertools.count(1)


def valid_row(table: str) -> dict[str, Any]:
    """Return a valid new row of ``table`` (fresh unique values) referencing the base rows."""
    n = next(_serial)
    rid = {"resource_id": f"{table}-{n}"}
    person = {"given": ["Sam"], "family": "Doe"}
    rows: dict[str, dict[str, Any]] = {
        "organisation": {**rid, "name": "Org", "type": "school", "urn": str(600000 + n),
                         "version": 1, "last_updated": T0},
        "practitioner": {**rid, **person, "local_id": f"L{n}", "organisation_id": 1,
                         "version": 1, "last_updated": T0},
        "practitioner_identifier": {"practitioner_id": 1,
                                    "system": "https://fhir.hl7.org.uk/Id/gmc-number",
                                    "value": f"{n:07d}"},
        "child": {**rid, "contactpoint_id": f"CP{n:09d}", "gender": "1",
                  "birth_date": dt.date(2015, 1, 1), "address_status": "current",
                  "shielded": False, "record_status": "live",
                  "retention_date": dt.date(2033, 1, 1), "managing_organisation_id": 1,
                  "version": 1, "created": T0, "last_updated": T0},
        "child_name": {**person, "child_id": 1, "position": n, "use": "current",
                       "family_norm": "doe", "given_norm": "sam"},
        "local_identifier": {"child_id": 1, "organisation_id": 1, "value": f"V{n}"},
        "carer": {**person, "child_id": 1, "position": n, "relation": "mother",
                  "parental_responsibility": True},
        "involvement": {**rid, "child_id": 1, "position": n, "role": "gp", "organisation_id": 1,
                        "sensitive": False, "lead_professional": False, "caf_completed": False},
        "assessment": {**rid, "assessment_id": f"A{n}", "child_id": 1, "status": "draft",
                       "lead_organisation_id": 1, "consent_to_share": False, "version": 1,
                       "last_updated": T0},
        "team_member": {**rid, "assessment_id": 1, "position": n, "role": "gp",
                        "organisation_id": 1},
    }
    return rows[table]


# CHECK constraint -> (table, values that break it). A test below keeps this complete.
CHECK_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ck_organisation_type": ("organisation", {"type": "hospital"}),
    "ck_organisation_has_code": ("organisation", {"urn": None}),
    "ck_organisation_la_has_gss": ("organisation", {"type": "local-authority"}),
    "ck_practitioner_staff_id_has_employer": ("practitioner", {"organisation_id": None}),
    "ck_child_gender": ("child", {"gender": "M"}),
    "ck_child_address_status": ("child", {"address_status": "moved"}),
    "ck_child_record_status": ("child", {"record_status": "deleted"}),
    "ck_child_nhs_number_status": ("child", {"nhs_number": "9434765919",
                                             "nhs_number_status": "09"}),
    "ck_child_extended_retention": ("child", {"extended_retention": "adoption"}),
    "ck_child_death_after_birth": ("child", {"death_date": dt.date(2014, 12, 31)}),
    "ck_child_nhs_status_needs_number": ("child", {"nhs_number_status": "01"}),
    "ck_child_statement_has_no_address": ("child", {"address_status": "none-known",
                                                    "address_postcode": "SW1A 1AA"}),
    "ck_child_address_period_order": ("child", {"address_start": dt.date(2020, 1, 2),
                                                "address_end": dt.date(2020, 1, 1)}),
    "ck_child_version_positive": ("child", {"version": 0}),
    "ck_child_name_use": ("child_name", {"use": "maiden"}),
    "ck_child_name_period_order": ("child_name", {"period_start": dt.date(2020, 1, 2),
                                                  "period_end": dt.date(2020, 1, 1)}),
    "ck_carer_relation": ("carer", {"relation": "uncle"}),
    "ck_involvement_role": ("involvement", {"role": "dentist"}),
    "ck_involvement_consent_basis": ("involvement", {"consent_basis": "verbal"}),
    "ck_involvement_sensitive_needs_basis": ("involvement", {"sensitive": True}),
    "ck_involvement_sensitive_role_flagged": ("involvement", {"role": "camhs",
                                                              "consent_basis": "child-consent"}),
    "ck_involvement_period_order": ("involvement", {"period_start": dt.date(2020, 1, 2),
                                                    "period_end": dt.date(2020, 1, 1)}),
    "ck_assessment_status": ("assessment", {"status": "open"}),
    "ck_assessment_completed_after_start": ("assessment", {
        "status": "completed", "started_date": dt.date(2020, 1, 2),
        "completed_date": dt.date(2020, 1, 1)}),
    "ck_assessment_closed_after_start": ("assessment", {
        "status": "closed", "started_date": dt.date(2020, 1, 2),
        "closed_date": dt.date(2020, 1, 1)}),
    "ck_assessment_closed_has_date": ("assessment", {"status": "closed"}),
    "ck_assessment_completed_has_date": ("assessment", {"status": "completed"}),
    "ck_assessment_version_positive": ("assessment", {"version": 0}),
    "ck_team_member_role": ("team_member", {"role": "friend"}),
}


def _unique_cases() -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """Yield a case per UNIQUE constraint: a new row repeating the base row's values."""
    for table in DIRECTORY_TABLES:
        for constraint in _table(table).constraints:
            if isinstance(constraint, UniqueConstraint):
                columns = [c.name for c in constraint.columns]
                sqlite_text = ", ".join(f"{table}.{c}" for c in columns)
                yield str(constraint.name), table, {"_copy": columns}, sqlite_text


def _foreign_key_cases() -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """Yield a case per FOREIGN KEY: a new row pointing at a row that does not exist."""
    for table in DIRECTORY_TABLES:
        for constraint in _table(table).foreign_key_constraints:
            column = constraint.columns.keys()[0]
            # SQLite names no foreign key in its error.
            yield str(constraint.name), table, {column: 999_999}, "FOREIGN KEY constraint failed"


def _not_null_cases() -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """Yield a case per NOT NULL column (but the primary key): a new row with it NULL."""
    for table in DIRECTORY_TABLES:
        for column in _table(table).columns:
            if not column.nullable and not column.primary_key:
                    # SQL NULL, not JSON null (a JSON column would store None as 'null').
                yield f"nn_{table}.{column.name}", table, {column.name: null()}, \
                    f"{table}.{column.name}"


def _all_cases() -> list[tuple[str, str, dict[str, Any], str]]:
    """Return every constraint case: (name, table, values, what SQLite's message names)."""
    checks = [(name, table, values, name) for name, (table, values) in CHECK_CASES.items()]
    return [*checks, *_unique_cases(), *_foreign_key_cases(), *_not_null_cases()]


# In name order: a table's constraints are a set, and parallel test workers (pytest-xdist) must
# each collect the same tests in the same order.
ALL_CASES = sorted(_all_cases(), key=lambda case: case[0])


@pytest.fixture(scope="module", params=BACKENDS)
def constraint_db(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A migrated database per backend holding one valid row of every directory table."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("constraints") / "gateway.db"
        database = Database(f"sqlite:///{path}")
        yield from _seeded(database)
        return
    assert POSTGRES_URL
    with PostgresSchema(POSTGRES_URL) as schema:
        yield from _seeded(Database(POSTGRES_URL, **schema.engine_options()))


def _seeded(database: Database) -> Iterator[Database]:
    """Migrate ``database``, add the base rows (id 1 in every table), yield it, dispose it."""
    database.upgrade()
    with database.engine.begin() as connection:
        # Every unique column set, so that the UNIQUE cases can repeat them.
        la = valid_row("organisation") | {"type": "local-authority", "gss_code": "E06000001",
                                          "ods_code": "Y00001"}
        # Fresh tables: the first row of each gets id 1 (and PostgreSQL's sequences move on).
        connection.execute(_table("organisation").insert(), [la])
        for table in DIRECTORY_TABLES[1:]:
            connection.execute(_table(table).insert(), [valid_row(table)])
    yield database
    database.dispose()


def _base_row(connection: Connection, table: str) -> dict[str, Any]:
    """Return the base row (id 1) of ``table``."""
    t = _table(table)
    return dict(connection.execute(select(t).where(t.c.id == 1)).mappings().one())


def test_every_check_constraint_has_a_case() -> None:
    """The CHECK cases cover every CHECK constraint of the directory tables, and no other."""
    declared = {str(c.name) for t in DIRECTORY_TABLES for c in _table(t).constraints
                if isinstance(c, CheckConstraint)}
    assert set(CHECK_CASES) == declared


@pytest.mark.parametrize("case", ALL_CASES, ids=[case[0] for case in ALL_CASES])
def test_constraint_rejects(constraint_db: Database, backend_name: str,
                            case: tuple[str, str, dict[str, Any], str]) -> None:
    """A row breaking the constraint raises IntegrityError; the message names the constraint
    (PostgreSQL: by name; SQLite: CHECKs by name, UNIQUE/NOT NULL by columns)."""
    name, table, values, sqlite_text = case
    with constraint_db.engine.connect() as connection, connection.begin() as transaction:
        row = valid_row(table)
        if "_copy" in values:
            base = _base_row(connection, table)
            row |= {column: base[column] for column in values["_copy"]}
        else:
            row |= values
        with pytest.raises(IntegrityError) as info:
            connection.execute(_table(table).insert().values(row))
        transaction.rollback()
    message = str(info.value.orig)
    if backend_name == "sqlite":
        assert sqlite_text in message
    elif name.startswith("nn_"):
        column = name.split(".", 1)[1]
        assert f'column "{column}" of relation "{table}"' in message
    else:
        assert f'"{name}"' in message


def test_valid_rows_are_accepted(constraint_db: Database) -> None:
    """The cases' starting rows are valid: only the breaking values make them fail."""
    with constraint_db.engine.connect() as connection, connection.begin() as transaction:
        for table in DIRECTORY_TABLES:
            connection.execute(_table(table).insert(), [valid_row(table)])
        transaction.rollback()


@pytest.fixture
def backend_name(constraint_db: Database) -> str:
    """The backend of the module database."""
    return constraint_db.engine.dialect.name


# --- versioning ----------------------------------------------------------------------------

def _new_child(session: Session) -> Child:
    """Add a child with a name, a carer and an involvement; return it flushed."""
    authority = Organisation(resource_id="org-la", name="Northmoor Council",
                             type="local-authority", gss_code="E06000001")
    gp = Organisation(resource_id="org-gp", name="Oak Surgery", type="gp-practice",
                      ods_code="A81001")
    child = Child(resource_id="patient-1", contactpoint_id="CP000000000", gender="2",
                  birth_date=dt.date(2016, 4, 1), retention_date=dt.date(2034, 4, 1),
                  managing_organisation=authority)
    child.names.append(ChildName(position=0, use="current", given=["Ada"], family="Lovelace",
                                 family_norm="lovelace", given_norm="ada"))
    child.carers.append(Carer(position=0, relation="mother", family="Lovelace", given=["Ann"]))
    child.involvements.append(Involvement(resource_id="role-1", position=0, role="gp",
                                          organisation=gp))
    session.add(child)
    session.flush()
    return child


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC time (SQLite returns naive UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _stored(db: Database) -> tuple[int, dt.datetime]:
    """Return the stored version and last_updated of the child, read afresh."""
    with db.engine.connect() as connection:
        row = connection.execute(select(_table("child").c.version,
                                        _table("child").c.last_updated)).one()
    return row.version, _as_utc(row.last_updated)


def test_every_change_to_a_child_bumps_version_and_last_updated(db: Database) -> None:
    """A change of the child or of any of its names, carers and involvements is a new version."""
    with db.transaction() as session:
        _new_child(session)
    history = [_stored(db)]
    assert history[0][0] == 1
    changes = [
        lambda c: setattr(c, "shielded", True),
        lambda c: setattr(c.carers[0], "phone", "07700 900123"),
        lambda c: setattr(c.names[0], "family", "Byron"),
        lambda c: c.names.append(ChildName(position=1, use="former", given=["Ada"],
                                           family="Lovelace", family_norm="lovelace",
                                           given_norm="ada")),
        lambda c: setattr(c.involvements[0], "period_start", dt.date(2016, 5, 1)),
        lambda c: c.involvements.pop(),
    ]
    for change in changes:
        with db.transaction() as session:
            child = session.scalars(select(Child)).one()
            change(child)
        history.append(_stored(db))
    versions = [version for version, _ in history]
    assert versions == list(range(1, len(changes) + 2))
    stamps = [stamp for _, stamp in history]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_no_change_no_new_version(db: Database) -> None:
    """Reading, or setting a value to what it already is, leaves the version alone."""
    with db.transaction() as session:
        _new_child(session)
    before = _stored(db)
    with db.transaction() as session:
        child = session.scalars(select(Child)).one()
        child.gender = "2"
        assert [n.family for n in child.names] == ["Lovelace"]
    assert _stored(db) == before


def test_stale_update_is_refused(db: Database) -> None:
    """Two writers read version 1; the second one's later update raises StaleDataError
    (optimistic locking: the UPDATE names the version it read)."""
    with db.transaction() as session:
        _new_child(session)
    first, second = db.sessions(), db.sessions()
    try:
        theirs = second.scalars(select(Child)).one()
        assert theirs.carers[0].relation == "mother"
        second.commit()  # their read ends; what they hold is version 1
        mine = first.scalars(select(Child)).one()
        mine.shielded = True
        first.commit()
        theirs.carers[0].phone = "07700 900001"
        with pytest.raises(StaleDataError):
            second.commit()
    finally:
        first.close()
        second.close()
    assert _stored(db)[0] == 2


def test_team_member_change_bumps_the_assessment(db: Database) -> None:
    """The Team Around the Child is part of its assessment's version."""
    with db.transaction() as session:
        child = _new_child(session)
        assessment = Assessment(resource_id="team-1", assessment_id="ECAF-1", child=child,
                                status="draft", lead_organisation=child.managing_organisation)
        assessment.members.append(TeamMember(resource_id="member-1", position=0, role="gp",
                                              organisation=child.managing_organisation))
        session.add(assessment)
    with db.transaction() as session:
        stored = session.scalars(select(Assessment)).one()
        assert stored.version == 1
        stored.members[0].phone = "020 7946 0001"
    with db.transaction() as session:
        assert session.scalars(select(Assessment)).one().version == 2

