"""Fixtures of the security tests: the API tests' callers over a smaller demo directory (the
matrix and canary tests make hundreds of requests; each search renders every child)."""

from __future__ import annotations

import pytest

from adapter.db import Database
from adapter.demo import load_demo_data
from tests.api.conftest import callers

__all__ = ["callers", "demo"]


@pytest.fixture
def demo(db: Database) -> Database:
    """The test database with 12 demo children over two authorities."""
    load_demo_data(db, children=12, authorities=2, seed=11, progress=False)
    return db
