"""Directory XML: the XSDs, canonical -> XML -> canonical round trips, streamed batches with
broken and hostile records, and import reports."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import select

from adapter import codes, identifiers
from adapter.db import Database
from adapter.demo import load_demo_data
from adapter.directory import (
    BatchHeader,
    ImportOutcome,
    RecordInvalid,
    dumps_assessment,
    dumps_entry,
    iter_assessments,
    iter_entries,
    iter_entry_data,
    loads_assessment,
    loads_entry,
    write_assessments,
    write_entries,
    write_entry,
    write_import_report,
)
from adapter.directory.reader import ENTRIES, _BatchReader
from adapter.directory.schema import (
    ASSESSMENT_XSD,
    ENTRY_XSD,
    NS,
    REPORT_XSD,
    SCHEMA_DIR,
    SCHEMA_FILES,
    load_schema,
)
from adapter.errors import BadRequest, Invalid
from adapter.identifiers import make_contactpoint_id, make_test_nhs_number
from adapter.models import Assessment, Child
from adapter.models.canonical import (
    ChildRecord,
    canonical_assessment_dump,
    canonical_dump,
    without_meta,
)
from tests.strategies import assessments, children, emails, phones, postcodes, upns

XS = "{http://www.w3.org/2001/XMLSchema}"
ROUND_TRIP = settings(max_examples=100, deadline=None)
PER_CODE = settings(max_examples=8, deadline=None)


def _xsd(name: str) -> etree._Element:
    """Return the parsed XSD file ``name``."""
    return etree.parse(str(SCHEMA_DIR / name)).getroot()


def _assert_valid(xml: bytes, schema: str) -> None:
    """Assert that the document ``xml`` is valid against the XSD ``schema``."""
    load_schema(schema).assertValid(etree.fromstring(xml))


# --- the XSDs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_compiles_in_our_namespace(name: str) -> None:
    """Every XSD compiles and declares the dialect's namespace as its target."""
    assert isinstance(load_schema(name), etree.XMLSchema)
    assert _xsd(name).get("targetNamespace") == NS == "urn:contactpoint-gateway:directory:1"


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_declaration_is_documented(name: str) -> None:
    """Every element, attribute, type and attribute group has an xs:documentation."""
    root = _xsd(name)
    kinds = ("element", "attribute", "complexType", "simpleType", "attributeGroup")
    declarations = [node for kind in kinds for node in root.iter(XS + kind)]
    undocumented = [
        f"{etree.QName(node).localname} {node.get('name') or node.get('ref')} "
        f"(line {node.sourceline})"
        for node in declarations
        if not (node.findtext(f"{XS}annotation/{XS}documentation") or "").strip()]
    assert declarations and not undocumented


# simpleType in the XSDs -> the vocabulary of adapter/codes.py it writes out.
XSD_VOCABULARIES = {
    "GenderCode": "GENDERS",
    "NameUseCode": "NAME_USES",
    "AddressHeldCode": "ADDRESS_STATUSES_WITH_ADDRESS",
    "NhsNumberVerificationStatusCode": "NHS_NUMBER_STATUSES",
    "RecordStatusCode": "RECORD_STATUSES",
    "ExtendedRetentionReasonCode": "EXTENDED_RETENTION_REASONS",
    "CarerRelationshipCode": "CARER_RELATIONSHIPS",
    "OrganisationTypeCode": "ORGANISATION_TYPES",
    "InvolvementRoleCode": "INVOLVEMENT_ROLES",
    "ConsentBasisCode": "CONSENT_BASES",
    "AssessmentStatusCode": "ASSESSMENT_STATUSES",
}
# Vocabularies of adapter/codes.py the XML carries by its structure rather than as one list.
STRUCTURAL = {
    "ADDRESS_STATUSES": "Address/@status (AddressHeldCode) or AddressStatement/Statement",
    "SENSITIVE_ROLES": "the SensitiveService element, required by the reader for these roles",
    "TEAM_ROLES": "the LeadProfessional element and the TeamMember elements",
}
# Code lists of the XSDs that are not canonical vocabularies.
XSD_ONLY = {
    "AddressStatementCode": "the statuses of ADDRESS_STATUSES without an address",
    "ImportStatusCode": "what an import did with a record (import-report.xsd)",
    # decommission.xsd and certificate.xsd: tests/decommission/test_units.py checks these.
    "PhaseCode": "the decommissioning phases (adapter/models/decommission.py PHASES)",
    "TaskStatusCode": "a purge Task's status (adapter/models/decommission.py TASK_STATUSES)",
    "ShownStatusCode": "the dashboard's statuses (adapter/decommission/codes.py)",
}


def _enumerations() -> dict[str, tuple[str, ...]]:
    """Return every enumerated simpleType of the XSDs with its values in order."""
    found: dict[str, tuple[str, ...]] = {}
    for name in SCHEMA_FILES:
        for simple in _xsd(name).iter(XS + "simpleType"):
            values = tuple(e.get("value") for e in simple.iter(XS + "enumeration"))
            if values:
                found[simple.get("name")] = values
    return found


def test_enumerations_equal_the_canonical_vocabularies() -> None:
    """The code lists written out in the XSDs are exactly those of adapter/codes.py."""
    enumerations = _enumerations()
    assert set(enumerations) == set(XSD_VOCABULARIES) | set(XSD_ONLY)
    for simple_type, vocabulary in XSD_VOCABULARIES.items():
        assert enumerations[simple_type] == getattr(codes, vocabulary), simple_type
    assert (enumerations["AddressHeldCode"] + enumerations["AddressStatementCode"]
            == codes.ADDRESS_STATUSES)
    assert enumerations["ImportStatusCode"] == ("created", "updated", "unchanged", "rejected")


def test_every_vocabulary_of_codes_is_in_the_dialect() -> None:
    """A vocabulary added to adapter/codes.py must be placed in the XSDs (or said why not)."""
    vocabularies = {name for name, value in vars(codes).items()
                    if name.isupper() and isinstance(value, tuple)}
    assert vocabularies == set(XSD_VOCABULARIES.values()) | set(STRUCTURAL)
    assert set(codes.SENSITIVE_ROLES) <= set(codes.INVOLVEMENT_ROLES)


# --- round trips ----------------------------------------------------------------------------

def _round_trip_child(child: Child) -> None:
    """Assert that ``child`` survives canonical -> directory XML -> canonical unchanged."""
    xml = dumps_entry(child)
    _assert_valid(xml, ENTRY_XSD)
    record = loads_entry(xml)
    assert record.data == canonical_dump(child)
    assert canonical_dump(record.child, meta=False) == canonical_dump(child, meta=False)


@ROUND_TRIP
@given(children())
def test_entry_round_trip_is_identity(child: Child) -> None:
    """canonical -> XML -> canonical is the identity on canonical_dump, and the XML is valid."""
    _round_trip_child(child)


@pytest.mark.parametrize("status", codes.ADDRESS_STATUSES)
@PER_CODE
@given(data=st.data())
def test_round_trip_every_address_status(status: str, data: st.DataObject) -> None:
    """Every address status, with its address or as a statement, round-trips."""
    _round_trip_child(data.draw(children(address_statuses=st.just(status))))


@pytest.mark.parametrize("relation", codes.CARER_RELATIONSHIPS)
@PER_CODE
@given(data=st.data())
def test_round_trip_every_carer_relationship(relation: str, data: st.DataObject) -> None:
    """Carers of every relationship round-trip."""
    _round_trip_child(data.draw(children(carer_relations=st.just(relation), min_carers=1)))


@pytest.mark.parametrize("role", codes.INVOLVEMENT_ROLES)
@PER_CODE
@given(data=st.data())
def test_round_trip_every_involvement_role(role: str, data: st.DataObject) -> None:
    """Involvements of every role (sensitive ones with their consent basis) round-trip."""
    _round_trip_child(data.draw(children(involvement_roles=st.just(role), min_involvements=1)))


def _round_trip_assessment(assessment: Assessment) -> None:
    """Assert that ``assessment`` survives canonical -> XML -> canonical unchanged."""
    xml = dumps_assessment(assessment)
    _assert_valid(xml, ASSESSMENT_XSD)
    record = loads_assessment(xml)
    assert record.data == canonical_assessment_dump(assessment)
    rebuilt = record.assessment
    rebuilt.child = assessment.child  # the service layer resolves the child by its identifiers
    assert canonical_assessment_dump(rebuilt, meta=False) == canonical_assessment_dump(
        assessment, meta=False)


@pytest.mark.parametrize("status", codes.ASSESSMENT_STATUSES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_assessment_round_trip_every_status(status: str, data: st.DataObject) -> None:
    """Assessment references in every status, with team members, round-trip."""
    _round_trip_assessment(data.draw(assessments(statuses=st.just(status), min_members=1)))


@settings(max_examples=20, deadline=None)
@given(children())
def test_record_shares_one_object_per_natural_key(child: Child) -> None:
    """The transient record holds one Organisation per natural key, used by every part."""
    record = loads_entry(dumps_entry(child))
    built = record.child
    parts = [built.managing_organisation, *(li.organisation for li in built.local_identifiers),
             *(inv.organisation for inv in built.involvements)]
    assert all(any(org is known for known in record.organisations.values()) for org in parts)
    assert {id(p) for p in record.practitioners.values()} == {
        id(inv.practitioner) for inv in built.involvements if inv.practitioner is not None}
    assert built.id is None and built.resource_id is None


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(child=children())
def test_round_trip_through_the_database(db: Database, child: Child) -> None:
    """An entry read from XML inserts as it is, and the stored entry writes the same back.

    Stored types differ (SQLite's naive datetimes, PostgreSQL's varchar limits).
    """
    record = loads_entry(dumps_entry(child))
    built = record.child
    for obj in (built, *record.organisations.values(), *record.practitioners.values(),
                *built.involvements):
        obj.resource_id = str(uuid.uuid4())
    with db.sessions() as session:
        session.add(built)
        session.flush()
        session.expire_all()
        stored = session.scalars(select(Child).where(Child.id == built.id)).one()
        again = loads_entry(etree.tostring(write_entry(stored)))
        assert without_meta(again.data) == canonical_dump(child, meta=False)
        assert again.data["version"] == stored.version
        session.rollback()


# --- batches -------------------------------------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(st.lists(children(), max_size=6))
def test_batch_round_trip_in_order(entries: list[Child]) -> None:
    """A streamed batch validates as a whole and reads back entry by entry, in order."""
    stream = io.BytesIO()
    written = write_entries(entries, stream, source="test", count=len(entries))
    _assert_valid(stream.getvalue(), ENTRY_XSD)
    headers: list[BatchHeader] = []
    stream.seek(0)
    items = list(iter_entries(stream, on_header=headers.append))
    assert written == len(entries) and headers[0].count == len(entries)
    assert [position for position, _, _ in items] == list(range(1, len(entries) + 1))
    assert [item.data for _, _, item in items] == [canonical_dump(c) for c in entries]


@settings(max_examples=10, deadline=None)
@given(st.lists(assessments(), max_size=4))
def test_assessment_batch_round_trip(references: list[Assessment]) -> None:
    """A streamed batch of assessment references validates and reads back in order."""
    stream = io.BytesIO()
    write_assessments(references, stream, source="test")
    _assert_valid(stream.getvalue(), ASSESSMENT_XSD)
    stream.seek(0)
    items = list(iter_assessments(stream))
    assert [item.data for _, _, item in items] == [canonical_assessment_dump(a)
                                                   for a in references]


AUTHORITY = """<ManagingAuthority>
    <Name>Leeds City Council</Name>
    <Type>local-authority</Type>
    <GssCode>E08000035</GssCode>
    <LaNumber>383</LaNumber>
  </ManagingAuthority>"""
GOOD_NHS = make_test_nhs_number(1)
BAD_NHS = GOOD_NHS[:9] + str((int(GOOD_NHS[9]) + 1) % 10)


def entry_xml(serial: int, *, nhs: str = GOOD_NHS, gender: str = "9",
              birth: str = "2015-04-01", death: str = "", postcode: str = "LS1 1AA",
              authority: str = AUTHORITY, extra: str = "") -> str:
    """Return a small DirectoryEntry (one element a line) with the given values."""
    death_element = f"<DeathDate>{death}</DeathDate>" if death else ""
    gender_element = f"<Gender>{gender}</Gender>" if gender else ""
    return f"""<DirectoryEntry>
  <ContactPointId>{make_contactpoint_id(serial)}</ContactPointId>
  <NhsNumber verificationStatus="01">{nhs}</NhsNumber>
  <Name use="current">
    <PersonGivenName>Alex</PersonGivenName>
    <PersonFamilyName>Smith</PersonFamilyName>
  </Name>
  {gender_element}
  <BirthDate>{birth}</BirthDate>{death_element}
  <Address status="current">
    <PAON>1</PAON>
    <Town>Leeds</Town>
    <PostCode>{postcode}</PostCode>
  </Address>
  <Shielded>false</Shielded>
  <RecordStatus>live</RecordStatus>
  <Retention><RetentionDate>2033-04-01</RetentionDate></Retention>
  {authority}
  {extra}
</DirectoryEntry>"""


def batch_xml(*records: str, root: str = "DirectoryEntries", prolog: str = "") -> bytes:
    """Return a batch document holding ``records`` after a header."""
    header = ("<Header><GeneratedAt>2026-08-01T12:00:00Z</GeneratedAt>"
              "<Source>test</Source></Header>")
    body = "\n".join(records)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}<{root} xmlns="{NS}">\n'
            f"{header}\n{body}\n</{root}>\n").encode()


SENSITIVE_WITHOUT_BASIS = """<Involvement>
    <Role>sexual-health</Role>
    <Organisation><Name>Clinic</Name><Type>nhs-trust</Type><OdsCode>RXX</OdsCode></Organisation>
    <LeadProfessional>false</LeadProfessional>
    <CafCompleted>false</CafCompleted>
  </Involvement>"""
AUTHORITY_AGAIN_DIFFERENTLY = """<Involvement>
    <Role>social-worker</Role>
    <Organisation><Name>Leeds</Name><Type>local-authority</Type><GssCode>E08000035</GssCode>
    </Organisation>
    <LeadProfessional>true</LeadProfessional>
    <CafCompleted>false</CafCompleted>
  </Involvement>"""

# (record, expected expression, a reason fragment) of broken records; None for good ones.
BATCH: list[tuple[str, str | None, str | None]] = [
    (entry_xml(1), None, None),
    (entry_xml(2, nhs=BAD_NHS), "DirectoryEntry/NhsNumber", "check digit"),
    (entry_xml(3), None, None),
    (entry_xml(4, gender=""), "DirectoryEntry/BirthDate", "Gender"),
    (entry_xml(5, gender="M"), "DirectoryEntry/Gender", "allowed codes"),
    ("<Unexpected><Payload>text</Payload></Unexpected>", "Unexpected", "not expected"),
    (entry_xml(6, extra=SENSITIVE_WITHOUT_BASIS), "DirectoryEntry/Involvement/Role",
     "SensitiveService"),
    (entry_xml(7, extra=AUTHORITY_AGAIN_DIFFERENTLY), "DirectoryEntry/Involvement/Organisation",
     "described differently"),
    (entry_xml(8, birth="2015-04-01", death="2014-01-01"), "DirectoryEntry/DeathDate",
     "before the date of birth"),
    (entry_xml(9, postcode="LS1 1AAX"), "DirectoryEntry/Address/PostCode", "required format"),
    (entry_xml(10, birth="2015-02-30"), "DirectoryEntry/BirthDate", "valid date"),
    ("<Header><GeneratedAt>2026-08-02T00:00:00Z</GeneratedAt><Source>late</Source></Header>",
     "Header", "not expected"),
    (entry_xml(12, authority=AUTHORITY.replace(
        "</ManagingAuthority>", "<ContactDetails><TelephoneNumber>+1 555 0100 100"
        "</TelephoneNumber></ContactDetails></ManagingAuthority>")),
     "DirectoryEntry/ManagingAuthority/ContactDetails/TelephoneNumber", "UK telephone number"),
    (entry_xml(11), None, None),
]


def _record_lines(document: bytes, records: list[str]) -> list[int]:
    """Return the line on which each record starts in ``document``."""
    text, lines, offset = document.decode(), [], 0
    for record in records:
        offset = text.index(record, offset)
        lines.append(text.count("\n", 0, offset) + 1)
        offset += len(record)
    return lines


def test_broken_records_are_reported_and_the_rest_read() -> None:
    """Good records come back; each broken one as an error with number, line and element.

    No error repeats the offending value.
    """
    records = [record for record, _, _ in BATCH]
    document = batch_xml(*records)
    items = list(iter_entries(io.BytesIO(document)))
    assert [position for position, _, _ in items] == list(range(1, len(BATCH) + 1))
    assert [line for _, line, _ in items] == _record_lines(document, records)
    for (_, expression, fragment), (position, _, item) in zip(BATCH, items, strict=True):
        if expression is None:
            assert isinstance(item, ChildRecord), (position, getattr(item, "message", ""))
            continue
        assert isinstance(item, RecordInvalid), position
        assert item.expression == expression and fragment in item.message, item.message
        for value in (BAD_NHS, "LS1 1AAX", "2015-02-30", "text", "555 0100"):
            assert value not in item.message
    assert items[1][2].contactpoint_id == make_contactpoint_id(2)  # valid: safe to report
    assert items[5][2].contactpoint_id is None  # the <Unexpected> element has none


def test_entries_of_a_batch_keep_their_order_and_values() -> None:
    """The good records of the broken batch carry what the file said."""
    items = list(iter_entry_data(io.BytesIO(batch_xml(*(r for r, _, _ in BATCH)))))
    good = [item for _, _, item in items if not isinstance(item, Invalid)]
    assert [data["contactpoint_id"] for data in good] == [
        make_contactpoint_id(n) for n in (1, 3, 11)]
    assert good[0]["nhs_number"] == GOOD_NHS and good[0]["nhs_number_status"] == "01"
    assert good[0]["managing_organisation"]["gss_code"] == "E08000035"


def _largest_tree(records: int) -> int:
    """Return the most elements the parse tree held at once while streaming a batch."""
    reader = _BatchReader(ENTRIES, None)
    largest = count = 0
    for _item in reader.read(io.BytesIO(batch_xml(*(entry_xml(n) for n in range(records))))):
        assert reader.root is not None
        assert reader.previous is None or reader.root[0] is reader.previous  # all else released
        largest = max(largest, sum(1 for _ in reader.root.iter()))
        count += 1
    assert count == records
    return largest


def test_streaming_memory_stays_flat() -> None:
    """Each record is released once read: the tree holds the parser's read-ahead, no more.

    The largest tree is the same for a batch ten times as long.
    """
    assert _largest_tree(2000) <= _largest_tree(200) + 30


def test_truncated_batch_yields_what_came_before() -> None:
    """A batch that stops being well-formed yields its records up to there, then fails."""
    document = batch_xml(entry_xml(1), entry_xml(2))[:-60]
    seen: list[Any] = []
    with pytest.raises(BadRequest, match="Malformed XML at line"):
        for item in iter_entries(io.BytesIO(document)):
            seen.append(item)
    assert len(seen) == 1


BILLION_LAUGHS = """<!DOCTYPE DirectoryEntries [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
"""
EXTERNAL_ENTITY = '<!DOCTYPE DirectoryEntries [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
EXTERNAL_DTD = '<!DOCTYPE DirectoryEntries SYSTEM "http://127.0.0.1:9/evil.dtd">\n'


@pytest.mark.parametrize(("prolog", "family"), [
    (BILLION_LAUGHS, "&lol3;"), (EXTERNAL_ENTITY, "&xxe;"), (EXTERNAL_DTD, "Smith")])
def test_hostile_batch_is_refused_before_any_record(prolog: str, family: str) -> None:
    """A batch with a DTD (entity expansion, external entities or DTD) is refused whole."""
    document = batch_xml(entry_xml(1).replace("Smith", family), prolog=prolog)
    seen: list[Any] = []
    with pytest.raises(BadRequest, match="DTD"):
        for item in iter_entries(io.BytesIO(document)):
            seen.append(item)
    assert seen == []
    with pytest.raises(BadRequest, match="DTD"):
        loads_entry(prolog.encode() + entry_xml(1).replace(
            "<DirectoryEntry>", f'<DirectoryEntry xmlns="{NS}">').encode())


def test_other_documents_are_refused() -> None:
    """A document of another kind, or a batch without its header, is a bad request."""
    with pytest.raises(BadRequest, match="not a DirectoryEntries document"):
        list(iter_entries(io.BytesIO(batch_xml(entry_xml(1), root="AssessmentReferences"))))
    headless = batch_xml(entry_xml(1)).replace(b"<Header>", b"<!--").replace(b"</Header>",
                                                                               b"-->")
    with pytest.raises(BadRequest, match="no Header"):
        list(iter_entries(io.BytesIO(headless)))
    with pytest.raises(BadRequest, match="not a DirectoryEntry document"):
        loads_entry(b'<DirectoryEntries xmlns="' + NS.encode() + b'"/>')


def test_schema_errors_name_the_element_not_the_value() -> None:
    """A pattern error in a single entry names the element and hides the value."""
    document = entry_xml(1, nhs="12345X7890").replace(
        "<DirectoryEntry>", f'<DirectoryEntry xmlns="{NS}" version="x1">')
    with pytest.raises(Invalid) as caught:
        loads_entry(document.encode())
    assert caught.value.expression in ("DirectoryEntry/NhsNumber", "DirectoryEntry/@version")
    assert "12345X7890" not in caught.value.message and "x1" not in caught.value.message


# --- import reports ----------------------------------------------------------------------------

def test_import_report_validates_and_counts() -> None:
    """An import report of every status validates against import-report.xsd."""
    outcomes = [
        ImportOutcome(1, 3, "created", make_contactpoint_id(1)),
        ImportOutcome(2, 25, "updated", make_contactpoint_id(2)),
        ImportOutcome(3, 47, "unchanged", make_contactpoint_id(3)),
        ImportOutcome(4, 69, "rejected", None, "the NHS number check digit does not match",
                      "DirectoryEntry/NhsNumber"),
    ]
    stream = io.BytesIO()
    counts = write_import_report(iter(outcomes), stream,
                                 generated_at=dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    _assert_valid(stream.getvalue(), REPORT_XSD)
    root = etree.fromstring(stream.getvalue())
    assert counts == {"created": 1, "updated": 1, "unchanged": 1, "rejected": 1}
    assert root.findtext(f"{{{NS}}}Summary/{{{NS}}}Rejected") == "1"
    assert root.find(f"{{{NS}}}Record[4]/{{{NS}}}Reason").get("expression") == (
        "DirectoryEntry/NhsNumber")


def test_schema_files_are_the_published_ones() -> None:
    """The XSDs served are the files under schemas/xml (no stray copies)."""
    assert sorted(p.name for p in Path(SCHEMA_DIR).glob("*.xsd")) == sorted(SCHEMA_FILES)


# --- XSD patterns against adapter/identifiers.py -------------------------------------------------

# Simple types whose pattern the reader relies on instead of running the validator again: each
# must accept exactly the values that the validator returns unchanged.
EXACT_PATTERNS = {
    "OdsCodeType": identifiers.validate_ods_code,
    "SchoolUrnType": identifiers.validate_urn,
    "GssCodeType": identifiers.validate_gss_code,
    "LaNumberType": identifiers.validate_la_number,
    "PostcodeType": identifiers.validate_postcode,
}
# Simple types the reader checks with the validator as well: each accepts every value the
# validator returns unchanged (what the writer writes).
LOOSER_PATTERNS = {
    "TelephoneNumberType": identifiers.validate_phone,
    "EmailAddressType": identifiers.validate_email,
    "NhsNumberType": identifiers.validate_nhs_number,
    "UniquePupilNumberType": identifiers.validate_upn,
    "ContactPointIdType": identifiers.validate_contactpoint_id,
}


@pytest.fixture(scope="module")
def value_schema() -> etree.XMLSchema:
    """A schema with one element per simple type of common.xsd, named after the type."""
    elements = "".join(f'<xs:element name="{name}" type="{name}"/>'
                       for name in (*EXACT_PATTERNS, *LOOSER_PATTERNS))
    document = (f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns="{NS}" '
                f'targetNamespace="{NS}" elementFormDefault="qualified">'
                f'<xs:include schemaLocation="common.xsd"/>{elements}</xs:schema>')
    return etree.XMLSchema(etree.fromstring(document.encode(),
                                            base_url=f"{SCHEMA_DIR.as_uri()}/value.xsd"))


def _accepts(schema: etree.XMLSchema, type_name: str, value: str) -> bool:
    """Return whether the simple type ``type_name`` accepts ``value``."""
    element = etree.Element(f"{{{NS}}}{type_name}")
    element.text = value
    return schema.validate(element)


def _unchanged(validate: Any, value: str) -> bool:
    """Return whether ``validate`` accepts ``value`` and returns it as it is."""
    try:
        return bool(validate(value) == value)
    except identifiers.InvalidIdentifier:
        return False


CANDIDATES = st.one_of(
    st.text(alphabet="ABCEGHNRSWYZ0123456789 abe-", max_size=10),
    st.from_regex(r"[A-Z0-9]{2,7}", fullmatch=True),
    st.from_regex(r"E(0[5-9]|1[01])[0-9]{5,7}", fullmatch=True),
    st.from_regex(r"[0-9]{2,7}", fullmatch=True),
    postcodes, postcodes.map(lambda p: p.replace(" ", "")), postcodes.map(str.lower),
)


@settings(max_examples=400, deadline=None)
@given(value=CANDIDATES)
def test_exact_patterns_equal_the_validators(value_schema: etree.XMLSchema, value: str) -> None:
    """Where the reader trusts the XSD, its pattern and adapter/identifiers.py agree."""
    for type_name, validate in EXACT_PATTERNS.items():
        assert _accepts(value_schema, type_name, value) == _unchanged(validate, value), type_name


@settings(max_examples=200, deadline=None)
@given(st.one_of(phones(), emails, st.integers(0, 999_999).map(make_test_nhs_number), upns(),
                 st.integers(0, 2**40 - 1).map(make_contactpoint_id), CANDIDATES))
def test_looser_patterns_accept_what_the_validators_keep(value_schema: etree.XMLSchema,
                                                           value: str) -> None:
    """Every value a validator leaves unchanged (all the writer writes) passes the XSD."""
    for type_name, validate in LOOSER_PATTERNS.items():
        if _unchanged(validate, value):
            assert _accepts(value_schema, type_name, value), type_name


@pytest.mark.parametrize(("type_name", "value", "accepted"), [
    ("OdsCodeType", "A81001", True), ("OdsCodeType", "RXX", True), ("OdsCodeType", "123", False),
    ("OdsCodeType", "a81001", False), ("SchoolUrnType", "100000", True),
    ("SchoolUrnType", "012345", False), ("GssCodeType", "E10000023", True),
    ("GssCodeType", "E07000123", False), ("LaNumberType", "938", True),
    ("LaNumberType", "939", False), ("PostcodeType", "SW1A 1AA", True),
    ("PostcodeType", "GIR 0AA", True), ("PostcodeType", "SW1A1AA", False),
    ("PostcodeType", "QA1 1AA", False),
])
def test_patterns_on_known_values(value_schema: etree.XMLSchema, type_name: str, value: str,
                                  accepted: bool) -> None:
    """The identifier patterns accept and refuse known values, as the validators do."""
    assert _accepts(value_schema, type_name, value) is accepted
    assert _unchanged(EXACT_PATTERNS[type_name], value) is accepted


@pytest.mark.slow
def test_demo_children_round_trip_through_a_batch(db: Database) -> None:
    """2,000 stored demo children write a valid batch that streams back to what is stored."""
    load_demo_data(db, children=2000, authorities=3, seed=11, progress=False)
    stream = io.BytesIO()
    with db.sessions() as session:
        stored = session.scalars(select(Child).order_by(Child.id)).all()
        expected = [canonical_dump(child) for child in stored]
        assert write_entries(stored, stream, count=len(stored)) == 2000
    _assert_valid(stream.getvalue(), ENTRY_XSD)
    stream.seek(0)
    read = [item for _, _, item in iter_entry_data(stream)]
    assert read == expected
