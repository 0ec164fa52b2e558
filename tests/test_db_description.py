"""The DB-API description of a result on the engines ``make_engine`` creates: on PostgreSQL
its columns are made only when read (``adapter.db.DescribedOnDemand``), and read they are
psycopg's own, for the result the cursor held when asked, even after it moved on. On SQLite
and PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import select, text

from adapter.db import Database
from adapter.models import Organisation


def test_description_names_the_columns_of_its_result(db: Database) -> None:
    """A SELECT's description names its columns in order, by index, slice and iteration; a
    statement returning no rows has none."""
    with db.engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        cursor = raw.cursor()
        cursor.execute("SELECT id, name, ods_code FROM organisation")
        description = cursor.description
        assert len(description) == 3
        assert [column[0] for column in description] == ["id", "name", "ods_code"]
        assert description[1][0] == "name" and [c[0] for c in description[1:]] == \
            ["name", "ods_code"]
        cursor.execute("UPDATE organisation SET name = name WHERE id < 0")
        assert cursor.description is None
        cursor.close()
        result = connection.execute(select(Organisation.id, Organisation.name).limit(1))
        assert list(result.keys()) == ["id", "name"]
        connection.rollback()


def test_a_description_is_the_drivers_for_its_own_result(db: Database) -> None:
    """The columns read from the description are those a plain cursor of the driver
    describes (name, type, sizes: on PostgreSQL psycopg's own cursor, not
    ``DescribedOnDemand``), and a description read after the cursor ran another statement
    still describes the result it was asked of."""
    query = "SELECT id, name, last_updated FROM organisation"
    with db.engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        plain = psycopg.Cursor(raw) if not db.is_sqlite else raw.cursor()
        plain.execute(query)
        expected = [tuple(column) for column in plain.description or []]
        plain.close()
        cursor = raw.cursor()
        cursor.execute(query)
        description = cursor.description
        cursor.execute(text("SELECT 1 AS other").text)
        assert [tuple(column) for column in description] == expected
        assert [column[0] for column in cursor.description] == ["other"]
        cursor.close()
        connection.rollback()
