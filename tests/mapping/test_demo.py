"""The mappings over 2,000 children of the demo-data generator: every resource valid R4,
conforming to its profile, and every child rebuilt exactly from its resources."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.models import Child, Involvement, LocalIdentifier
from adapter.models.canonical import canonical_dump
from tests.mapping.helpers import publish_child, rebuild_child
from tests.mapping.test_roundtrip import assert_meta, assert_valid

CHILDREN = 2000


@pytest.fixture(scope="module")
def demo_children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Child]]:
    """2,000 demo children loaded into SQLite and read back with all their parts."""
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'gateway.db'}")
    database.upgrade()
    load_demo_data(database, children=CHILDREN, authorities=4, seed=2026, progress=False)
    with database.sessions() as session:
        yield list(session.scalars(select(Child).order_by(Child.id).options(
            selectinload(Child.managing_organisation), selectinload(Child.names),
            selectinload(Child.carers),
            selectinload(Child.local_identifiers).selectinload(LocalIdentifier.organisation),
            selectinload(Child.involvements).selectinload(Involvement.organisation),
            selectinload(Child.involvements).selectinload(Involvement.practitioner))))
    database.dispose()


@pytest.mark.slow
def test_demo_children_map_to_valid_conforming_resources_and_back(
        demo_children: list[Child]) -> None:
    """Patient, CareTeam and every referenced resource of 2,000 children: valid, conforming,
    and the child rebuilt from them equals the stored one."""
    assert len(demo_children) == CHILDREN
    for child in demo_children:
        published = publish_child(child)
        for resource in published.resources():
            assert_valid(resource)
        assert published.patient is not None
        assert_meta(published.patient, child.version, child.last_updated)
        rebuilt, ignored = rebuild_child(published)
        assert ignored == []
        assert canonical_dump(rebuilt, meta=False) == canonical_dump(child, meta=False)

