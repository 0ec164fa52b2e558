"""Fixtures of the security tests: the API tests' callers over a smaller demo directory (the
matrix and canary tests make hundreds of requests; each search renders every child), and the
callers of the disclosure matrix."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.models import Organisation
from tests.api.conftest import Callers, bearer, callers
from tests.security.canaries import Viewer

__all__ = ["callers", "demo", "other_authority", "viewers"]


@pytest.fixture
def demo(db: Database) -> Database:
    """The test database with 12 demo children over two authorities."""
    load_demo_data(db, children=12, authorities=2, seed=11, progress=False)
    return db


@pytest.fixture
def other_authority(demo: Database) -> str:
    """The GSS code of the second demo authority (``callers.other_la``'s organisation)."""
    with demo.sessions() as session:
        codes = list(session.scalars(select(Organisation.gss_code).where(
            Organisation.type == "local-authority").order_by(Organisation.id)))
    return str(codes[1])


@pytest.fixture
def viewers(app: Flask, client: FlaskClient, callers: Callers,
            other_authority: str) -> list[Viewer]:
    """The callers of the disclosure matrix: the authority's system without rights, with only
    the shielding right, with only the sensitive-services right, and another authority's
    system (each right's canaries reach the caller with only that right: the control)."""
    own = callers.authority
    return [
        Viewer("no-rights", "la-one", callers.la, frozenset(), own),
        Viewer("shielded", "la-shielded", bearer(client, app, "la-shielded", own, ["shielded"]),
               frozenset({"shielded"}), own),
        Viewer("sensitive", "la-sensitive",
               bearer(client, app, "la-sensitive", own, ["sensitive"]),
               frozenset({"sensitive"}), own),
        Viewer("other-authority", "la-two", callers.other_la, frozenset(), other_authority)]
