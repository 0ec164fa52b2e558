"""Fixtures of the FHIR API tests of this folder."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from tests.fhir.fixtures import Env, callers, seed


@pytest.fixture
def env(app: Flask, client: FlaskClient, db: Database) -> Env:
    """The seeded directory and its callers."""
    return Env(client, db, seed(db), callers(app, client))
