"""Earlier versions are judged by the child's current state too (docs/domain.md "Shielding",
"Sensitive services"): a child shielded after earlier versions were created and read shows
those versions to a caller without the right only as the shielded view, through vread,
``_history`` and the team's CareTeam history, in JSON and XML; an organisation that now works
with a child as a sensitive service is withheld from every version."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import exists, select, true

from adapter.db import Database
from adapter.models import Assessment, Child, Organisation
from adapter.models.canonical import canonical_dump
from adapter.security.policy import organisation_code
from adapter.store import history
from adapter.store.children import child_query
from adapter.systems import CONFIDENTIALITY
from tests.api.conftest import Callers
from tests.security.canaries import canaries_in, organisation, update_child

JSON = {"Content-Type": "application/fhir+json"}
FORMATS = ("json", "xml")


def _own_child(db: Database, authority: str,
               ecaf: bool = False) -> tuple[Child, dict[str, str]]:
    """Return a live, unshielded child of ``authority`` with an NHS number, a postcode, a
    carer's telephone and involvements (and an eCAF assessment if ``ecaf``), and what
    docs/domain.md "Shielding" withholds of it (by name)."""
    assessed = exists().where(Assessment.child_id == Child.id) if ecaf else true()
    with db.sessions() as session:
        for child in session.scalars(
                select(Child).join(Child.managing_organisation)
                .where(Organisation.gss_code == authority, Child.shielded.is_(False),
                       Child.record_status == "live", Child.nhs_number.is_not(None),
                       Child.address_postcode.is_not(None),
                       assessed).order_by(Child.id)):
            if child.involvements and any(c.phone for c in child.carers):
                return child, _withheld_strings(child)
    raise AssertionError("the demo directory has no suitable child")


def _withheld_strings(child: Child) -> dict[str, str]:
    """Return what docs/domain.md "Shielding" withholds of ``child``, by name."""
    found: dict[str, str | None] = {"NHS number": child.nhs_number,
                                    "postcode": child.address_postcode}
    for carer in child.carers:
        found.update({f"carer {carer.position} phone": carer.phone,
                      f"carer {carer.position} email": carer.email})
    for part in child.involvements:
        found[f"{part.role} organisation"] = part.organisation.name
        found[f"{part.role} phone"] = part.phone
    return {name: value for name, value in found.items() if value}


def _shield(client: FlaskClient, headers: dict[str, str], patient_id: str) -> None:
    """Shield an entry through the API: PUT it back with the restricted security label."""
    patient = client.get(f"/fhir/Patient/{patient_id}", headers=headers).json
    assert patient is not None
    meta = patient.setdefault("meta", {})
    meta["security"] = [*meta.get("security", []), {"system": CONFIDENTIALITY, "code": "R"}]
    response = client.put(f"/fhir/Patient/{patient_id}", json=patient,
                          headers={**headers, **JSON})
    assert response.status_code == 200, response.json


def _history_urls(db: Database, child: Child) -> list[str]:
    """Return the version paths of a Patient, its team and its eCAF teams (version 1, and
    history)."""
    with db.sessions() as session:
        ecaf = list(session.scalars(select(Assessment.resource_id)
                                    .where(Assessment.child_id == child.id)))
    return [f"/fhir/{kind}/{rid}/{tail}" for kind, rid in (
        ("Patient", child.resource_id), ("CareTeam", child.careteam_id),
        *(("CareTeam", e) for e in ecaf)) for tail in ("_history/1", "_history")]


def test_history_of_child_shielded_later(client: FlaskClient, callers: Callers,
                                         demo: Database, other_authority: str) -> None:
    """Read, then shield a child: as the authority's own system (no shielding right) and as
    another authority's, version 1 and ``_history`` of the Patient, of its team and of its
    eCAF team show no address, NHS number, carers' contacts or involvements, in JSON and XML;
    with the right they do, as an audited override with a warning."""
    child, withheld = _own_child(demo, other_authority, ecaf=True)
    urls = _history_urls(demo, child)
    assert len(urls) == 6  # the Patient, its team and its eCAF team
    for url in urls:  # each read before the child was shielded
        before = client.get(url, headers=callers.other_la)
        assert before.status_code == 200 and canaries_in(before.data, withheld), url
    _shield(client, callers.other_la, child.resource_id)
    for headers in (callers.la, callers.other_la):
        for url in urls:
            for fmt in FORMATS:
                response = client.get(f"{url}?_format={fmt}", headers=headers)
                assert response.status_code in (200, 404), (url, fmt, response.data[:300])
                assert canaries_in(response.data, withheld) == [], (url, fmt)
        old = client.get(urls[0], headers=headers).json
        assert old is not None
        assert "REDACTED" in {label["code"] for label in old["meta"]["security"]}
    seen = client.get(urls[0], headers=callers.admin)
    assert "reviewed" in seen.headers["Warning"]
    assert set(canaries_in(seen.data, withheld)) >= {"NHS number", "postcode"}


def _involvement(organisation: dict[str, Any], role: str, sensitive: bool) -> dict[str, Any]:
    """Return a canonical involvement of ``organisation`` without a named practitioner."""
    return {"role": role, "sensitive": sensitive,
            "consent_basis": "child-consent" if sensitive else None,
            "lead_professional": False, "caf_completed": False, "period_start": None,
            "period_end": None, "phone": "01632 960499", "email": None,
            "organisation": organisation, "practitioner": None}


def test_organisation_now_sensitive_is_withheld_from_earlier_versions(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """An organisation recorded as an ordinary involvement in version 1 and as a sensitive
    service since is not shown in version 1 to a caller without the sensitive-services
    right (the provider would be named), but is to one with it."""
    child, _withheld = _own_child(demo, callers.authority)
    name = "Canary Later Sexual Health Service"
    org = organisation(name, "nhs-trust", "01632 960498", ods_code="Y99930")
    with demo.sessions() as session:
        stored = session.scalars(child_query().where(Child.id == child.id)).one()
        data = canonical_dump(stored, meta=False)
    for role, sensitive in (("health-visitor", False), ("sexual-health", True)):
        update_child(demo, child.resource_id, {**data, "involvements": [
            *data["involvements"], _involvement(org, role, sensitive)]})
    with demo.sessions() as session:
        versions = history.child_versions(session, child.resource_id)
        assert any(organisation_code(i.organisation) == "Y99930"
                   for i in history.child_from_snapshot(versions[0]).involvements)
        first_with_it = versions[0].version
    urls = [f"/fhir/Patient/{child.resource_id}/_history/{first_with_it}",
            f"/fhir/CareTeam/{child.careteam_id}/_history/{first_with_it}",
            f"/fhir/CareTeam/{child.careteam_id}/_history"]
    for url in urls:
        for fmt in FORMATS:
            plain = client.get(f"{url}?_format={fmt}", headers=callers.la)
            assert plain.status_code == 200 and name not in plain.get_data(as_text=True)
    team = client.get(urls[1], headers=callers.admin)
    assert name in team.get_data(as_text=True)


def test_history_of_an_archived_child_is_not_found(client: FlaskClient, callers: Callers,
                                                  demo: Database) -> None:
    """An archived entry is invisible to every ordinary caller (docs/domain.md "Retention"):
    its earlier versions and its team's are not found either; an administrator still reads
    them."""
    child, withheld = _own_child(demo, callers.authority)
    with demo.sessions() as session:
        data = canonical_dump(session.scalars(
            child_query().where(Child.id == child.id)).one(), meta=False)
    update_child(demo, child.resource_id, {**data, "gender": "9"})
    with demo.write_transaction() as session:
        stored = session.scalars(select(Child).where(Child.id == child.id)).one()
        stored.record_status = "archived"
    urls = _history_urls(demo, child)
    for headers in (callers.la, callers.other_la):
        for url in urls:
            for fmt in FORMATS:
                response = client.get(f"{url}?_format={fmt}", headers=headers)
                assert response.status_code == 404, (url, fmt, response.data[:300])
                assert canaries_in(response.data, withheld) == []
    for url in urls:
        assert client.get(url, headers=callers.admin).status_code == 200, url


def _next_assessment_version(db: Database, child_id: int, lead_code: str | None) -> int:
    """Store the next version of the child's first eCAF assessment (its lead organisation
    set to ``lead_code``'s, else its consent flag turned over), keeping the superseded
    version's snapshot as an update through the API does; return the superseded version."""
    with db.write_transaction() as session:
        assessment = session.scalars(select(Assessment).where(
            Assessment.child_id == child_id).order_by(Assessment.id)).first()
        assert assessment is not None
        before = history.assessment_snapshot(assessment)
        if lead_code is not None:
            assessment.lead_organisation = session.scalars(select(Organisation).where(
                Organisation.ods_code == lead_code)).one()
            assessment.lead_practitioner = None
        else:
            assessment.consent_to_share = not assessment.consent_to_share
        session.flush()
        session.add(before)
        return before.version


def test_sensitive_lead_is_withheld_from_earlier_ecaf_versions(
        client: FlaskClient, callers: Callers, demo: Database, other_authority: str) -> None:
    """An earlier version of an eCAF team whose lead professional is a sensitive service
    (compared by organisation: an earlier version's organisation is rebuilt from its
    snapshot) names whom to ask instead, for a caller without the sensitive-services right."""
    child, _withheld = _own_child(demo, other_authority, ecaf=True)
    name = "Canary Lead Sexual Health Service"
    with demo.sessions() as session:
        data = canonical_dump(session.scalars(
            child_query().where(Child.id == child.id)).one(), meta=False)
        ecaf = session.scalars(select(Assessment.resource_id).where(
            Assessment.child_id == child.id).order_by(Assessment.id)).first()
    update_child(demo, child.resource_id, {**data, "involvements": [*data["involvements"], (
        _involvement(organisation(name, "nhs-trust", "01632 960497", ods_code="Y99933"),
                     "sexual-health", True))]})
    _next_assessment_version(demo, child.id, "Y99933")
    with_lead = _next_assessment_version(demo, child.id, None)
    urls = [f"/fhir/CareTeam/{ecaf}/_history/{with_lead}", f"/fhir/CareTeam/{ecaf}/_history"]
    for url in urls:
        for fmt in FORMATS:
            plain = client.get(f"{url}?_format={fmt}", headers=callers.other_la)
            assert plain.status_code == 200, (url, fmt, plain.data[:300])
            assert name not in plain.get_data(as_text=True), (url, fmt)
    assert name in client.get(urls[0], headers=callers.admin).get_data(as_text=True)
