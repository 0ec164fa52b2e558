"""Fixtures: ``db`` (and ``app``/``client``/``runner`` on it) run every database test on SQLite
and, when ``GATEWAY_TEST_POSTGRES_URL`` is set, on PostgreSQL too, each on a fresh schema."""

from __future__ import annotations

import os
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
def db(empty_db: Database) -> Database:
    """A migrated, empty Database."""
    empty_db.upgrade()
    return empty_db


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
