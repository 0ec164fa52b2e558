"""FHIR R4 XML writer and reader (adapter.fhir.xml, adapter.xmlsafe).

Validity is proven here rather than on the serving path: every output
validates against the official R4 XSD, parses with fhir.resources to the same resource as
the JSON, and reads back to the same dict; the official UK Core XML files read and write back
unchanged; hostile XML is refused quickly without reading a file or opening a socket.
"""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapter.errors import BadRequest, GatewayError, Invalid
from adapter.fhir import xml as fhir_xml
from adapter.fhir.xml import dumps_resource, loads_resource
from adapter.xmlsafe import DTD_REFUSED, iterparse_safe, parse_bytes
from tests.conftest import CONFORMANCE

FHIR_R4 = CONFORMANCE / "fhir-r4"
UK_CORE_FILES = sorted((CONFORMANCE / "uk-core").glob("*/*.xml"))
# An official UK Core 2.0.0 file with a stray "c" after </display> (line 37): not valid
# FHIR XML, and the R4 XSD rejects it too (test_broken_official_file_is_refused).
BROKEN_UK_CORE_FILE = "CodeSystem-UKCore-EthnicCategoryScotland.xml"
XHTML = "http://www.w3.org/1999/xhtml"
BASE = "https://fhir.contactpoint-gateway.example.org"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
VERIFICATION_EXT = ("https://fhir.hl7.org.uk/StructureDefinition/"
                    "Extension-UKCore-NHSNumberVerificationStatus")
VERIFICATION_CS = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    """The official FHIR R4 schema (fhir-single.xsd), compiled once (~0.1 s)."""
    return etree.XMLSchema(etree.parse(str(FHIR_R4 / "fhir-single.xsd")))


def assert_xsd_valid(schema: etree.XMLSchema, xml: bytes) -> None:
    """Assert ``xml`` validates against the R4 schema, showing the first errors if not."""
    valid = schema.validate(etree.fromstring(xml))
    assert valid, "\n".join(str(error) for error in list(schema.error_log)[:5])


def without_element_ids(value: Any) -> Any:
    """Return a model dump without Element.id (kept only on resources).

    fhir.resources 8.3 (fhir_core 1.1.12) drops the ``id`` attribute of every element but
    Extension when it reads XML (model_validate_xml), and writes it as a child element when it
    writes XML; its JSON path keeps it. Our round trip test checks ids exactly.
    """
    if isinstance(value, list):
        items = [without_element_ids(item) for item in value]
        return [None if item == {} else item for item in items]
    if not isinstance(value, dict):
        return value
    keep_id = "resourceType" in value or "url" in value
    stripped = {key: without_element_ids(item) for key, item in value.items()
                if key != "id" or keep_id}
    return {key: item for key, item in stripped.items()
            if item != {} and not (key.startswith("_") and item == [None] * len(item))}


def starts_with_a_null(value: Any) -> bool:
    """Return True if a repeating primitive in ``value`` has no value in its first item.

    fhir_core 1.1.12 cannot read those from XML: ``xml_utils.Node.to_fhir`` deletes a value
    list that is all null while it is still filling it, so the next item's value moves up
    (and its extension stays behind) or the read fails with a KeyError. Our XML for them is
    checked by the XSD and by our own round trip (test_leading_null_given_round_trips).
    """
    if isinstance(value, list):
        return any(starts_with_a_null(item) for item in value)
    if isinstance(value, dict):
        return any((key.startswith("_") and isinstance(item, list)
                    and value.get(key[1:], [None])[0] is None) or starts_with_a_null(item)
                   for key, item in value.items())
    return False


def assert_same_as_fhir_resources(resource: dict[str, Any], xml: bytes) -> None:
    """Assert fhir.resources reads ``xml`` to the same resource as the JSON dict."""
    if starts_with_a_null(resource):
        return
    model = get_fhir_model_class(resource["resourceType"])
    from_xml = model.model_validate_xml(xml).model_dump(exclude_none=True)
    from_json = model.model_validate(resource).model_dump(exclude_none=True)
    assert without_element_ids(from_xml) == without_element_ids(from_json)


# ---------------------------------------------------------------------------------------------
# Resources as the mappings build them


def reference(target: str, display: str | None = None) -> dict[str, Any]:
    """Return a Reference."""
    return {"reference": target, **({"display": display} if display else {})}


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    """Return a CodeableConcept with one coding."""
    return {"coding": [{"system": system, "code": code, "display": display}]}


def make_patient() -> dict[str, Any]:
    """A child with every feature of the writer: primitive extensions, nulls, contained..."""
    return {
        "resourceType": "Patient", "id": "cp-0001",
        "meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:15:00Z",
                 "profile": [f"{BASE}/StructureDefinition/ContactPointGateway-Patient"],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                         "v3-Confidentiality", "code": "R"}]},
        "text": {"status": "generated",
                 "div": f'<div xmlns="{XHTML}"><p class="name">Amelia &amp; Rose '
                        '<b>SMITH</b><br/>born 2015 &lt; 2016</p></div>'},
        "contained": [{"resourceType": "Organization", "id": "la",
                       "identifier": [{"system": f"{BASE}/Id/gss-code", "value": "E08000035"}],
                       "name": "Leeds City Council"}],
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                       "valueAddress": {"city": "Leeds", "country": "GB"}}],
        "identifier": [
            {"extension": [{"url": VERIFICATION_EXT, "valueCodeableConcept": concept(
                VERIFICATION_CS, "01", "Number present and verified")}],
             "system": NHS_NUMBER, "value": "9990000018"},
            {"id": "upn", "system": f"{BASE}/Id/upn", "value": "A123456789012"}],
        "active": True,
        "name": [{"use": "usual", "family": "Smith", "given": ["Amelia", None, "Rose"],
                  "_given": [None, {"extension": [{
                      "url": "http://hl7.org/fhir/StructureDefinition/iso21090-nullFlavor",
                      "valueCode": "MSK"}]}, {"id": "g3"}]},
                 {"use": "old", "family": "Jones", "period": {"end": "2019-04-01"}}],
        "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "home", "rank": 1}],
        "gender": "female", "_gender": {"id": "gender"},
        "birthDate": "2015-03-14",
        "_birthDate": {"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
            "valueDateTime": "2015-03-14T07:20:00+00:00"}]},
        "deceasedDateTime": "2026-01-02",
        "address": [{"use": "home", "line": ["12 Acacia Avenue", "Flat 2"], "city": "Leeds",
                     "postalCode": "LS1 4AB", "country": "GB",
                     "period": {"start": "2022-09-01"}}],
        "multipleBirthInteger": 2,
        "contact": [{"relationship": [concept(
            "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "MTH", "mother")],
            "name": {"family": "Smith", "given": ["Helen"]},
            "telecom": [{"system": "email", "value": "helen.smith@example.org"}]}],
        "generalPractitioner": [{"identifier": {"system": ODS, "value": "B86001"},
                                 "display": "Park Surgery"}],
        "managingOrganization": reference("#la", "Leeds City Council"),
    }


def make_organization() -> dict[str, Any]:
    """A GP practice."""
    return {"resourceType": "Organization", "id": "ods-B86001",
            "identifier": [{"system": ODS, "value": "B86001"}], "active": True,
            "type": [concept("http://terminology.hl7.org/CodeSystem/organization-type",
                             "prov", "Healthcare Provider")],
            "name": "Park Surgery",
            "telecom": [{"system": "phone", "value": "0113 496 0123"}],
            "address": [{"line": ["1 Park Road"], "city": "Leeds", "postalCode": "LS2 9AA"}]}


def make_practitioner() -> dict[str, Any]:
    """A health visitor."""
    return {"resourceType": "Practitioner", "id": "prac-1",
            "identifier": [{"system": f"{BASE}/Id/practitioner", "value": "P-1"}],
            "name": [{"family": "Khan", "given": ["Samira"], "prefix": ["Ms"]}],
            "telecom": [{"system": "email", "value": "s.khan@example.nhs.uk", "use": "work"}]}


def make_practitioner_role() -> dict[str, Any]:
    """The health visitor's role at the practice."""
    return {"resourceType": "PractitionerRole", "id": "role-1", "active": True,
            "period": {"start": "2024-01-01"},
            "practitioner": reference("Practitioner/prac-1"),
            "organization": reference("Organization/ods-B86001"),
            "code": [concept("http://snomed.info/sct", "159001000", "Health visitor")],
            "telecom": [{"system": "phone", "value": "0113 496 0456", "use": "work"}]}


def make_care_team() -> dict[str, Any]:
    """A Team Around the Child with a lead professional."""
    return {"resourceType": "CareTeam", "id": "tac-1",
            "identifier": [{"system": f"{BASE}/Id/ecaf-assessment", "value": "ECAF-77"}],
            "status": "active",
            "category": [concept("http://loinc.org", "LA28865-6",
                                 "Longitudinal care-coordination")],
            "subject": reference("Patient/cp-0001"),
            "period": {"start": "2025-05-01"},
            "participant": [{
                "extension": [{"url": f"{BASE}/StructureDefinition/"
                                      "Extension-ContactPointGateway-LeadProfessional",
                               "valueBoolean": True}],
                "role": [concept("http://snomed.info/sct", "159001000", "Health visitor")],
                "member": reference("PractitionerRole/role-1"),
                "onBehalfOf": reference("Organization/ods-B86001"),
                "period": {"start": "2025-05-01", "end": "2026-05-01"}}],
            "managingOrganization": [reference("Organization/la-383")]}


def make_outcome() -> dict[str, Any]:
    """An error outcome with an expression."""
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid",
                       "diagnostics": 'unknown element "nickname" <line 3>',
                       "expression": ["Patient.name[0].nickname"]}]}


def make_searchset() -> dict[str, Any]:
    """A search result with a match and an include."""
    return {"resourceType": "Bundle", "id": "search-1", "type": "searchset", "total": 1,
            "link": [{"relation": "self", "url": f"{BASE}/fhir/Patient?identifier=x"}],
            "entry": [{"fullUrl": f"{BASE}/fhir/Patient/cp-0001", "resource": make_patient(),
                       "search": {"mode": "match", "score": 0.75}},
                      {"fullUrl": f"{BASE}/fhir/CareTeam/tac-1", "resource": make_care_team(),
                       "search": {"mode": "include"}}]}


def make_transaction_response() -> dict[str, Any]:
    """A transaction response with an outcome resource inside an entry."""
    return {"resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "201 Created",
                                    "location": "Patient/cp-0001/_history/1",
                                    "etag": 'W/"1"', "lastModified": "2026-11-20T10:15:00Z",
                                    "outcome": make_outcome()}}]}


def make_parameters() -> dict[str, Any]:
    """Parameters with values of several types, parts and a resource."""
    return {"resourceType": "Parameters",
            "parameter": [{"name": "return", "resource": make_patient()},
                          {"name": "count", "valueInteger": 3},
                          {"name": "strict", "valueBoolean": False},
                          {"name": "bounds", "part": [
                              {"name": "low", "valueDecimal": 1.5},
                              {"name": "high", "valueDecimal": 120},
                              {"name": "code", "valueCodeableConcept": concept(
                                  "http://snomed.info/sct", "1", "x")}]}]}


def make_task() -> dict[str, Any]:
    """A purge instruction."""
    return {"resourceType": "Task", "id": "purge-1", "status": "requested", "intent": "order",
            "code": concept(f"{BASE}/CodeSystem/task-code", "purge", "Purge"),
            "authoredOn": "2026-08-06T12:00:00Z", "owner": reference("Organization/x"),
            "input": [{"type": concept(f"{BASE}/CodeSystem/task-input", "record", "Record"),
                       "valueReference": reference("Patient/cp-0001")}],
            "output": [{"type": concept(f"{BASE}/CodeSystem/task-output", "purged", "Purged"),
                        "valueUnsignedInt": 12}]}


def make_audit_event() -> dict[str, Any]:
    """A read of a child's record."""
    return {"resourceType": "AuditEvent", "id": "audit-1",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                     "code": "rest"},
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
            "action": "R", "recorded": "2026-11-20T10:15:00.123Z", "outcome": "0",
            "agent": [{"who": reference("Device/client-1"), "requestor": True}],
            "source": {"observer": reference("Device/gateway")},
            "entity": [{"what": reference("Patient/cp-0001")}]}


def make_subscription() -> dict[str, Any]:
    """A rest-hook subscription."""
    return {"resourceType": "Subscription", "id": "sub-1", "status": "active",
            "reason": "Keep the local directory current", "criteria": "Patient?organization=x",
            "channel": {"type": "rest-hook", "endpoint": "https://la.example.org/hook",
                        "payload": "application/fhir+json",
                        "header": ["Authorization: Bearer abc"]}}


EXAMPLES: dict[str, Callable[[], dict[str, Any]]] = {
    "patient": make_patient, "organization": make_organization,
    "practitioner": make_practitioner, "practitioner-role": make_practitioner_role,
    "care-team": make_care_team, "operation-outcome": make_outcome,
    "searchset": make_searchset, "transaction-response": make_transaction_response,
    "parameters": make_parameters, "task": make_task, "audit-event": make_audit_event,
    "subscription": make_subscription,
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_is_valid_equivalent_and_round_trips(schema: etree.XMLSchema, name: str) -> None:
    """Each example validates against the R4 XSD, matches fhir.resources, and reads back."""
    resource = EXAMPLES[name]()
    original = copy.deepcopy(resource)
    xml = dumps_resource(resource)
    assert resource == original
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?><')
    assert_xsd_valid(schema, xml)
    assert_same_as_fhir_resources(resource, xml)
    assert loads_resource(xml) == resource


def test_patient_xml_follows_the_fhir_xml_rules() -> None:
    """Order, value attributes, id/url attributes, nulls, contained and the div (xml.html)."""
    root = etree.fromstring(dumps_resource(make_patient()))
    ns = "{http://hl7.org/fhir}"
    names = [etree.QName(child).localname for child in root]
    assert names[:6] == ["id", "meta", "text", "contained", "extension", "identifier"]
    assert names.index("gender") < names.index("birthDate") < names.index("deceasedDateTime")
    assert root.find(f"{ns}active").attrib == {"value": "true"}
    given = root.findall(f"{ns}name/{ns}given")
    assert [g.get("value") for g in given[:3]] == ["Amelia", None, "Rose"]
    assert given[1][0].get("url").endswith("nullFlavor") and given[2].get("id") == "g3"
    assert root.find(f"{ns}gender").attrib == {"value": "female", "id": "gender"}
    assert root.find(f"{ns}contained/{ns}Organization/{ns}name").get("value") == \
        "Leeds City Council"
    div = root.find(f"{ns}text/{{{XHTML}}}div")
    assert div is not None and div.find(f"{{{XHTML}}}p/{{{XHTML}}}b").text == "SMITH"
    assert root.find(f"{ns}identifier/{ns}extension").get("url") == VERIFICATION_EXT


def test_leading_null_given_round_trips(schema: etree.XMLSchema) -> None:
    """A first given name with only an extension is an empty-valued element, then the rest."""
    masked = {"extension": [{"url": "http://x", "valueCode": "MSK"}]}
    resource = {"resourceType": "Patient",
                "name": [{"given": [None, "Rose"], "_given": [masked, None]}]}
    xml = dumps_resource(resource)
    assert b'<given><extension url="http://x"><valueCode value="MSK"/></extension></given>' \
           b'<given value="Rose"/>' in xml
    assert_xsd_valid(schema, xml)
    assert starts_with_a_null(resource)
    assert loads_resource(xml) == resource


def test_strings_keep_markup_characters_and_line_ends(schema: etree.XMLSchema) -> None:
    """Escaping: &, <, >, quotes, tabs and line ends survive the trip (XML 1.0 3.3.3)."""
    resource = make_outcome()
    resource["issue"][0]["diagnostics"] = 'a & b < c > d "e" \'f\'\tg\nh\r\ni ]]> \u00e9\u4e2d'
    xml = dumps_resource(resource)
    assert_xsd_valid(schema, xml)
    assert loads_resource(xml) == resource


def test_decimals_are_written_as_given_and_read_as_numbers(schema: etree.XMLSchema) -> None:
    """Decimals: ints stay ints, floats are not written in exponent form (xs:decimal)."""
    resource = make_parameters()
    part = resource["parameter"][3]["part"]
    part[0]["valueDecimal"], part[1]["valueDecimal"] = 1e-7, 12345678901234567890
    xml = dumps_resource(resource)
    assert b'value="0.0000001"' in xml and b'value="12345678901234567890"' in xml
    assert_xsd_valid(schema, xml)
    assert loads_resource(xml) == resource


# ---------------------------------------------------------------------------------------------
# Definitions: the tables are the R4 shapes of the official XSD

XS = "{http://www.w3.org/2001/XMLSchema}"


def xsd_types() -> dict[str, tuple[str | None, list[tuple[str, bool, str]], list[str]]]:
    """Return each complex type of fhir-single.xsd: (base, [(element, repeats, type)], attrs)."""
    types: dict[str, tuple[str | None, list[tuple[str, bool, str]], list[str]]] = {}
    for complex_type in etree.parse(str(FHIR_R4 / "fhir-single.xsd")).getroot().iterfind(
            f"{XS}complexType"):
        extension = complex_type.find(f"{XS}complexContent/{XS}extension")
        holder = complex_type if extension is None else extension
        elements: list[tuple[str, bool, str]] = []
        for item in holder.iterfind(f"{XS}sequence/*"):
            options = [item] if item.tag == f"{XS}element" else item.findall(f"{XS}element")
            repeats = item.get("maxOccurs") == "unbounded"
            elements += [(o.get("name") or o.get("ref") or "", repeats, o.get("type") or "")
                         for o in options]
        types[complex_type.get("name") or ""] = (
            None if extension is None else extension.get("base"), elements,
            [a.get("name") or "" for a in holder.iterfind(f"{XS}attribute")])
    return types


def xsd_elements(types: dict[str, Any], name: str) -> tuple[list[tuple[str, bool, str]],
                                                             list[str]]:
    """Return the elements and attributes of an XSD type, its bases' first."""
    base, elements, attributes = types[name]
    if base in types:
        base_elements, base_attributes = xsd_elements(types, base)
        return base_elements + elements, base_attributes + attributes
    return elements, attributes


def xsd_kind(types: dict[str, Any], type_name: str) -> int:
    """Return the table kind an XSD element type corresponds to."""
    if type_name == "ResourceContainer":
        return fhir_xml._RESOURCE
    if type_name == "":  # <xs:element ref="xhtml:div">
        return fhir_xml._XHTML
    base, elements, attributes = types[type_name]
    if base == "Element" and not elements and attributes == ["value"]:
        return {"boolean": fhir_xml._BOOL, "integer": fhir_xml._INT,
                "positiveInt": fhir_xml._INT, "unsignedInt": fhir_xml._INT,
                "decimal": fhir_xml._DEC}.get(type_name, fhir_xml._STR)
    return fhir_xml._COMPLEX


def compare_with_xsd(table: fhir_xml.TypeTable, xsd_name: str, types: dict[str, Any],
                     seen: set[str], gaps: list[str]) -> None:
    """Assert ``table`` has the XSD type's elements, order, cardinality and kinds."""
    if xsd_name in seen:
        return
    seen.add(xsd_name)
    elements, attributes = xsd_elements(types, xsd_name)
    ours = {name: field for name, field in table.fields.items()
            if field[0] not in (fhir_xml._ATTR, fhir_xml._COMPANION)}
    assert list(table.attrs) == attributes, xsd_name
    order = [name for name in sorted(ours, key=table.order.__getitem__)
             if ours[name][0] != fhir_xml._R4B_ONLY]
    xsd_order = []
    for name, repeats, type_name in elements:
        name = "div" if name == "xhtml:div" else name
        if name not in ours:
            gaps.append(f"{xsd_name}.{name}")
            continue
        xsd_order.append(name)
        kind, child, our_repeats, _tag, _companion = ours[name]
        assert (kind, our_repeats) == (xsd_kind(types, type_name), repeats), \
            f"{xsd_name}.{name}"
        if kind == fhir_xml._COMPLEX:
            compare_with_xsd(child, type_name, types, seen, gaps)
    assert order == xsd_order, xsd_name


def test_tables_match_the_official_r4_schema() -> None:
    """Every supported resource's table is its R4 shape (the R4B models agree with R4 here).

    The only R4 elements the tables lack are the ``Meta`` choices of open types (R4B dropped
    Meta from value[x]; nothing here emits one) and ``modifierExtension`` on the types the XSD
    generator wrongly makes backbone elements (Timing.repeat, ElementDefinition.slicing, ...;
    fhir.schema.json README lists the same quirk). R4B-only choices are marked, not written.
    """
    types = xsd_types()
    seen: set[str] = set()
    gaps: list[str] = []
    for resource_type in sorted(fhir_xml.R4_RESOURCE_TYPES):
        compare_with_xsd(fhir_xml.resource_table(resource_type), resource_type, types, seen,
                         gaps)
    unexplained = [gap for gap in gaps if not gap.endswith(("Meta", ".modifierExtension"))]
    assert unexplained == []
    assert any(gap.endswith("Extension.valueMeta") for gap in gaps)


def test_r4b_only_elements_are_refused_both_ways() -> None:
    """An element typed with an R4B data type fails loudly rather than being written."""
    resource = make_patient()
    resource["extension"] = [{"url": "http://x", "valueCodeableReference": {
        "reference": reference("Condition/1")}}]
    with pytest.raises(ValueError, match=r"only in FHIR R4B.*Patient\.extension\[0\]"):
        dumps_resource(resource)
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><extension url="http://x">'
           b'<valueCodeableReference><reference><reference value="Condition/1"/></reference>'
           b'</valueCodeableReference></extension></Patient>')
    with pytest.raises(Invalid) as caught:
        loads_resource(xml)
    assert caught.value.expression == "Patient.extension[0].valueCodeableReference"


def test_tables_are_built_once() -> None:
    """The tables are computed once per process and shared."""
    assert fhir_xml.resource_table("Patient") is fhir_xml.resource_table("Patient")
    assert fhir_xml.element_table() is fhir_xml.element_table()


# ---------------------------------------------------------------------------------------------
# Official UK Core conformance resources (real XML written by HL7 UK's tooling)


def canonical(data: bytes) -> bytes:
    """Return ``data`` in canonical XML without comments and indentation."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    return etree.tostring(etree.fromstring(data, parser), method="c14n")


@pytest.mark.parametrize("path", [p for p in UK_CORE_FILES if p.name != BROKEN_UK_CORE_FILE],
                         ids=lambda p: p.stem)
def test_official_uk_core_file_reads_and_writes_back(schema: etree.XMLSchema,
                                                     path: Path) -> None:
    """Reading then writing an official file gives the same XML, valid and equivalent."""
    data = path.read_bytes()
    resource = loads_resource(data)
    xml = dumps_resource(resource)
    assert canonical(xml) == canonical(data)
    assert_xsd_valid(schema, xml)
    model = get_fhir_model_class(resource["resourceType"])
    assert without_element_ids(model.model_validate_xml(data).model_dump(exclude_none=True)) \
        == without_element_ids(model.model_validate(resource).model_dump(exclude_none=True))


def test_uk_core_files_are_all_there() -> None:
    """The conformance folder holds the 378 files the README lists."""
    assert len(UK_CORE_FILES) == 153 + 88 + 134 + 3


def test_broken_official_file_is_refused(schema: etree.XMLSchema) -> None:
    """Stray text in an official file is refused with its place, as the XSD refuses it."""
    data = (CONFORMANCE / "uk-core" / "codesystems" / BROKEN_UK_CORE_FILE).read_bytes()
    assert not schema.validate(etree.fromstring(data))
    with pytest.raises(Invalid, match="line 37") as caught:
        loads_resource(data)
    assert caught.value.expression == "CodeSystem.concept[3]"


# ---------------------------------------------------------------------------------------------
# Property tests over generated children

# FHIR R4 string: [ \r\n\t\S]+ (datatypes.html); XML 1.0 characters only (section 2.2).
fhir_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs"),
                  blacklist_characters="\ufffe\uffff") | st.sampled_from(' &<>"\'\t\n'),
    min_size=1, max_size=12).filter(lambda text: not text.isspace())
codes = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
urls = st.sampled_from([VERIFICATION_EXT, "http://example.org/ext/a", "urn:oid:1.2.3"])
dates = st.dates().filter(lambda d: d.year >= 1000).map(lambda d: d.isoformat())
element_ids = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)


@st.composite
def extensions(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Return one to two simple extensions."""
    values = st.one_of(
        fhir_text.map(lambda text: {"valueString": text}),
        st.booleans().map(lambda flag: {"valueBoolean": flag}),
        st.integers(-2**31, 2**31 - 1).map(lambda number: {"valueInteger": number}),
        codes.map(lambda code: {"valueCodeableConcept": {"coding": [
            {"system": VERIFICATION_CS, "code": code}]}}))
    return draw(st.lists(st.builds(lambda url, value: {"url": url, **value}, urls, values),
                         min_size=1, max_size=2))


def optional(draw: st.DrawFn, target: dict[str, Any], key: str,
             strategy: st.SearchStrategy[Any]) -> None:
    """Set ``target[key]`` from ``strategy`` half of the time."""
    if draw(st.booleans()):
        target[key] = draw(strategy)


@st.composite
def human_names(draw: st.DrawFn) -> dict[str, Any]:
    """Return a HumanName, its given names possibly null with extensions (json.html)."""
    name: dict[str, Any] = {"family": draw(fhir_text)}
    optional(draw, name, "use", st.sampled_from(["usual", "official", "old", "nickname"]))
    givens = draw(st.lists(st.one_of(st.none(), fhir_text), min_size=1, max_size=3))
    extras = [draw(st.one_of(st.none(), st.builds(lambda x: {"extension": x}, extensions())))
              if given is not None else {"extension": draw(extensions())} for given in givens]
    name["given"] = givens
    if any(extra is not None for extra in extras):
        name["_given"] = extras
    optional(draw, name, "period", dates.map(lambda day: {"start": day}))
    return name


@st.composite
def identifiers(draw: st.DrawFn) -> dict[str, Any]:
    """Return an Identifier, sometimes with an extension and an id."""
    identifier: dict[str, Any] = {"system": draw(urls), "value": draw(fhir_text)}
    optional(draw, identifier, "extension", extensions())
    optional(draw, identifier, "id", element_ids)
    return identifier


@st.composite
def addresses(draw: st.DrawFn) -> dict[str, Any]:
    """Return an Address with a period."""
    address: dict[str, Any] = {"line": draw(st.lists(fhir_text, min_size=1, max_size=3)),
                               "period": {"start": draw(dates)}}
    optional(draw, address, "postalCode", fhir_text)
    optional(draw, address, "use", st.sampled_from(["home", "temp", "old"]))
    return address


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    """Return a Patient-like dict as the mappings could build it."""
    patient: dict[str, Any] = {"resourceType": "Patient",
                               "id": draw(st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True))}
    optional(draw, patient, "identifier", st.lists(identifiers(), min_size=1, max_size=3))
    optional(draw, patient, "name", st.lists(human_names(), min_size=1, max_size=2))
    optional(draw, patient, "telecom", st.lists(st.builds(
        lambda system, value: {"system": system, "value": value},
        st.sampled_from(["phone", "email", "sms"]), fhir_text), min_size=1, max_size=2))
    optional(draw, patient, "gender", st.sampled_from(["male", "female", "other", "unknown"]))
    optional(draw, patient, "_gender", st.builds(lambda x: {"extension": x}, extensions()))
    optional(draw, patient, "birthDate", dates)
    optional(draw, patient, "address", st.lists(addresses(), min_size=1, max_size=2))
    return patient


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(patient=patients())
def test_generated_patients_are_valid_equivalent_and_round_trip(schema: etree.XMLSchema,
                                                                patient: dict[str, Any]) -> None:
    """For generated children the XML is XSD-valid, fhir.resources-equivalent and reversible."""
    xml = dumps_resource(patient)
    assert_xsd_valid(schema, xml)
    assert_same_as_fhir_resources(patient, xml)
    assert loads_resource(xml) == patient


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.sampled_from([
    b"<Patient xmlns='http://hl7.org/fhir'><name><given value='A'/></name></Patient>",
    b"<Patient xmlns='http://hl7.org/fhir'><gender value='female' id='g'/></Patient>",
]).flatmap(lambda doc: st.integers(0, len(doc)).map(lambda cut: doc[:cut])))
def test_any_bytes_give_a_result_or_a_gateway_error(data: bytes) -> None:
    """Garbage and truncated documents end as a 400/422 error, never another exception."""
    try:
        loads_resource(data)
    except GatewayError as error:
        assert error.status in (400, 422)


# ---------------------------------------------------------------------------------------------
# Hostile input: refused in well under a second, no file read, no socket


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe: opening it for reading blocks until a writer comes, so a parser that
    tried to read it would hang, and the test would see the time pass."""
    path = tmp_path / "secret"
    os.mkfifo(path)
    yield path
    try:  # release a reader that should never have come
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def refused_quickly(data: bytes, error: type[GatewayError] = BadRequest) -> GatewayError:
    """Return the error ``loads_resource`` raises for ``data``, asserting it took < 0.5 s."""
    outcome: list[BaseException] = []

    def parse() -> None:
        try:
            loads_resource(data)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=parse, daemon=True)
    started = time.perf_counter()
    worker.start()
    worker.join(timeout=2)
    assert not worker.is_alive(), "the parser blocked: it tried to read an external file"
    assert time.perf_counter() - started < 0.5
    assert len(outcome) == 1 and isinstance(outcome[0], error), outcome
    return outcome[0]


def test_xxe_is_refused() -> None:
    """An external entity pointing at /etc/passwd is refused; nothing of the file shows."""
    data = (b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<Patient xmlns="http://hl7.org/fhir"><id value="&e;"/></Patient>')
    error = refused_quickly(data)
    assert error.message == DTD_REFUSED and "root:" not in str(error.to_outcome())


@pytest.mark.parametrize("template", [
    b'<!DOCTYPE Patient [<!ENTITY e SYSTEM "file://%s">]><Patient xmlns="http://hl7.org/fhir">'
    b'<id value="&e;"/></Patient>',
    b'<!DOCTYPE Patient [<!ENTITY %% p SYSTEM "file://%s"> %%p;]>'
    b'<Patient xmlns="http://hl7.org/fhir"/>',
    b'<!DOCTYPE Patient SYSTEM "file://%s"><Patient xmlns="http://hl7.org/fhir"/>',
], ids=["external-entity", "parameter-entity", "external-dtd"])
def test_external_files_are_never_opened(fifo: Path, template: bytes) -> None:
    """Entities and DTDs naming a file are refused without the file being opened."""
    error = refused_quickly(template % str(fifo).encode())
    assert error.message == DTD_REFUSED


def test_external_dtd_over_the_network_is_never_fetched() -> None:
    """A DTD on a (local) server is refused and the server sees no connection."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        data = (b'<?xml version="1.0"?>\n<!-- a comment first -->\n<!DOCTYPE Patient SYSTEM '
                b'"http://127.0.0.1:%d/fhir.dtd"><Patient xmlns="http://hl7.org/fhir"/>' % port)
        assert refused_quickly(data).message == DTD_REFUSED
        with pytest.raises(TimeoutError):
            server.accept()


def test_billion_laughs_is_refused() -> None:
    """Nested entity expansion is refused before any expansion."""
    entities = b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 12))
    data = (b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY l0 "lol">' + entities +
            b']><Patient xmlns="http://hl7.org/fhir"><id value="&l11;"/></Patient>')
    assert refused_quickly(data).message == DTD_REFUSED


def test_a_dtd_the_prolog_check_cannot_see_is_refused_after_parsing(fifo: Path) -> None:
    """In UTF-16 the byte-level prolog check sees nothing; the parsed DOCTYPE still fails."""
    text = (f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE Patient [<!ENTITY e SYSTEM '
            f'"file://{fifo}">]><Patient xmlns="http://hl7.org/fhir"><id value="&e;"/>'
            f'</Patient>')
    assert refused_quickly(text.encode("utf-16")).message == DTD_REFUSED


def test_deep_nesting_is_refused() -> None:
    """Documents nested beyond libxml2's default depth limit (huge_tree off) are refused."""
    data = b"<a>" * 100_000 + b"</a>" * 100_000
    assert "Malformed XML" in refused_quickly(data).message


def test_malformed_xml_names_line_and_column() -> None:
    """A well-formedness error answers 400 with where it is."""
    data = b'<Patient xmlns="http://hl7.org/fhir">\n  <id value="x">\n</Patient>'
    error = refused_quickly(data)
    assert error.message.startswith("Malformed XML at line 3, column ")


@pytest.mark.parametrize(("body", "expression", "reason"), [
    (b'<name><nickname value="Jo"/></name>', "Patient.name[0].nickname", "unknown element"),
    (b'<name><given value="A"/><given value="B" colour="red"/></name>', "Patient.name[0].given[1]",
     "unknown attribute"),
    (b"<gender>female</gender>", "Patient.gender", "text content"),
    (b'<gender value="female"/><gender value="male"/>', "Patient.gender", "more than once"),
    (b'<active value="yes"/>', "Patient.active", "not a valid boolean"),
    (b'<multipleBirthInteger value="1.5"/>', "Patient.multipleBirthInteger",
     "not a valid integer"),
    (b"<name/>", "Patient.name[0]", "ele-1"),
    (b"<contained/>", "Patient.contained[0]", "exactly one resource"),
    (b"<contained><Observation/></contained>", "Patient.contained[0]", "not supported"),
    (b'<x:name xmlns:x="urn:other"/>', "Patient.{urn:other}name", "unknown element"),
])
def test_unknown_or_misplaced_content_is_invalid(body: bytes, expression: str,
                                                 reason: str) -> None:
    """Content that is not FHIR R4 answers 422 with an expression naming the element."""
    data = b'<Patient xmlns="http://hl7.org/fhir">' + body + b"</Patient>"
    error = refused_quickly(data, Invalid)
    assert error.expression == expression and reason in error.message


@pytest.mark.parametrize(("data", "expression"), [
    (b"<Patient/>", "Patient"), (b'<Observation xmlns="http://hl7.org/fhir"/>', "Observation"),
    (b'<Patient xmlns="http://hl7.org/fhir" id="x"/>', "Patient"),
    (b'<Patient xmlns="urn:not-fhir"/>', "{urn:not-fhir}Patient"),
])
def test_root_must_be_a_supported_fhir_resource(data: bytes, expression: str) -> None:
    """The root element is a FHIR resource of a supported type, without attributes."""
    assert refused_quickly(data, Invalid).expression == expression


def test_comments_and_processing_instructions_are_dropped() -> None:
    """Comments and PIs carry no FHIR content (xml.html) and are not returned."""
    data = (b'<?xml version="1.0"?><!-- c --><?pi x?><Patient xmlns="http://hl7.org/fhir">'
            b'<!-- c --><id value="a"/><?pi y?></Patient>')
    assert loads_resource(data) == {"resourceType": "Patient", "id": "a"}


def test_prefixed_narrative_is_returned_with_the_default_namespace() -> None:
    """A div written with a prefix comes back as FHIR JSON writes a div."""
    data = (b'<f:Patient xmlns:f="http://hl7.org/fhir" xmlns:h="http://www.w3.org/1999/xhtml">'
            b'<f:text><f:status value="generated"/><h:div><h:p>x</h:p></h:div></f:text>'
            b'</f:Patient>')
    assert loads_resource(data)["text"]["div"] == f'<div xmlns="{XHTML}"><p>x</p></div>'


# ---------------------------------------------------------------------------------------------
# The shared hardened parser


def test_parse_bytes_and_iterparse_accept_plain_documents(tmp_path: Path) -> None:
    """The helpers parse ordinary documents and stream records."""
    assert parse_bytes(b"<batch><r/><r/></batch>").tag == "batch"
    path = tmp_path / "batch.xml"
    path.write_bytes(b"<batch><r>1</r><r>2</r></batch>")
    assert [element.text for _event, element in iterparse_safe(str(path), tag="r")] == ["1", "2"]


def test_iterparse_refuses_a_dtd_before_the_first_record(tmp_path: Path, fifo: Path) -> None:
    """A streamed document with a DTD is refused before any record is handed out."""
    path = tmp_path / "batch.xml"
    path.write_bytes(b'<!DOCTYPE batch [<!ENTITY e SYSTEM "file://%s">]><batch><r>&e;</r>'
                     b"</batch>" % str(fifo).encode())
    records = iterparse_safe(str(path), tag="r")
    with pytest.raises(BadRequest, match="DTD"):
        next(records)


def test_iterparse_reports_where_a_stream_breaks(tmp_path: Path) -> None:
    """A well-formedness error in a stream names its line."""
    path = tmp_path / "batch.xml"
    path.write_bytes(b"<batch>\n<r>1</r>\n<r>2</q>\n</batch>")
    with pytest.raises(BadRequest, match="line 3"):
        list(iterparse_safe(str(path)))


# ---------------------------------------------------------------------------------------------
# The writer fails loudly on what is not FHIR R4


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["name"][0].update(nickname="Jo"), r"HumanName has no element 'nickname'.*"
                                                   r"Patient\.name\[0\]\.nickname"),
    (lambda r: r.update(gender=None), r"null.*Patient\.gender"),
    (lambda r: r.update(active="yes"), r"JSON type str.*Patient\.active"),
    (lambda r: r.update(multipleBirthInteger=True), r"JSON type bool"),
    (lambda r: r.update(name=[]), r"non-empty array.*Patient\.name"),
    (lambda r: r.update(managingOrganization={}), r"non-empty object"),
    (lambda r: r["name"][0].update(given=["A"]), r"differ in length"),
    (lambda r: r["contained"][0].update(resourceType="Observation"), r"'Observation' is not"),
    (lambda r: r["text"].update(div="<p>no namespace</p>"), r"div xmlns"),
    (lambda r: r["text"].update(div="<div"), r"not well-formed"),
    (lambda r: r["telecom"][0].update(value="bell\x07"), r"XML 1.0 cannot carry"),
    (lambda r: r["name"][0].update(id=7), r"id must be a string"),
])
def test_writer_refuses_what_fhir_r4_cannot_say(change: Callable[[dict[str, Any]], Any],
                                                message: str) -> None:
    """A mapping bug surfaces as a ValueError naming the element, never as odd XML."""
    resource = make_patient()
    change(resource)
    with pytest.raises(ValueError, match=message):
        dumps_resource(resource)


def test_writer_refuses_unsupported_resource_types() -> None:
    """Only the resource types this service declares are written."""
    with pytest.raises(ValueError, match="'Observation' is not supported"):
        dumps_resource({"resourceType": "Observation", "status": "final"})
