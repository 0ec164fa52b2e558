"""Directory XML to canonical records: single elements, and batch documents streamed with
lxml ``iterparse`` under hardened parser settings, each record validated against the XSD on
its own (one bad record is reported, the rest are read) and cleared once read (flat memory).

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
    ADDRESS_FIELDS,
    AssessmentRecord,
    Canonical,
    ChildRecord,
    OrganisationIndex,
    OrganisationKey,
    as_utc,
    organisation_key,
)
from adapter.wellformed import today_in_england
from adapter.xmlsafe import iterparse_safe, parse_bytes

# BS7666 elements in the order of the canonical address fields.
ADDRESS_TAGS: Final = tuple(zip(ADDRESS_FIELDS, (
    "SAON", "PAON", "StreetDescription", "Locality", "Town", "PostCode",
    "UniquePropertyReferenceNumber"), strict=True))
Validator = Callable[[str, str], str]


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


# --- values --------------------------------------------------------------------------------

def _datetime(text: str | None, path: str) -> dt.datetime | None:
    """Return DateTimeType text as an aware UTC datetime, or None.

    :raises Invalid: not an instant Python can hold.
    """
    if text is None:
        return None
    try:
        return as_utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        raise Invalid("not a valid date and time", expression=path) from None


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


class _QualifiedNames(dict[str, str]):
    """Qualified names of the directory namespace by local name, made once each."""

    def __missing__(self, local: str) -> str:
        self[local] = qualified = q(local)
        return qualified


_Q: Final = _QualifiedNames()


class _Node:
    """An element of a record with its children by tag, found in one pass.

    lxml's ``find``/``findtext`` go through ElementPath in Python; a record has over a hundred
    elements, so one pass per element keeps reading a small share of the parse time. A node's
    path (for error messages only) is made from its parent's when an error asks for it.
    """

    __slots__ = ("element", "kids", "parent", "step")

    def __init__(self, element: etree._Element, parent: _Node | None, step: str) -> None:
        self.element = element
        self.parent = parent
        self.step = step
        # Repeated children (names, carers, ...) are read with ``nodes``, never from here.
        self.kids: dict[Any, etree._Element] = {child.tag: child for child in element}

    @property
    def path(self) -> str:
        """Return the node's path from its record, e.g. ``DirectoryEntry/Carer[2]``."""
        return self.step if self.parent is None else f"{self.parent.path}/{self.step}"

    def text(self, name: str) -> str | None:
        """Return the text of the first child ``name``, or None."""
        child = self.kids.get(_Q[name])
        return None if child is None else child.text

    def node(self, name: str) -> _Node | None:
        """Return the first child ``name`` as a node, or None."""
        child = self.kids.get(_Q[name])
        return None if child is None else _Node(child, self, name)

    def required(self, name: str) -> _Node:
        """Return the child ``name`` that the XSD requires.

        :raises Invalid: it is missing (only for an element that skipped the XSD).
        """
        child = self.kids.get(_Q[name])
        if child is None:
            raise Invalid(f"{name} is missing", expression=self.path)
        return _Node(child, self, name)

    def required_element(self, name: str) -> etree._Element:
        """Return the element ``name`` that the XSD requires (as ``required``, not a node)."""
        child = self.kids.get(_Q[name])
        if child is None:
            raise Invalid(f"{name} is missing", expression=self.path)
        return child

    def nodes(self, name: str) -> list[_Node]:
        """Return every child ``name`` as nodes, indexed in their paths where several."""
        children = list(self.element.iterchildren(_Q[name]))
        if len(children) == 1:
            return [_Node(children[0], self, name)]
        return [_Node(child, self, f"{name}[{i}]") for i, child in enumerate(children, start=1)]

    def flag(self, name: str) -> bool:
        """Return the xs:boolean child ``name``."""
        return (self.text(name) or "").strip() in ("true", "1")

    def date(self, name: str) -> dt.date | None:
        """Return the DateType child ``name`` as a date, or None.

        :raises Invalid: not a date Python can hold (e.g. year 0).
        """
        return _date(self.text(name), self, name)

    def checked(self, validate: Validator, name: str) -> str | None:
        """Return the child ``name``'s text checked (and normalised) by ``validate``.

        :raises Invalid: the validator refused it.
        """
        text = self.text(name)
        if text is None:
            return None
        try:
            return validate(text, name)
        except identifiers.InvalidIdentifier as error:
            raise Invalid(error.reason, expression=f"{self.path}/{name}") from None

    def period(self) -> tuple[dt.date | None, dt.date | None]:
        """Return the (start, end) of the Period child, or (None, None).

        :raises Invalid: the period ends before it starts.
        """
        period = self.kids.get(_PERIOD)
        if period is None:
            return None, None
        texts = {child.tag: child.text for child in period}
        start = _date(texts.get(_START_DATE), self, "Period/StartDate")
        end = _date(texts.get(_END_DATE), self, "Period/EndDate")
        if start is not None and end is not None and end < start:
            raise Invalid("the period ends before it starts", expression=f"{self.path}/Period")
        return start, end


def _date(text: str | None, node: _Node, where: str) -> dt.date | None:
    """Return DateType ``text`` of the element ``where`` below ``node`` as a date, or None.

    :raises Invalid: not a date Python can hold (e.g. year 0).
    """
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise Invalid("not a valid date", expression=f"{node.path}/{where}") from None


# Qualified names of the elements read in every record (a dict look-up each, no call).
_PERIOD: Final = q("Period")
_START_DATE: Final = q("StartDate")
_END_DATE: Final = q("EndDate")
_ADDRESS: Final = q("Address")
_CONTACT: Final = q("ContactDetails")
_PHONE: Final = q("TelephoneNumber")
_EMAIL: Final = q("EmailAddress")
_GIVEN: Final = q("PersonGivenName")
_TITLE: Final = q("PersonNameTitle")
_FAMILY: Final = q("PersonFamilyName")
_ADDRESS_QTAGS: Final = tuple((field, q(tag)) for field, tag in ADDRESS_TAGS)
_ORGANISATION_QTAGS: Final = tuple((field, q(tag)) for field, tag in (
    ("name", "Name"), ("type", "Type"), ("ods_code", "OdsCode"), ("urn", "SchoolUrn"),
    ("gss_code", "GssCode"), ("la_number", "LaNumber")))


# --- shared structures ---------------------------------------------------------------------

def _address(element: etree._Element | None) -> Canonical:
    """Return the ``address_*`` fields of a BS7666 address element (all None if absent)."""
    if element is None:
        return dict.fromkeys(ADDRESS_FIELDS)
    texts = {child.tag: child.text for child in element}
    data: Canonical = {field: texts.get(tag) for field, tag in _ADDRESS_QTAGS}
    return data


def _contact(node: _Node) -> Canonical:
    """Return ``phone`` and ``email`` from the ContactDetails child (None if absent).

    :raises Invalid: the telephone number or e-mail address is not one.
    """
    contact = node.kids.get(_CONTACT)
    if contact is None:
        return {"phone": None, "email": None}
    texts = {child.tag: child.text for child in contact}
    return {"phone": _contact_value(identifiers.validate_phone, texts.get(_PHONE), node,
                                    "TelephoneNumber"),
            "email": _contact_value(identifiers.validate_email, texts.get(_EMAIL), node,
                                    "EmailAddress")}


def _contact_value(validate: Validator, text: str | None, node: _Node, name: str) -> str | None:
    """Return the ContactDetails child ``name``'s ``text`` checked by ``validate``, or None.

    :raises Invalid: the validator refused it.
    """
    if text is None:
        return None
    try:
        return validate(text, name)
    except identifiers.InvalidIdentifier as error:
        raise Invalid(error.reason, expression=f"{node.path}/ContactDetails/{name}") from None


def _person_name(element: etree._Element) -> Canonical:
    """Return ``title``, ``given`` and ``family`` of a PersonNameStructure element."""
    title = family = None
    given: list[str] = []
    for child in element:
        tag = child.tag
        if tag == _GIVEN:
            given.append(child.text or "")
        elif tag == _FAMILY:
            family = child.text
        elif tag == _TITLE:
            title = child.text
    return {"title": title, "given": given, "family": family}


def _organisation(index: OrganisationIndex, node: _Node) -> Canonical:
    """Return an organisation's canonical dict and register it with the record.

    :raises Invalid: a code is invalid, a local authority has no GSS code, a GP practice's
        ODS code is not a letter and five digits, or the record describes it differently
        elsewhere.
    """
    kids = node.kids
    data: Canonical = {field: None if (child := kids.get(tag)) is None else child.text
                       for field, tag in _ORGANISATION_QTAGS}
    if data["type"] == "local-authority" and data["gss_code"] is None:
        raise Invalid("a local authority needs its GSS code", expression=node.path)
    if data["type"] == "gp-practice" and data["ods_code"] is not None:
        node.checked(identifiers.validate_gp_practice_code, "OdsCode")
    data.update(_address(kids.get(_ADDRESS)))
    data.update(_contact(node))
    try:
        index.add_organisation(data)
    except Invalid as error:
        raise Invalid(error.message, expression=node.path) from None
    return data


def _practitioner(index: OrganisationIndex, parent: _Node,
                  context: Canonical) -> Canonical | None:
    """Return the Practitioner child of ``parent``, or None.

    Its employer is ``context`` unless it names its own organisation.
    """
    node = parent.node("Practitioner")
    if node is None:
        return None
    employer = node.node("Organisation")
    data: Canonical = {"local_id": node.text("LocalId")}
    data.update(_person_name(node.required_element("PersonName")))
    data.update(_contact(node))
    data["organisation"] = context if employer is None else _organisation(index, employer)
    try:
        index.add_practitioner(data)
    except Invalid as error:
        raise Invalid(error.message, expression=node.path) from None
    return data


def _local_identifiers(index: OrganisationIndex, parent: _Node) -> list[Canonical]:
    """Return the LocalIdentifier children of ``parent``.

    :raises Invalid: an organisation gives the same identifier twice.
    """
    items: list[Canonical] = []
    seen: set[tuple[OrganisationKey, str]] = set()
    for node in parent.nodes("LocalIdentifier"):
        org = _organisation(index, node.required("Organisation"))
        value = node.text("Value")
        key = (organisation_key(org), str(value))
        if key in seen:
            raise Invalid("the organisation gives this identifier twice", expression=node.path)
        seen.add(key)
        items.append({"organisation": org, "value": value})
    return items


def _meta(node: _Node) -> Canonical:
    """Return ``version`` and ``last_updated`` from a record's attributes."""
    version = node.element.get("version")
    return {"version": None if version is None else int(version.strip()),
            "last_updated": _datetime(node.element.get("lastUpdated"),
                                      f"{node.path}/@lastUpdated")}


# --- directory entries ---------------------------------------------------------------------

def _nhs_number(entry: _Node) -> Canonical:
    """Return ``nhs_number`` (check digit checked) and ``nhs_number_status``."""
    element = entry.kids.get(_Q["NhsNumber"])
    if element is None:
        return {"nhs_number": None, "nhs_number_status": None}
    return {"nhs_number": entry.checked(identifiers.validate_nhs_number, "NhsNumber"),
            "nhs_number_status": element.get("verificationStatus")}


def _names(entry: _Node) -> list[Canonical]:
    """Return the child's names in order."""
    names: list[Canonical] = []
    for node in entry.nodes("Name"):
        data: Canonical = {"use": node.element.get("use")}
        data.update(_person_name(node.element))
        data["period_start"], data["period_end"] = node.period()
        names.append(data)
    return names


def _child_address(entry: _Node) -> Canonical:
    """Return the address fields, its status and period from Address or AddressStatement.

    :raises Invalid: neither is given.
    """
    address = entry.node("Address")
    if address is not None:
        data = _address(address.element)
        data["address_status"] = address.element.get("status")
        data["address_start"], data["address_end"] = address.period()
        return data
    statement = entry.node("AddressStatement")
    if statement is None:
        # directory-entry.xsd leaves both out only in a redacted entry (a shielded child's).
        raise Invalid("Address or AddressStatement is missing (an entry whose address was "
                      "withheld, redacted=\"true\", cannot be imported)", expression=entry.path)
    data = dict.fromkeys(ADDRESS_FIELDS)
    data["address_status"] = statement.text("Statement")
    data["address_start"], data["address_end"] = statement.period()
    return data


def _carers(entry: _Node) -> list[Canonical]:
    """Return the carers in order."""
    carers: list[Canonical] = []
    for node in entry.nodes("Carer"):
        data: Canonical = {"relation": node.text("Relationship"),
                           "parental_responsibility": node.flag("ParentalResponsibility")}
        data.update(_person_name(node.required_element("PersonName")))
        data.update(_contact(node))
        data.update(_address(node.kids.get(_ADDRESS)))
        carers.append(data)
    return carers


def _involvement(index: OrganisationIndex, node: _Node) -> Canonical:
    """Return one involvement.

    :raises Invalid: a sensitive service's role without the SensitiveService element.
    """
    role = node.text("Role")
    sensitive = node.node("SensitiveService")
    if sensitive is None and role in codes.SENSITIVE_ROLES:
        raise Invalid("a sensitive service's involvement needs SensitiveService with its "
                      "consent basis", expression=f"{node.path}/Role")
    org = _organisation(index, node.required("Organisation"))
    data: Canonical = {
        "role": role, "sensitive": sensitive is not None,
        "consent_basis": None if sensitive is None else sensitive.text("ConsentBasis"),
        "lead_professional": node.flag("LeadProfessional"),
        "caf_completed": node.flag("CafCompleted"),
        "organisation": org, "practitioner": _practitioner(index, node, org)}
    data["period_start"], data["period_end"] = node.period()
    data.update(_contact(node))
    return data


def _managing_authority(index: OrganisationIndex, entry: _Node) -> Canonical:
    """Return the managing authority.

    :raises Invalid: it is not a local authority.
    """
    node = entry.required("ManagingAuthority")
    data = _organisation(index, node)
    if data["type"] != "local-authority":
        raise Invalid("the managing authority must be a local authority",
                      expression=f"{node.path}/Type")
    return data


def _child_identity(entry: _Node) -> Canonical:
    """Return the child's own fields: identifiers, gender, dates, status and retention.

    :raises Invalid: a check digit fails, death is before birth, or either is in the future
        (the rule FHIR writes meet in ``adapter.wellformed``).
    """
    data: Canonical = {
        "contactpoint_id": entry.checked(identifiers.validate_contactpoint_id, "ContactPointId")}
    data.update(_nhs_number(entry))
    data["upn"] = entry.checked(identifiers.validate_upn, "UniquePupilNumber")
    data["gender"] = entry.text("Gender")
    data["birth_date"], data["death_date"] = entry.date("BirthDate"), entry.date("DeathDate")
    if data["death_date"] is not None and data["death_date"] < data["birth_date"]:
        raise Invalid("the date of death is before the date of birth",
                      expression=f"{entry.path}/DeathDate")
    for name, field in (("BirthDate", "birth_date"), ("DeathDate", "death_date")):
        if data[field] is not None and data[field] > today_in_england():
            raise Invalid("the date is in the future", expression=f"{entry.path}/{name}")
    data["shielded"] = entry.flag("Shielded")
    data["record_status"] = entry.text("RecordStatus")
    retention = entry.required("Retention")
    data["extended_retention"] = retention.text("ExtendedRetention")
    data["retention_date"] = retention.date("RetentionDate")
    return data


def entry_data(element: etree._Element) -> Canonical:
    """Return the canonical dict of a DirectoryEntry element that passed the XSD.

    :raises Invalid: a rule the XSD cannot express is broken (see the module docstring).
    """
    entry = _Node(element, None, "DirectoryEntry")
    index = OrganisationIndex()
    data = _child_identity(entry)
    data.update(_child_address(entry))
    data["managing_organisation"] = _managing_authority(index, entry)
    data["names"] = _names(entry)
    data["local_identifiers"] = _local_identifiers(index, entry)
    data["carers"] = _carers(entry)
    data["involvements"] = [_involvement(index, node) for node in entry.nodes("Involvement")]
    data.update(_meta(entry))
    return data


def read_entry(entry: etree._Element) -> ChildRecord:
    """Validate a DirectoryEntry element against the XSD and return its record.

    :raises Invalid: the element breaks the XSD or a rule of the directory.
    """
    validate_element(load_schema(ENTRY_XSD), entry)
    return ChildRecord(entry_data(entry))


# --- eCAF assessment references ------------------------------------------------------------

def _child_reference(index: OrganisationIndex, node: _Node) -> Canonical:
    """Return the identifiers of an assessment's child."""
    return {
        "contactpoint_id": node.checked(identifiers.validate_contactpoint_id, "ContactPointId"),
        "nhs_number": node.checked(identifiers.validate_nhs_number, "NhsNumber"),
        "upn": node.checked(identifiers.validate_upn, "UniquePupilNumber"),
        "local_identifiers": _local_identifiers(index, node),
    }


def _assessment_dates(node: _Node) -> Canonical:
    """Return status and dates of an assessment.

    :raises Invalid: a completed assessment without its completion date, a closed one
        without its closing date, or a date before the start.
    """
    data: Canonical = {"status": node.text("Status"), "started_date": node.date("StartedDate"),
                       "completed_date": node.date("CompletedDate"),
                       "closed_date": node.date("ClosedDate")}
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
    return data


def _team_member(index: OrganisationIndex, node: _Node) -> Canonical:
    """Return one member of the Team Around the Child."""
    org = _organisation(index, node.required("Organisation"))
    data: Canonical = {"role": node.text("Role"), "organisation": org,
                       "practitioner": _practitioner(index, node, org)}
    data.update(_contact(node))
    return data


def assessment_data(element: etree._Element) -> Canonical:
    """Return the canonical dict of an AssessmentReference element that passed the XSD.

    :raises Invalid: a rule the XSD cannot express is broken.
    """
    node = _Node(element, None, "AssessmentReference")
    index = OrganisationIndex()
    data: Canonical = {"assessment_id": node.text("AssessmentId"),
                       "child": _child_reference(index, node.required("Child"))}
    data.update(_assessment_dates(node))
    lead = node.required("LeadProfessional")
    data["lead_organisation"] = _organisation(index, lead.required("Organisation"))
    data["lead_practitioner"] = _practitioner(index, lead, data["lead_organisation"])
    data.update(_contact(lead))
    data["members"] = [_team_member(index, member) for member in node.nodes("TeamMember")]
    data["consent_to_share"] = node.flag("ConsentToShare")
    data.update(_meta(node))
    return data


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
        generated_at = _datetime(element.findtext(q("GeneratedAt")), "Header/GeneratedAt")
    except Invalid as error:
        raise BadRequest(f"invalid batch header: {error.message}",
                         expression=error.expression) from None
    count = element.findtext(q("Count"))
    return BatchHeader(generated_at=generated_at or dt.datetime.now(dt.UTC),
                       source=element.findtext(q("Source")) or "",
                       count=None if count is None else int(count.strip()))


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

    def __init__(self, batch: _Batch, on_header: Callable[[BatchHeader], None] | None) -> None:
        self.batch = batch
        self.on_header = on_header
        self.root: etree._Element | None = None
        self.header_seen = False
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
