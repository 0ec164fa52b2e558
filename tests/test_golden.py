"""Golden files (``tests/golden/<case>/``, see its README): the mappings give exactly the stored,
reviewed outputs for each hand-written canonical input, and every output is valid and honest:

- FHIR JSON passes fhir.resources R4B validation, declares ``meta.profile`` and conforms to it
  (the profile checker reads our StructureDefinitions and UK Core's);
- FHIR XML validates against the official R4 schema, reads back (``loads_resource``) to the
  JSON resource, and fhir.resources reads it to the same resource as the JSON;
- directory XML validates against our XSDs and reads back to the input;
- every reference resolves to a resource of the case or to the id the service derives from a
  natural key of the input; no element is empty; every value traces to the input.

Outputs are regenerated only with ``make golden`` (``python -m tests.golden_regen``) and
reviewed in the diff.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree

from adapter import identifiers
from adapter.directory import loads_assessment, loads_entry
from adapter.directory.schema import ASSESSMENT_XSD, ENTRY_XSD, load_schema
from adapter.fhir.xml import dumps_resource, loads_resource
from adapter.identifiers import resource_id_for
from adapter.models.canonical import (
    canonical_assessment_dump,
    canonical_dump,
    organisation_key,
)
from adapter.retention import retention_date
from adapter.systems import DEFAULT_CANONICAL_BASE
from tests.fhir_validity import (
    empty_json_elements,
    empty_xml_elements,
    r4_schema,
    r4b_model,
    xml_model_matches_json,
    xsd_errors,
)
from tests.golden_regen import (
    CHILD_FILES,
    ECAF_FILES,
    GOLDEN,
    build_case_assessment,
    build_case_child,
    case_names,
    child_data,
    fhir_resources,
    load_input,
    render,
)
from tests.mapping.helpers import conformance_errors

CASES = case_names()
BLANK_FREE = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
# Output keys whose strings are codes, URIs or ids (not personal data): their provenance is the
# mapping files, the ConceptMaps and the id derivation, checked by other tests.
CODE_KEYS = frozenset({"resourceType", "id", "reference", "system", "url", "code", "use",
                       "status", "gender", "valueCode", "profile"})
URL_PREFIXES = ("http://", "https://", "urn:")


def stored(case: str, name: str) -> bytes:
    """Return a stored output file of a case."""
    return (GOLDEN / case / name).read_bytes()


def c14n(xml: bytes) -> bytes:
    """Return ``xml`` as canonical XML without insignificant blank text."""
    return etree.tostring(etree.fromstring(xml, BLANK_FREE), method="c14n")


def expected_files(case: str) -> set[str]:
    """Return the output files a case must have."""
    ecaf = load_input(case).get("assessment") is not None
    return set(CHILD_FILES) | (set(ECAF_FILES) if ecaf else set())


def stored_resources(case: str) -> dict[str, dict[str, Any]]:
    """Return the stored FHIR JSON outputs of a case by stem."""
    return {name.removesuffix(".json"): json.loads(stored(case, name))
            for name in sorted(expected_files(case)) if name.endswith(".json")}


# --- the outputs are the reviewed files ---------------------------------------------------------

def test_there_are_enough_cases_covering_the_acceptance_list() -> None:
    """At least 12 cases, among them the ones named below."""
    assert len(CASES) >= 12
    assert {"plain-child", "shielded-child", "sensitive-service-with-consent",
            "sensitive-service-significant-harm", "lead-professional", "ecaf-closed",
            "previous-names-moved-address", "deceased-child", "care-leaver-retained",
            "missing-optional-data"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_mapping_the_input_gives_the_stored_outputs(case: str) -> None:
    """Each output file equals what the mappings make of the input (JSON as data, XML as
    canonical XML), and the folder holds no other file."""
    rendered = render(load_input(case))
    assert set(rendered) == expected_files(case)
    assert {p.name for p in (GOLDEN / case).iterdir()} == set(rendered) | {"input.json"}
    for name, content in rendered.items():
        if name.endswith(".json"):
            assert json.loads(content) == json.loads(stored(case, name)), name
        else:
            assert c14n(content) == c14n(stored(case, name)), name


@pytest.mark.parametrize("case", CASES)
def test_rendering_is_deterministic(case: str) -> None:
    """Rendering a case twice gives the same bytes (``make golden`` is idempotent)."""
    assert render(load_input(case)) == render(load_input(case))


@pytest.mark.parametrize("case", CASES)
def test_input_is_a_canonical_record(case: str) -> None:
    """The input is exactly ``canonical_dump`` of the record it builds (every key, right
    types), its derived retention date is the service's, and its identifiers are valid test
    identifiers (NHS numbers from the never-issued 999 range)."""
    data = load_input(case)
    child = build_case_child(data)
    assert canonical_dump(child) == child_data(data)
    assert data["retention_date"] == retention_date(data["birth_date"], data["death_date"],
                                                    data["extended_retention"])
    identifiers.validate_contactpoint_id(data["contactpoint_id"])
    if data["nhs_number"] is not None:
        assert identifiers.validate_nhs_number(data["nhs_number"]).startswith("999")
    if data["upn"] is not None:
        identifiers.validate_upn(data["upn"])
    assessment = build_case_assessment(data, child)
    if assessment is not None:
        dumped = canonical_assessment_dump(assessment)
        assert {k: v for k, v in dumped.items() if k != "child"} == data["assessment"]


# --- FHIR JSON and XML ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_fhir_json_is_valid_declares_and_meets_its_profile(case: str) -> None:
    """fhir.resources R4B accepts each resource; it declares a profile of this service and
    the profile checker finds no error; no element is empty."""
    for stem, resource in stored_resources(case).items():
        r4b_model(resource)
        profiles = resource["meta"]["profile"]
        assert profiles and all(p.startswith(DEFAULT_CANONICAL_BASE) for p in profiles), stem
        assert conformance_errors(resource) == [], stem
        assert empty_json_elements(resource, stem) == []


@pytest.mark.parametrize("case", CASES)
def test_fhir_xml_is_schema_valid_and_the_same_resource(case: str) -> None:
    """The XML validates against the official R4 XSD, reads back to the JSON resource, and
    fhir.resources reads it to the same resource as the JSON; no element is empty."""
    schema = r4_schema()
    for stem, resource in stored_resources(case).items():
        for xml in (stored(case, f"{stem}.xml"), dumps_resource(resource)):
            assert xsd_errors(schema, xml) == [], stem
            assert loads_resource(xml) == resource, stem
            assert empty_xml_elements(etree.fromstring(xml, BLANK_FREE)) == [], stem
        assert xml_model_matches_json(resource, dumps_resource(resource)), stem


# --- directory XML -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_directory_xml_is_valid_and_reads_back_to_the_input(case: str) -> None:
    """The DirectoryEntry (and AssessmentReference) validate against our XSDs, have no empty
    element, and read back to exactly the input."""
    data = load_input(case)
    entry = etree.fromstring(stored(case, "directory.xml"), BLANK_FREE)
    assert xsd_errors(load_schema(ENTRY_XSD), entry) == []
    assert empty_xml_elements(entry) == []
    assert loads_entry(stored(case, "directory.xml")).data == child_data(data)
    if data.get("assessment") is None:
        return
    reference = etree.fromstring(stored(case, "assessment.xml"), BLANK_FREE)
    assert xsd_errors(load_schema(ASSESSMENT_XSD), reference) == []
    assert empty_xml_elements(reference) == []
    record = loads_assessment(stored(case, "assessment.xml"))
    child = build_case_child(data)
    assert record.data == {**data["assessment"], "child": {
        "contactpoint_id": child.contactpoint_id, "nhs_number": child.nhs_number,
        "upn": child.upn, "local_identifiers": data["local_identifiers"]}}


# --- references --------------------------------------------------------------------------------

def _walk(value: Any, key: str | None = None,
          parent: dict[str, Any] | None = None) -> Iterator[tuple[str | None, Any, dict[str, Any]]]:
    """Yield (key, value, containing object) for every leaf and object of a JSON value."""
    if isinstance(value, dict):
        yield key, value, parent or {}
        for k, item in value.items():
            yield from _walk(item, k, value)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key, parent)
    else:
        yield key, value, parent or {}


def _organisations(data: Any) -> Iterator[dict[str, Any]]:
    """Yield every organisation dict of an input."""
    for _key, value, _parent in _walk(data):
        if isinstance(value, dict) and "la_number" in value and "type" in value:
            yield value


def derived_ids(case: str) -> dict[str, dict[str, Any]]:
    """Return, by resource type, the ids the service derives from the input's natural keys
    (adapter.store.records) with the identifier that names each."""
    data = json.loads(stored(case, "input.json"))
    cpid = data["contactpoint_id"]
    own = f"{DEFAULT_CANONICAL_BASE}/Id/"
    systems = {"ods": "https://fhir.nhs.uk/Id/ods-organization-code", "urn": own + "school-urn",
               "gss": own + "gss-code"}
    ids: dict[str, dict[str, Any]] = {
        "Patient": {resource_id_for("Patient", cpid): (own + "contactpoint-id", cpid)},
        "Organization": {}, "Practitioner": {}, "PractitionerRole": {}}
    for org in _organisations(data):
        scheme, code = organisation_key(org)
        ids["Organization"][resource_id_for("Organization", code)] = (systems[scheme], code)

    def role_key(part: dict[str, Any]) -> str:
        person = part["practitioner"]["local_id"] if part["practitioner"] else ""
        org_code = organisation_key(part["organisation"])[1]
        return f"{part['role']}/{org_code}/{person}/{part.get('period_start') or ''}"

    for _key, value, _parent in _walk(data):
        if isinstance(value, dict) and "local_id" in value:
            code = organisation_key(value["organisation"])[1]
            ids["Practitioner"][resource_id_for("Practitioner", f"{code}/{value['local_id']}")] \
                = None
    for involvement in data["involvements"]:
        ids["PractitionerRole"][resource_id_for(
            "PractitionerRole", f"{cpid}/{role_key(involvement)}")] = None
    if data.get("assessment"):
        aid = data["assessment"]["assessment_id"]
        ids["PractitionerRole"][resource_id_for("PractitionerRole", f"ecaf/{aid}/lead")] = None
        for member in data["assessment"]["members"]:
            ids["PractitionerRole"][resource_id_for(
                "PractitionerRole", f"ecaf/{aid}/{role_key(member)}")] = None
    return ids


def unresolved_references(resources: dict[str, dict[str, Any]],
                          ids: dict[str, dict[str, Any]]) -> tuple[list[str], int]:
    """Return the references of ``resources`` that name neither one of them nor a derived id
    (or whose identifier names another resource), and how many references there are."""
    known = {kind: dict(values) for kind, values in ids.items()}
    for resource in resources.values():
        known.setdefault(resource["resourceType"], {}).setdefault(resource["id"], None)
    bad, count = [], 0
    for stem, resource in resources.items():
        for key, value, parent in _walk(resource):
            if key != "reference" or not isinstance(value, str):
                continue
            count += 1
            kind, _, rid = value.partition("/")
            if rid not in known.get(kind, {}):
                bad.append(f"{stem}: {value} resolves to nothing")
            elif "identifier" in parent and known[kind][rid] != (
                    parent["identifier"]["system"], parent["identifier"]["value"]):
                bad.append(f"{stem}: {value} and its identifier name different resources")
    return bad, count


@pytest.mark.parametrize("case", CASES)
def test_references_resolve(case: str) -> None:
    """Every reference names a resource of the case or the derived id of an organisation,
    practitioner, PractitionerRole or the child of the input; where it carries an identifier,
    that identifier names the same resource."""
    bad, count = unresolved_references(stored_resources(case), derived_ids(case))
    assert bad == []
    assert count >= 3


@pytest.mark.parametrize("case", CASES)
def test_fhir_ids_are_the_derived_ones(case: str) -> None:
    """The Patient's id is derived from the ContactPoint ID, the child's CareTeam's from
    ``team/<ContactPoint ID>`` and the eCAF CareTeam's from ``ecaf/<assessment id>``."""
    data = load_input(case)
    resources = fhir_resources(data)
    cpid = data["contactpoint_id"]
    assert resources["patient"]["id"] == resource_id_for("Patient", cpid)
    assert resources["careteam"]["id"] == resource_id_for("CareTeam", f"team/{cpid}")
    if "ecaf-careteam" in resources:
        aid = data["assessment"]["assessment_id"]
        assert resources["ecaf-careteam"]["id"] == resource_id_for("CareTeam", f"ecaf/{aid}")


# --- no invented values --------------------------------------------------------------------------

def input_strings(case: str) -> set[str]:
    """Return every value of the input as text: strings as written, numbers, booleans as
    xs:boolean and instants also in the ``Z`` form."""
    data = json.loads(stored(case, "input.json"))
    out: set[str] = set()
    for _key, value, _parent in _walk(data):
        if isinstance(value, bool):
            out.add("true" if value else "false")
        elif isinstance(value, str | int):
            out.add(str(value))
    out |= {text.replace("+00:00", "Z") for text in out if text.endswith("+00:00")}
    return out


def _traceable_display(text: str, known: set[str]) -> bool:
    """Return whether a Reference.display is made of input values (a name is its parts joined
    by spaces, a role "<practitioner>, <organisation>")."""
    words = {word for value in known for word in value.split()}
    return all(word in words for part in text.split(", ") for word in part.split())


def untraced_json(resource: dict[str, Any], known: set[str]) -> list[str]:
    """Return the strings of a resource that neither occur in the input nor are codes, URIs,
    ids or the display of a code."""
    out = []
    for key, value, parent in _walk(resource):
        if not isinstance(value, str) or key in CODE_KEYS or value.startswith(URL_PREFIXES):
            continue
        if key == "display" and "code" in parent:
            continue  # a Coding's display: from the code's CodeSystem or ConceptMap
        if key == "display" and "reference" in parent and _traceable_display(value, known):
            continue
        if value not in known:
            out.append(f"{key}={value!r}")
    return out


def untraced_xml(root: etree._Element, known: set[str]) -> list[str]:
    """Return the texts and attribute values of a directory document not in the input."""
    out = []
    for element in root.iter(etree.Element):
        values = [*element.attrib.values(), (element.text or "").strip()]
        out += [f"{etree.QName(element).localname}={v!r}" for v in values
                if v and v not in known]
    return out


@pytest.mark.parametrize("case", CASES)
def test_every_output_value_traces_to_the_input(case: str) -> None:
    """No invented values: every string of the FHIR outputs that is not a code, URI or id,
    and every text and attribute of the directory XML, occurs in the input."""
    known = input_strings(case)
    for stem, resource in stored_resources(case).items():
        assert untraced_json(resource, known) == [], stem
    for name in sorted(expected_files(case)):
        if name in ("directory.xml", "assessment.xml"):
            assert untraced_xml(etree.fromstring(stored(case, name)), known) == [], name


def test_the_invariant_checks_catch_planted_faults() -> None:
    """The checks above fail on an invented value, an empty element, a dangling reference
    and a reference whose identifier names another organisation (they are not vacuous)."""
    case = "plain-child"
    known = input_strings(case)
    resources = stored_resources(case)
    patient = resources["patient"]
    assert untraced_json(patient, known) == []
    patient["name"][0]["given"].append("Invented")
    patient["birthDate"] = "2018-05-15"
    assert untraced_json(patient, known) == ["given='Invented'", "birthDate='2018-05-15'"]
    patient["name"][0]["suffix"] = []
    assert empty_json_elements(patient, "Patient") == ["Patient.name[0].suffix"]
    ids = derived_ids(case)
    assert unresolved_references(resources, ids)[0] == []
    patient["generalPractitioner"][0]["reference"] = "Organization/unknown"
    patient["managingOrganization"]["identifier"]["value"] = "E10000990"
    assert unresolved_references(resources, ids)[0] == [
        "patient: Organization/unknown resolves to nothing",
        f"patient: {patient['managingOrganization']['reference']} and its identifier name "
        "different resources"]
    entry = etree.fromstring(stored(case, "directory.xml"), BLANK_FREE)
    assert untraced_xml(entry, known) == [] and empty_xml_elements(entry) == []
    entry[0].text, entry[2].text = "CP000000000", ""
    assert untraced_xml(entry, known) == ["ContactPointId='CP000000000'"]
    assert len(empty_xml_elements(entry)) == 1
