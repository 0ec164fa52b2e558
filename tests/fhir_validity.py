"""Validity checks shared by the golden tests and the XML tests over many records: the official
FHIR R4 schema (compiled once per session), fhir.resources R4B validation of JSON and XML, and
the structural invariants (no empty elements)."""

from __future__ import annotations

import functools
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from tests.conftest import CONFORMANCE
from tests.fhir.test_xml import starts_with_a_null, without_element_ids

R4_XSD = CONFORMANCE / "fhir-r4" / "fhir-single.xsd"


@functools.cache
def r4_schema() -> etree.XMLSchema:
    """The official FHIR R4 schema (fhir-single.xsd), compiled once per session (~0.1 s)."""
    return etree.XMLSchema(etree.parse(str(R4_XSD)))


def xsd_errors(schema: etree.XMLSchema, xml: bytes | etree._Element) -> list[str]:
    """Return the first schema errors of ``xml`` (empty when valid)."""
    root = etree.fromstring(xml) if isinstance(xml, bytes) else xml
    if schema.validate(root):
        return []
    return str(schema.error_log).splitlines()[:5]


def r4b_model(resource: dict[str, Any]) -> Any:
    """Return the fhir.resources R4B model of ``resource`` (validating it)."""
    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def xml_model_matches_json(resource: dict[str, Any], xml: bytes) -> bool:
    """Return whether fhir.resources reads ``xml`` to the same resource as the JSON dict.

    fhir.resources 8.3 drops element ids when reading XML and cannot read repeating primitives
    whose first item has no value (tests/fhir/test_xml.py): both dumps are compared without
    element ids, and resources of the second kind are refused here rather than skipped.
    """
    assert not starts_with_a_null(resource), "fhir.resources cannot read this XML"
    model = get_fhir_model_class(resource["resourceType"])
    from_xml = model.model_validate_xml(xml).model_dump(exclude_none=True)
    from_json = model.model_validate(resource).model_dump(exclude_none=True)
    return bool(without_element_ids(from_xml) == without_element_ids(from_json))


def empty_json_elements(value: Any, path: str) -> list[str]:
    """Return the paths of empty elements (FHIR R4 json.html: no empty objects, arrays,
    strings or nulls; null is allowed only inside a ``_name`` companion array)."""
    if value in ("", [], {}, None):
        return [path]
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("_") and isinstance(item, list):
                found += [f"{path}.{key}[{i}]" for i, x in enumerate(item) if x in ("", [], {})]
                continue
            found += empty_json_elements(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += empty_json_elements(item, f"{path}[{index}]")
    return found


def empty_xml_elements(root: etree._Element) -> list[str]:
    """Return the paths of elements with no attribute, no child element and no text."""
    tree = root.getroottree()
    return [tree.getpath(element) for element in root.iter(etree.Element)
            if not element.attrib and len(element) == 0 and not (element.text or "").strip()]
