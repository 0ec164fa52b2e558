"""``adapter.db.DriverStatement``: a kept SELECT run on the driver's own cursor gives the rows
SQLAlchemy's execution gives (dates, date-times and booleans through the dialect's result
processors, JSON as its text, parameters by name or position), in the session's transaction,
and a driver error is raised as SQLAlchemy raises it. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Text, bindparam, cast, select
from sqlalchemy.exc import DBAPIError

from adapter.db import Database, driver_form
from adapter.demo import load_demo_data
from adapter.models import Child, ChildName


def statement() -> object:
    """Return a SELECT of typed columns of a child and its names, by FHIR id and status."""
    return (select(Child.id, Child.birth_date, Child.last_updated, Child.shielded,
                   Child.record_status, cast(ChildName.given, Text), ChildName.family)
            .join(ChildName, ChildName.child_id == Child.id)
            .where(Child.resource_id == bindparam("rid"), Child.record_status == "live")
            .order_by(ChildName.id))


KEPT = statement()


def test_it_gives_the_rows_sqlalchemy_gives(db: Database) -> None:
    """For every demo child, the driver's rows equal SQLAlchemy's, typed alike."""
    load_demo_data(db, children=12, authorities=1, seed=5, progress=False)
    with db.sessions() as session, session.begin():
        ids = list(session.scalars(select(Child.resource_id)))
        driver = driver_form(KEPT, session.get_bind().dialect, "rid")
        assert driver is driver_form(KEPT, session.get_bind().dialect, "rid")
        for rid in ids:
            expected = [tuple(row) for row in session.connection().execute(KEPT, {"rid": rid})]
            got = [tuple(row) for row in driver.rows(session, {"rid": rid})]
            assert got == expected, rid
            assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]


def test_it_reads_in_the_sessions_transaction(db: Database) -> None:
    """A change the session made and has not committed is seen; rolled back, it is gone."""
    load_demo_data(db, children=3, authorities=1, seed=5, progress=False)
    with db.sessions() as session:
        with session.begin():
            child = session.scalars(select(Child).where(Child.record_status == "live")).first()
            assert child is not None
            rid, before = child.resource_id, child.shielded
            child.shielded = not before
            session.flush()
            driver = driver_form(KEPT, session.get_bind().dialect, "rid")
            assert {row[3] for row in driver.rows(session, {"rid": rid})} == {not before}
            session.rollback()
        with session.begin():
            assert {row[3] for row in driver.rows(session, {"rid": rid})} == {before}


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(db: Database) -> None:
    """A statement the database refuses raises SQLAlchemy's ``DBAPIError`` (which the HTTP
    layer answers), not the driver's own exception."""
    broken = select(Child.id).where(Child.resource_id == bindparam("rid"))
    with db.sessions() as session, session.begin():
        driver = driver_form(broken, session.get_bind().dialect, "rid")
        wrong = type(driver)(driver.sql.replace("child", "no_such_table", 1), driver.order,
                             driver.fixed, driver.processors)
        with pytest.raises(DBAPIError):
            wrong.rows(session, {"rid": "x"})
