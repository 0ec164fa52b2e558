"""Directory XML to canonical records, the dialect's parse stage: single elements, and batch
documents streamed with lxml ``iterparse`` under hardened parser settings, each record
validated against the XSD on its own (one bad record is reported, the rest are read), mapped
to its canonical dict by the field table ``adapter.directory.fields`` (compiled once into
reading functions; the writer writes the same table) and cleared once read (flat memory).
Nothing here touches the database: bytes in, canonical records and their errors out, so the
stage can run wherever its input is (the import applies what it yields:
``adapter.imports.directory``).

A record that passes the XSD is then checked against the rules the XSD cannot say: check
digits of identifiers, telephone digits and e-mail addresses (``adapter.identifiers``), dates
in order, the sensitive-service and local-authority rules of the model, organisations
described one way only. Formats whose XSD pattern accepts exactly the values that
``adapter.identifiers`` leaves unchanged (ODS code, URN, GSS code, DfE authority number,
postcode; tests/directory/test_xml.py proves it) are not checked twice. Errors are ``Invalid``
with an ``expression`` naming the element; they never repeat the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

from lxml import etree

from adapter import codes, identifiers
from adapter.directory import fields
from adapter.directory.schema import (
    ASSESSMENT_XSD,
    ENTRY_XSD,
    NS,
    load_schema,
    local_name,
    q,
    validate_element,
)
from adapter.errors import BadRequest, Invalid
from adapter.models.canonical import (
    AssessmentRecord,
    Canonical,
    ChildRecord,
    OrganisationIndex,
    OrganisationKey,
    organisation_key,
)
from adapter.wellformed import today_in_england
from adapter.xmlsafe import iterparse_safe, parse_bytes

Validator = Callable[[str, str], str]
Rule = Callable[["fields.Structure", Canonical, "_Node", OrganisationIndex], None]


class RecordInvalid(Invalid):
    """A rejected record of a batch.

    ``contactpoint_id`` is the child's ContactPoint ID where the record gave a valid one (the
    only identifier an import report repeats).
    """

    def __init__(self, error: Invalid, contactpoint_id: str | None) -> None:
        super().__init__(error.message, expression=error.expression)
        self.contactpoint_id = contactpoint_id


@dataclass(frozen=True)
class BatchHeader:
    """The header of a batch document."""

    generated_at: dt.datetime
    source: str
    count: int | None


# libxml2 keeps an element's line in 16 bits: from this line on it stores the marker and
# xmlGetLineNo (lxml's ``sourceline``) answers the line of the text node the element starts
# with, or of the one after it, which libxml2 numbers by the line that text ends on
# (XML_PARSE_BIG_LINES keeps full line numbers for text nodes only: libxml2 tree.c
# xmlGetLineNoInternal, parser.h XML_PARSE_BIG_LINES).
BIG_LINE: Final = 65535


def _line(element: etree._Element) -> int | None:
    """Return the line an element starts on, also past line 65,535 (see ``BIG_LINE``)."""
    line: int | None = element.sourceline  # type: ignore[assignment]
    node = element
    while line is not None and line >= BIG_LINE:
        if node.text is not None:  # the element's first child is that text node
            return line - node.text.count("\n")
        children = [child for child in node if isinstance(child.tag, str)]
        if children:  # no text before it: the first child starts on the element's line
            node = children[0]
            continue
        return line - (node.tail or "").count("\n")
    return line


class _Node:
    """An element of a record being read, with its place in the record for error messages.

    A node's path is made from its parent's only when an error asks for it; a repeated
    element (``tag`` set) is indexed in its path where its parent has several of its tag.
    """

    __slots__ = ("element", "name", "parent", "tag")

    def __init__(self, element: etree._Element, parent: _Node | None, name: str,
                 tag: str | None = None) -> None:
        self.element = element
        self.parent = parent
        self.name = name
        self.tag = tag

    @property
    def step(self) -> str:
        """Return the node's step in its path, e.g. ``Carer[2]``."""
        if self.tag is None or self.parent is None:
            return self.name
        siblings = list(self.parent.element.iterchildren(self.tag))
        if len(siblings) == 1:
            return self.name
        return f"{self.name}[{siblings.index(self.element) + 1}]"

    @property
    def path(self) -> str:
        """Return the node's path from its record, e.g. ``DirectoryEntry/Carer[2]``."""
        return self.step if self.parent is None else f"{self.parent.path}/{self.step}"

    def nodes(self, name: str, tag: str) -> list[_Node]:
        """Return every child ``name`` (qualified ``tag``) as nodes."""
        return [_Node(child, self, name, tag) for child in self.element.iterchildren(tag)]


def _parsed(value: fields.Value, text: str, node: _Node, where: str) -> Any:
    """Return ``text`` parsed as ``value`` (the element or ``@attribute`` ``where``).

    :raises Invalid: refused, naming ``where`` below ``node`` but never the text.
    """
    parse = value.parse
    if parse is None:
        return text
    try:
        return parse(text, where.lstrip("@"))
    except identifiers.InvalidIdentifier as error:
        raise Invalid(error.reason, expression=f"{node.path}/{where}") from None
    except ValueError:
        raise Invalid(value.invalid, expression=f"{node.path}/{where}") from None


# --- the field table, compiled once into reading functions ---------------------------------
# A structure is read in one pass over its element's children: its fields start at their
# absent values (one dict copy), and each child is handed to the handler of its tag, which
# sets the field(s) it carries. lxml's ``find``/``findtext`` go through ElementPath in Python
# and a call per declared field costs as much for the many that a record leaves out, so
# reading a record costs about one step per element that is there. A record's elements come
# in the XSD's sequence order (it passed the XSD first), the order of the field table, so the
# fields are read, and the first error found, in the order a field-by-field reading has.
# A handler gets the child, the node of the structure's element, the dict it fills, the
# record's organisation index and the organisation a nested practitioner's employer
# defaults to.
Handler = Callable[[etree._Element, _Node, Canonical, OrganisationIndex, Any], None]
Fill = Callable[[_Node, Canonical, OrganisationIndex, Any], None]
ReadRecord = Callable[[_Node, OrganisationIndex, Any], Canonical]


@dataclass(frozen=True)
class _Absent:
    """The fields of a structure at their absent values, in the field table's order, and
    those that hold lists (a fresh list each time: names, carers, given names)."""

    values: Canonical
    lists: tuple[str, ...]


def _absent(structure: fields.Structure) -> _Absent:
    """Return the absent values of a structure's fields (its groups' fields included)."""
    values: Canonical = {}
    lists: list[str] = []
    for item in structure.fields:
        if isinstance(item, fields.Attribute):
            if not item.value.mark:
                values[item.field] = None
        elif isinstance(item, fields.Text):
            values[item.field] = item.value.absent
            values.update((attribute.field, None) for attribute in item.attributes)
        elif isinstance(item, fields.Texts) or (isinstance(item, fields.Record) and item.many):
            values[item.field] = None
            lists.append(item.field)
        elif isinstance(item, fields.Record):
            values[item.field] = None
        elif isinstance(item, fields.Group):
            inner = _absent(item.structure)
            values.update(inner.values)
            lists.extend(inner.lists)
            if item.flag is not None:
                values[item.flag] = False
        else:
            values.update(dict.fromkeys(item.names))
    return _Absent(values, tuple(lists))


def _text(item: fields.Text) -> Handler:
    """Return the handler of a text element (and of its own attributes)."""
    element, key, value = item.element, item.field, item.value
    parse, absent, invalid = value.parse, value.absent, value.invalid
    attributes = tuple((attribute.name, attribute.field) for attribute in item.attributes)
    if parse is None and not attributes and absent is None:
        # The common case (a record has dozens of these): an empty element reads as None.
        def read_text(child: etree._Element, _node: _Node, data: Canonical,
                      _index: OrganisationIndex, _context: Any) -> None:
            data[key] = child.text
        return read_text

    def read(child: etree._Element, node: _Node, data: Canonical, _index: OrganisationIndex,
             _context: Any) -> None:
        text = child.text
        if text is None:
            data[key] = absent
        elif parse is None:
            data[key] = text
        else:
            try:
                data[key] = parse(text, element)
            except identifiers.InvalidIdentifier as error:
                raise Invalid(error.reason, expression=f"{node.path}/{element}") from None
            except ValueError:
                raise Invalid(invalid, expression=f"{node.path}/{element}") from None
        for name, field in attributes:
            data[field] = child.get(name)
    return read


def _texts(item: fields.Texts) -> Handler:
    """Return the handler of a repeated text element (an empty one reads as "")."""
    key = item.field

    def read(child: etree._Element, _node: _Node, data: Canonical, _index: OrganisationIndex,
             _context: Any) -> None:
        data[key].append(child.text or "")
    return read


def _group(item: fields.Group) -> Handler:
    """Return the handler of a group: its parts are fields of the enclosing record (at their
    absent values there until the group is read)."""
    element, fill, flag = item.element, _body(item.structure), item.flag

    def read(child: etree._Element, node: _Node, data: Canonical, index: OrganisationIndex,
             context: Any) -> None:
        if flag is not None:
            data[flag] = True
        fill(_Node(child, node, element), data, index, context)
    return read


def _option(item: fields.Group) -> Handler:
    """Return the handler of one group of a choice: the choice's fields are None until one of
    its groups is read, which sets its own fields at their absent values first."""
    element, fill, absent = item.element, _body(item.structure), _absent(item.structure)
    if absent.lists:
        raise TypeError(f"{element}: a choice's group cannot hold repeated elements")

    def read(child: etree._Element, node: _Node, data: Canonical, index: OrganisationIndex,
             context: Any) -> None:
        data.update(absent.values)
        fill(_Node(child, node, element), data, index, context)
    return read


def _record(item: fields.Record) -> Handler:
    """Return the handler of a nested record or of one of a list of them."""
    element, key, read_one = item.element, item.field, _record_reader(item.structure)
    context_field, tag = item.context, item.tag

    if item.many:
        def read_many(child: etree._Element, node: _Node, data: Canonical,
                      index: OrganisationIndex, _context: Any) -> None:
            inner = None if context_field is None else data[context_field]
            data[key].append(read_one(_Node(child, node, element, tag), index, inner))
        return read_many

    def read(child: etree._Element, node: _Node, data: Canonical, index: OrganisationIndex,
             _context: Any) -> None:
        inner = None if context_field is None else data[context_field]
        data[key] = read_one(_Node(child, node, element), index, inner)
    return read


def _handlers(structure: fields.Structure) -> dict[str, Handler]:
    """Return the handlers of a structure's child elements by qualified tag.

    :raises TypeError: two declarations of the structure share an element.
    """
    found: dict[str, Handler] = {}
    for item in structure.elements:
        entries: list[tuple[str, Handler]]
        if isinstance(item, fields.Text):
            entries = [(item.tag, _text(item))]
        elif isinstance(item, fields.Texts):
            entries = [(item.tag, _texts(item))]
        elif isinstance(item, fields.Group):
            entries = [(item.tag, _group(item))]
        elif isinstance(item, fields.Record):
            entries = [(item.tag, _record(item))]
        elif isinstance(item, fields.Choice):
            entries = [(option.tag, _option(option)) for option in item.options]
        else:  # an Attribute: never among a structure's elements
            continue
        for tag, handler in entries:
            if tag in found:
                raise TypeError(f"{structure.name}: two declarations of {local_name(tag)}")
            found[tag] = handler
    return found


def _attributes(structure: fields.Structure) -> Fill | None:
    """Return the reader of the attributes of a structure's own element (None: none read)."""
    read = tuple((item.name, item.field, item.value, f"@{item.name}")
                 for item in structure.attributes if not item.value.mark)
    if not read:
        return None

    def fill(node: _Node, data: Canonical, _index: OrganisationIndex, _context: Any) -> None:
        for name, key, value, where in read:
            text = node.element.get(name)
            data[key] = None if text is None else _parsed(value, text, node, where)
    return fill


def _presence(structure: fields.Structure) -> Fill | None:
    """Return the check of what a structure's element must hold once its children are read
    (required groups and records; an inherited employer), or None: nothing to check."""
    checks: list[Fill] = []
    for item in structure.elements:
        if isinstance(item, fields.Group) and item.required:
            checks.append(_required_group(item))
        elif isinstance(item, fields.Record) and not item.many and (item.required
                                                                    or item.inherit):
            checks.append(_required_record(item))
    if not checks:
        return None

    def check(node: _Node, data: Canonical, index: OrganisationIndex, context: Any) -> None:
        for each in checks:
            each(node, data, index, context)
    return check


def _required_group(item: fields.Group) -> Fill:
    """Return the check that a required group is there."""
    tag, element = item.tag, item.element

    def check(node: _Node, _data: Canonical, _index: OrganisationIndex, _context: Any) -> None:
        if next(node.element.iterchildren(tag), None) is None:
            raise Invalid(f"{element} is missing", expression=node.path)
    return check


def _required_record(item: fields.Record) -> Fill:
    """Return the check of a nested record that is required, or that takes the enclosing
    record's organisation when absent (``inherit``)."""
    key, element, inherit = item.field, item.element, item.inherit

    def check(node: _Node, data: Canonical, _index: OrganisationIndex, context: Any) -> None:
        if data[key] is not None:
            return
        if inherit:
            data[key] = context
        else:
            raise Invalid(f"{element} is missing", expression=node.path)
    return check


def _body(structure: fields.Structure) -> Fill:
    """Return the function that reads a structure's element into a dict whose fields are at
    their absent values: its attributes, its children in one pass, then what must be there
    and the structure's rules (``RULES``)."""
    handlers = _handlers(structure)
    attributes, presence = _attributes(structure), _presence(structure)
    rule = RULES.get(structure.name)

    def fill(node: _Node, data: Canonical, index: OrganisationIndex, context: Any) -> None:
        if attributes is not None:
            attributes(node, data, index, context)
        for child in node.element:
            handler = handlers.get(child.tag)
            if handler is not None:
                handler(child, node, data, index, context)
        if presence is not None:
            presence(node, data, index, context)
        if rule is not None:
            rule(structure, data, node, index)
    return fill


def _record_reader(structure: fields.Structure) -> ReadRecord:
    """Return the function that reads a record's element into its own canonical dict."""
    absent, fill = _absent(structure), _body(structure)
    values, lists = absent.values, absent.lists

    def read(node: _Node, index: OrganisationIndex, context: Any) -> Canonical:
        data = values.copy()
        for key in lists:
            data[key] = []
        fill(node, data, index, context)
        return data
    return read


# --- the rules the XSD cannot express, by structure ----------------------------------------

def _period_rule(structure: fields.Structure, data: Canonical, node: _Node,
                 _index: OrganisationIndex) -> None:
    """A period does not end before it starts.

    :raises Invalid: it does.
    """
    start, end = (data[item.field] for item in structure.fields
                  if isinstance(item, fields.Text))
    if start is not None and end is not None and end < start:
        raise Invalid("the period ends before it starts", expression=node.path)


def _checked(validate: Validator, text: str, node: _Node, name: str) -> None:
    """Check the text of the child ``name`` with ``validate``.

    :raises Invalid: the validator refused it.
    """
    try:
        validate(text, name)
    except identifiers.InvalidIdentifier as error:
        raise Invalid(error.reason, expression=f"{node.path}/{name}") from None


def _organisation_rule(_structure: fields.Structure, data: Canonical, node: _Node,
                       index: OrganisationIndex) -> None:
    """A local authority has its GSS code, a GP practice's ODS code is a letter and five
    digits, and the record describes the organisation one way only.

    :raises Invalid: one of these is broken.
    """
    if data["type"] == "local-authority" and data["gss_code"] is None:
        raise Invalid("a local authority needs its GSS code", expression=node.path)
    if data["type"] == "gp-practice" and data["ods_code"] is not None:
        _checked(identifiers.validate_gp_practice_code, data["ods_code"], node, "OdsCode")
    try:
        index.add_organisation(data)
    except Invalid as error:
        raise Invalid(error.message, expression=node.path) from None


def _practitioner_rule(_structure: fields.Structure, data: Canonical, node: _Node,
                       index: OrganisationIndex) -> None:
    """The record describes the practitioner one way only.

    :raises Invalid: it describes it differently elsewhere.
    """
    try:
        index.add_practitioner(data)
    except Invalid as error:
        raise Invalid(error.message, expression=node.path) from None


def _involvement_rule(_structure: fields.Structure, data: Canonical, node: _Node,
                      _index: OrganisationIndex) -> None:
    """A sensitive service's involvement carries SensitiveService (docs/domain.md
    "Sensitive services").

    :raises Invalid: it does not.
    """
    if not data["sensitive"] and data["role"] in codes.SENSITIVE_ROLES:
        raise Invalid("a sensitive service's involvement needs SensitiveService with its "
                      "consent basis", expression=f"{node.path}/Role")


_LOCAL_IDENTIFIER: Final = q("LocalIdentifier")


def _unique_local_identifiers(data: Canonical, node: _Node) -> None:
    """No organisation gives the same identifier twice.

    :raises Invalid: one does (naming the second).
    """
    seen: set[tuple[OrganisationKey, str]] = set()
    for position, item in enumerate(data["local_identifiers"]):
        key = (organisation_key(item["organisation"]), str(item["value"]))
        if key in seen:
            where = node.nodes("LocalIdentifier", _LOCAL_IDENTIFIER)[position]
            raise Invalid("the organisation gives this identifier twice",
                          expression=where.path)
        seen.add(key)


def _child_reference_rule(_structure: fields.Structure, data: Canonical, node: _Node,
                          _index: OrganisationIndex) -> None:
    """An assessment's child gives each local identifier once.

    :raises Invalid: it gives one twice.
    """
    _unique_local_identifiers(data, node)


def _entry_rule(_structure: fields.Structure, data: Canonical, node: _Node,
                _index: OrganisationIndex) -> None:
    """An entry has its address or the statement instead, dies (if at all) after birth and
    neither in the future (the rule FHIR writes meet in ``adapter.wellformed``), is
    managed by a local authority and gives each local identifier once.

    :raises Invalid: one of these is broken.
    """
    path = node.path
    if data["address_status"] is None:
        # directory-entry.xsd leaves both out only in a redacted entry (a shielded child's).
        raise Invalid("Address or AddressStatement is missing (an entry whose address was "
                      "withheld, redacted=\"true\", cannot be imported)", expression=path)
    if data["death_date"] is not None and data["death_date"] < data["birth_date"]:
        raise Invalid("the date of death is before the date of birth",
                      expression=f"{path}/DeathDate")
    for name, field in (("BirthDate", "birth_date"), ("DeathDate", "death_date")):
        if data[field] is not None and data[field] > today_in_england():
            raise Invalid("the date is in the future", expression=f"{path}/{name}")
    if data["managing_organisation"]["type"] != "local-authority":
        raise Invalid("the managing authority must be a local authority",
                      expression=f"{path}/ManagingAuthority/Type")
    _unique_local_identifiers(data, node)


def _assessment_rule(_structure: fields.Structure, data: Canonical, node: _Node,
                     _index: OrganisationIndex) -> None:
    """A completed assessment has its completion date, a closed one its closing date, and
    neither is before the start.

    :raises Invalid: one of these is broken.
    """
    if data["status"] == "completed" and data["completed_date"] is None:
        raise Invalid("a completed assessment needs CompletedDate",
                      expression=f"{node.path}/Status")
    if data["status"] == "closed" and data["closed_date"] is None:
        raise Invalid("a closed assessment needs ClosedDate", expression=f"{node.path}/Status")
    for name, field in (("CompletedDate", "completed_date"), ("ClosedDate", "closed_date")):
        if data["started_date"] is not None and data[field] is not None \
                and data[field] < data["started_date"]:
            raise Invalid("the date is before the assessment started",
                          expression=f"{node.path}/{name}")


RULES: Final[dict[str, Rule]] = {
    "PeriodStructure": _period_rule, "OrganisationStructure": _organisation_rule,
    "PractitionerStructure": _practitioner_rule, "InvolvementStructure": _involvement_rule,
    "ChildReferenceStructure": _child_reference_rule, "DirectoryEntryStructure": _entry_rule,
    "AssessmentReferenceStructure": _assessment_rule,
}
_ENTRY: Final = _record_reader(fields.ENTRY)
_ASSESSMENT: Final = _record_reader(fields.ASSESSMENT)
_HEADER: Final = _record_reader(fields.HEADER)


def _read(read: ReadRecord, element: etree._Element, name: str) -> Canonical:
    """Return the canonical dict of the record element ``name`` read with ``read``."""
    return read(_Node(element, None, name), OrganisationIndex(), None)


# --- directory entries and assessment references -------------------------------------------

def entry_data(element: etree._Element) -> Canonical:
    """Return the canonical dict of a DirectoryEntry element that passed the XSD.

    :raises Invalid: a rule the XSD cannot express is broken (see the module docstring).
    """
    return _read(_ENTRY, element, "DirectoryEntry")


def read_entry(entry: etree._Element) -> ChildRecord:
    """Validate a DirectoryEntry element against the XSD and return its record.

    :raises Invalid: the element breaks the XSD or a rule of the directory.
    """
    validate_element(load_schema(ENTRY_XSD), entry)
    return ChildRecord(entry_data(entry))


def assessment_data(element: etree._Element) -> Canonical:
    """Return the canonical dict of an AssessmentReference element that passed the XSD.

    :raises Invalid: a rule the XSD cannot express is broken.
    """
    return _read(_ASSESSMENT, element, "AssessmentReference")


def read_assessment(element: etree._Element) -> AssessmentRecord:
    """Validate an AssessmentReference element against the XSD and return its record.

    :raises Invalid: the element breaks the XSD or a rule of the directory.
    """
    validate_element(load_schema(ASSESSMENT_XSD), element)
    return AssessmentRecord(assessment_data(element))


# --- batch documents -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Batch:
    """What distinguishes one kind of batch document from the other."""

    root: str
    record: str
    schema: str
    read: Callable[[etree._Element], Canonical]
    contactpoint_id_path: str


ENTRIES: Final = _Batch(q("DirectoryEntries"), q("DirectoryEntry"), ENTRY_XSD, entry_data,
                        "ContactPointId")
ASSESSMENTS: Final = _Batch(q("AssessmentReferences"), q("AssessmentReference"), ASSESSMENT_XSD,
                            assessment_data, "Child/ContactPointId")
BATCHES: Final = {"entries": ENTRIES, "assessments": ASSESSMENTS}
HEADER: Final = q("Header")
Outcome = tuple[int, int | None, Canonical | RecordInvalid]


def _safe_contactpoint_id(element: etree._Element, batch: _Batch) -> str | None:
    """Return the record's ContactPoint ID if it is a valid one (safe to report)."""
    text = element.findtext("/".join(q(step) for step in batch.contactpoint_id_path.split("/")))
    if text is None:
        return None
    try:
        return identifiers.validate_contactpoint_id(text)
    except identifiers.InvalidIdentifier:
        return None


def _read_record(element: etree._Element, batch: _Batch) -> Canonical | RecordInvalid:
    """Validate and read one record of a batch; return its canonical dict or its error."""
    try:
        validate_element(load_schema(batch.schema), element)
        return batch.read(element)
    except Invalid as error:
        return RecordInvalid(error, _safe_contactpoint_id(element, batch))


def _unexpected(element: etree._Element, batch: _Batch) -> RecordInvalid:
    """Return the error for a child of the batch's root that is not one of its records."""
    name = local_name(element.tag)
    return RecordInvalid(Invalid(f"{name} is not expected here: a batch holds a Header, then "
                                 f"{local_name(batch.record)} records",
                                 expression=name or None), None)


def _read_header(element: etree._Element) -> BatchHeader:
    """Validate and return a batch header.

    :raises BadRequest: the header breaks the XSD.
    """
    try:
        validate_element(load_schema(ENTRY_XSD), element)
        data = _read(_HEADER, element, "Header")
    except Invalid as error:
        raise BadRequest(f"invalid batch header: {error.message}",
                         expression=error.expression) from None
    return BatchHeader(generated_at=data["generated_at"] or dt.datetime.now(dt.UTC),
                       source=data["source"] or "", count=data["count"])


def _check_root(element: etree._Element, batch: _Batch) -> etree._Element:
    """Return the document's root element if it is the batch's.

    :raises BadRequest: the document is some other kind of XML.
    """
    root = element.getroottree().getroot()
    if root.tag != batch.root:
        raise BadRequest(f"not a {local_name(batch.root)} document of namespace {NS}")
    return root


class _BatchReader:
    """Reads one batch document record by record, releasing each record once read."""

    def __init__(self, batch: _Batch, on_header: Callable[[BatchHeader], None] | None,
                 continuation: bool = False) -> None:
        self.batch = batch
        self.on_header = on_header
        self.root: etree._Element | None = None
        # A continuation is a later piece of a file split at record boundaries
        # (``adapter.directory.split``): its header was read with the file's first piece.
        self.header_seen = continuation
        self.position = 0
        self.previous: etree._Element | None = None

    def _leftovers(self, upto: etree._Element | None) -> Iterator[Outcome]:
        """Yield an error for every unread element child of the root before ``upto``."""
        if self.root is None:
            return
        for sibling in self.root:
            if sibling is upto:
                return
            if sibling is not self.previous and isinstance(sibling.tag, str):
                self.position += 1
                yield self.position, _line(sibling), _unexpected(sibling, self.batch)

    def _release(self, element: etree._Element) -> None:
        """Drop a read record and everything before it, so memory stays flat."""
        element.clear()
        parent = element.getparent()
        while parent is not None and element.getprevious() is not None:
            del parent[0]
        self.previous = element

    def _record(self, element: etree._Element) -> Outcome:
        """Return the outcome of one record (or of a misplaced header).

        :raises BadRequest: the batch has no header before its first record.
        """
        self.position += 1
        if element.tag == HEADER:
            return self.position, _line(element), _unexpected(element, self.batch)
        if not self.header_seen:
            raise BadRequest("the batch has no Header before its first record")
        return self.position, _line(element), _read_record(element, self.batch)

    def _header(self, element: etree._Element) -> None:
        """Read the batch header and hand it to ``on_header``."""
        header = _read_header(element)
        self.header_seen = True
        if self.on_header is not None:
            self.on_header(header)

    def read(self, source: str | IO[bytes]) -> Iterator[Outcome]:
        """Yield ``(record number, line, canonical dict or RecordInvalid)`` per record.

        :raises BadRequest: not this kind of batch, a DTD, no header, or not well-formed.
        """
        # Events only for the root, headers and records (lxml takes a sequence of tags):
        # everything else is read as part of its record, or found unread beside the records.
        tags: Any = (self.batch.root, HEADER, self.batch.record)
        for _event, element in iterparse_safe(source, events=("end",), tag=tags):
            if self.root is None:
                self.root = _check_root(element, self.batch)
            if element.getparent() is not self.root:
                continue
            yield from self._leftovers(element)
            if element.tag == HEADER and not self.header_seen and not self.position:
                self._header(element)
            else:
                yield self._record(element)
            self._release(element)
        if self.root is None:
            raise BadRequest(f"not a {local_name(self.batch.root)} document of namespace {NS}")
        yield from self._leftovers(None)
        if not self.header_seen:
            raise BadRequest("the batch has no Header")


def iter_entry_data(source: str | IO[bytes], *,
                    on_header: Callable[[BatchHeader], None] | None = None,
                    ) -> Iterator[tuple[int, int | None, Canonical | RecordInvalid]]:
    """Stream a DirectoryEntries batch as canonical dicts (see ``iter_entries``)."""
    return _BatchReader(ENTRIES, on_header).read(source)


def iter_piece_data(kind: str, source: IO[bytes], *, continuation: bool,
                    ) -> Iterator[tuple[int, int | None, Canonical | RecordInvalid]]:
    """Stream one piece of a batch file split at record boundaries
    (``adapter.directory.split``): the file's first piece (``continuation`` False) is read
    as the whole document is, header included; a later one has its records read as records
    after the header. ``kind`` is "entries" or "assessments"; positions count from 1 in the
    piece, lines are the piece's own.

    :raises BadRequest: as ``iter_entries``.
    """
    return _BatchReader(BATCHES[kind], None, continuation).read(source)


def iter_entries(source: str | IO[bytes], *,
                 on_header: Callable[[BatchHeader], None] | None = None,
                 ) -> Iterator[tuple[int, int | None, ChildRecord | RecordInvalid]]:
    """Stream a DirectoryEntries batch (a path or a binary file), record by record.

    Yields ``(record number, line, ChildRecord or RecordInvalid)`` for each record, in order;
    ``on_header`` receives the header first. Each record is validated on its own, so a bad one
    is yielded as its error and reading goes on.

    :raises BadRequest: the document is not a DirectoryEntries batch, declares a DTD, has
        no header or stops being well-formed (records before that point have been yielded).
    """
    for position, line, item in iter_entry_data(source, on_header=on_header):
        yield position, line, item if isinstance(item, RecordInvalid) else ChildRecord(item)


def iter_assessment_data(source: str | IO[bytes], *,
                         on_header: Callable[[BatchHeader], None] | None = None,
                         ) -> Iterator[tuple[int, int | None, Canonical | RecordInvalid]]:
    """Stream an AssessmentReferences batch as canonical dicts (see ``iter_assessments``)."""
    return _BatchReader(ASSESSMENTS, on_header).read(source)


def iter_assessments(source: str | IO[bytes], *,
                     on_header: Callable[[BatchHeader], None] | None = None,
                     ) -> Iterator[tuple[int, int | None, AssessmentRecord | RecordInvalid]]:
    """Stream an AssessmentReferences batch like ``iter_entries``, record by record.

    Yields ``(record number, line, AssessmentRecord or RecordInvalid)`` per record.

    :raises BadRequest: as ``iter_entries``.
    """
    for position, line, item in iter_assessment_data(source, on_header=on_header):
        yield position, line, (item if isinstance(item, RecordInvalid)
                               else AssessmentRecord(item))


def _parse_document(data: bytes, tag: str) -> etree._Element:
    """Parse a one-record document with the hardened parser and check its root.

    :raises BadRequest: not well-formed, a DTD, or another root element.
    """
    root = parse_bytes(data)
    if root.tag != tag:
        raise BadRequest(f"not a {local_name(tag)} document of namespace {NS}")
    return root


def loads_entry(data: bytes) -> ChildRecord:
    """Parse, validate and read a DirectoryEntry document.

    :raises BadRequest: not a well-formed DirectoryEntry document (or a DTD).
    :raises Invalid: the entry breaks the XSD or a rule of the directory.
    """
    return read_entry(_parse_document(data, ENTRIES.record))


def loads_assessment(data: bytes) -> AssessmentRecord:
    """Parse, validate and read an AssessmentReference document.

    :raises BadRequest: not a well-formed AssessmentReference document (or a DTD).
    :raises Invalid: the reference breaks the XSD or a rule of the directory.
    """
    return read_assessment(_parse_document(data, ASSESSMENTS.record))
