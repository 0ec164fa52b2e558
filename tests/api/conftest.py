"""Fixtures for API tests: a directory with demo data, and clients with real tokens."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter import identifiers
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.models import Child, Organisation
from tests.fhir.conftest import env  # noqa: F401 (fixture: the seeded world of tests/fhir)
from tests.security.helpers import get_token, register


@dataclass
class Callers:
    """Bearer headers of callers with different rights."""

    authority: str  # GSS code of the first demo authority
    la: dict[str, str]  # that authority's system: no shielded/sensitive rights
    admin: dict[str, str]  # every right
    other_la: dict[str, str]  # another authority's system


def bearer(client: FlaskClient, app: Flask, client_id: str, organisation: str,
           rights: list[str] | None = None, scopes: str = "system/*.cruds") -> dict[str, str]:
    """Register a client and return its Authorization header."""
    who = register(app, client_id, organisation=organisation, scopes=scopes, rights=rights)
    return {"Authorization": f"Bearer {get_token(client, who, scopes)}"}


@pytest.fixture
def demo(db: Database) -> Database:
    """The test database with 60 demo children over two authorities."""
    load_demo_data(db, children=60, authorities=2, seed=11, progress=False)
    return db


@pytest.fixture
def callers(demo: Database, app: Flask, client: FlaskClient) -> Callers:
    """Callers of the first authority (plain and admin) and of the second."""
    with demo.sessions() as session:
        codes = list(session.scalars(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").order_by(Organisation.id)))
    return Callers(codes[0], bearer(client, app, "la-one", codes[0]),
                   bearer(client, app, "admin", codes[0],
                          ["shielded", "sensitive", "audit", "admin"]),
                   bearer(client, app, "la-two", codes[1]))


def fresh_nhs_number(db: Database, taken: set[str] | None = None) -> str:
    """Return a valid test NHS number no entry holds (nor ``taken``)."""
    with db.sessions() as session:
        held = set(session.scalars(select(Child.nhs_number).where(
            Child.nhs_number.is_not(None)))) | (taken or set())
    serial = 700_001
    while (number := identifiers.make_test_nhs_number(serial)) in held:
        serial += 2
    return number
