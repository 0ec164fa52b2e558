"""The canary test: for every route that can return a child's data (enumerated from the URL
map), in JSON, XML and the directory dialect, for the current and every earlier version, and
through bulk export, each caller receives only the canaries its rights and organisation allow:
a caller without the shielding right never a shielded child's address, telephone, carers'
contacts, GP or school — also not from versions written before the child was shielded —, one
without the sensitive-services right no sensitive service (consented or not, nor one that
became sensitive after earlier versions named it), and no caller another organisation's local
identifier. Callers with the rights do receive them (the control), and a read of the shielded
child with the right is an audited override answered with a warning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.cli import main
from adapter.db import Database
from adapter.models import AuditRecord
from tests.api.conftest import Callers
from tests.security.canaries import (
    ALL_CANARIES,
    CONSENTED_CANARIES,
    SHIELDED_CANARIES,
    Canaries,
    Viewer,
    allowed,
    canaries_in,
    plant_canaries,
    shield_later,
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
def canaries(demo: Database, callers: Callers, client: FlaskClient,
             other_authority: str) -> Canaries:
    """The canary children, managed by the first authority; the ``later`` one shielded
    through the API after the authority's own system read its earlier versions."""
    planted = plant_canaries(demo, callers.authority, other_authority)
    shield_later(client, callers.la, planted)
    return planted


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
            "fhir.Patient.search-type", "fhir.Patient.search-type-post",
            "fhir.CareTeam.vread", "fhir.CareTeam.history-instance"} <= plan.covered


def _received(client: FlaskClient, plan: Plan, viewer: Viewer) -> dict[tuple[str, str], set[str]]:
    """Return the canaries each (request, format) brought ``viewer``; only statuses a reader
    may get (a record the caller may not see at all is "not found")."""
    found: dict[tuple[str, str], set[str]] = {}
    for call in plan.calls:
        for fmt in call.formats:
            response = call.run(client, viewer.headers, fmt)
            needs = call.needs_right and "admin" not in viewer.rights
            assert response.status_code in ((403,) if needs else (200, 404)), \
                (viewer.name, call.path, fmt, response.data[:300])
            found[(call.path, fmt if len(call.formats) > 1 else "directory")] = \
                set(canaries_in(response.data))
    return found


def cli_exports(app: Flask, viewer: Viewer, authority: str, folder: Path) -> Iterator[bytes]:
    """Run ``export --as`` the viewer's client in both formats; yield every file written."""
    for fmt in ("fhir-ndjson", "directory-xml"):
        out = folder / f"{viewer.client_id}-{fmt}"
        result = CliRunner().invoke(main, [
            "export", "--authority", authority, "--format", fmt, "--as", viewer.client_id,
            "--out", str(out), "--quiet"], obj=ScriptInfo(create_app=lambda: app))
        assert result.exit_code == 0, result.output
        yield from (path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file())


def test_each_caller_receives_only_the_canaries_its_rights_allow(
        app: Flask, client: FlaskClient, plan: Plan, viewers: list[Viewer], callers: Callers,
        other_authority: str, tmp_path: Path) -> None:
    """Every route x format x version x caller: no canary reaches a caller without the right
    it needs, in the API's answers, the bulk export files or the CLI's ``export --as``; and
    every canary reaches, in each format, some caller that has the right (so the matrix does
    not pass on empty answers)."""
    assert len(plan.calls) > 40
    seen: dict[str, set[str]] = {"json": set(), "xml": set(), "directory": set(),
                                 "export": set(), "cli": set()}
    for viewer in viewers:
        may = allowed(viewer, other_authority)
        for (path, fmt), found in _received(client, plan, viewer).items():
            assert found <= may, (viewer.name, path, fmt, found - may)
            seen[fmt] |= found
        for body in export_bodies(client, viewer.headers, viewer.organisation):
            found = set(canaries_in(body))
            assert found <= may, (viewer.name, "export", found - may)
            seen["export"] |= found
        for body in cli_exports(app, viewer, callers.authority, tmp_path):
            found = set(canaries_in(body))
            assert found <= may, (viewer.name, "export --as", found - may)
            seen["cli"] |= found
    for fmt in ("json", "xml", "export", "cli"):
        assert seen[fmt] == set(ALL_CANARIES), (fmt, set(ALL_CANARIES) - seen[fmt])
    assert seen["directory"] >= set(ALL_CANARIES) - {"later school phone"}


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
    callers with the sensitive-services right (docs/domain.md "Sensitive services")."""
    url = f"/fhir/CareTeam?patient=Patient/{canaries.consented}&_include=CareTeam:participant"
    assert canaries_in(client.get(url, headers=callers.la).data, CONSENTED_CANARIES) == []
    assert canaries_in(client.get(url, headers=callers.admin).data, CONSENTED_CANARIES)
