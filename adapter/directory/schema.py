"""The directory XML dialect's namespace, its XSDs (compiled once per thread) and schema
errors turned into ``Invalid`` errors that name the element but never repeat its value.

The XSDs are published artefacts in ``schemas/xml`` (docs/architecture.md "Schemas are published
artefacts"); ``schemas/xml/README.md`` documents the namespace and its versioning.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Final

from lxml import etree

from adapter.errors import Invalid

NS: Final = "urn:contactpoint-gateway:directory:1"
_PREFIX: Final = "{" + NS + "}"
SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "schemas" / "xml"
ENTRY_XSD: Final = "directory-entry.xsd"
ASSESSMENT_XSD: Final = "ecaf-assessment.xsd"
REPORT_XSD: Final = "import-report.xsd"
DECOMMISSION_XSD: Final = "decommission.xsd"
CERTIFICATE_XSD: Final = "certificate.xsd"
SCHEMA_FILES: Final = ("common.xsd", ENTRY_XSD, ASSESSMENT_XSD, REPORT_XSD, DECOMMISSION_XSD,
                       CERTIFICATE_XSD)

# lxml validators keep the last error log on the schema object, so each thread compiles its
# own copy (lxml FAQ, "Is lxml thread safe?") rather than sharing one.
_compiled = threading.local()


def q(local: str) -> str:
    """Return the qualified (Clark notation) name of ``local`` in the directory namespace."""
    return _PREFIX + local


def local_name(tag: object) -> str:
    """Return the local part of an element tag (``""`` for comments and PIs)."""
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def load_schema(name: str) -> etree.XMLSchema:
    """Return the compiled XSD ``name`` of ``schemas/xml``, compiled once per thread."""
    cache: dict[str, etree.XMLSchema] = _compiled.__dict__.setdefault("schemas", {})
    schema = cache.get(name)
    if schema is None:
        # Our own files: entities and the network stay off all the same.
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        schema = etree.XMLSchema(etree.parse(str(SCHEMA_DIR / name), parser))
        cache[name] = schema
    return schema


# libxml2 error types whose messages name only elements and attributes, never a value.
_STRUCTURAL: Final = frozenset({
    "SCHEMAV_ELEMENT_CONTENT", "SCHEMAV_CVC_ELT_1", "SCHEMAV_CVC_TYPE_3_1_2",
    "SCHEMAV_CVC_COMPLEX_TYPE_2_1", "SCHEMAV_CVC_COMPLEX_TYPE_2_3", "SCHEMAV_CVC_COMPLEX_TYPE_2_4",
    "SCHEMAV_CVC_COMPLEX_TYPE_3_2_1", "SCHEMAV_CVC_COMPLEX_TYPE_3_2_2",
    "SCHEMAV_CVC_COMPLEX_TYPE_4",
})
# Messages of the value checks, written out here because libxml2's quote the value.
_VALUE_REASONS: Final = {
    "SCHEMAV_CVC_PATTERN_VALID": "the value does not have the required format",
    "SCHEMAV_CVC_ENUMERATION_VALID": "the value is not one of the allowed codes",
    "SCHEMAV_CVC_MAXLENGTH_VALID": "the value is longer than allowed",
    "SCHEMAV_CVC_MINLENGTH_VALID": "the value is shorter than allowed",
    "SCHEMAV_CVC_LENGTH_VALID": "the value does not have the required length",
    "SCHEMAV_CVC_MININCLUSIVE_VALID": "the value is below the allowed minimum",
    "SCHEMAV_CVC_MAXINCLUSIVE_VALID": "the value is above the allowed maximum",
    "SCHEMAV_CVC_MINEXCLUSIVE_VALID": "the value is below the allowed minimum",
    "SCHEMAV_CVC_MAXEXCLUSIVE_VALID": "the value is above the allowed maximum",
}
# Names of the XSD types a reader understands, for datatype errors.
_TYPE_NAMES: Final = {
    "DateType": "date (YYYY-MM-DD)", "xs:date": "date (YYYY-MM-DD)",
    "DateTimeType": "date and time with a time zone",
    "xs:dateTime": "date and time with a time zone",
    "xs:boolean": "boolean (true or false)", "xs:positiveInteger": "whole number above 0",
    "xs:nonNegativeInteger": "whole number",
}
_SUBJECT_RE: Final = re.compile(r"Element '[^']*'(?:, attribute '([^']*)')?: ")
_TYPE_RE: Final = re.compile(r"of the atomic type '([^']*)'\.?$")
_STEP_RE: Final = re.compile(r"(\*|[^/\[\]]+)(?:\[(\d+)\])?")


def schema_reason(entry: etree._LogEntry) -> str:
    """Return what a schema error says, without the offending value."""
    message = entry.message or ""
    subject = _SUBJECT_RE.match(message)
    rest = message[subject.end():] if subject else message
    if entry.type_name in _STRUCTURAL:
        return re.sub(r"\{[^}]*\}", "", rest).strip()
    if entry.type_name in _VALUE_REASONS:
        return _VALUE_REASONS[entry.type_name]
    if entry.type_name.startswith("SCHEMAV_CVC_DATATYPE_VALID") and (
            found := _TYPE_RE.search(rest)):
        type_name = re.sub(r"\{[^}]*\}", "", found.group(1))
        return f"the value is not a valid {_TYPE_NAMES.get(type_name, type_name)}"
    return f"the content does not match the directory schema ({entry.type_name})"


def _resolve(record: etree._Element, path: str) -> etree._Element:
    """Return the element at libxml2's node ``path`` relative to ``record`` (or ``record``)."""
    node = record
    for step in path.split("/")[2:]:
        match = _STEP_RE.fullmatch(step)
        if match is None:
            return node
        name, number = match.group(1), int(match.group(2) or 1)
        candidates = [c for c in node if isinstance(c.tag, str)
                      and (name == "*" or local_name(c.tag) == name)]
        if number > len(candidates):
            return node
        node = candidates[number - 1]
    return node


def element_path(record: etree._Element, node: etree._Element) -> str:
    """Return ``node``'s path from ``record``, e.g. ``DirectoryEntry/Involvement[2]/Role``.

    Steps are local names, with a 1-based index where an element has siblings of its name.
    """
    steps: list[str] = []
    current: etree._Element | None = node
    while current is not None:
        step = local_name(current.tag)
        parent = current.getparent()
        if current is not record and parent is not None:
            same = [c for c in parent if c.tag == current.tag]
            if len(same) > 1:
                step = f"{step}[{same.index(current) + 1}]"
        steps.append(step)
        if current is record:
            break
        current = parent
    return "/".join(reversed(steps))


def schema_error(record: etree._Element, entry: etree._LogEntry) -> Invalid:
    """Return an ``Invalid`` error for one schema error of ``record``."""
    expression = element_path(record, _resolve(record, entry.path or "/*"))
    subject = _SUBJECT_RE.match(entry.message or "")
    if subject and subject.group(1):
        expression = f"{expression}/@{subject.group(1)}"
    return Invalid(schema_reason(entry), expression=expression)


def validate_element(schema: etree.XMLSchema, element: etree._Element) -> None:
    """Validate one element (a record, or a whole document's root) against ``schema``.

    :raises Invalid: the first schema error, naming the element but not its value.
    """
    if not schema.validate(element):
        log: Any = schema.error_log  # lxml-stubs leave _ErrorLog without its sequence methods
        raise schema_error(element, log[0])
