"""The directory XML dialect's one field table: every element and attribute of a directory
record (``schemas/xml``) with the canonical field it carries (``adapter.models.canonical``),
its value type, its cardinality and its place in the XSD sequence. The reader
(``adapter.directory.reader``) and the writer (``adapter.directory.writer``) are both driven
by it, so an element is declared once: the writer writes the fields in the order given here
(the XSD's ``xs:sequence`` order), the reader reads each from its element.

The XSDs stay the published contract (docs/architecture.md "Schemas are published artefacts");
``tests/directory/test_xml.py`` round-trips records through both directions. What the XSD
cannot say (check digits, dates in order, organisations described one way only) are the
reader's rules, keyed by the ``Structure`` names below.

The kinds of declaration:

- ``Text``: a child element whose text is one field (``Texts``: a repeated one, a list);
- ``Attribute``: an attribute of the structure's own element;
- ``Group``: a child element whose parts are fields of the same record (an address's lines,
  contact details, a period), written when any of them is known unless ``required``;
- ``Record``: a child element holding a nested record (an organisation, a carer), or a list
  of them (``many``);
- ``Choice``: one of several groups, chosen by a field's value (an address, or the statement
  that replaces it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from adapter import codes, identifiers
from adapter.directory.schema import q
from adapter.models.canonical import as_utc

Validator = Callable[[str, str], str]


# --- values --------------------------------------------------------------------------------

def xml_bool(value: bool) -> str:
    """Return an xs:boolean lexical value."""
    return "true" if value else "false"


def xml_datetime(value: dt.datetime) -> str:
    """Return an instant as DateTimeType text in UTC with ``Z``."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_date(text: str, _name: str) -> dt.date:
    """Return DateType text as a date (ValueError: not one Python can hold, e.g. year 0)."""
    return dt.date.fromisoformat(text.strip())


def _parse_datetime(text: str, _name: str) -> dt.datetime | None:
    """Return DateTimeType text as an aware UTC datetime (ValueError: not one)."""
    return as_utc(dt.datetime.fromisoformat(text.strip()))


def _parse_int(text: str, _name: str) -> int:
    """Return xs:positiveInteger or xs:nonNegativeInteger text as an int."""
    return int(text.strip())


def _parse_bool(text: str, _name: str) -> bool:
    """Return xs:boolean text as a bool."""
    return text.strip() in ("true", "1")


def _date_text(value: Any) -> str:
    """Return a date as DateType text."""
    text: str = value.isoformat()
    return text


@dataclass(frozen=True)
class Value:
    """How the text of an element or attribute maps to a canonical value and back.

    ``parse`` (None: the text as it is) raises ``ValueError`` (the reader says ``invalid``)
    or ``identifiers.InvalidIdentifier`` (the reader says its reason); ``render`` (None: the
    value as it is) writes it. ``absent`` is the value of a missing element; ``always``: the
    element is written whatever the value (an xs:boolean the XSD requires); ``mark``: an
    attribute written only when the value is true (``redacted``) and never read.
    """

    parse: Callable[[str, str], Any] | None = None
    render: Callable[[Any], str] | None = None
    invalid: str = ""
    absent: Any = None
    always: bool = False
    mark: bool = False


TEXT: Final = Value()
DATE: Final = Value(_parse_date, _date_text, "not a valid date")
DATETIME: Final = Value(_parse_datetime, xml_datetime, "not a valid date and time")
INTEGER: Final = Value(_parse_int, str, "not a whole number")
BOOLEAN: Final = Value(_parse_bool, xml_bool, absent=False, always=True)
MARK: Final = Value(render=lambda _value: "true", mark=True)


def checked(validate: Validator) -> Value:
    """Return a text value the reader checks (and normalises) with ``validate``."""
    return Value(validate)


CONTACTPOINT_ID: Final = checked(identifiers.validate_contactpoint_id)
NHS_NUMBER: Final = checked(identifiers.validate_nhs_number)
UPN: Final = checked(identifiers.validate_upn)
PHONE: Final = checked(identifiers.validate_phone)
EMAIL: Final = checked(identifiers.validate_email)


# --- declarations --------------------------------------------------------------------------

@dataclass(frozen=True)
class Attribute:
    """An attribute of the structure's element <-> a field (``required``: set even when the
    value is None, which fails as the XSD's ``use="required"`` would)."""

    name: str
    field: str
    value: Value = TEXT
    required: bool = False


@dataclass(frozen=True)
class Text:
    """A child element's text <-> a field, with the element's own attributes.

    ``required``: written even when the value is None (an empty element: the XSD refuses it).
    """

    element: str
    field: str
    value: Value = TEXT
    required: bool = False
    attributes: tuple[Attribute, ...] = ()

    @property
    def tag(self) -> str:
        """Return the element's qualified name."""
        return q(self.element)


@dataclass(frozen=True)
class Texts:
    """Repeated child elements <-> a list of texts (an absent text reads as "")."""

    element: str
    field: str

    @property
    def tag(self) -> str:
        """Return the element's qualified name."""
        return q(self.element)


@dataclass(frozen=True)
class Structure:
    """An XSD complex type as a sequence of declarations; ``name`` keys the reader's rules."""

    name: str
    fields: tuple[Declaration, ...]

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        """Return the attributes of the structure's own element, in order."""
        return tuple(item for item in self.fields if isinstance(item, Attribute))

    @property
    def elements(self) -> tuple[Declaration, ...]:
        """Return the child element declarations, in the XSD sequence's order."""
        return tuple(item for item in self.fields if not isinstance(item, Attribute))


@dataclass(frozen=True)
class Group:
    """A child element whose parts are fields of the enclosing record.

    Written when any of its fields is known, always when ``required``, or when the field
    ``flag`` is true (then read as whether the element is there: ``SensitiveService``).
    ``when``: in a ``Choice``, the values of the choice's field that select this group (None:
    any other value).
    """

    element: str
    structure: Structure
    required: bool = False
    flag: str | None = None
    when: frozenset[str] | None = None

    @property
    def tag(self) -> str:
        """Return the element's qualified name."""
        return q(self.element)

    @property
    def names(self) -> tuple[str, ...]:
        """Return the canonical fields of the group's text parts (nested groups' included)."""
        found: list[str] = []
        for item in self.structure.fields:
            if isinstance(item, Text | Texts | Attribute):
                found.append(item.field)
            elif isinstance(item, Group):
                found.extend(item.names)
        return tuple(found)


@dataclass(frozen=True)
class Record:
    """A child element holding a nested record (``many``: a list of them, each element one).

    ``context``: the enclosing record's field holding the organisation a nested record
    defaults to (a practitioner's employer), which its ``inherit`` record takes when the
    element is absent and leaves out when it is the same organisation. ``key``: a field the
    record must know to be written at all (a practitioner known only by national
    identifiers has no place in the dialect: common.xsd PractitionerStructure requires its
    LocalId; docs/directory-xml.md).
    """

    element: str
    field: str
    structure: Structure
    many: bool = False
    required: bool = False
    inherit: bool = False
    key: str | None = None
    context: str | None = None

    @property
    def tag(self) -> str:
        """Return the element's qualified name."""
        return q(self.element)


@dataclass(frozen=True)
class Choice:
    """One of several groups (``xs:choice``), chosen for writing by the value of ``field``:
    nothing when it is None. The reader reads the group that is there."""

    field: str
    options: tuple[Group, ...]
    names: tuple[str, ...] = ()


Declaration = Attribute | Text | Texts | Group | Record | Choice


def choice(on: str, *options: Group) -> Choice:
    """Return a Choice with the union of its groups' fields (each None when its group is
    not the one there)."""
    names: list[str] = []
    for option in options:
        names.extend(name for name in option.names if name not in names)
    return Choice(on, options, tuple(names))


# --- shared structures (common.xsd) --------------------------------------------------------

def period(start: str, end: str) -> Group:
    """Return a Period (PeriodStructure) whose dates are the fields ``start`` and ``end``."""
    return Group("Period", Structure("PeriodStructure", (
        Text("StartDate", start, DATE), Text("EndDate", end, DATE))))


# BS7666AddressStructure's lines in the order of the canonical address fields.
ADDRESS_LINES: Final = Structure("BS7666AddressStructure", (
    Text("SAON", "address_saon"), Text("PAON", "address_paon"),
    Text("StreetDescription", "address_street"), Text("Locality", "address_locality"),
    Text("Town", "address_town"), Text("PostCode", "address_postcode"),
    Text("UniquePropertyReferenceNumber", "address_uprn")))
ADDRESS: Final = Group("Address", ADDRESS_LINES)
CONTACT: Final = Group("ContactDetails", Structure("ContactDetailsStructure", (
    Text("TelephoneNumber", "phone", PHONE), Text("EmailAddress", "email", EMAIL))))
PERSON_NAME_PARTS: Final = (
    Text("PersonNameTitle", "title"), Texts("PersonGivenName", "given"),
    Text("PersonFamilyName", "family", required=True))
PERSON_NAME: Final = Group("PersonName", Structure("PersonNameStructure", PERSON_NAME_PARTS),
                           required=True)
ORGANISATION: Final = Structure("OrganisationStructure", (
    Text("Name", "name"), Text("Type", "type"), Text("OdsCode", "ods_code"),
    Text("SchoolUrn", "urn"), Text("GssCode", "gss_code"), Text("LaNumber", "la_number"),
    ADDRESS, CONTACT))
PRACTITIONER: Final = Structure("PractitionerStructure", (
    Text("LocalId", "local_id"), PERSON_NAME, CONTACT,
    Record("Organisation", "organisation", ORGANISATION, inherit=True)))
LOCAL_IDENTIFIER: Final = Structure("LocalIdentifierStructure", (
    Record("Organisation", "organisation", ORGANISATION, required=True),
    Text("Value", "value")))
# RecordMetaAttributes and DisclosureAttributes (common.xsd): ``redacted`` is written where
# the disclosure policy cut the record, and never read (such an entry cannot be imported).
RECORD_META: Final = (
    Attribute("version", "version", INTEGER),
    Attribute("lastUpdated", "last_updated", DATETIME),
    Attribute("redacted", "redacted", MARK))


def practitioner(name: str, organisation: str) -> Record:
    """Return the optional Practitioner (field ``name``) employed, unless it names its own
    Organisation, by the organisation in the enclosing record's field ``organisation``."""
    return Record("Practitioner", name, PRACTITIONER, key="local_id", context=organisation)


# --- directory entries (directory-entry.xsd) -----------------------------------------------

CHILD_NAME: Final = Structure("ChildNameStructure", (
    Attribute("use", "use", required=True), *PERSON_NAME_PARTS,
    period("period_start", "period_end")))
CARER: Final = Structure("CarerStructure", (
    Text("Relationship", "relation"), Text("ParentalResponsibility", "parental_responsibility",
                                           BOOLEAN),
    PERSON_NAME, ADDRESS, CONTACT))
INVOLVEMENT: Final = Structure("InvolvementStructure", (
    Text("Role", "role"),
    Record("Organisation", "organisation", ORGANISATION, required=True),
    practitioner("practitioner", "organisation"),
    Group("SensitiveService", Structure("SensitiveServiceStructure", (
        Text("ConsentBasis", "consent_basis"),)), flag="sensitive"),
    Text("LeadProfessional", "lead_professional", BOOLEAN),
    Text("CafCompleted", "caf_completed", BOOLEAN),
    period("period_start", "period_end"), CONTACT))
CHILD_ADDRESS: Final = choice(
    "address_status",
    Group("Address", Structure("ChildAddressStructure", (
        Attribute("status", "address_status", required=True), *ADDRESS_LINES.fields,
        period("address_start", "address_end"))),
        when=frozenset(codes.ADDRESS_STATUSES_WITH_ADDRESS)),
    Group("AddressStatement", Structure("AddressStatementStructure", (
        Text("Statement", "address_status"), period("address_start", "address_end")))))
ENTRY: Final = Structure("DirectoryEntryStructure", (
    *RECORD_META,
    Text("ContactPointId", "contactpoint_id", CONTACTPOINT_ID),
    Text("NhsNumber", "nhs_number", NHS_NUMBER, attributes=(
        Attribute("verificationStatus", "nhs_number_status"),)),
    Text("UniquePupilNumber", "upn", UPN),
    Record("LocalIdentifier", "local_identifiers", LOCAL_IDENTIFIER, many=True),
    Record("Name", "names", CHILD_NAME, many=True),
    Text("Gender", "gender"),
    Text("BirthDate", "birth_date", DATE),
    Text("DeathDate", "death_date", DATE),
    CHILD_ADDRESS,
    Text("Shielded", "shielded", BOOLEAN),
    Text("RecordStatus", "record_status"),
    Group("Retention", Structure("RetentionStructure", (
        Text("ExtendedRetention", "extended_retention"),
        Text("RetentionDate", "retention_date", DATE))), required=True),
    Record("ManagingAuthority", "managing_organisation", ORGANISATION, required=True),
    Record("Carer", "carers", CARER, many=True),
    Record("Involvement", "involvements", INVOLVEMENT, many=True)))


# --- eCAF assessment references (ecaf-assessment.xsd) --------------------------------------

CHILD_REFERENCE: Final = Structure("ChildReferenceStructure", (
    Text("ContactPointId", "contactpoint_id", CONTACTPOINT_ID),
    Text("NhsNumber", "nhs_number", NHS_NUMBER),
    Text("UniquePupilNumber", "upn", UPN),
    Record("LocalIdentifier", "local_identifiers", LOCAL_IDENTIFIER, many=True)))
TEAM_MEMBER: Final = Structure("TeamMemberStructure", (
    Text("Role", "role"),
    Record("Organisation", "organisation", ORGANISATION, required=True),
    practitioner("practitioner", "organisation"), CONTACT))
ASSESSMENT: Final = Structure("AssessmentReferenceStructure", (
    *RECORD_META,
    Text("AssessmentId", "assessment_id"),
    Record("Child", "child", CHILD_REFERENCE, required=True),
    Text("Status", "status"),
    Text("StartedDate", "started_date", DATE),
    Text("CompletedDate", "completed_date", DATE),
    Text("ClosedDate", "closed_date", DATE),
    Group("LeadProfessional", Structure("LeadProfessionalStructure", (
        Record("Organisation", "lead_organisation", ORGANISATION, required=True),
        practitioner("lead_practitioner", "lead_organisation"), CONTACT)), required=True),
    Record("TeamMember", "members", TEAM_MEMBER, many=True),
    Text("ConsentToShare", "consent_to_share", BOOLEAN)))


# --- batch headers and import reports (common.xsd, import-report.xsd) ----------------------

HEADER: Final = Structure("BatchHeaderStructure", (
    Text("GeneratedAt", "generated_at", DATETIME), Text("Source", "source"),
    Text("Count", "count", INTEGER)))
IMPORT_RECORD: Final = Structure("ImportRecordStructure", (
    Text("RecordNumber", "record_number", INTEGER), Text("Line", "line", INTEGER),
    Text("ContactPointId", "contactpoint_id"), Text("Status", "status"),
    Text("Reason", "reason", attributes=(Attribute("expression", "expression"),))))
IMPORT_STATUSES: Final = ("created", "updated", "unchanged", "rejected")
IMPORT_SUMMARY: Final = Structure("ImportSummaryStructure", tuple(
    Text(status.capitalize(), status, INTEGER, required=True) for status in IMPORT_STATUSES))

# The records of the dialect by their element.
RECORDS: Final = {"DirectoryEntry": ENTRY, "AssessmentReference": ASSESSMENT,
                  "Header": HEADER, "Record": IMPORT_RECORD, "Summary": IMPORT_SUMMARY}
