"""Canonical records to directory XML: single entries and assessment references, and batch
documents streamed with ``etree.xmlfile`` so that memory stays flat however many records go
out. Everything is written from the canonical dicts of ``adapter.models.canonical``, so the
writer and the reader are mirror images over one shape.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Final

from lxml import etree

from adapter import codes, identity
from adapter.directory.schema import NS, q
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
# (canonical field, BS7666 element) in the order of BS7666AddressStructure (common.xsd).
ADDRESS_ELEMENTS: Final = (
    ("address_saon", "SAON"), ("address_paon", "PAON"), ("address_street", "StreetDescription"),
    ("address_locality", "Locality"), ("address_town", "Town"), ("address_postcode", "PostCode"),
    ("address_uprn", "UniquePropertyReferenceNumber"),
)
IMPORT_STATUSES: Final = ("created", "updated", "unchanged", "rejected")

Data = Mapping[str, Any]


def xml_bool(value: bool) -> str:
    """Return an xs:boolean lexical value."""
    return "true" if value else "false"


def xml_datetime(value: dt.datetime) -> str:
    """Return an instant as DateTimeType text in UTC with ``Z``."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _sub(parent: etree._Element, name: str, text: str | None) -> None:
    """Append a text element when ``text`` is not None."""
    if text is not None:
        etree.SubElement(parent, q(name)).text = text


def _date(parent: etree._Element, name: str, value: dt.date | None) -> None:
    """Append a DateType element when ``value`` is not None."""
    if value is not None:
        etree.SubElement(parent, q(name)).text = value.isoformat()


def _period(parent: etree._Element, start: dt.date | None, end: dt.date | None) -> None:
    """Append a Period when either end is known."""
    if start is not None or end is not None:
        period = etree.SubElement(parent, q("Period"))
        _date(period, "StartDate", start)
        _date(period, "EndDate", end)


def _address_lines(parent: etree._Element, data: Data) -> None:
    """Append the BS7666 parts of an address held in ``address_*`` fields."""
    for field, name in ADDRESS_ELEMENTS:
        _sub(parent, name, data[field])


def _address(parent: etree._Element, name: str, data: Data) -> None:
    """Append a BS7666 address element when any part is known."""
    if any(data[field] is not None for field, _ in ADDRESS_ELEMENTS):
        _address_lines(etree.SubElement(parent, q(name)), data)


def _contact(parent: etree._Element, data: Data) -> None:
    """Append ContactDetails when a telephone number or an e-mail address is known."""
    if data["phone"] is not None or data["email"] is not None:
        contact = etree.SubElement(parent, q("ContactDetails"))
        _sub(contact, "TelephoneNumber", data["phone"])
        _sub(contact, "EmailAddress", data["email"])


def _person_name(element: etree._Element, data: Data) -> None:
    """Append the PersonNameStructure parts of a name to ``element``."""
    _sub(element, "PersonNameTitle", data["title"])
    for given in data["given"]:
        etree.SubElement(element, q("PersonGivenName")).text = given
    etree.SubElement(element, q("PersonFamilyName")).text = data["family"]


def organisation_element(parent: etree._Element, name: str, data: Data) -> None:
    """Append an OrganisationStructure element named ``name``."""
    org = etree.SubElement(parent, q(name))
    _sub(org, "Name", data["name"])
    _sub(org, "Type", data["type"])
    _sub(org, "OdsCode", data["ods_code"])
    _sub(org, "SchoolUrn", data["urn"])
    _sub(org, "GssCode", data["gss_code"])
    _sub(org, "LaNumber", data["la_number"])
    _address(org, "Address", data)
    _contact(org, data)


def _practitioner(parent: etree._Element, data: Data | None, context: Data) -> None:
    """Append a Practitioner; its employer only when it is not the ``context`` organisation.

    A practitioner known only by national identifiers (a GMC number, an SDS user id) is left
    out: the directory XML keys practitioners by their employer's staff id
    (schemas/xml/common.xsd PractitionerStructure, LocalId required) and has no place for
    national identifiers, which FHIR Practitioner carries (docs/directory-xml.md).
    """
    if data is None or data["local_id"] is None:
        return
    element = etree.SubElement(parent, q("Practitioner"))
    _sub(element, "LocalId", data["local_id"])
    _person_name(etree.SubElement(element, q("PersonName")), data)
    _contact(element, data)
    employer = data["organisation"]
    if organisation_codes(employer) != organisation_codes(context):
        organisation_element(element, "Organisation", employer)


def _local_identifier(parent: etree._Element, data: Data) -> None:
    """Append a LocalIdentifier."""
    element = etree.SubElement(parent, q("LocalIdentifier"))
    organisation_element(element, "Organisation", data["organisation"])
    _sub(element, "Value", data["value"])


def _record_meta(element: etree._Element, data: Data) -> None:
    """Set the version, lastUpdated and redacted attributes of a record.

    ``redacted`` (common.xsd DisclosureAttributes) is set when the dict carries a true
    ``redacted`` key: the disclosure policy withheld parts of it (a visible redaction).
    """
    if data.get("version") is not None:
        element.set("version", str(data["version"]))
    if data.get("last_updated") is not None:
        element.set("lastUpdated", xml_datetime(data["last_updated"]))
    if data.get("redacted"):
        element.set("redacted", "true")


# --- directory entries -------------------------------------------------------------------

def _child_address(entry: etree._Element, data: Data) -> None:
    """Append the child's Address, or the AddressStatement that replaces it (neither when the
    disclosure policy withheld it: a shielded child's redacted entry)."""
    if data["address_status"] is None:
        return
    if data["address_status"] in codes.ADDRESS_STATUSES_WITH_ADDRESS:
        address = etree.SubElement(entry, q("Address"), status=data["address_status"])
        _address_lines(address, data)
    else:
        address = etree.SubElement(entry, q("AddressStatement"))
        _sub(address, "Statement", data["address_status"])
    _period(address, data["address_start"], data["address_end"])


def _child_name(entry: etree._Element, data: Data) -> None:
    """Append one of the child's names."""
    name = etree.SubElement(entry, q("Name"), use=data["use"])
    _person_name(name, data)
    _period(name, data["period_start"], data["period_end"])


def _carer(entry: etree._Element, data: Data) -> None:
    """Append a Carer."""
    carer = etree.SubElement(entry, q("Carer"))
    _sub(carer, "Relationship", data["relation"])
    _sub(carer, "ParentalResponsibility", xml_bool(data["parental_responsibility"]))
    _person_name(etree.SubElement(carer, q("PersonName")), data)
    _address(carer, "Address", data)
    _contact(carer, data)


def _involvement(entry: etree._Element, data: Data) -> None:
    """Append an Involvement."""
    involvement = etree.SubElement(entry, q("Involvement"))
    _sub(involvement, "Role", data["role"])
    organisation_element(involvement, "Organisation", data["organisation"])
    _practitioner(involvement, data["practitioner"], data["organisation"])
    if data["sensitive"]:
        sensitive = etree.SubElement(involvement, q("SensitiveService"))
        _sub(sensitive, "ConsentBasis", data["consent_basis"])
    _sub(involvement, "LeadProfessional", xml_bool(data["lead_professional"]))
    _sub(involvement, "CafCompleted", xml_bool(data["caf_completed"]))
    _period(involvement, data["period_start"], data["period_end"])
    _contact(involvement, data)


def _identity(entry: etree._Element, data: Data) -> None:
    """Append the child's identifiers and names."""
    _sub(entry, "ContactPointId", data["contactpoint_id"])
    if data["nhs_number"] is not None:
        nhs = etree.SubElement(entry, q("NhsNumber"))
        nhs.text = data["nhs_number"]
        if data["nhs_number_status"] is not None:
            nhs.set("verificationStatus", data["nhs_number_status"])
    _sub(entry, "UniquePupilNumber", data["upn"])
    for local_identifier in data["local_identifiers"]:
        _local_identifier(entry, local_identifier)
    for name in data["names"]:
        _child_name(entry, name)


def entry_element(data: Data) -> etree._Element:
    """Return the DirectoryEntry element for a canonical child dict (``canonical_dump``)."""
    entry = etree.Element(q("DirectoryEntry"), nsmap=NSMAP)
    _record_meta(entry, data)
    _identity(entry, data)
    _sub(entry, "Gender", data["gender"])
    _date(entry, "BirthDate", data["birth_date"])
    _date(entry, "DeathDate", data["death_date"])
    _child_address(entry, data)
    _sub(entry, "Shielded", xml_bool(data["shielded"]))
    _sub(entry, "RecordStatus", data["record_status"])
    retention = etree.SubElement(entry, q("Retention"))
    _sub(retention, "ExtendedRetention", data["extended_retention"])
    _date(retention, "RetentionDate", data["retention_date"])
    organisation_element(entry, "ManagingAuthority", data["managing_organisation"])
    for carer in data["carers"]:
        _carer(entry, carer)
    for involvement in data["involvements"]:
        _involvement(entry, involvement)
    return entry


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


# --- eCAF assessment references ------------------------------------------------------------

def _child_reference(parent: etree._Element, data: Data) -> None:
    """Append the Child element of an assessment reference."""
    child = etree.SubElement(parent, q("Child"))
    _sub(child, "ContactPointId", data["contactpoint_id"])
    _sub(child, "NhsNumber", data["nhs_number"])
    _sub(child, "UniquePupilNumber", data["upn"])
    for local_identifier in data["local_identifiers"]:
        _local_identifier(child, local_identifier)


def _lead_professional(parent: etree._Element, data: Data) -> None:
    """Append the LeadProfessional of an assessment reference."""
    lead = etree.SubElement(parent, q("LeadProfessional"))
    organisation_element(lead, "Organisation", data["lead_organisation"])
    _practitioner(lead, data["lead_practitioner"], data["lead_organisation"])
    _contact(lead, data)


def _team_member(parent: etree._Element, data: Data) -> None:
    """Append a TeamMember."""
    member = etree.SubElement(parent, q("TeamMember"))
    _sub(member, "Role", data["role"])
    organisation_element(member, "Organisation", data["organisation"])
    _practitioner(member, data["practitioner"], data["organisation"])
    _contact(member, data)


def assessment_element(data: Data) -> etree._Element:
    """Return the AssessmentReference element for a canonical assessment dict."""
    element = etree.Element(q("AssessmentReference"), nsmap=NSMAP)
    _record_meta(element, data)
    _sub(element, "AssessmentId", data["assessment_id"])
    _child_reference(element, data["child"])
    _sub(element, "Status", data["status"])
    _date(element, "StartedDate", data["started_date"])
    _date(element, "CompletedDate", data["completed_date"])
    _date(element, "ClosedDate", data["closed_date"])
    _lead_professional(element, data)
    for member in data["members"]:
        _team_member(element, member)
    _sub(element, "ConsentToShare", xml_bool(data["consent_to_share"]))
    return element


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
    header = etree.Element(q("Header"), nsmap=NSMAP)
    _sub(header, "GeneratedAt", xml_datetime(generated_at or dt.datetime.now(dt.UTC)))
    _sub(header, "Source", source)
    _sub(header, "Count", None if count is None else str(count))
    return header


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

@dataclass(frozen=True)
class ImportOutcome:
    """What an import did with one record of a batch (import-report.xsd ImportRecord)."""

    record_number: int
    line: int | None
    status: str
    contactpoint_id: str | None = None
    reason: str | None = None
    expression: str | None = None
    # What a write that was applied tells its writer (what was not kept or was changed:
    # ``adapter.fhir.announce``), as the import command reports it; not part of the XML report.
    notes: tuple[str, ...] = ()


def outcome_element(outcome: ImportOutcome) -> etree._Element:
    """Return the Record element of one import outcome."""
    record = etree.Element(q("Record"), nsmap=NSMAP)
    _sub(record, "RecordNumber", str(outcome.record_number))
    _sub(record, "Line", None if outcome.line is None else str(outcome.line))
    _sub(record, "ContactPointId", outcome.contactpoint_id)
    _sub(record, "Status", outcome.status)
    if outcome.reason is not None:
        reason = etree.SubElement(record, q("Reason"))
        reason.text = outcome.reason
        if outcome.expression is not None:
            reason.set("expression", outcome.expression)
    return record


def _summary_element(counts: Counter[str]) -> etree._Element:
    """Return the Summary element of an import report."""
    summary = etree.Element(q("Summary"), nsmap=NSMAP)
    for status in IMPORT_STATUSES:
        _sub(summary, status.capitalize(), str(counts[status]))
    return summary


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
