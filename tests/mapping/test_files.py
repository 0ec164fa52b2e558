"""Every mapping file and ConceptMap is loaded and checked: source attributes, transforms,
ConceptMaps and parts exist, every canonical code has a target or an explicit default."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.conceptmap import ConceptMap
from sqlalchemy import inspect

from adapter import codes
from adapter.mapping.conceptmaps import load_translations, read_conceptmaps
from adapter.mapping.engine import FIELD_KEYS, MODELS, FieldSpec, MappingSpec
from adapter.mapping.fhir import MAPPING_DIR, compiled_mappings, read_specs
from adapter.mapping.transforms import TRANSFORMS
from tests.mapping.helpers import BASE

SPECS = read_specs()
CONCEPTMAPS = read_conceptmaps()
# The canonical vocabulary each ConceptMap translates (adapter/codes.py).
VOCABULARY = {
    "gender": codes.GENDERS,
    "carer-relationship": codes.CARER_RELATIONSHIPS,
    "carer-relationship-ukcore": codes.CARER_RELATIONSHIPS,
    "involvement-role": codes.INVOLVEMENT_ROLES,
    "assessment-status": codes.ASSESSMENT_STATUSES,
    "organisation-type": codes.ORGANISATION_TYPES,
}
# The vocabulary of every coded column an inline ``values`` table maps.
COLUMN_VOCABULARY = {
    ("Child", "address_status"): codes.ADDRESS_STATUSES,
    ("Child", "record_status"): codes.RECORD_STATUSES,
    ("Child", "extended_retention"): codes.EXTENDED_RETENTION_REASONS,
    ("ChildName", "use"): codes.NAME_USES,
    ("Involvement", "consent_basis"): codes.CONSENT_BASES,
    ("Assessment", "status"): codes.ASSESSMENT_STATUSES,
}
EXPECTED_FILES = {"child_to_patient", "involvements_to_careteam", "assessment_to_careteam",
                  "organisation_to_organization", "practitioner_to_practitioner",
                  "involvement_to_practitionerrole", "team_member_to_practitionerrole",
                  "assessment_lead_to_practitionerrole"}


def all_fields(spec: MappingSpec) -> list[tuple[str, FieldSpec]]:
    """Return (source model, field) for the fields of a mapping and of its parts."""
    found = [(spec.source, f) for f in spec.fields]
    for part in spec.parts.values():
        found += [(part.source, f) for f in part.fields]
    return found


def test_every_mapping_file_is_there_and_compiles_under_any_base() -> None:
    """The eight mapping files compile, under the default base and another one."""
    assert set(SPECS) == EXPECTED_FILES
    assert set(compiled_mappings(BASE)) == EXPECTED_FILES
    assert set(compiled_mappings("https://directory.example.gov.uk/fhir")) == EXPECTED_FILES


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_mapping_file_documents_itself(name: str) -> None:
    """Version, profile, what the target cannot carry and the inbound policy are stated."""
    spec = SPECS[name]
    assert spec.version >= 1
    assert spec.profile.startswith("{profile:")
    assert spec.not_carried, "not_carried lists what the target cannot carry"
    text = (MAPPING_DIR / f"{name}.toml").read_text()
    assert "[ignored_inbound]" in text and "policy =" in text


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_every_source_transform_conceptmap_and_part_exists(name: str) -> None:
    """Each ``from`` is an attribute of its model (or an option), each transform, ConceptMap
    and part is defined, and no field has an unknown key."""
    spec = SPECS[name]
    for model_name, field in all_fields(spec):
        attrs = inspect(MODELS[model_name]).attrs.keys()
        for source in field.source:
            assert source in attrs or source.startswith("$") or source == ".", source
        assert field.transform is None or field.transform in TRANSFORMS, field.transform
        assert field.conceptmap is None or field.conceptmap in CONCEPTMAPS, field.conceptmap
        assert field.part is None or field.part in spec.parts, field.part


def test_field_keys_and_files_are_documented_in_the_readme() -> None:
    """mappings/README.md documents every key and every mapping file."""
    readme = (MAPPING_DIR / "README.md").read_text()
    for key in FIELD_KEYS | {"version", "source", "target", "profile", "not_carried",
                             "ignored_inbound", "silent", "policy", "part", "index"}:
        assert f"`{key}`" in readme, key
    for name in EXPECTED_FILES | set(CONCEPTMAPS):
        assert name in readme, name


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_inline_value_tables_cover_their_vocabulary(name: str) -> None:
    """Every code of a coded column has an entry in the field's ``values`` table."""
    for model_name, field in all_fields(SPECS[name]):
        if field.values is not None:
            vocabulary = COLUMN_VOCABULARY[(model_name, field.source[0])]
            assert set(field.values) == set(vocabulary), (model_name, field.source)


@pytest.mark.parametrize("name", sorted(CONCEPTMAPS))
def test_conceptmap_is_valid_fhir_and_cites_its_source(name: str) -> None:
    """A ConceptMap validates with fhir.resources and says where its codes come from."""
    cmap = CONCEPTMAPS[name]
    ConceptMap.model_validate(cmap)
    assert cmap["id"] == name
    assert cmap["sourceCanonical"] and cmap["targetCanonical"]
    assert "http" in cmap["description"] and cmap["purpose"]
    assert "adapter/codes.py" in cmap["description"]


@pytest.mark.parametrize("name", sorted(CONCEPTMAPS))
def test_every_group_has_an_explicit_unmapped_rule(name: str) -> None:
    """No silent drop: each group says what happens to a code it does not list."""
    urls = {cm["url"] for cm in CONCEPTMAPS.values()}
    for group in CONCEPTMAPS[name]["group"]:
        rule = group["unmapped"]
        assert (rule["mode"] == "fixed" and rule["code"]) or (
            rule["mode"] == "other-map" and rule["url"] in urls), rule


@pytest.mark.parametrize("name", sorted(CONCEPTMAPS))
def test_every_canonical_code_has_a_target_or_the_default(name: str) -> None:
    """Every code of the vocabulary translates to at least one target; every listed code
    is a code of the vocabulary (no stale entries)."""
    translation = load_translations(BASE)[name]
    vocabulary = VOCABULARY[name]
    for code in vocabulary:
        assert translation.translate(code), code
    for group in CONCEPTMAPS[name]["group"]:
        for element in group.get("element", []):
            assert element["code"] in vocabulary, element["code"]


def test_unlisted_codes_take_the_explicit_default() -> None:
    """A code no map lists gets the fixed default at the end of the other-map chain."""
    translations = load_translations(BASE)
    assert translations["carer-relationship"].translate("no-such-code")[0][1] == "NotSpecified"
    assert translations["involvement-role"].translate("other")[0][1] == "224930009"
    assert translations["gender"].translate("?")[0][1] == "unknown"


def test_conceptmap_source_displays_match_the_own_codesystems() -> None:
    """The display a ConceptMap gives a source code is the own CodeSystem's display."""
    folder = Path(MAPPING_DIR.parent / "schemas" / "fhir")
    displays = {}
    for path in folder.glob("CodeSystem-*.json"):
        system = orjson.loads(path.read_bytes())
        displays[system["url"]] = {c["code"]: c["display"] for c in system["concept"]}
    for cmap in CONCEPTMAPS.values():
        for group in cmap["group"]:
            own = displays.get(group["source"])
            for element in group.get("element", []) if own else []:
                assert element["display"] == own[element["code"]], element["code"]
