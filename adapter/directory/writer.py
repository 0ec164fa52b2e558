"""Canonical records to directory XML: single entries and assessment references, and batch
documents streamed with ``etree.xmlfile`` so that memory stays flat however many records go
out. Everything is written from the canonical dicts of ``adapter.models.canonical`` handed to
it, element by element as the field table ``adapter.directory.fields`` declares them (the
reader reads the same table), compiled once into writing functions.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Final

from lxml import etree

from adapter import identity
from adapter.directory import fields
from adapter.directory.fields import xml_bool as xml_bool
from adapter.directory.fields import xml_datetime as xml_datetime
from adapter.directory.schema import NS, q
from adapter.imports.directory import ImportOutcome as ImportOutcome
from adapter.models.assessment import Assessment
from adapter.models.canonical import (
    canonical_assessment_dump,
    canonical_dump,
    organisation_codes,
)
from adapter.models.directory import Child

log = logging.getLogger(__name__)
SOURCE: Final = "contactpoint-gateway"
# The default namespace (lxml's None prefix; lxml-stubs type nsmap keys as str only).
NSMAP: Final[dict[Any, str]] = {None: NS}

Data = Mapping[str, Any]
# Writes one declaration of the field table into its parent element, given the record's
# fields and the organisation a nested practitioner's employer defaults to.
Write = Callable[[etree._Element, Data, Any], None]


# --- the field table, compiled once into writing functions ---------------------------------

def _set(element: etree._Element, attribute: fields.Attribute, data: Data) -> None:
    """Set an attribute from its field (a ``required`` one even when None: lxml refuses)."""
    value: Any = data.get(attribute.field)
    kind = attribute.value
    if kind.mark:
        if value:
            element.set(attribute.name, "true")
        return
    if value is None and not attribute.required:
        return
    element.set(attribute.name, value if kind.render is None else kind.render(value))


def _text(item: fields.Text) -> Write:
    """Return the writer of a text element (left out when its value is None, unless the
    element is ``required`` or its value type ``always`` writes one)."""
    tag, name, render, attributes = item.tag, item.field, item.value.render, item.attributes
    sub = etree.SubElement
    if item.value.always:
        assert render is not None  # noqa: S101 - a value written always renders itself

        def write_always(parent: etree._Element, data: Data, _context: Any) -> None:
            sub(parent, tag).text = render(data[name])
        return write_always
    if attributes or item.required:
        required = item.required

        def write_full(parent: etree._Element, data: Data, _context: Any) -> None:
            value = data[name]
            if value is None and not required:
                return
            element = sub(parent, tag)
            element.text = value if render is None or value is None else render(value)
            for attribute in attributes:
                _set(element, attribute, data)
        return write_full
    if render is not None:
        def write_rendered(parent: etree._Element, data: Data, _context: Any) -> None:
            value = data[name]
            if value is not None:
                sub(parent, tag).text = render(value)
        return write_rendered

    # The common case, kept to a look-up and an append (a record has a hundred of these).
    def write(parent: etree._Element, data: Data, _context: Any) -> None:
        value = data[name]
        if value is not None:
            sub(parent, tag).text = value
    return write


def _texts(item: fields.Texts) -> Write:
    """Return the writer of a repeated text element."""
    tag, name = item.tag, item.field

    def write(parent: etree._Element, data: Data, _context: Any) -> None:
        for text in data[name]:
            etree.SubElement(parent, tag).text = text
    return write


def _fill(structure: fields.Structure) -> Callable[[etree._Element, Data, Any], None]:
    """Return the function that sets a structure's attributes on its element and appends
    its child elements in the XSD's order."""
    attributes = structure.attributes
    writers = [_writer(item) for item in structure.elements]
    if not attributes:
        def fill_elements(element: etree._Element, data: Data, context: Any) -> None:
            for write in writers:
                write(element, data, context)
        return fill_elements

    def fill(element: etree._Element, data: Data, context: Any) -> None:
        for attribute in attributes:
            _set(element, attribute, data)
        for write in writers:
            write(element, data, context)
    return fill


def _group(item: fields.Group, forced: bool = False) -> Write:
    """Return the writer of a group (always when ``forced``: the option a Choice chose)."""
    tag, fill, names, flag = item.tag, _fill(item.structure), item.names, item.flag
    required = item.required or forced

    def write(parent: etree._Element, data: Data, context: Any) -> None:
        if flag is not None:
            if not data[flag]:
                return
        elif not required:
            for name in names:
                if data[name] is not None:
                    break
            else:
                return
        fill(etree.SubElement(parent, tag), data, context)
    return write


def _record(item: fields.Record) -> Write:
    """Return the writer of a nested record or of a list of them."""
    tag, name, fill, many = item.tag, item.field, _fill(item.structure), item.many
    key, inherit, context_field, required = item.key, item.inherit, item.context, item.required

    def write(parent: etree._Element, data: Data, context: Any) -> None:
        value = data[name]
        inner = None if context_field is None else data[context_field]
        if many:
            for record in value:
                fill(etree.SubElement(parent, tag), record, inner)
            return
        if value is None and not required:
            return
        if key is not None and value[key] is None:
            return
        if inherit and organisation_codes(value) == organisation_codes(context):
            return
        fill(etree.SubElement(parent, tag), value, inner)
    return write


def _choice(item: fields.Choice) -> Write:
    """Return the writer of a choice: the group its field's value selects, or nothing."""
    name = item.field
    options = [(option.when, _group(option, forced=True)) for option in item.options]

    def write(parent: etree._Element, data: Data, context: Any) -> None:
        value = data[name]
        if value is None:
            return
        for when, group in options:
            if when is None or value in when:
                group(parent, data, context)
                return
    return write


def _writer(item: fields.Declaration) -> Write:
    """Return the writer of one declaration of the field table."""
    if isinstance(item, fields.Text):
        return _text(item)
    if isinstance(item, fields.Texts):
        return _texts(item)
    if isinstance(item, fields.Group):
        return _group(item)
    if isinstance(item, fields.Record):
        return _record(item)
    if isinstance(item, fields.Choice):
        return _choice(item)
    raise TypeError(f"not an element declaration: {item!r}")


def _root(element: str, structure: fields.Structure) -> Callable[[Data], etree._Element]:
    """Return the function that renders a record as the root element ``element``."""
    tag, fill = q(element), _fill(structure)

    def render(data: Data) -> etree._Element:
        root = etree.Element(tag, nsmap=NSMAP)
        fill(root, data, None)
        return root
    return render


_ENTRY: Final = _root("DirectoryEntry", fields.ENTRY)
_ASSESSMENT: Final = _root("AssessmentReference", fields.ASSESSMENT)
_HEADER: Final = _root("Header", fields.HEADER)
_IMPORT_RECORD: Final = _root("Record", fields.IMPORT_RECORD)
_SUMMARY: Final = _root("Summary", fields.IMPORT_SUMMARY)
_ORGANISATION: Final = _fill(fields.ORGANISATION)


def organisation_element(parent: etree._Element, name: str, data: Data) -> None:
    """Append an OrganisationStructure element named ``name``."""
    _ORGANISATION(etree.SubElement(parent, q(name)), data, None)


# --- directory entries and assessment references ------------------------------------------

def entry_element(data: Data) -> etree._Element:
    """Return the DirectoryEntry element for a canonical child dict (``canonical_dump``).

    ``redacted`` (common.xsd DisclosureAttributes) is set when the dict carries a true
    ``redacted`` key: the disclosure policy withheld parts of it (a visible redaction).
    """
    return _ENTRY(data)


def write_entry(child: Child) -> etree._Element:
    """Return the DirectoryEntry element of a child.

    Its names, local identifiers, carers, involvements (with organisations and practitioners)
    and managing authority must be loaded.
    """
    return entry_element(canonical_dump(child))


def dumps_entry(child: Child) -> bytes:
    """Return a child's DirectoryEntry as a UTF-8 XML document."""
    return etree.tostring(write_entry(child), xml_declaration=True, encoding="UTF-8",
                          pretty_print=True)


def assessment_element(data: Data) -> etree._Element:
    """Return the AssessmentReference element for a canonical assessment dict."""
    return _ASSESSMENT(data)


def write_assessment(assessment: Assessment) -> etree._Element:
    """Return the AssessmentReference element of an assessment.

    Its child, lead professional and team members must be loaded.
    """
    return assessment_element(canonical_assessment_dump(assessment))


def dumps_assessment(assessment: Assessment) -> bytes:
    """Return an assessment's AssessmentReference as a UTF-8 XML document."""
    return etree.tostring(write_assessment(assessment), xml_declaration=True,
                          encoding="UTF-8", pretty_print=True)


# --- batch documents -----------------------------------------------------------------------

def header_element(source: str, generated_at: dt.datetime | None = None,
                   count: int | None = None) -> etree._Element:
    """Return a batch Header element (generated now unless ``generated_at`` is given)."""
    return _HEADER({"generated_at": generated_at or dt.datetime.now(dt.UTC), "source": source,
                    "count": count})


def _built(records: Iterable[Data], build: Callable[[Data], etree._Element],
           label: Callable[[Data], str], skipped: list[str] | None) -> Iterator[etree._Element]:
    """Yield the element of each record; one that cannot be rendered (a stored value XML 1.0
    cannot carry, from before the inbound checks of ``adapter.wellformed``) is left out,
    named in ``skipped`` and in the log by its id only, so that the others still go out."""
    for data in records:
        try:
            element = build(data)
        except Exception as error:  # noqa: BLE001 - one record must not stop the document
            what = label(data)
            log.error("directory XML: %s cannot be rendered (%s); left out of the document",
                      what, type(error).__name__)
            if skipped is not None:
                skipped.append(what)
            continue
        yield element


def _write_batch(stream: IO[bytes], root: str, records: Iterable[etree._Element],
                 header: Callable[[int | None], etree._Element], count: int | None) -> int:
    """Stream a batch document (root, header, records); return how many records it holds.

    With ``count`` (a page, held in memory anyway) the records are rendered first, so that
    the header counts those actually written.
    """
    if count is not None:
        records = list(records)
        count = len(records)
    written = 0
    with etree.xmlfile(stream, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(q(root), nsmap=NSMAP):
            xf.write("\n")
            xf.write(header(count), pretty_print=True)
            for record in records:
                xf.write(record, pretty_print=True)
                written += 1
    return written


def entry_label(data: Data) -> str:
    """Return how the log and reports name an entry: its FHIR id (no personal data)."""
    return f"Patient/{identity.patient_id(str(data.get('contactpoint_id')))}"


def assessment_label(data: Data) -> str:
    """Return how the log and reports name an assessment reference: its eCAF id."""
    return f"AssessmentReference {data.get('assessment_id')}"


def write_entries(children: Iterable[Child], stream: IO[bytes], *, source: str = SOURCE,
                  count: int | None = None, generated_at: dt.datetime | None = None,
                  skipped: list[str] | None = None) -> int:
    """Stream a DirectoryEntries batch of ``children``; return how many were written.

    Memory stays flat: each entry is serialised and dropped in turn.
    """
    return write_entries_data((canonical_dump(child) for child in children), stream,
                              source=source, count=count, generated_at=generated_at,
                              skipped=skipped)


def write_entries_data(entries: Iterable[Data], stream: IO[bytes], *, source: str = SOURCE,
                       count: int | None = None, generated_at: dt.datetime | None = None,
                       skipped: list[str] | None = None) -> int:
    """Stream a DirectoryEntries batch of canonical child dicts to ``stream``; an entry that
    cannot be rendered is left out and named in ``skipped``."""
    records = _built(entries, entry_element, entry_label, skipped)
    return _write_batch(stream, "DirectoryEntries", records,
                        lambda n: header_element(source, generated_at, n), count)


def write_assessments(assessments: Iterable[Assessment], stream: IO[bytes], *,
                      source: str = SOURCE, count: int | None = None,
                      generated_at: dt.datetime | None = None,
                      skipped: list[str] | None = None) -> int:
    """Stream an AssessmentReferences batch of ``assessments``; return how many were written."""
    return write_assessments_data(
        (canonical_assessment_dump(assessment) for assessment in assessments), stream,
        source=source, count=count, generated_at=generated_at, skipped=skipped)


def write_assessments_data(assessments: Iterable[Data], stream: IO[bytes], *,
                           source: str = SOURCE, count: int | None = None,
                           generated_at: dt.datetime | None = None,
                           skipped: list[str] | None = None) -> int:
    """Stream an AssessmentReferences batch of canonical assessment dicts to ``stream``; a
    reference that cannot be rendered is left out and named in ``skipped``."""
    records = _built(assessments, assessment_element, assessment_label, skipped)
    return _write_batch(stream, "AssessmentReferences", records,
                        lambda n: header_element(source, generated_at, n), count)


# --- import reports ------------------------------------------------------------------------

def outcome_element(outcome: ImportOutcome) -> etree._Element:
    """Return the Record element of one import outcome."""
    return _IMPORT_RECORD(vars(outcome))


def _summary_element(counts: Counter[str]) -> etree._Element:
    """Return the Summary element of an import report."""
    return _SUMMARY(counts)


def write_import_report(outcomes: Iterable[ImportOutcome], stream: IO[bytes], *,
                        source: str = SOURCE,
                        generated_at: dt.datetime | None = None) -> Counter[str]:
    """Stream an ImportReport of ``outcomes`` as they come; return the count of each status."""
    counts: Counter[str] = Counter()
    with etree.xmlfile(stream, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(q("ImportReport"), nsmap=NSMAP):
            xf.write("\n")
            xf.write(header_element(source, generated_at), pretty_print=True)
            for outcome in outcomes:
                counts[outcome.status] += 1
                xf.write(outcome_element(outcome), pretty_print=True)
            xf.write(_summary_element(counts), pretty_print=True)
    return counts
