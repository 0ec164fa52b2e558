"""Fixtures: ``db`` (and ``app``/``client``/``runner`` on it) run every database test on SQLite
and, when ``GATEWAY_TEST_POSTGRES_URL`` is set, on PostgreSQL too, each on a fresh schema."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import make_url

from adapter import create_app
from adapter.db import Database
from adapter.vendored import VENDOR_DIR

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
REPO = Path(__file__).resolve().parent.parent
# The official FHIR R4 schemas (fhir-r4/) and UK Core definitions (uk-core/), vendored in the
# repository (schemas/vendor/README.md); the same place the gateway reads them from.
CONFORMANCE = VENDOR_DIR

_backend_outcomes: Counter[tuple[str, str]] = Counter()


def _pg_admin_conninfo(url: str) -> str:
    """Return a libpq conninfo for the SQLAlchemy URL ``url``."""
    parsed = make_url(url)
    parts = [f"host={parsed.host or '127.0.0.1'}", f"port={parsed.port or 5432}",
             f"user={parsed.username or 'postgres'}", f"dbname={parsed.database or 'test'}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    return " ".join(parts)


class PostgresSchema:
    """A throw-away PostgreSQL schema for one test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"t_{uuid.uuid4().hex[:16]}"
        self.conninfo = _pg_admin_conninfo(url)

    def __enter__(self) -> PostgresSchema:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        return self

    def __exit__(self, *_exc: Any) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.name}" CASCADE')

    def engine_options(self) -> dict[str, Any]:
        """Return engine options that put every connection on this schema."""
        return {"connect_args": {"options": f"-csearch_path={self.name}"}}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run: "sqlite" or "postgresql"."""
    return str(request.param)


@pytest.fixture
def db_url_and_options(backend: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}", {}
        return
    assert POSTGRES_URL
    with PostgresSchema(POSTGRES_URL) as schema:
        yield POSTGRES_URL, schema.engine_options()


@pytest.fixture
def empty_db(db_url_and_options: tuple[str, dict[str, Any]]) -> Iterator[Database]:
    """A Database with no schema yet."""
    url, options = db_url_and_options
    database = Database(url, **options)
    yield database
    database.close()


@pytest.fixture
def db(empty_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Database:
    """A migrated, empty Database: a copy of one migrated once per test process (the migrations
    themselves are tested from nothing in tests/test_models.py)."""
    if empty_db.is_sqlite:
        _copy_sqlite(_sqlite_template(tmp_path_factory), str(empty_db.engine.url.database))
    else:
        _replay_postgres(empty_db, _postgres_template())
    return empty_db


_templates: dict[str, Any] = {}


def _sqlite_template(factory: pytest.TempPathFactory) -> Path:
    """Return a SQLite file migrated to the head revision (made once per test process)."""
    if "sqlite" not in _templates:
        path = factory.mktemp("template") / "gateway.db"
        database = Database(f"sqlite:///{path}")
        database.upgrade()
        database.close()
        _templates["sqlite"] = path
    template: Path = _templates["sqlite"]
    return template


def _copy_sqlite(template: Path, target: str) -> None:
    """Copy the migrated template into the empty database file (SQLite's backup API: a
    consistent copy whatever its journal holds)."""
    with sqlite3.connect(template) as source, sqlite3.connect(target) as copy:
        source.backup(copy)


def _postgres_template() -> tuple[str, str]:
    """Return (schema name, SQL) of a schema migrated to the head revision, dumped once per
    test process with its rows as INSERTs (pg_dump's psql meta-commands left out)."""
    if "postgresql" not in _templates:
        assert POSTGRES_URL
        with PostgresSchema(POSTGRES_URL) as schema:
            database = Database(POSTGRES_URL, **schema.engine_options())
            database.upgrade()
            database.close()
            dump = subprocess.run(
                ["pg_dump", "--no-owner", "--no-privileges", "--inserts", "-n", schema.name,
                 "-d", schema.conninfo], capture_output=True, check=True, text=True).stdout
        lines = [line for line in dump.splitlines() if not line.startswith("\\")
                 and not line.startswith(("CREATE SCHEMA", "ALTER SCHEMA"))]
        _templates["postgresql"] = (schema.name, "\n".join(lines))
    template: tuple[str, str] = _templates["postgresql"]
    return template


def _replay_postgres(database: Database, template: tuple[str, str]) -> None:
    """Create the template's tables, indexes and rows in ``database``'s own schema."""
    name, script = template
    with database.engine.connect() as connection:
        schema = str(connection.exec_driver_sql("SELECT current_schema()").scalar_one())
    with psycopg.connect(_pg_admin_conninfo(database.url), autocommit=True) as raw:
        raw.execute(script.replace(name, schema).encode())


# The test client's address is the configured public URL (tokens are minted for it: the Host a
# request names never decides), and rest-hook receivers listen on 127.0.0.1.
TEST_SETTINGS: dict[str, Any] = {"PUBLIC_URL": "http://localhost", "NOTIFY_ALLOW_PRIVATE": True}


@pytest.fixture
def app(db: Database, tmp_path: Path) -> Flask:
    """The gateway app on the test database."""
    application = create_app({"DATABASE_URL": db.url, "INSTANCE_PATH": str(tmp_path),
                              "TESTING": True, **TEST_SETTINGS})
    application.extensions["db"].close()
    application.extensions["db"] = db
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner bound to the app."""
    return app.test_cli_runner()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count database test outcomes per backend for the summary CI shows."""
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    for backend_name in BACKENDS:
        if f"[{backend_name}" in report.nodeid or f"-{backend_name}]" in report.nodeid \
                or f"-{backend_name}-" in report.nodeid:
            _backend_outcomes[(backend_name, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many database tests ran on each backend."""
    terminalreporter.section("database backends")
    if not POSTGRES_URL:
        terminalreporter.write_line("PostgreSQL: not configured (set GATEWAY_TEST_POSTGRES_URL)")
    for backend_name in BACKENDS:
        passed = _backend_outcomes[(backend_name, "passed")]
        failed = _backend_outcomes[(backend_name, "failed")]
        terminalreporter.write_line(f"{backend_name}: {passed} database tests passed, "
                                    f"{failed} failed")
