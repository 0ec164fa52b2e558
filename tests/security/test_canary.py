"""The canary test (issue 5, "Acceptance"): for every route that can return a child's data, in
JSON and XML and through bulk export, a caller without the shielding and sensitive-services
rights never receives a shielded child's address, telephone, carers' contacts, GP or school,
nor a sensitive-service involvement (consented or not); a caller with the rights does, and
its read of the shielded child is an audited override answered with a warning."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import AuditRecord
from tests.api.conftest import Callers
from tests.security.canaries import (
    ALL_CANARIES,
    CONSENTED_CANARIES,
    SHIELDED_CANARIES,
    Canaries,
    canaries_in,
    plant_canaries,
)
from tests.security.exercise import (
    Plan,
    Subjects,
    export_bodies,
    plan_requests,
    uncovered_get_routes,
)

FORMATS = ("json", "xml")


@pytest.fixture
def canaries(demo: Database, callers: Callers) -> Canaries:
    """The three canary children, managed by the first authority."""
    return plant_canaries(demo, callers.authority)


@pytest.fixture
def plan(app: Flask, client: FlaskClient, callers: Callers, canaries: Canaries) -> Plan:
    """Every request that can return the canary children's data."""
    app.config["EXPORT_INLINE"] = True
    subjects = Subjects(canaries.ids, canaries.contactpoint_ids, callers.authority,
                        (*canaries.ids, *ALL_CANARIES.values()))
    return plan_requests(app, client, callers.admin, subjects)


def test_every_get_route_is_covered(app: Flask, plan: Plan) -> None:
    """Each GET route is exercised, or listed as holding no child's data (with a reason)."""
    assert not uncovered_get_routes(app, plan)
    assert {"fhir.Patient.read", "fhir.Patient.vread", "fhir.Patient.history-instance",
            "fhir.Patient.search-type", "fhir.Patient.search-type-post"} <= plan.covered


def _leaks(client: FlaskClient, plan: Plan, headers: dict[str, str]) -> list[Any]:
    """Return (route, format, canaries) for every response to ``headers`` holding a canary."""
    leaks = []
    for call in plan.calls:
        for fmt in call.formats:
            response = call.run(client, headers, fmt)
            # A resource the caller may not see at all is "not found" (a withheld involvement).
            expected = (403,) if call.needs_right else (200, 404)
            assert response.status_code in expected, (call.path, fmt, response.data[:300])
            if found := canaries_in(response.data):
                leaks.append((call.path, fmt, found))
    return leaks


def test_a_caller_without_rights_never_receives_a_canary(client: FlaskClient, plan: Plan,
                                                         callers: Callers) -> None:
    """The first authority's own system (no shielded/sensitive right): no canary anywhere,
    in JSON, XML or the export files."""
    assert len(plan.calls) > 20
    assert _leaks(client, plan, callers.la) == []
    for body in export_bodies(client, callers.la, callers.authority):
        assert canaries_in(body) == []


def test_a_caller_with_the_rights_receives_every_canary(client: FlaskClient, plan: Plan,
                                                        callers: Callers) -> None:
    """The control: with the rights, every canary is disclosed somewhere, in each format, so
    that the test above is not passing on empty answers."""
    found: dict[str, set[str]] = {fmt: set() for fmt in FORMATS}
    directory: set[str] = set()
    for call in plan.calls:
        for fmt in call.formats:
            response = call.run(client, callers.admin, fmt)
            assert response.status_code == 200, (call.path, fmt, response.data[:300])
            seen = canaries_in(response.data)
            (found[fmt] if len(call.formats) > 1 else directory).update(seen)
    assert found["json"] == set(ALL_CANARIES)
    assert found["xml"] == set(ALL_CANARIES)
    if any(len(call.formats) == 1 for call in plan.calls):
        assert directory == set(ALL_CANARIES)
    exported = {name for body in export_bodies(client, callers.admin, callers.authority)
                for name in canaries_in(body)}
    assert exported == set(ALL_CANARIES)


def test_postcode_search_never_matches_a_shielded_child_without_the_right(
        client: FlaskClient, callers: Callers, canaries: Canaries) -> None:
    """Searching by the shielded child's postcode finds it only with the shielding right."""
    query = f"/fhir/Patient?address-postalcode={SHIELDED_CANARIES['postcode'][:3]}"
    plain = client.get(query, headers=callers.la).json
    assert canaries.shielded not in {e["resource"]["id"] for e in plain.get("entry", [])}
    admin = client.get(query, headers=callers.admin).json
    assert canaries.shielded in {e["resource"]["id"] for e in admin.get("entry", [])}


@pytest.mark.parametrize("fmt", FORMATS)
def test_break_glass_read_is_an_audited_override_with_a_warning(
        client: FlaskClient, callers: Callers, canaries: Canaries, demo: Database,
        fmt: str) -> None:
    """A caller with the shielding right reads everything, is warned, and the read is audited
    as an override; the same read without the right is redacted, visibly."""
    url = f"/fhir/Patient/{canaries.shielded}?_format={fmt}"
    response = client.get(url, headers={**callers.admin, "X-Purpose-Of-Use": "CAREMGT"})
    assert response.status_code == 200
    assert "reviewed" in response.headers["Warning"]
    assert set(canaries_in(response.data, SHIELDED_CANARIES)) >= {"postcode", "carer phone"}
    with demo.sessions() as session:
        last = session.scalars(select(AuditRecord).order_by(AuditRecord.id.desc())).first()
    assert last is not None
    assert (last.action, last.child_ref, last.override, last.purpose_of_use) == \
        ("read", canaries.shielded, True, "CAREMGT")
    plain = client.get(url, headers=callers.la)
    assert "Warning" not in plain.headers
    assert b"REDACTED" in plain.data
    assert canaries_in(plain.data) == []


def test_consented_sensitive_involvement_needs_the_right_too(
        client: FlaskClient, callers: Callers, canaries: Canaries) -> None:
    """Consent allows the involvement to be recorded; its provider is still shown only to
    callers with the sensitive-services right (DOMAIN.md "Sensitive services")."""
    url = f"/fhir/CareTeam?patient=Patient/{canaries.consented}&_include=CareTeam:participant"
    assert canaries_in(client.get(url, headers=callers.la).data, CONSENTED_CANARIES) == []
    assert canaries_in(client.get(url, headers=callers.admin).data, CONSENTED_CANARIES)
