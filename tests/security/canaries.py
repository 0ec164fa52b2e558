"""Canary children for the disclosure tests: a shielded child whose address, telephone,
carers' contact details, GP, school and involvements carry distinctive strings, a child with
a sensitive-service involvement recorded on suspicion of significant harm (no consent), and
one with consent. A caller without the rights must never receive any of the strings."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from adapter.db import Database
from adapter.identifiers import allocate_contactpoint_id, make_test_nhs_number
from adapter.models import Child, Organisation
from adapter.models.canonical import build_child, canonical_dump
from adapter.services.records import apply_child

# Shielded child: what DOMAIN.md "Shielding" withholds.
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
# Sensitive-service involvements: provider and contact details (DOMAIN.md "Sensitive services").
UNCONSENTED_CANARIES = {
    "clinic": "Canary Clinic Sexual Health Service",
    "clinic phone": "01632 960420",
    "clinic email": "canary.clinic@example.org",
}
CONSENTED_CANARIES = {
    "camhs": "Canary Minds CAMHS",
    "camhs phone": "01632 960421",
}
ALL_CANARIES = {**SHIELDED_CANARIES, **UNCONSENTED_CANARIES, **CONSENTED_CANARIES}


@dataclass(frozen=True)
class Canaries:
    """The FHIR ids of the planted children."""

    shielded: str
    unconsented: str
    consented: str
    contactpoint_ids: tuple[str, str, str]

    @property
    def ids(self) -> tuple[str, str, str]:
        """Return the three Patient ids."""
        return self.shielded, self.unconsented, self.consented


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


def plant_canaries(db: Database, authority_gss: str) -> Canaries:
    """Add the three canary children, managed by ``authority_gss``, to the directory."""
    with db.write_transaction() as session:
        template_child = session.scalar(
            select(Child).join(Child.managing_organisation)
            .where(Organisation.gss_code == authority_gss, Child.shielded.is_(False),
                   Child.address_status == "current").order_by(Child.id).limit(1))
        assert template_child is not None
        template = canonical_dump(template_child, meta=False)
        ids, cpids = [], []
        for data in (_shielded(template), _sensitive(template, False),
                     _sensitive(template, True)):
            record, _builder = build_child(data)
            child, _outcome = apply_child(session, record, None)
            session.flush()
            ids.append(child.resource_id)
            cpids.append(child.contactpoint_id)
    return Canaries(ids[0], ids[1], ids[2], (cpids[0], cpids[1], cpids[2]))


def canaries_in(body: bytes, canaries: dict[str, str] | None = None) -> list[str]:
    """Return the names of the canaries whose strings occur in ``body``."""
    text = body.decode("utf-8", errors="replace")
    return [name for name, value in (canaries or ALL_CANARIES).items() if value in text]
