"""FHIR XML of the mappings' outputs over many records: the XML writer is fast
because it never goes through fhir.resources, so its validity is proven here instead.

- Property tests (``tests/strategies.py``): a child or an eCAF assessment published as every
  FHIR resource it becomes, each written as XML (``dumps_resource``), validated against the
  official R4 schema and read back (``loads_resource``), maps back (reverse mappings) to the
  same canonical record; fhir.resources reads the Patient and CareTeam XML to the same resource
  as the JSON. The JSON round trips are in tests/mapping/test_roundtrip.py.
- 2,000 demo children (and their eCAF assessments) from the demo-data generator: the Patient,
  CareTeam and eCAF CareTeam XML validate against the R4 schema and read back to exactly the
  JSON mapping's dict; fhir.resources agrees on a fixed sample (it reads XML at ~10 ms a
  resource, too slow for all of them in the suite's time budget).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.fhir.xml import dumps_resource, loads_resource
from adapter.mapping import fhir
from adapter.models import Assessment, Child, Involvement, LocalIdentifier, TeamMember
from adapter.models.canonical import canonical_assessment_dump, canonical_dump
from tests import strategies
from tests.fhir_validity import r4_schema, xml_model_matches_json, xsd_errors
from tests.mapping.helpers import (
    BASE,
    Published,
    publish_assessment,
    publish_child,
    rebuild_assessment,
    rebuild_child,
    with_assessment_ids,
    with_ids,
)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DEMO_CHILDREN = 2000
# Every SAMPLE-th demo child is also read by fhir.resources (model_validate_xml).
SAMPLE = 10

Resource = dict[str, Any]


def through_xml(resource: Resource) -> Resource:
    """Return ``resource`` written as FHIR XML, checked against the R4 schema, and read back."""
    xml = dumps_resource(resource)
    assert xsd_errors(r4_schema(), xml) == [], resource["resourceType"]
    read: Resource = loads_resource(xml)
    return read


def published_through_xml(published: Published) -> Published:
    """Return every resource of ``published`` after a trip through FHIR XML."""
    return Published(
        main=through_xml(published.main),
        patient=through_xml(published.patient) if published.patient else None,
        roles={key: through_xml(value) for key, value in published.roles.items()},
        organisations={key: through_xml(value) for key, value in published.organisations.items()},
        practitioners={key: through_xml(value) for key, value in published.practitioners.items()})


# --- property tests ----------------------------------------------------------------------------

@SETTINGS
@given(strategies.children())
def test_child_round_trips_through_fhir_xml(child: Child) -> None:
    """Child -> Patient, CareTeam, PractitionerRoles, Organizations, Practitioners -> FHIR XML
    (schema-valid) -> the same resources -> the same Child."""
    with_ids(child)
    published = publish_child(child)
    via_xml = published_through_xml(published)
    rebuilt, ignored = rebuild_child(via_xml)
    assert ignored == []
    assert canonical_dump(rebuilt, meta=False) == canonical_dump(child, meta=False)
    assert via_xml.resources() == published.resources()
    assert published.patient is not None
    for resource in (published.patient, published.main):
        assert xml_model_matches_json(resource, dumps_resource(resource))


@SETTINGS
@given(strategies.assessments())
def test_assessment_round_trips_through_fhir_xml(assessment: Assessment) -> None:
    """Assessment -> eCAF CareTeam, PractitionerRoles, ... -> FHIR XML -> the same Assessment."""
    with_assessment_ids(assessment)
    published = publish_assessment(assessment)
    via_xml = published_through_xml(published)
    rebuilt, ignored = rebuild_assessment(via_xml, assessment.child)
    assert ignored == []
    assert (canonical_assessment_dump(rebuilt, meta=False)
            == canonical_assessment_dump(assessment, meta=False))
    assert via_xml.resources() == published.resources()
    assert xml_model_matches_json(published.main, dumps_resource(published.main))


# --- 2,000 demo children -----------------------------------------------------------------------

@dataclass
class Demo:
    """The demo children and assessment references, loaded with all their parts."""

    children: list[Child]
    assessments: list[Assessment]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """2,000 demo children (seed 7, three authorities: other data than tests/mapping's) in one
    SQLite database for the module, read back with every part the mappings use."""
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('xml-demo') / 'gateway.db'}")
    database.upgrade()
    load_demo_data(database, children=DEMO_CHILDREN, authorities=3, seed=7, progress=False)
    child_parts = (selectinload(Child.managing_organisation), selectinload(Child.names),
                   selectinload(Child.carers),
                   selectinload(Child.local_identifiers).selectinload(LocalIdentifier.organisation),
                   selectinload(Child.involvements).selectinload(Involvement.organisation),
                   selectinload(Child.involvements).selectinload(Involvement.practitioner))
    with database.sessions() as session:
        children = list(session.scalars(select(Child).order_by(Child.id).options(*child_parts)))
        assessments = list(session.scalars(select(Assessment).order_by(Assessment.id).options(
            selectinload(Assessment.child).selectinload(Child.names),
            selectinload(Assessment.members).selectinload(TeamMember.organisation),
            selectinload(Assessment.members).selectinload(TeamMember.practitioner))))
        yield Demo(children, assessments)
    database.dispose()


def assert_xml_is_the_json(resource: Resource, *, sample: bool) -> None:
    """Assert the resource's XML is schema-valid and reads back to the JSON dict (and, for a
    sampled record, that fhir.resources reads it to the same resource)."""
    xml = dumps_resource(resource)
    assert xsd_errors(r4_schema(), xml) == [], resource["id"]
    assert loads_resource(xml) == resource, resource["id"]
    if sample:
        assert xml_model_matches_json(resource, xml), resource["id"]


@pytest.mark.slow
def test_demo_children_give_valid_fhir_xml(demo: Demo) -> None:
    """The Patient and CareTeam of 2,000 demo children: schema-valid XML that reads back to
    the JSON mapping's dict."""
    assert len(demo.children) == DEMO_CHILDREN
    for index, child in enumerate(demo.children):
        sample = index % SAMPLE == 0
        assert_xml_is_the_json(fhir.child_to_patient(child, base=BASE), sample=sample)
        assert_xml_is_the_json(fhir.child_to_careteam(child, base=BASE), sample=sample)


@pytest.mark.slow
def test_demo_assessments_give_valid_fhir_xml(demo: Demo) -> None:
    """The eCAF CareTeam of every demo assessment reference (every status occurs)."""
    assert {a.status for a in demo.assessments} == {"draft", "in-progress", "completed",
                                                    "closed"}
    for index, assessment in enumerate(demo.assessments):
        assert_xml_is_the_json(fhir.assessment_to_careteam(assessment, base=BASE),
                               sample=index % SAMPLE == 0)
