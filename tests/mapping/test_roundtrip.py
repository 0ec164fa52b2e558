"""Property tests: every FHIR resource a child or an assessment becomes is valid R4
(fhir.resources), conforms to the profile it declares, and maps back to the same record."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fhir.resources.R4B.careteam import CareTeam
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter import codes
from adapter.models.canonical import as_utc, canonical_assessment_dump, canonical_dump
from tests import strategies
from tests.mapping.helpers import (
    conformance_errors,
    publish_assessment,
    publish_child,
    rebuild_assessment,
    rebuild_child,
    with_assessment_ids,
    with_ids,
)

MODELS = {"Patient": Patient, "CareTeam": CareTeam, "Organization": Organization,
          "Practitioner": Practitioner, "PractitionerRole": PractitionerRole}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_valid(resource: dict[str, Any]) -> None:
    """Assert a resource is valid R4 (fhir.resources), declares a profile and conforms to it."""
    MODELS[resource["resourceType"]].model_validate(resource)
    assert resource["meta"]["profile"], resource["resourceType"]
    assert conformance_errors(resource) == []
    assert_no_empty(resource, resource["resourceType"])


def assert_no_empty(value: Any, path: str) -> None:
    """Assert no element is empty (FHIR R4 json.html: no empty objects, arrays or strings)."""
    assert value not in ("", [], {}, None), path
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key.startswith("_") and isinstance(item, list)):
                assert_no_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_no_empty(item, f"{path}[{index}]")


def assert_meta(resource: dict[str, Any], version: int, updated: dt.datetime) -> None:
    """Assert meta.versionId and meta.lastUpdated carry the record's version and time."""
    assert resource["meta"]["versionId"] == str(version)
    assert dt.datetime.fromisoformat(resource["meta"]["lastUpdated"]) == as_utc(updated)


@SETTINGS
@given(strategies.children())
def test_child_round_trips_through_fhir_json(child: Any) -> None:
    """Child -> Patient, CareTeam, PractitionerRoles, Organizations, Practitioners -> Child."""
    with_ids(child)
    published = publish_child(child)
    for resource in published.resources():
        assert_valid(resource)
    assert published.patient is not None
    assert_meta(published.patient, child.version, child.last_updated)
    assert_meta(published.main, child.version, child.last_updated)
    rebuilt, ignored = rebuild_child(published)
    assert ignored == []
    assert canonical_dump(rebuilt, meta=False) == canonical_dump(child, meta=False)
    assert [n.family_norm for n in rebuilt.names] == [n.family_norm for n in child.names]
    assert [n.given_norm for n in rebuilt.names] == [n.given_norm for n in child.names]


@SETTINGS
@given(strategies.assessments())
def test_assessment_round_trips_through_fhir_json(assessment: Any) -> None:
    """Assessment -> eCAF CareTeam, PractitionerRoles, ... -> Assessment."""
    with_assessment_ids(assessment)
    published = publish_assessment(assessment)
    for resource in published.resources():
        assert_valid(resource)
    assert_meta(published.main, assessment.version, assessment.last_updated)
    rebuilt, ignored = rebuild_assessment(published, assessment.child)
    assert ignored == []
    assert (canonical_assessment_dump(rebuilt, meta=False)
            == canonical_assessment_dump(assessment, meta=False))
    assert [m.resource_id for m in rebuilt.members] == [m.resource_id for m in assessment.members]


@pytest.mark.parametrize("index", range(len(codes.CARER_RELATIONSHIPS)))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_code_of_every_vocabulary_round_trips(index: int, data: st.DataObject) -> None:
    """Each relationship, role and address status appears and comes back exactly."""
    relation = codes.CARER_RELATIONSHIPS[index]
    role = codes.INVOLVEMENT_ROLES[index % len(codes.INVOLVEMENT_ROLES)]
    status = codes.ADDRESS_STATUSES[index % len(codes.ADDRESS_STATUSES)]
    child = with_ids(data.draw(strategies.children(
        carer_relations=st.just(relation), min_carers=1, involvement_roles=st.just(role),
        min_involvements=1, address_statuses=st.just(status))))
    published = publish_child(child)
    rebuilt, _ignored = rebuild_child(published)
    assert rebuilt.carers[0].relation == relation
    assert rebuilt.involvements[0].role == role
    assert rebuilt.address_status == status
