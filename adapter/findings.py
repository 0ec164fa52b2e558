"""The report of a file or request body checked record by record, and what kind of document
it is: shared by the conformance kit (``adapter.kit.check``, FHIR and directory XML files) and
the directory XML ``$validate`` routes (``adapter.directory.check``). Values only: nothing here
reads the database or knows of a request.

A report's findings become OperationOutcome issues with their position in the diagnostics and
the line in the core extension ``operationoutcome-issue-line`` (FHIR R4
extension-operationoutcome-issue-line.html).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from lxml import etree

from adapter.errors import GatewayError, issue

DIRECTORY_NS: Final = "urn:contactpoint-gateway:directory:1"
FHIR_NS: Final = "http://hl7.org/fhir"
# What a file is, by its first element (XML) or its shape (JSON).
XML_KINDS: Final = {
    f"{{{DIRECTORY_NS}}}DirectoryEntries": "directory-entries",
    f"{{{DIRECTORY_NS}}}AssessmentReferences": "directory-assessments",
    f"{{{DIRECTORY_NS}}}DirectoryEntry": "directory-entry",
    f"{{{DIRECTORY_NS}}}AssessmentReference": "directory-assessment",
    f"{{{FHIR_NS}}}Bundle": "bundle-xml",
}
KIND_NAMES: Final = {
    "fhir-json": "FHIR resource (JSON)", "fhir-xml": "FHIR resource (XML)",
    "bundle-json": "FHIR Bundle (JSON)", "bundle-xml": "FHIR Bundle (XML)",
    "ndjson": "NDJSON of FHIR resources",
    "directory-entries": "directory XML DirectoryEntries batch",
    "directory-assessments": "directory XML AssessmentReferences batch",
    "directory-entry": "directory XML DirectoryEntry",
    "directory-assessment": "directory XML AssessmentReference",
}
# How a kind counts its records in a position.
UNITS: Final = {"bundle-json": "entry", "bundle-xml": "entry", "ndjson": "line",
                "directory-entries": "record", "directory-assessments": "record",
                "directory-entry": "record", "directory-assessment": "record",
                "fhir-json": "resource", "fhir-xml": "resource"}
HEAD_BYTES: Final = 1 << 16
# Resources that are reports, not data: the import skips them (adapter.fhir.file_import).
FAILING: Final = frozenset({"error", "fatal"})
LINE_RE: Final = re.compile(r"line (\d+)")

# The checks of a write that need the live gateway: the stored directory or the network.
LIVE_CHECKS: Final = {
    "fhir": (
        "references to Organization, Practitioner, PractitionerRole and Patient name records "
        "the directory holds (or entries of the same transaction)",
        "the sender may write the record: its managing authority (Patient, directory entry), "
        "the organisation providing an involvement, an organisation's own or a practitioner's "
        "employer's record",
        "a Patient without managingOrganization comes from a local authority's own system "
        "(which then manages it; from any other sender it is refused)",
        "one live directory entry per NHS number; identifiers and organisation codes not held "
        "by another record",
        "the version a write names (If-Match, meta.versionId) is the stored one",
        "a Subscription's rest-hook endpoint resolves to public internet addresses",
    ),
    "directory": (
        "the entry's managing authority is the sender's own; shielded and archived entries",
        "organisations and practitioners are described as the directory holds them",
        "the version a record carries is the stored one; identifiers not held by another "
        "record; one live directory entry per NHS number",
        "an assessment reference's child is in the directory",
    ),
}



class Unusable(Exception):
    """A file that is none of the kinds the kit checks, or cannot be read."""


@dataclass(frozen=True)
class Finding:
    """One issue of one record: where it is, what it is."""

    record: int | None
    line: int | None
    severity: str
    message: str
    path: str | None = None
    full_url: str | None = None
    code: str = "invalid"


@dataclass
class FileReport:
    """The findings of one file (or request body)."""

    name: str
    kind: str
    records: int = 0
    findings: list[Finding] = field(default_factory=list)
    unusable: str | None = None

    @property
    def errors(self) -> int:
        """Return how many findings are errors (or fatal)."""
        return sum(1 for f in self.findings if f.severity in FAILING)

    @property
    def warnings(self) -> int:
        """Return how many findings are warnings."""
        return sum(1 for f in self.findings if f.severity == "warning")

    @property
    def bad_records(self) -> int:
        """Return how many records have at least one error."""
        return len({f.record for f in self.findings if f.severity in FAILING})

    def position(self, finding: Finding) -> str:
        """Return where ``finding`` is, in this kind's terms (``entry 2 (urn:uuid:...)``,
        ``line 3``, ``record 4, line 57``)."""
        unit = UNITS.get(self.kind, "record")
        if unit == "line":
            return f"line {finding.line}" if finding.line else "the file"
        if unit == "resource":
            return f"line {finding.line}" if finding.line else "the resource"
        where = f"{unit} {finding.record}" if finding.record else "the document"
        if finding.full_url:
            where += f" ({finding.full_url})"
        if finding.line:
            where += f", line {finding.line}"
        return where


def error_finding(error: GatewayError, record: int | None, line: int | None,
                   severity: str = "error") -> Finding:
    """Return a refused document or record as a finding (its line taken from its message)."""
    found = LINE_RE.search(error.message)
    return Finding(record, line or (int(found.group(1)) if found else None), severity,
                   error.message, error.expression, None, error.issue_code)


# --- detection -----------------------------------------------------------------------------

def xml_root(head: bytes) -> str | None:
    """Return the qualified name of the first element of an XML document's ``head`` (None:
    not XML). Only the start of the document is read; DTDs and entities stay off."""
    parser = etree.XMLPullParser(events=("start",), resolve_entities=False, no_network=True,
                                 load_dtd=False)
    found: list[str] = []
    with contextlib.suppress(etree.XMLSyntaxError):  # a head cut anywhere: the start counts
        parser.feed(head)
        found = [str(element.tag) for _event, element in parser.read_events()
                 if isinstance(element, etree._Element)]
    if not found:
        with contextlib.suppress(etree.XMLSyntaxError):
            found = [str(element.tag) for _event, element in parser.read_events()
                     if isinstance(element, etree._Element)]
    return found[0] if found else None


def kind_of_head(head: bytes, ndjson: Callable[[], bool]) -> str:
    """Return the kind of a document by its first bytes; ``ndjson`` tells whether a JSON
    document is NDJSON (more than one line holding a resource).

    :raises Unusable: none of the kinds.
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        root = xml_root(head)
        if root is None:
            raise Unusable("not well-formed XML at its start")
        if root in XML_KINDS:
            return XML_KINDS[root]
        if root.startswith(f"{{{FHIR_NS}}}"):
            return "fhir-xml"
        raise Unusable("XML that is neither directory XML (namespace "
                       f"{DIRECTORY_NS}) nor FHIR (namespace {FHIR_NS})")
    if text.startswith(b"{"):
        return "ndjson" if ndjson() else "fhir-json"
    raise Unusable("neither XML nor a JSON object: not a FHIR resource, Bundle, NDJSON or "
                   "directory XML")


def live_checks(kind: str) -> tuple[str, ...]:
    """Return the checks of the live gateway that a file of ``kind`` is not put through."""
    return LIVE_CHECKS["directory" if kind.startswith("directory") else "fhir"]


ISSUE_LINE: Final = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-line"


def outcome_issues(report: FileReport) -> list[dict[str, Any]]:
    """Return a report as OperationOutcome issues: one per finding (its position in the
    diagnostics, its element path in ``location``, its line in the core extension
    operationoutcome-issue-line), then a summary."""
    items = []
    for found in report.findings:
        item = issue(found.severity, found.code, f"{report.position(found)}: {found.message}")
        if found.path:
            item["location"] = [found.path]  # an XPath-like path (R4: issue.location)
        if found.line:
            item["extension"] = [{"url": ISSUE_LINE, "valueInteger": found.line}]
        items.append(item)
    checks = "; ".join(live_checks(report.kind))
    items.append(issue("information", "informational",
                       f"{report.records} record(s) checked, {report.bad_records} with errors; "
                       f"nothing was stored. Checked only on import: {checks}."))
    return items
