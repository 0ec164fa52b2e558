"""Canary children for the disclosure tests: a shielded child whose address, telephone,
carers' contact details, GP, school and involvements carry distinctive strings, a child with
a sensitive-service involvement recorded on suspicion of significant harm (no consent), one
with consent, and two with earlier versions: one shielded only after them (its earlier
versions hold its address, NHS number, carers' contacts and team), and one whose service
became a sensitive one since and which carries another authority's local identifier. A
caller without the right a canary needs must never receive its string, in any version."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.identifiers import allocate_contactpoint_id, make_test_nhs_number
from adapter.models import Child, Organisation
from adapter.models.canonical import build_child, canonical_dump, organisation_dump
from adapter.store import history
from adapter.store.children import child_query
from adapter.store.records import apply_child
from adapter.systems import CONFIDENTIALITY

# Shielded child: what docs/domain.md "Shielding" withholds.
SHIELDED_CANARIES = {
    "NHS number": make_test_nhs_number(987654),
    "postcode": "ZZ7 7CY",
    "street": "Kestrelcanary Road",
    "carer phone": "01632 960417",
    "carer email": "canary.carer@example.org",
    "GP": "Canary Moor Surgery",
    "GP phone": "01632 960418",
    "school": "Canary Vale Primary School",
    "school phone": "01632 960419",
    "social worker phone": "01632 960422",
}
# Sensitive-service involvements: provider and contact details (docs/domain.md
# "Sensitive services").
UNCONSENTED_CANARIES = {
    "clinic": "Canary Clinic Sexual Health Service",
    "clinic phone": "01632 960420",
    "clinic email": "canary.clinic@example.org",
}
CONSENTED_CANARIES = {
    "camhs": "Canary Minds CAMHS",
    "camhs phone": "01632 960421",
}
# The child shielded after two earlier versions: what those versions held.
LATER_CANARIES = {
    "later NHS number": make_test_nhs_number(987655),
    "later postcode": "YY8 8BW",
    "later street": "Wrencanary Lane",
    "later carer phone": "01632 960431",
    "later carer email": "later.carer@example.org",
    "later school": "Canary Later Academy",
    "later school phone": "01632 960432",
}
# A service recorded as an ordinary one in earlier versions, as a sensitive one since.
NOW_SENSITIVE_CANARIES = {"now-sensitive service": "Canary Turned Substance Service"}
# A case id allocated by the second authority (docs/domain.md "Other organisations' numbers").
LOCAL_CANARIES = {"other authority's case id": "CANARYCASE917"}
ALL_CANARIES = {**SHIELDED_CANARIES, **UNCONSENTED_CANARIES, **CONSENTED_CANARIES,
                **LATER_CANARIES, **NOW_SENSITIVE_CANARIES, **LOCAL_CANARIES}


@dataclass(frozen=True)
class Viewer:
    """A caller of the disclosure matrix: its bearer header, rights and organisation."""

    name: str
    client_id: str
    headers: dict[str, str]
    rights: frozenset[str]
    organisation: str


def allowed(viewer: Viewer, other_authority: str) -> set[str]:
    """Return the canaries ``viewer`` may receive: shielded children's data with the
    shielding right, sensitive services' with the sensitive-services right, the second
    authority's case id only by that authority's own systems."""
    names: set[str] = set()
    if "shielded" in viewer.rights:
        names |= {*SHIELDED_CANARIES, *LATER_CANARIES}
    if "sensitive" in viewer.rights:
        names |= {*UNCONSENTED_CANARIES, *CONSENTED_CANARIES, *NOW_SENSITIVE_CANARIES}
    if viewer.organisation == other_authority:
        names |= set(LOCAL_CANARIES)
    return names


@dataclass(frozen=True)
class Canaries:
    """The FHIR ids of the planted children."""

    shielded: str
    unconsented: str
    consented: str
    # The children with earlier versions, when planted: shielded after two earlier versions
    # (see ``shield_later``), and the one whose service became a sensitive one.
    later: str | None
    now_sensitive: str | None
    contactpoint_ids: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """Return the Patient ids of the planted children."""
        return tuple(rid for rid in (self.shielded, self.unconsented, self.consented,
                                     self.later, self.now_sensitive) if rid is not None)


def organisation(name: str, kind: str, phone: str, **codes: str | None) -> dict[str, Any]:
    """Return a canonical organisation with a unique code."""
    data: dict[str, Any] = dict.fromkeys(
        ("ods_code", "urn", "gss_code", "la_number", "address_saon", "address_paon",
         "address_street", "address_locality", "address_town", "address_postcode",
         "address_uprn", "email"))
    data.update(name=name, type=kind, phone=phone, **codes)
    return data


def involvement(role: str, org: dict[str, Any], phone: str, email: str | None = None,
                sensitive: bool = False, consent: str | None = None) -> dict[str, Any]:
    """Return a canonical involvement without a named practitioner."""
    return {"role": role, "sensitive": sensitive, "consent_basis": consent,
            "lead_professional": False, "caf_completed": False, "period_start": None,
            "period_end": None, "phone": phone, "email": email, "organisation": org,
            "practitioner": None}


def _fresh(template: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a canonical child under a new ContactPoint ID, without national ids,
    local ids or involvements."""
    data = copy.deepcopy(template)
    data.update(contactpoint_id=allocate_contactpoint_id(), nhs_number=None,
                nhs_number_status=None, upn=None, local_identifiers=[], involvements=[],
                shielded=False)
    return data


def _shielded(template: dict[str, Any]) -> dict[str, Any]:
    """Return the shielded canary child."""
    data = _fresh(template)
    data.update(shielded=True, address_status="current", nhs_number_status="01",
                nhs_number=SHIELDED_CANARIES["NHS number"],
                address_postcode=SHIELDED_CANARIES["postcode"],
                address_street=SHIELDED_CANARIES["street"])
    for carer in data["carers"]:
        carer.update(phone=SHIELDED_CANARIES["carer phone"],
                     email=SHIELDED_CANARIES["carer email"],
                     address_postcode=SHIELDED_CANARIES["postcode"],
                     address_street=SHIELDED_CANARIES["street"])
    gp = organisation(SHIELDED_CANARIES["GP"], "gp-practice", SHIELDED_CANARIES["GP phone"],
                      ods_code="Y99917")
    school = organisation(SHIELDED_CANARIES["school"], "school",
                          SHIELDED_CANARIES["school phone"], urn="999917")
    social = organisation("Canary social care team", "social-care", "01632 960423",
                          ods_code="Y99920")
    data["involvements"] = [
        involvement("gp", gp, SHIELDED_CANARIES["GP phone"]),
        involvement("education", school, SHIELDED_CANARIES["school phone"]),
        involvement("social-worker", social, SHIELDED_CANARIES["social worker phone"])]
    return data


def _sensitive(template: dict[str, Any], consented: bool) -> dict[str, Any]:
    """Return a child with one sensitive-service involvement, consented or not."""
    data = _fresh(template)
    if consented:
        org = organisation(CONSENTED_CANARIES["camhs"], "nhs-trust",
                           CONSENTED_CANARIES["camhs phone"], ods_code="Y99919")
        data["involvements"] = [involvement("camhs", org, CONSENTED_CANARIES["camhs phone"],
                                            sensitive=True, consent="child-consent")]
    else:
        org = organisation(UNCONSENTED_CANARIES["clinic"], "nhs-trust",
                           UNCONSENTED_CANARIES["clinic phone"], ods_code="Y99918")
        data["involvements"] = [involvement(
            "sexual-health", org, UNCONSENTED_CANARIES["clinic phone"],
            UNCONSENTED_CANARIES["clinic email"], sensitive=True, consent="significant-harm")]
    return data


def _later_versions(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the two unshielded versions of the child shielded later: its address, NHS
    number, carers' contacts and school, then a change of school telephone."""
    data = _fresh(template)
    data.update(address_status="current", nhs_number_status="01",
                nhs_number=LATER_CANARIES["later NHS number"],
                address_postcode=LATER_CANARIES["later postcode"],
                address_street=LATER_CANARIES["later street"])
    for carer in data["carers"]:
        carer.update(phone=LATER_CANARIES["later carer phone"],
                     email=LATER_CANARIES["later carer email"])
    school = organisation(LATER_CANARIES["later school"], "school",
                          LATER_CANARIES["later school phone"], urn="999931")
    data["involvements"] = [involvement("education", school, "01632 960430")]
    second = copy.deepcopy(data)
    second["involvements"][0]["phone"] = LATER_CANARIES["later school phone"]
    return [data, second]


def _now_sensitive_versions(template: dict[str, Any],
                            other_authority: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the versions of the child whose service became a sensitive one: an ordinary
    involvement first, then the same organisation as a substance-misuse service with
    consent; both carry the second authority's case id."""
    data = _fresh(template)
    data["local_identifiers"] = [{"organisation": other_authority,
                                  "value": LOCAL_CANARIES["other authority's case id"]}]
    service = organisation(NOW_SENSITIVE_CANARIES["now-sensitive service"], "nhs-trust",
                           "01632 960433", ods_code="Y99932")
    data["involvements"] = [involvement("early-help", service, "01632 960433")]
    second = copy.deepcopy(data)
    second["involvements"] = [involvement("substance-misuse", service, "01632 960434",
                                          sensitive=True, consent="child-consent")]
    return [data, second]


def write_versions(db: Database, versions: list[dict[str, Any]]) -> tuple[str, str]:
    """Store a new child as each of ``versions`` in turn; return its Patient id and
    ContactPoint ID."""
    with db.write_transaction() as session:
        child, _outcome = apply_child(session, build_child(versions[0])[0], None)
        session.flush()
        resource_id, contactpoint_id = child.resource_id, child.contactpoint_id
    for data in versions[1:]:
        update_child(db, resource_id, data)
    return resource_id, contactpoint_id


def update_child(db: Database, resource_id: str, data: dict[str, Any]) -> None:
    """Store the next version of a child in its own transaction (a version is a
    transaction), keeping the superseded version's snapshot as an update through the API
    does (``history.child_snapshot``)."""
    with db.write_transaction() as session:
        child = session.scalars(child_query().where(Child.resource_id == resource_id)).one()
        before = history.child_snapshot(child)
        apply_child(session, build_child(data)[0], child)
        session.flush()
        session.add(before)


def plant_canaries(db: Database, authority_gss: str, other_gss: str | None = None) -> Canaries:
    """Add the canary children, managed by ``authority_gss``, to the directory: the shielded
    one and the two with sensitive services, and with ``other_gss`` (the authority that
    allocated the local canary) the two with earlier versions."""
    with db.sessions() as session:
        template_child = session.scalar(
            select(Child).join(Child.managing_organisation)
            .where(Organisation.gss_code == authority_gss, Child.shielded.is_(False),
                   Child.address_status == "current").order_by(Child.id).limit(1))
        other = session.scalar(select(Organisation).where(
            Organisation.gss_code == other_gss)) if other_gss is not None else None
        assert template_child is not None and (other is not None or other_gss is None)
        template = canonical_dump(template_child, meta=False)
        planted = [[_shielded(template)], [_sensitive(template, False)],
                   [_sensitive(template, True)]]
        if other is not None:
            planted += [_later_versions(template),
                        _now_sensitive_versions(template, organisation_dump(other))]
    children = [write_versions(db, versions) for versions in planted]
    ids: list[str | None] = [rid for rid, _cpid in children]
    ids += [None] * (5 - len(ids))
    return Canaries(str(ids[0]), str(ids[1]), str(ids[2]), ids[3], ids[4],
                    contactpoint_ids=tuple(cpid for _rid, cpid in children))


def shield_later(client: FlaskClient, reader: dict[str, str], canaries: Canaries) -> None:
    """Shield the ``later`` child through the API after ``reader`` has read its earlier
    versions (which then held its canaries): PUT with the restricted security label."""
    assert canaries.later is not None
    url = f"/fhir/Patient/{canaries.later}"
    first = client.get(f"{url}/_history/1", headers=reader)
    assert first.status_code == 200 and canaries_in(first.data, LATER_CANARIES)
    patient = client.get(url, headers=reader).json
    assert patient is not None
    meta = patient.setdefault("meta", {})
    meta["security"] = [*meta.get("security", []), {"system": CONFIDENTIALITY, "code": "R"}]
    response = client.put(url, json=patient, headers={
        **reader, "Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.json


def canaries_in(body: bytes, canaries: dict[str, str] | None = None) -> list[str]:
    """Return the names of the canaries whose strings occur in ``body``."""
    text = body.decode("utf-8", errors="replace")
    return [name for name, value in (canaries or ALL_CANARIES).items() if value in text]
