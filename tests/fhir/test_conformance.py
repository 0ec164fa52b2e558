"""The profile conformance checker: small handwritten profiles, UK Core, and our own profiles."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.fhir import conformance
from adapter.fhir.conformance import (
    OWN_DEFINITIONS,
    ElementRule,
    Issue,
    Validator,
    check_resource,
    configure,
    default_validator,
    has_errors,
    to_operation_outcome,
)
from adapter.fhir.profiles import (
    DefinitionRegistry,
    ProfileError,
    core_type,
    type_fields,
)
from adapter.systems import DEFAULT_CANONICAL_BASE
from adapter.vendored import UK_CORE_DIR

UK_CORE = UK_CORE_DIR
BASE = DEFAULT_CANONICAL_BASE
SD = f"{BASE}/StructureDefinition"
UKCORE = "https://fhir.hl7.org.uk/StructureDefinition"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
VERIFICATION_EXT = f"{UKCORE}/Extension-UKCore-NHSNumberVerificationStatus"
ENGLAND = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
PDS = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus"


# ---------------------------------------------------------------------------------------------
# Helpers


def profile(name: str, elements: list[dict[str, Any]], *, type_name: str = "Patient",
            base: str | None = None) -> dict[str, Any]:
    """Return a small StructureDefinition constraining ``type_name`` by ``elements``."""
    return {"resourceType": "StructureDefinition", "id": name, "url": f"{SD}/{name}",
            "name": name.replace("-", ""), "status": "draft", "fhirVersion": "4.0.1",
            "kind": "complex-type" if type_name == "Extension" else "resource",
            "abstract": False, "type": type_name, "derivation": "constraint",
            "baseDefinition": base or f"http://hl7.org/fhir/StructureDefinition/{type_name}",
            "differential": {"element": elements}}


def element(element_id: str, **rules: Any) -> dict[str, Any]:
    """Return an ElementDefinition with ``id``, the path it implies, and ``rules``."""
    path = ".".join(segment.split(":")[0] for segment in element_id.split("."))
    found = {"id": element_id, "path": path, **rules}
    if ":" in element_id.rsplit(".", 1)[-1]:
        found["sliceName"] = element_id.rsplit(":", 1)[-1]
    return found


def write(folder: Path, *resources: dict[str, Any]) -> Path:
    """Write each resource as ``<resourceType>-<id>.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for resource in resources:
        name = f"{resource['resourceType']}-{resource['id']}.json"
        (folder / name).write_bytes(orjson.dumps(resource))
    return folder


def make_validator(tmp_path: Path, *resources: dict[str, Any]) -> Validator:
    """Return a validator reading only ``resources`` (base definitions come built in)."""
    return Validator(DefinitionRegistry([write(tmp_path / "defs", *resources)]))


def patient(profile_name: str, /, **content: Any) -> dict[str, Any]:
    """Return a Patient claiming profile ``profile_name`` (under the test canonical base)."""
    return {"resourceType": "Patient", "meta": {"profile": [f"{SD}/{profile_name}"]}, **content}


def errors(issues: list[Issue]) -> list[tuple[str, str]]:
    """Return (expression, message) of the errors among ``issues``."""
    return [(i.expression, i.message) for i in issues if i.severity in ("error", "fatal")]


def warnings(issues: list[Issue]) -> list[tuple[str, str]]:
    """Return (expression, message) of the warnings among ``issues``."""
    return [(i.expression, i.message) for i in issues if i.severity == "warning"]


def only_error_at(issues: list[Issue], expression: str, fragment: str) -> None:
    """Assert that the one error is at ``expression`` and says ``fragment``."""
    found = errors(issues)
    assert len(found) == 1, found
    assert found[0][0] == expression, found
    assert fragment in found[0][1], found


# ---------------------------------------------------------------------------------------------
# Handwritten profiles: one rule kind each, a passing and a failing resource


def test_cardinality_min_and_max(tmp_path: Path) -> None:
    """min 1 makes an element required; max limits repeats; max 0 forbids it."""
    validator = make_validator(tmp_path, profile("Card", [
        element("Patient.name", min=1, max="1"), element("Patient.photo", max="0")]))
    assert validator.check(patient("Card", name=[{"family": "Smith"}])) == []
    only_error_at(validator.check(patient("Card")), "Patient.name", "minimum cardinality is 1")
    only_error_at(validator.check(patient("Card", name=[{"family": "A"}, {"family": "B"}])),
                  "Patient.name", "maximum cardinality is 1, found 2")
    only_error_at(validator.check(patient("Card", name=[{"family": "A"}], photo=[{"url": "x"}])),
                  "Patient.photo", "maximum cardinality is 0")


def test_required_element_inside_a_backbone_element(tmp_path: Path) -> None:
    """A child made required applies to each occurrence of its backbone element."""
    validator = make_validator(tmp_path, profile("Contact", [
        element("Patient.contact.relationship", min=1)]))
    good = {"relationship": [{"text": "mother"}]}
    assert validator.check(patient("Contact", contact=[good])) == []
    assert validator.check(patient("Contact")) == []  # no contact: nothing required inside
    only_error_at(validator.check(patient("Contact", contact=[good, {"name": {"text": "x"}}])),
                  "Patient.contact[1].relationship", "minimum cardinality is 1")


def test_fixed_and_pattern_values(tmp_path: Path) -> None:
    """fixed[x] must match exactly; pattern[x] only needs what the pattern has."""
    status = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                          "code": "U"}]}
    validator = make_validator(tmp_path, profile("Fixed", [
        element("Patient.active", fixedBoolean=True),
        element("Patient.maritalStatus", patternCodeableConcept=status)]))
    more = copy.deepcopy(status)
    more["coding"].append({"system": "urn:other", "code": "x"})
    more["text"] = "unmarried"
    assert validator.check(patient("Fixed", active=True, maritalStatus=more)) == []
    only_error_at(validator.check(patient("Fixed", active=False)), "Patient.active",
                  "must be true (fixedBoolean), found false")
    wrong = {"coding": [{"system": "urn:other", "code": "U"}]}
    only_error_at(validator.check(patient("Fixed", maritalStatus=wrong)),
                  "Patient.maritalStatus", "must match patternCodeableConcept")


def test_max_length_and_choice_types(tmp_path: Path) -> None:
    """maxLength limits a string; a choice element takes only the types the profile keeps."""
    validator = make_validator(tmp_path, profile("Choice", [
        element("Patient.name.family", maxLength=5),
        element("Patient.deceased[x]", type=[{"code": "dateTime"}])]))
    assert validator.check(patient("Choice", name=[{"family": "Smith"}],
                                   deceasedDateTime="2020-01-01")) == []
    only_error_at(validator.check(patient("Choice", name=[{"family": "Smithson"}])),
                  "Patient.name[0].family", "more than maxLength 5")
    only_error_at(validator.check(patient("Choice", deceasedBoolean=True)),
                  "Patient.deceased.ofType(boolean)", "type boolean is not allowed")


def identifier_slices(rules: str = "open") -> list[dict[str, Any]]:
    """Return elements slicing Patient.identifier by system: nhs 1..1 (value 1..1), local."""
    return [
        element("Patient.identifier", slicing={
            "discriminator": [{"type": "value", "path": "system"}], "rules": rules}),
        element("Patient.identifier:nhs", min=1, max="1"),
        element("Patient.identifier:nhs.system", min=1, fixedUri=NHS_NUMBER),
        element("Patient.identifier:nhs.value", min=1),
        element("Patient.identifier:local", max="1"),
        element("Patient.identifier:local.system", fixedUri=f"{BASE}/Id/local"),
    ]


def test_slicing_by_identifier_system(tmp_path: Path) -> None:
    """Slices are told apart by their fixed system; each has its cardinality and children."""
    validator = make_validator(tmp_path, profile("Slices", identifier_slices()))
    nhs = {"system": NHS_NUMBER, "value": "9000000009"}
    other = {"system": "urn:other", "value": "1"}
    assert validator.check(patient("Slices", identifier=[other, nhs])) == []
    only_error_at(validator.check(patient("Slices", identifier=[other])),
                  "Patient.identifier", "Patient.identifier:nhs: minimum cardinality is 1")
    only_error_at(validator.check(patient("Slices", identifier=[nhs, dict(nhs)])),
                  "Patient.identifier", "Patient.identifier:nhs: maximum cardinality is 1")
    only_error_at(validator.check(patient("Slices", identifier=[other, {"system": NHS_NUMBER}])),
                  "Patient.identifier[1].value", "Patient.identifier:nhs.value: minimum")


def test_closed_slicing_refuses_other_items(tmp_path: Path) -> None:
    """With rules closed, an item in no slice is an error."""
    validator = make_validator(tmp_path, profile("Closed", identifier_slices("closed")))
    nhs = {"system": NHS_NUMBER, "value": "9000000009"}
    assert validator.check(patient("Closed", identifier=[nhs])) == []
    only_error_at(validator.check(patient("Closed", identifier=[nhs, {"system": "urn:x"}])),
                  "Patient.identifier[1]", "matches none of the slices (nhs, local)")


def test_open_at_end_slicing(tmp_path: Path) -> None:
    """With rules openAtEnd, items in no slice may only follow the sliced ones."""
    validator = make_validator(tmp_path, profile("AtEnd", identifier_slices("openAtEnd")))
    nhs = {"system": NHS_NUMBER, "value": "9000000009"}
    other = {"system": "urn:other", "value": "1"}
    assert validator.check(patient("AtEnd", identifier=[nhs, other])) == []
    only_error_at(validator.check(patient("AtEnd", identifier=[other, nhs])),
                  "Patient.identifier[1]", "open only at the end")


def terminology() -> list[dict[str, Any]]:
    """Return a local CodeSystem (with a hierarchy) and value sets drawn from it."""
    system = {"resourceType": "CodeSystem", "id": "colours", "url": f"{BASE}/CodeSystem/colours",
              "status": "active", "content": "complete", "concept": [
                  {"code": "red", "concept": [{"code": "crimson"}]}, {"code": "blue"}]}
    warm = {"resourceType": "ValueSet", "id": "warm", "url": f"{BASE}/ValueSet/warm",
            "status": "active", "compose": {"include": [{
                "system": system["url"],
                "filter": [{"property": "concept", "op": "is-a", "value": "red"}]}]}}
    mixed = {"resourceType": "ValueSet", "id": "mixed", "url": f"{BASE}/ValueSet/mixed",
             "status": "active", "compose": {"include": [
                 {"valueSet": [warm["url"]]}, {"system": "http://snomed.info/sct"}]}}
    return [system, warm, mixed]


def bound(strength: str, value_set: str) -> dict[str, Any]:
    """Return a binding."""
    return {"strength": strength, "valueSet": value_set}


def colour(code: str, system: str = f"{BASE}/CodeSystem/colours") -> dict[str, Any]:
    """Return a CodeableConcept with one coding."""
    return {"coding": [{"system": system, "code": code}]}


def test_required_binding_from_local_terminology(tmp_path: Path) -> None:
    """A required binding accepts codes of the expanded value set and refuses others."""
    validator = make_validator(tmp_path, *terminology(), profile("Bound", [
        element("Patient.maritalStatus", binding=bound("required", f"{BASE}/ValueSet/warm"))]))
    assert validator.check(patient("Bound", maritalStatus=colour("crimson"))) == []
    assert validator.check(patient("Bound", maritalStatus=colour("red"))) == []
    only_error_at(validator.check(patient("Bound", maritalStatus=colour("blue"))),
                  "Patient.maritalStatus.coding[0]", "colours|blue is not in the required value")
    only_error_at(validator.check(patient("Bound", maritalStatus={"text": "red"})),
                  "Patient.maritalStatus", "no coding from the required value set")


def test_codes_that_cannot_be_checked_locally_are_warnings(tmp_path: Path) -> None:
    """A code of a system or value set not available here is a warning, never a pass."""
    validator = make_validator(tmp_path, *terminology(), profile("Open", [
        element("Patient.maritalStatus", binding=bound("required", f"{BASE}/ValueSet/mixed")),
        element("Patient.contact.relationship",
                binding=bound("required", "http://hl7.org/fhir/ValueSet/not-here"))]))
    assert validator.check(patient("Open", maritalStatus=colour("red"))) == []
    snomed = validator.check(patient("Open", maritalStatus=colour("1", "http://snomed.info/sct")))
    assert errors(snomed) == []
    [(expression, message)] = warnings(snomed)
    assert expression == "Patient.maritalStatus.coding[0]"
    assert "content of http://snomed.info/sct is not available locally" in message
    unknown = validator.check(patient("Open", contact=[{"relationship": [colour("red")]}]))
    assert errors(unknown) == []
    assert "value set is not available locally" in warnings(unknown)[0][1]


def test_extensible_binding_warns(tmp_path: Path) -> None:
    """A code outside an extensible value set is a warning, not an error."""
    validator = make_validator(tmp_path, *terminology(), profile("Ext", [
        element("Patient.maritalStatus", binding=bound("extensible", f"{BASE}/ValueSet/warm"))]))
    assert validator.check(patient("Ext", maritalStatus=colour("red"))) == []
    found = validator.check(patient("Ext", maritalStatus=colour("blue")))
    assert errors(found) == []
    assert "not in the extensible value set" in warnings(found)[0][1]


def test_base_required_binding(tmp_path: Path) -> None:
    """A code element of the base resource keeps its required binding (gender)."""
    validator = make_validator(tmp_path, profile("Plain", []))
    assert validator.check(patient("Plain", gender="female")) == []
    only_error_at(validator.check(patient("Plain", gender="girl")), "Patient.gender",
                  "'girl' is not in the required value set of the base definition")


def colour_extension() -> dict[str, Any]:
    """Return an extension definition: one CodeableConcept bound to the warm value set."""
    url = f"{SD}/Extension-Colour"
    return profile("Extension-Colour", [
        element("Extension", max="1"),
        element("Extension.extension", max="0"),
        element("Extension.url", fixedUri=url),
        element("Extension.value[x]", min=1, type=[{"code": "CodeableConcept"}],
                binding=bound("required", f"{BASE}/ValueSet/warm"))], type_name="Extension")


def test_extension_value_type_and_binding(tmp_path: Path) -> None:
    """An extension is checked by its own definition: value type, binding, slice max."""
    url = f"{SD}/Extension-Colour"
    validator = make_validator(tmp_path, *terminology(), colour_extension(), profile("Ext", [
        element("Patient.extension:colour", type=[{"code": "Extension", "profile": [url]}])]))
    good = {"url": url, "valueCodeableConcept": colour("red")}
    assert validator.check(patient("Ext", extension=[good])) == []
    only_error_at(validator.check(patient("Ext", extension=[{"url": url, "valueString": "red"}])),
                  "Patient.extension[0].value.ofType(string)", "type string is not allowed")
    only_error_at(validator.check(patient("Ext", extension=[good, good])), "Patient.extension",
                  "Patient.extension:colour: maximum cardinality is 1")
    blue = {"url": url, "valueCodeableConcept": colour("blue")}
    only_error_at(validator.check(patient("Ext", extension=[blue])),
                  "Patient.extension[0].value.ofType(CodeableConcept).coding[0]",
                  "not in the required value set")


def test_extension_definitions_apply_wherever_used(tmp_path: Path) -> None:
    """An extension on any element is checked by url even where no profile slices it."""
    url = f"{SD}/Extension-Colour"
    validator = make_validator(tmp_path, *terminology(), colour_extension(), profile("Plain", []))
    on_name = {"family": "Smith", "extension": [{"url": url, "valueString": "red"}]}
    only_error_at(validator.check(patient("Plain", name=[on_name])),
                  "Patient.name[0].extension[0].value.ofType(string)", "type string")
    on_primitive = {"extension": [{"url": url}]}
    only_error_at(validator.check(patient("Plain", _birthDate=on_primitive)),
                  "Patient.birthDate.extension[0].value", "minimum cardinality is 1")


def test_unknown_extensions(tmp_path: Path) -> None:
    """Unknown extensions: a warning; under our own base or as a modifier: an error."""
    validator = make_validator(tmp_path, profile("Plain", []))
    foreign = validator.check(patient("Plain", extension=[
        {"url": "https://example.org/ext", "valueString": "x"}]))
    assert errors(foreign) == [] and "not checked" in warnings(foreign)[0][1]
    only_error_at(validator.check(patient("Plain", extension=[
        {"url": f"{SD}/Extension-Missing", "valueString": "x"}])), "Patient.extension[0]",
        "under this service's canonical base but is not defined")
    only_error_at(validator.check(patient("Plain", modifierExtension=[
        {"url": "https://example.org/mod", "valueString": "x"}])), "Patient.modifierExtension[0]",
        "cannot be ignored")


def test_complex_extension_parts(tmp_path: Path) -> None:
    """A complex extension's parts are slices by relative url, with their own rules."""
    url = f"{SD}/Extension-Consent"
    definition = profile("Extension-Consent", [
        element("Extension.extension", min=1),
        element("Extension.extension:given", min=1, max="1"),
        element("Extension.extension:given.url", fixedUri="given"),
        element("Extension.extension:given.value[x]", type=[{"code": "boolean"}]),
        element("Extension.extension:by", max="1"),
        element("Extension.extension:by.url", fixedUri="by"),
        element("Extension.url", fixedUri=url),
        element("Extension.value[x]", max="0")], type_name="Extension")
    validator = make_validator(tmp_path, definition, profile("Plain", []))
    given = {"url": "given", "valueBoolean": True}
    assert validator.check(patient("Plain", extension=[{"url": url, "extension": [given]}])) == []
    only_error_at(validator.check(patient("Plain", extension=[
        {"url": url, "extension": [{"url": "by", "valueString": "carer"}]}])),
        "Patient.extension[0].extension", "Extension.extension:given: minimum cardinality is 1")


def test_reference_target_profile(tmp_path: Path) -> None:
    """A Reference may point only to the resource types of its targetProfiles."""
    organisation = f"{UKCORE}/UKCore-Organization"
    validator = make_validator(tmp_path, profile("Target", [element(
        "Patient.generalPractitioner",
        type=[{"code": "Reference", "targetProfile": [organisation]}])]),
        profile("UKCore-Organization", [], type_name="Organization") | {"url": organisation})
    assert validator.check(patient("Target", generalPractitioner=[
        {"reference": "Organization/1"}, {"reference": "https://x.org/fhir/Organization/2"},
        {"reference": "urn:uuid:0f6f8bd2-c08b-4b42-9a36-1b0b6a0b6b8d"},
        {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                        "value": "A1"}}])) == []
    only_error_at(validator.check(patient("Target", generalPractitioner=[
        {"reference": "Practitioner/1/_history/2"}])),
        "Patient.generalPractitioner[0]", "refers to a Practitioner, but only Organization")
    contained = patient("Target", contained=[{"resourceType": "Practitioner", "id": "gp"}],
                        generalPractitioner=[{"reference": "#gp"}])
    only_error_at(validator.check(contained), "Patient.generalPractitioner[0]", "Practitioner")


def test_type_slices_of_a_choice_element(tmp_path: Path) -> None:
    """value[x]:valueQuantity slices a choice element by type without stating the slicing."""
    validator = make_validator(tmp_path, profile("Obs", [
        element("Observation.value[x]:valueQuantity.unit", min=1)], type_name="Observation"))
    observation = {"resourceType": "Observation", "meta": {"profile": [f"{SD}/Obs"]},
                   "status": "final", "code": {"text": "x"}}
    assert validator.check({**observation, "valueString": "high"}) == []
    assert validator.check({**observation, "valueQuantity": {"value": 1, "unit": "kg"}}) == []
    only_error_at(validator.check({**observation, "valueQuantity": {"value": 1}}),
                  "Observation.value.ofType(Quantity).unit", "minimum cardinality is 1")


def test_slicing_by_profile(tmp_path: Path) -> None:
    """A profile discriminator puts an entry in the slice whose profile it conforms to."""
    named = profile("Named", [element("Patient.name", min=1)])
    bundle_profile = profile("Batch", [
        element("Bundle.entry", slicing={
            "discriminator": [{"type": "profile", "path": "resource"}], "rules": "open"}),
        element("Bundle.entry:named", min=1),
        element("Bundle.entry:named.resource",
                type=[{"code": "Patient", "profile": [f"{SD}/Named"]}])], type_name="Bundle")
    validator = make_validator(tmp_path, named, bundle_profile)

    def batch(*resources: dict[str, Any]) -> dict[str, Any]:
        """Return a Bundle claiming Batch with ``resources`` as entries."""
        return {"resourceType": "Bundle", "meta": {"profile": [f"{SD}/Batch"]},
                "type": "collection", "entry": [{"resource": r} for r in resources]}

    assert validator.check(batch({"resourceType": "Patient"},
                                 {"resourceType": "Patient", "name": [{"text": "A"}]})) == []
    only_error_at(validator.check(batch({"resourceType": "Patient"})), "Bundle.entry",
                  "Bundle.entry:named: minimum cardinality is 1, found 0")


def test_slicing_by_resource_type(tmp_path: Path) -> None:
    """A type discriminator sorts Bundle entries by the type of their resource."""
    validator = make_validator(tmp_path, profile("Typed", [
        element("Bundle.entry", slicing={
            "discriminator": [{"type": "type", "path": "resource"}], "rules": "closed"}),
        element("Bundle.entry:patient", min=1, max="1"),
        element("Bundle.entry:patient.resource", type=[{"code": "Patient"}]),
        element("Bundle.entry:team", max="1"),
        element("Bundle.entry:team.resource", type=[{"code": "CareTeam"}])], type_name="Bundle"))
    bundle = {"resourceType": "Bundle", "meta": {"profile": [f"{SD}/Typed"]},
              "type": "collection", "entry": [{"resource": {"resourceType": "CareTeam"}},
                                              {"resource": {"resourceType": "Patient"}}]}
    assert validator.check(bundle) == []
    bundle["entry"][1]["resource"] = {"resourceType": "Organization"}
    found = errors(validator.check(bundle))
    assert [expression for expression, _ in found] == ["Bundle.entry", "Bundle.entry[1]"]


def test_profile_on_profile_keeps_the_base_profile_rules(tmp_path: Path) -> None:
    """A derived profile adds to its base profile's rules, including inside its slices."""
    base = profile("Base", identifier_slices())
    derived = profile("Derived", [element("Patient.identifier:nhs.period", min=1),
                                  element("Patient.gender", min=1)], base=f"{SD}/Base")
    validator = make_validator(tmp_path, base, derived)
    nhs = {"system": NHS_NUMBER, "value": "9000000009", "period": {"start": "2020-01-01"}}
    assert validator.check(patient("Derived", identifier=[nhs], gender="male")) == []
    found = errors(validator.check(patient("Derived", identifier=[{"system": NHS_NUMBER}])))
    assert [expression for expression, _ in found] == [
        "Patient.identifier[0].value", "Patient.identifier[0].period", "Patient.gender"]


def test_profile_resolution_errors(tmp_path: Path) -> None:
    """Unknown, missing, mistyped and misspelt profiles are errors, not passes."""
    validator = make_validator(tmp_path, profile("Plain", []), profile(
        "Typo", [element("Patient.nmae", min=1)]), profile("Orphan", [], base=f"{SD}/Gone"))
    only_error_at(validator.check(patient("Nope")), "Patient", "profile")
    assert "is not known" in errors(validator.check(patient("Nope")))[0][1]
    only_error_at(validator.check({"resourceType": "Patient"}), "Patient.meta.profile",
                  "declares no profile")
    only_error_at(validator.check(patient("Typo")), "Patient", "Patient has no element nmae")
    only_error_at(validator.check(patient("Orphan")), "Patient", f"{SD}/Gone")
    only_error_at(validator.check({"resourceType": "Organization",
                                   "meta": {"profile": [f"{SD}/Plain"]}}),
                  "Organization", "constrains Patient, not Organization")
    with pytest.raises(ProfileError, match="nmae"):
        validator.profile(f"{SD}/Typo")


def test_profile_argument_overrides_meta_profile(tmp_path: Path) -> None:
    """A profile passed in is checked instead of the ones the resource declares."""
    validator = make_validator(tmp_path, profile("Card", [element("Patient.name", min=1)]),
                               profile("Plain", []))
    assert validator.check(patient("Card"), f"{SD}/Plain") == []
    assert errors(validator.check(patient("Plain"), f"{SD}/Card|1.0"))


def test_bundle_entries_are_checked_against_their_profiles(tmp_path: Path) -> None:
    """Each entry declaring a profile is checked, with its position in the expression."""
    validator = make_validator(tmp_path, profile("Card", [element("Patient.name", min=1)]))
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": patient("Card", name=[{"text": "A"}])},
        {"fullUrl": "urn:uuid:2", "resource": patient("Card")}]}
    only_error_at(validator.check(bundle, "http://hl7.org/fhir/StructureDefinition/Bundle"),
                  "Bundle.entry[1].resource.name", "minimum cardinality is 1")


def test_invariants_are_reported_as_not_evaluated(tmp_path: Path) -> None:
    """FHIRPath invariants are not evaluated and say so once, as information."""
    validator = make_validator(tmp_path, profile("Inv", [element("Patient.name", constraint=[
        {"key": "inv-1", "severity": "error", "human": "family or given",
         "expression": "family.exists() or given.exists()"}])]))
    found = validator.check(patient("Inv", name=[{"text": "a"}, {"text": "b"}]))
    assert [(i.severity, i.expression) for i in found] == [("information", "Patient.name[0]")]
    assert "inv-1 is not evaluated" in found[0].message


def test_canonical_base_substitution(tmp_path: Path) -> None:
    """Definitions written against the default base serve under another configured base."""
    other = "https://fhir.gateway.example.gov.uk"
    folder = write(tmp_path / "defs", profile("Local", [
        element("Patient.identifier.system", fixedUri=f"{BASE}/Id/contactpoint-id")]))
    validator = Validator(DefinitionRegistry([folder], other))
    resource = {"resourceType": "Patient",
                "meta": {"profile": [f"{other}/StructureDefinition/Local"]},
                "identifier": [{"system": f"{other}/Id/contactpoint-id", "value": "1"}]}
    assert validator.check(resource) == []
    resource["identifier"][0]["system"] = f"{BASE}/Id/contactpoint-id"
    only_error_at(validator.check(resource), "Patient.identifier[0].system", other)


def test_xml_definitions_are_read_safely(tmp_path: Path) -> None:
    """XML definitions are read like JSON ones; a DTD is refused."""
    folder = tmp_path / "xml"
    folder.mkdir()
    (folder / "sd.xml").write_text(
        '<StructureDefinition xmlns="http://hl7.org/fhir"><url value="urn:sd:card"/>'
        '<name value="Card"/><status value="draft"/><kind value="resource"/>'
        '<abstract value="false"/><type value="Patient"/>'
        '<baseDefinition value="http://hl7.org/fhir/StructureDefinition/Patient"/>'
        '<derivation value="constraint"/><differential><element id="Patient.name">'
        '<path value="Patient.name"/><min value="1"/></element></differential>'
        "</StructureDefinition>")
    validator = Validator(DefinitionRegistry([folder]))
    assert validator.profile("urn:sd:card").root.children["name"].min == 1
    assert errors(validator.check({"resourceType": "Patient"}, "urn:sd:card"))
    (folder / "evil.xml").write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]>'
                                     '<StructureDefinition xmlns="http://hl7.org/fhir"/>')
    with pytest.raises(ProfileError, match="DTD"):
        DefinitionRegistry([folder])


def test_operation_outcome() -> None:
    """Issues become OperationOutcome.issue entries; no issues is all OK."""
    outcome = to_operation_outcome([Issue("error", "required", "Patient.name", "missing")])
    assert outcome["issue"] == [{"severity": "error", "code": "required",
                                 "diagnostics": "missing", "expression": ["Patient.name"]}]
    assert to_operation_outcome([])["issue"][0]["severity"] == "information"


def test_default_validator_reads_schemas_and_given_folders(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() makes check_resource use schemas/fhir plus the folders given."""
    monkeypatch.setattr(conformance, "_DEFAULT", None)
    assert default_validator().registry.folders == (OWN_DEFINITIONS,)
    validator = configure([UK_CORE])
    assert default_validator() is validator
    assert validator.registry.folders == (OWN_DEFINITIONS, UK_CORE)
    assert check_resource(uk_patient(ENGLAND)) == []


# ---------------------------------------------------------------------------------------------
# UK Core


@pytest.fixture(scope="module")
def validator() -> Validator:
    """A validator over our own definitions and UK Core."""
    return Validator(DefinitionRegistry([OWN_DEFINITIONS, UK_CORE]))


def uk_patient(system: str = ENGLAND, value: str | None = "9000000009") -> dict[str, Any]:
    """Return a UK Core Patient with an NHS number and its verification status."""
    nhs: dict[str, Any] = {"extension": [{"url": VERIFICATION_EXT, "valueCodeableConcept": {
        "coding": [{"system": system, "code": "01", "display": "Number present and verified"}]}}],
        "system": NHS_NUMBER}
    if value is not None:
        nhs["value"] = value
    return {"resourceType": "Patient", "meta": {"profile": [f"{UKCORE}/UKCore-Patient"]},
            "identifier": [nhs], "name": [{"family": "Smith", "given": ["Alex"]}],
            "gender": "female", "birthDate": "2015-03-01",
            "managingOrganization": {"reference": "Organization/la-1"}}


def test_uk_core_patient_with_england_verification_status_passes(validator: Validator) -> None:
    """The England code system is in the required verification-status value set."""
    assert validator.check(uk_patient()) == []


def test_uk_core_pds_verification_code_system_fails(validator: Validator) -> None:
    """PDS's own code system is not in the required value set (docs/domain.md: re-code it)."""
    only_error_at(validator.check(uk_patient(PDS)),
                  "Patient.identifier[0].extension[0].value.ofType(CodeableConcept).coding[0]",
                  f"{PDS}|01 is not in the required value set")


def test_uk_core_nhs_number_needs_a_value(validator: Validator) -> None:
    """The nhsNumber slice makes value 1..1."""
    only_error_at(validator.check(uk_patient(value=None)), "Patient.identifier[0].value",
                  "Patient.identifier:nhsNumber.value: minimum cardinality is 1")


def test_uk_core_nhs_number_slice_max_and_extension_max(validator: Validator) -> None:
    """nhsNumber is 0..1; the verification status at most once on it."""
    resource = uk_patient()
    resource["identifier"].append(copy.deepcopy(resource["identifier"][0]))
    only_error_at(validator.check(resource), "Patient.identifier",
                  "Patient.identifier:nhsNumber: maximum cardinality is 1, found 2")
    resource = uk_patient()
    resource["identifier"][0]["extension"] *= 2
    only_error_at(validator.check(resource), "Patient.identifier[0].extension",
                  "nhsNumberVerificationStatus: maximum cardinality is 1")


def test_uk_core_verification_status_needs_a_value(validator: Validator) -> None:
    """The extension's own definition makes value[x] 1..1."""
    resource = uk_patient()
    resource["identifier"][0]["extension"][0] = {"url": VERIFICATION_EXT}
    only_error_at(validator.check(resource), "Patient.identifier[0].extension[0].value",
                  "Extension.value[x]: minimum cardinality is 1")


def test_uk_core_organization_ods_slice(validator: Validator) -> None:
    """UK Core Organization: the ODS code slice needs its value."""
    organization = {"resourceType": "Organization",
                    "meta": {"profile": [f"{UKCORE}/UKCore-Organization"]},
                    "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code"}]}
    only_error_at(validator.check(organization), "Organization.identifier[0].value",
                  "odsOrganisationCode.value: minimum cardinality is 1")
    organization["identifier"][0]["value"] = "A81001"
    assert validator.check(organization) == []


def test_uk_core_profiles_this_service_builds_on_compile(validator: Validator) -> None:
    """Every UK Core profile the service builds on compiles, with its extensions."""
    for name in ("Patient", "CareTeam", "Practitioner", "PractitionerRole", "Organization",
                 "Task", "AuditEvent", "Bundle"):
        assert validator.profile(f"{UKCORE}/UKCore-{name}").type == name


KEYS = st.sampled_from([
    "identifier", "system", "value", "extension", "modifierExtension", "url", "meta", "profile",
    "valueCodeableConcept", "coding", "code", "contained", "id", "reference", "_birthDate",
    "name", "contact", "relationship", "managingOrganization", "gender", "entry", "resource",
    "fullUrl", "type", "security", "text", "line", "_line"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.sampled_from([
    f"{UKCORE}/UKCore-Patient", NHS_NUMBER, VERIFICATION_EXT, "Organization/1", "#a",
    "urn:uuid:1", ENGLAND, f"{SD}/Extension-Unknown", "Patient"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=5)), max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resource_type=st.sampled_from(["Patient", "Bundle", "Organization", "NotAType"]),
       body=st.dictionaries(KEYS, JSON, max_size=8))
def test_hostile_input_gives_issues_not_exceptions(validator: Validator, resource_type: str,
                                                   body: dict[str, Any]) -> None:
    """Whatever JSON arrives, the checker answers with issues and never raises."""
    found = validator.check({**body, "resourceType": resource_type},
                            f"{UKCORE}/UKCore-Patient")
    assert all(isinstance(item, Issue) for item in found)


def test_deep_nesting_is_refused_not_crashed(validator: Validator) -> None:
    """Nesting deeper than the stack allows is a fatal issue, not a RecursionError."""
    deep: dict[str, Any] = {"url": "https://example.org/x", "valueString": "x"}
    for _ in range(3000):
        deep = {"url": "https://example.org/x", "extension": [deep]}
    found = validator.check(uk_patient() | {"extension": [deep]})
    assert found[-1].severity == "fatal" and "nested too deeply" in found[-1].message


# ---------------------------------------------------------------------------------------------
# Our own profiles in schemas/fhir: every one loads, resolves and admits a conforming instance


def own_definition_params() -> list[Any]:
    """Return one param per ``schemas/fhir/StructureDefinition-*.json``, or a failing marker."""
    paths = sorted(OWN_DEFINITIONS.glob("StructureDefinition-*.json"))
    if not paths:
        return [pytest.param(None, id="none-in-schemas-fhir")]
    return [pytest.param(path, id=path.stem) for path in paths]


def own_examples() -> list[dict[str, Any]]:
    """Return the example resources shipped in ``schemas/fhir/examples``."""
    folder = OWN_DEFINITIONS / "examples"
    return [orjson.loads(path.read_bytes()) for path in sorted(folder.glob("*.json"))]


SAMPLES: dict[str, Any] = {
    "boolean": True, "integer": 1, "unsignedInt": 0, "positiveInt": 1, "decimal": 1.5,
    "date": "2020-01-01", "dateTime": "2020-01-01T00:00:00Z", "instant": "2020-01-01T00:00:00Z",
    "time": "12:00:00", "uri": "urn:example", "url": "https://example.org",
    "canonical": "https://example.org/x", "uuid": "urn:uuid:0f6f8bd2-c08b-4b42-9a36-1b0b6a0b6b8d",
    "oid": "urn:oid:1.2.3", "id": "example", "base64Binary": "ZXhhbXBsZQ==",
}


class InstanceBuilder:
    """Builds the smallest instance a compiled profile admits, from its rules alone."""

    def __init__(self, validator: Validator) -> None:
        self.validator = validator

    def resource(self, url: str) -> dict[str, Any]:
        """Return a minimal instance of resource profile ``url`` claiming it."""
        compiled = self.validator.profile(url)
        built = self.fill({"resourceType": compiled.type}, compiled.root, compiled.type)
        built.setdefault("meta", {})["profile"] = [url]
        return built

    def extension(self, url: str) -> dict[str, Any]:
        """Return a minimal instance of extension ``url``."""
        return self.fill({"url": url}, self.validator.profile(url).root, "Extension")

    def value(self, rule: ElementRule, type_code: str, enum: frozenset[str] | None = None) -> Any:
        """Return a minimal value for ``rule`` of type ``type_code`` (``enum``: base codes)."""
        if rule.fixed is not None:
            return copy.deepcopy(rule.fixed[1])
        start = copy.deepcopy(rule.pattern[1]) if rule.pattern is not None else None
        coded = self.coded(rule, type_code)
        if coded is not None:
            return coded
        if is_primitive(type_code):
            return start if start is not None else (
                sorted(enum)[0] if enum else SAMPLES.get(type_code, "example"))
        if type_code == "Reference" and rule.target_types:
            return {"reference": f"{sorted(rule.target_types)[0]}/example"}
        if type_code == "Extension" and rule.extension_urls:
            return self.extension(rule.extension_urls[0])
        return self.fill(start or {}, rule, type_code) or self.sample(type_code)

    @staticmethod
    def sample(type_code: str) -> dict[str, Any]:
        """Return a non-empty value of a complex type (FHIR forbids empty elements)."""
        fields = type_fields(type_code)
        preferred = [n for n in ("text", "value", "display", "reference", "code", "start")
                     if n in fields]
        name = (preferred or [n for n, spec in fields.items() if spec.primitive and n != "id"])[0]
        return {name: SAMPLES.get(fields[name].type_code, "example")}

    def coded(self, rule: ElementRule, type_code: str) -> Any:
        """Return a code from the bound value set in the shape of ``type_code``, if bound."""
        if rule.binding is None or rule.binding.strength not in ("required", "extensible"):
            return None
        codes = self.validator.terminology.codes(rule.binding.value_set)
        if codes is None or not any(codes.codes.values()):
            return None
        system = next(s for s, c in codes.codes.items() if c)
        code = sorted(codes.codes[system])[0]
        shapes = {"Coding": {"system": system, "code": code},
                  "CodeableConcept": {"coding": [{"system": system, "code": code}]}}
        return shapes.get(type_code, code)

    def fill(self, built: dict[str, Any], rule: ElementRule, type_code: str) -> dict[str, Any]:
        """Add to ``built`` every child the rule requires, and every required slice."""
        fields = type_fields(type_code)
        for name, child in rule.children.items():
            key, child_type = self.key_and_type(name, child, fields)
            enum = fields[key].enum if key in fields else None
            items = [self.value(s.rule, child_type, enum)
                     for s in child.slices for _ in range(s.rule.min)]
            items += [self.value(child, child_type, enum)
                      for _ in range(child.min - len(items))]
            if items and (key not in fields or fields[key].is_list):
                built[key] = built.get(key, []) + items
            elif items:
                built[key] = items[0]
        return built

    @staticmethod
    def key_and_type(name: str, rule: ElementRule, fields: Any) -> tuple[str, str]:
        """Return the JSON name and type of an element (the first allowed type of a choice)."""
        if rule.choice_keys is None:
            spec = fields.get(name)
            return name, spec.type_code if spec else "string"
        wanted = sorted(rule.type_codes)[0] if rule.type_codes else "string"
        key = next(k for k, code in rule.choice_keys.items() if code == wanted)
        return key, wanted


def is_primitive(type_code: str) -> bool:
    """Return whether a type code is a FHIR primitive (lower-case first letter)."""
    return type_code[:1].islower()


@pytest.mark.parametrize("path", own_definition_params())
def test_own_definition(path: Path | None, validator: Validator) -> None:
    """Each of our StructureDefinitions loads, builds on a resolvable base and compiles."""
    assert path is not None, f"no StructureDefinition-*.json in {OWN_DEFINITIONS}"
    definition = orjson.loads(path.read_bytes())
    assert definition["resourceType"] == "StructureDefinition"
    assert definition["url"].startswith(f"{BASE}/StructureDefinition/")
    base = definition["baseDefinition"]
    assert core_type(base) or validator.registry.structure_definition(base), base
    if definition["type"] != "Extension":
        assert base.startswith(f"{UKCORE}/UKCore-"), "a profile builds on a UK Core profile"
    assert validator.profile(definition["url"]).type == definition["type"]


@pytest.mark.parametrize("path", own_definition_params())
def test_own_definition_admits_a_minimal_instance(path: Path | None, validator: Validator) -> None:
    """The smallest instance built from each definition's rules conforms to it."""
    assert path is not None, f"no StructureDefinition-*.json in {OWN_DEFINITIONS}"
    url = orjson.loads(path.read_bytes())["url"]
    builder = InstanceBuilder(validator)
    if validator.profile(url).type == "Extension":
        found = validator.check_value(builder.extension(url), url, "Extension")
    else:
        found = validator.check(builder.resource(url))
    assert not has_errors(found), errors(found)


@pytest.mark.parametrize("path", own_definition_params())
def test_own_definition_enforces_its_required_elements(path: Path | None,
                                                       validator: Validator) -> None:
    """Leaving out any element a resource profile requires fails the check."""
    assert path is not None, f"no StructureDefinition-*.json in {OWN_DEFINITIONS}"
    url = orjson.loads(path.read_bytes())["url"]
    if validator.profile(url).type == "Extension":
        return
    minimal = InstanceBuilder(validator).resource(url)
    for key in required_keys(validator.profile(url).root):
        broken = {k: v for k, v in minimal.items() if k != key}
        assert has_errors(validator.check(broken, url)), f"{url}: {key} left out, still passes"


def required_keys(root: ElementRule) -> Iterator[str]:
    """Return the top-level JSON names a profile requires (choice elements left out)."""
    for name, child in root.children.items():
        if child.choice_keys is None and name != "meta" and (
                child.min or any(s.rule.min for s in child.slices)):
            yield name


def test_own_examples_conform(validator: Validator) -> None:
    """Every example shipped in schemas/fhir/examples conforms to the profiles it claims."""
    for example in own_examples():
        assert example.get("meta", {}).get("profile"), f"{example.get('id')}: no meta.profile"
        found = validator.check(example)
        assert not has_errors(found), (example.get("id"), errors(found))
