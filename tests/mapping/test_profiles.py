"""This service's StructureDefinitions, CodeSystems and ValueSets (``schemas/fhir``): valid
FHIR, derived from UK Core, consistent with adapter/codes.py and with what the mappings write."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.structuredefinition import StructureDefinition
from fhir.resources.R4B.valueset import ValueSet

from adapter import codes
from adapter.config import PROJECT_ROOT
from adapter.mapping.fhir import compiled_mappings
from adapter.systems import DEFAULT_CANONICAL_BASE, UKCORE_PROFILE_BASE
from adapter.vendored import UK_CORE_DIR

FOLDER = PROJECT_ROOT / "schemas" / "fhir"
MAPPINGS = PROJECT_ROOT / "mappings"


def load(pattern: str) -> dict[str, dict[str, Any]]:
    """Return the JSON resources of ``schemas/fhir`` matching ``pattern`` by file name."""
    return {p.name: orjson.loads(p.read_bytes()) for p in sorted(FOLDER.glob(pattern))}


SDS = load("StructureDefinition-*.json")
PROFILES = {k: v for k, v in SDS.items() if v["kind"] == "resource"}
EXTENSIONS = {k: v for k, v in SDS.items() if v["type"] == "Extension"}
CODESYSTEMS = load("CodeSystem-*.json")
VALUESETS = load("ValueSet-*.json")
# The vocabulary of adapter/codes.py each own CodeSystem publishes.
VOCABULARY = {
    "carer-relationship": codes.CARER_RELATIONSHIPS, "involvement-role": codes.INVOLVEMENT_ROLES,
    "organisation-type": codes.ORGANISATION_TYPES, "assessment-status": codes.ASSESSMENT_STATUSES,
    "address-status": codes.ADDRESS_STATUSES, "record-status": codes.RECORD_STATUSES,
    "extended-retention": codes.EXTENDED_RETENTION_REASONS, "consent-basis": codes.CONSENT_BASES,
    "team-role": codes.TEAM_ROLES, "careteam-category": ("directory-team", "ecaf-tac"),
    "address-line-part": ("saon", "paon", "street", "locality"),
}


@pytest.mark.parametrize("name", sorted(SDS))
def test_structure_definition_is_valid_and_under_the_base(name: str) -> None:
    """Each StructureDefinition validates with fhir.resources and is a 4.0.1 constraint."""
    sd = SDS[name]
    StructureDefinition.model_validate(sd)
    assert name == f"StructureDefinition-{sd['id']}.json"
    assert sd["url"] == f"{DEFAULT_CANONICAL_BASE}/StructureDefinition/{sd['id']}"
    assert (sd["fhirVersion"], sd["status"], sd["derivation"]) == ("4.0.1", "active",
                                                                     "constraint")
    assert sd["differential"]["element"]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_derives_from_uk_core(name: str) -> None:
    """Our profiles constrain the UK Core profile of their resource type."""
    sd = PROFILES[name]
    assert sd["baseDefinition"] == f"{UKCORE_PROFILE_BASE}UKCore-{sd['type']}"
    assert (UK_CORE_DIR / "structuredefinitions" / f"UKCore-{sd['type']}.xml").is_file()


def test_every_extension_and_profile_the_mappings_write_is_published() -> None:
    """Every own extension URL and profile in the mapping output has a StructureDefinition."""
    published = {sd["url"] for sd in SDS.values()}
    text = "".join(p.read_text() for p in MAPPINGS.glob("*.toml"))
    written = {f"{DEFAULT_CANONICAL_BASE}/StructureDefinition/Extension-ContactPointGateway-{n}"
               for n in re.findall(r"\{ext:(\w+)\}", text)}
    written |= {f"{DEFAULT_CANONICAL_BASE}/StructureDefinition/ContactPointGateway-{n}"
                for n in re.findall(r"\{profile:(\w+)\}", text)}
    written |= {m.profile for m in compiled_mappings(DEFAULT_CANONICAL_BASE).values()}
    written.add(f"{DEFAULT_CANONICAL_BASE}/StructureDefinition/"
                "Extension-ContactPointGateway-AddressLinePart")
    assert written <= published
    assert {sd["url"] for sd in EXTENSIONS.values()} <= written


def test_every_bound_value_set_and_code_system_is_published() -> None:
    """Bindings and ValueSets under our base point at resources in ``schemas/fhir``."""
    value_sets = {vs["url"] for vs in VALUESETS.values()}
    systems = {cs["url"] for cs in CODESYSTEMS.values()}
    for sd in SDS.values():
        for element in sd["differential"]["element"]:
            url = element.get("binding", {}).get("valueSet", "")
            assert not url.startswith(DEFAULT_CANONICAL_BASE) or url in value_sets, url
    for vs in VALUESETS.values():
        for include in vs["compose"]["include"]:
            assert not include["system"].startswith(DEFAULT_CANONICAL_BASE) \
                or include["system"] in systems


@pytest.mark.parametrize("name", sorted(VOCABULARY))
def test_own_code_system_publishes_the_canonical_vocabulary(name: str) -> None:
    """Each own CodeSystem holds exactly its adapter/codes.py vocabulary, with a ValueSet."""
    system = CODESYSTEMS[f"CodeSystem-{name}.json"]
    CodeSystem.model_validate(system)
    ValueSet.model_validate(VALUESETS[f"ValueSet-{name}.json"])
    assert [c["code"] for c in system["concept"]] == list(VOCABULARY[name])
    assert system["count"] == len(VOCABULARY[name])
    assert all(c.get("display") and c.get("definition") for c in system["concept"])


def test_security_labels_value_set() -> None:
    """The security-label ValueSet holds R (shielded) and REDACTED, nothing else."""
    vs = VALUESETS["ValueSet-security-labels.json"]
    ValueSet.model_validate(vs)
    codes_ = {(i["system"], c["code"]) for i in vs["compose"]["include"] for c in i["concept"]}
    assert codes_ == {("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"),
                      ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "REDACTED")}
