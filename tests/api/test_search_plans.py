"""The searches of Patients are answered from indexes, whole statement included (the page's
conditions, the shielding and status filters, the id order and the keyset cursor): the real
statement of a real search is captured and the database's own planner explains it
(adapter/store/prefix.py, migrations 0010 and 0015; docs/scale.md "Search")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select

from adapter.db import Database
from adapter.models import Child, ChildName
from tests.api.conftest import Callers

PAGE = "SELECT child.id"


@contextmanager
def statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """Collect the statements that select a search page's ids, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def collect(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.startswith(PAGE) and "LIMIT" in statement:
            seen.append((statement, parameters))

    engines = {db.engine, db.write_engine, db.read_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", collect)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", collect)


def plan(db: Database, statement: str, parameters: Any) -> list[str]:
    """Return the planner's lines for ``statement``: SQLite's EXPLAIN QUERY PLAN, or
    PostgreSQL's EXPLAIN with sequential scans priced out (a table of a few dozen children is
    read whole more cheaply than through an index; the test asks whether an index can answer
    the whole statement, the statistics tests whether the planner then picks it)."""
    with db.engine.begin() as connection:
        if db.is_sqlite:
            return [str(row[-1]) for row in connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters)]
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return [str(row[0]) for row in connection.exec_driver_sql(
            "EXPLAIN " + statement, parameters)]


def page_plan(db: Database, client: FlaskClient, headers: dict[str, str], query: str,
              ) -> list[str]:
    """Search Patients with ``query`` as a caller; return the plan of its page's statement."""
    with statements(db) as seen:
        answer = client.get(f"/fhir/Patient?{query}", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert len(seen) == 1, seen
    return plan(db, *seen[0])


def assert_indexed(db: Database, lines: list[str], *indexes: str) -> None:
    """Assert that the plan reads no table whole and uses each of ``indexes``."""
    text = "\n".join(lines)
    if db.is_sqlite:
        # "SCAN t" reads a table; "SCAN t USING INDEX i" reads a (partial) index only.
        assert all("USING" in line for line in lines if line.lstrip().startswith("SCAN")), text
    else:
        assert "Seq Scan" not in text, text
    for index in indexes:
        assert index in text, f"{index} not used:\n{text}"


# SQLite's statistics of 100,000 demo children (``ANALYZE`` after ``demo-data``): a table of a
# few dozen is best read whole, so the test gives the planner the directory's real proportions
# (sqlite.org/optoverview.html "Manual Control Of Query Plans Using SQLITE_STAT Tables").
SQLITE_STATISTICS = (
    ("child", "ix_child_birth_date", "100000 13"),
    ("child", "ix_child_careteam_id", "100000 1"),
    ("child", "ix_child_last_updated", "100000 1"),
    ("child", "ix_child_managing_org_updated", "100000 667 1 1"),
    ("child", "ix_child_nhs_number", "100000 1"),
    ("child", "ix_child_postcode_prefix", "100000 1"),
    ("child", "ix_child_retention_date", "100000 14"),
    ("child", "ix_child_upn", "100000 2"),
    ("child", "sqlite_autoindex_child_1", "100000 1"),
    ("child", "sqlite_autoindex_child_2", "100000 1"),
    ("child", "uq_child_live_nhs_number", "99000 1"),
    ("child_name", "ix_child_name_child_id", "104999 1"),
    ("child_name", "ix_child_name_family_norm", "104999 30"),
    ("child_name", "ix_child_name_family_walk", "104999 480 1 1"),
    ("child_name", "ix_child_name_given_prefix", "104999 4"),
    ("child_name", "ix_child_name_given_rest", "104999 213"),
    ("child_name", "sqlite_autoindex_child_name_1", "104999 1 1"),
)


def directory_statistics(db: Database) -> None:
    """On SQLite, put the statistics of a directory of 100,000 children in place of the demo's
    (every new connection reads them); on PostgreSQL ``plan`` prices sequential scans out."""
    if not db.is_sqlite:
        return
    with db.write_engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.exec_driver_sql(
            "DELETE FROM sqlite_stat1 WHERE tbl IN ('child', 'child_name')")
        for row in SQLITE_STATISTICS:
            connection.exec_driver_sql("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", row)
    db.engine.dispose()
    db.write_engine.dispose()


@pytest.fixture
def probe(demo: Database) -> tuple[str, str, str, str]:
    """A live child's family name, a given name, postcode and NHS number."""
    with demo.sessions() as session:
        row = session.execute(select(ChildName.family_norm, ChildName.given_norm,
                                     Child.address_postcode, Child.nhs_number)
                              .join(Child, Child.id == ChildName.child_id)
                              .where(Child.record_status == "live",
                                     Child.address_postcode.is_not(None),
                                     Child.nhs_number.is_not(None))
                              .order_by(Child.id)).first()
    assert row is not None
    directory_statistics(demo)
    return str(row[0]), str(row[1]), str(row[2]), str(row[3])


def test_name_searches_use_the_name_indexes(demo: Database, client: FlaskClient,
                                            callers: Callers,
                                            probe: tuple[str, str, str, str]) -> None:
    """family, given and name (prefix and :exact) read the names from their indexes and the
    children by primary key; a family prefix of three letters walks
    ``ix_child_name_family_walk`` in child id order (migration 0016)."""
    family, given, _postcode, _nhs = probe
    family_index = "ix_child_name_family_norm" if demo.is_sqlite \
        else "ix_child_name_family_prefix"
    given_indexes = ("ix_child_name_given_prefix", "ix_child_name_given_rest",
                     "ix_child_name_given_many")
    for query, indexes in (
            (f"family={family[:3]}", ("ix_child_name_family_walk",)),
            (f"family:exact={family.title()}", (family_index,)),
            (f"given={given.split()[-1][:3]}", given_indexes),
            (f"name={family[:3]}", (family_index, *given_indexes)),
            (f"family={family[:2]}&birthdate=ge2000", (family_index,))):
        for headers in (callers.la, callers.admin):
            assert_indexed(demo, page_plan(demo, client, headers, query), *indexes)


def test_postcode_identifier_birthdate_and_pages_use_indexes(
        demo: Database, client: FlaskClient, callers: Callers,
        probe: tuple[str, str, str, str]) -> None:
    """The postcode (a prefix and a whole one, without shielded children for a caller without
    the right), the NHS number, the birth date and a next page read from indexes."""
    _family, _given, postcode, nhs = probe
    compact = postcode.replace(" ", "")
    nhs_index = "nhs_number"  # uq_child_live_nhs_number or ix_child_nhs_number
    for query, indexes in (
            (f"address-postalcode={compact[:3]}", ("ix_child_postcode_prefix",)),
            (f"address-postalcode={compact}", ("ix_child_postcode_prefix",)),
            (f"identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}", (nhs_index,)),
            ("birthdate=2015-03-04", ("ix_child_birth_date",))):
        for headers in (callers.la, callers.admin):
            assert_indexed(demo, page_plan(demo, client, headers, query), *indexes)
    first = client.get("/fhir/Patient?_count=5", headers=callers.la).get_json()
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    query = following.split("?", 1)[1]
    primary_key = "INTEGER PRIMARY KEY" if demo.is_sqlite else "pk_child"
    assert_indexed(demo, page_plan(demo, client, callers.la, query), primary_key)


def test_given_names_match_on_every_word(demo: Database, client: FlaskClient,
                                         callers: Callers) -> None:
    """The indexed given-name search finds a name by the start of any of its words, the
    first, second or a later one (FHIR R4 search.html#string), and ``:exact`` only a whole
    given name."""
    with demo.write_transaction() as session:
        child = session.scalars(select(Child).where(Child.record_status == "live",
                                                    ~Child.shielded).order_by(Child.id)).first()
        assert child is not None
        name = child.names[0]
        name.given = ["Zanna", "Zbeth Zcarys", "Zdora"]
        name.given_norm = "zanna zbeth zcarys zdora"
        wanted = child.resource_id

    def found(query: str) -> bool:
        answer = client.get(f"/fhir/Patient?{query}&_count=100", headers=callers.admin)
        assert answer.status_code == 200
        return wanted in {e["resource"]["id"] for e in answer.get_json().get("entry", [])}

    for word in ("zan", "zbe", "zca", "zdo", "ZDORA", "zbeth zc"):
        assert found(f"given={word}"), word
        assert found(f"name={word}"), word
    assert found("given:exact=Zbeth%20Zcarys") and found("given:exact=Zdora")
    assert not found("given:exact=Zbeth") and not found("given=anna") \
        and not found("given=zbethz")
