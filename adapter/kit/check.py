"""Checking files record by record, offline, with the gateway's own checker.

Each record meets exactly the checks an inbound write meets before anything is looked up in
the database, through the same functions (docs/architecture.md "Inbound validation"):

- FHIR (a resource in JSON or XML, each entry of a Bundle, each line of NDJSON): the document
  stage (``adapter.fhir.body.parse_json_resource``, ``adapter.fhir.xml.loads_resource``, the
  shape rules of ``adapter.wellformed``), then the resource type's ``$validate``
  (``ResourceHandler.validate``: the FHIR model, the profiles it claims or UK Core's, the
  mapping's rules and what it would not keep); a transaction or batch entry's request as
  ``POST /fhir`` reads it (``adapter.fhir.transaction``);
- directory XML (a ``DirectoryEntries`` or ``AssessmentReferences`` batch, or one record):
  the XSD and the rules of ``adapter.directory.reader``, and for entries the parts rule of
  ``adapter.imports.entries.check_parts``.

What only the live gateway can check (it needs the stored directory, or the network) is
listed in ``LIVE_CHECKS`` and said in every report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson
from flask import current_app
from lxml import etree

from adapter.errors import BadRequest, GatewayError, Invalid, issue
from adapter.fhir import validation
from adapter.fhir.handlers import ResourceHandler
from adapter.security.caller import Caller
from adapter.wellformed import root_expression, shape_flaws

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
REPORT_TYPES: Final = frozenset({"OperationOutcome"})
FAILING: Final = frozenset({"error", "fatal"})
LINE_RE: Final = re.compile(r"line (\d+)")
ENTRY_RE: Final = re.compile(r"^Bundle\.entry\[(\d+)\]")

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


def kind_of_file(path: Path) -> str:
    """Return the kind of the file at ``path`` (a ``.ndjson`` file is NDJSON; other JSON is
    NDJSON when its first line holds a whole JSON document and another line follows).

    :raises Unusable: none of the kinds.
    :raises OSError: it cannot be read.
    """
    with open(path, "rb") as stream:
        head = stream.read(HEAD_BYTES)
    return kind_of_head(head, lambda: path.suffix == ".ndjson" or _several_documents(path))


def _several_documents(path: Path) -> bool:
    """Return whether a JSON file's first non-empty line is a whole JSON document and another
    non-empty line follows (NDJSON, http://ndjson.org; FHIR Bulk Data IG)."""
    with open(path, "rb") as stream:
        lines = (line for line in stream if line.strip())
        first, second = next(lines, b""), next(lines, None)
    if second is None:
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return True


# --- FHIR ------------------------------------------------------------------------------------

def _validating_handlers() -> dict[str, ResourceHandler]:
    """Return the app's handler of each type that offers ``$validate``, by type
    (Subscription apart: see ``subscription_issues``)."""
    from adapter.fhir.api import HANDLERS, handlers
    from adapter.http import current_settings

    return {h.resource_type: h for h in HANDLERS or handlers(current_settings())
            if "validate" in h.interactions and h.resource_type != "Subscription"}


def accepted_types() -> list[str]:
    """Return the resource types the gateway accepts, sorted."""
    return sorted([*_validating_handlers(), "Subscription"])


def subscription_issues(resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
    """Return the issues a Subscription create meets offline: ``read_spec``, as the
    Subscription handler reads it, without the endpoint's address check (a live check: it
    resolves the host name, ``adapter.notify.addresses``)."""
    from adapter.notify.spec import read_spec
    from adapter.notify.subscriptions import canonical

    try:
        read_spec(resource, caller, canonical(), bool(current_app.config["NOTIFY_ALLOW_HTTP"]))
    except Invalid as exc:
        return [issue("error", exc.issue_code, exc.message, exc.expression)]
    return []


def resource_issues(resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
    """Return the issues of one resource at the resource stage, as its type's ``$validate``
    finds them (empty: it would be accepted, as far as can be told offline)."""
    kind = str(resource.get("resourceType"))
    if kind in REPORT_TYPES:
        return [issue("information", "informational", f"{kind} is a report, not data: not "
                      "checked (an import skips it).", kind)]
    if kind == "Subscription":
        return subscription_issues(resource, caller)
    handler = _validating_handlers().get(kind)
    if handler is None:
        return [issue("error", "not-supported", f"{kind} is not a resource type this gateway "
                      f"accepts (it accepts {', '.join(accepted_types())}).",
                      root_expression(resource))]
    with validation.offline():
        return handler.validate(resource, caller)


def shape_issues(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every shape flaw of a resource (``adapter.wellformed``), as issues."""
    return [issue("error", "structure", flaw.message, flaw.expression)
            for flaw in shape_flaws(resource)]


def _finding(found: dict[str, Any], record: int | None, line: int | None,
             full_url: str | None = None, rebase: str | None = None) -> Finding:
    """Return an OperationOutcome issue as a finding; ``rebase`` replaces the resource type
    that starts its expression (``Patient.name`` → ``Bundle.entry[1].resource.name``)."""
    path = (found.get("expression") or [None])[0]
    if rebase and path and not path.startswith(rebase):
        head, dot, rest = path.partition(".")
        path = f"{rebase}{dot}{rest}" if head and not head.startswith("Bundle") else path
    return Finding(record, line, found["severity"], found["diagnostics"], path, full_url,
                   found.get("code", "invalid"))


def _error_finding(error: GatewayError, record: int | None, line: int | None,
                   severity: str = "error") -> Finding:
    """Return a refused document or record as a finding (its line taken from its message)."""
    found = LINE_RE.search(error.message)
    return Finding(record, line or (int(found.group(1)) if found else None), severity,
                   error.message, error.expression, None, error.issue_code)


def check_resource(report: FileReport, resource: dict[str, Any], caller: Caller,
                   line: int | None = None) -> None:
    """Check one FHIR resource document (JSON or XML) into ``report``."""
    report.records += 1
    found = shape_issues(resource) or resource_issues(resource, caller)
    report.findings.extend(_finding(i, 1, line) for i in found)


def check_ndjson(report: FileReport, lines: Iterator[tuple[int, bytes]],
                 caller: Caller) -> None:
    """Check each non-empty line of an NDJSON file into ``report`` (position: line)."""
    from adapter.fhir.body import parse_json_resource

    for number, text in lines:
        report.records += 1
        try:
            resource = parse_json_resource(text, "The line")
        except BadRequest as error:
            report.findings.append(_error_finding(error, report.records, number))
            continue
        report.findings.extend(_finding(i, report.records, number)
                               for i in resource_issues(resource, caller))


def _request_issues(raw: Any, index: int, bundle_type: str) -> tuple[list[Finding], bool]:
    """Return the findings of a transaction or batch entry's request as ``POST /fhir``
    reads it, and whether the entry carries a resource to check (POST and PUT)."""
    from adapter.fhir.transaction import _entries, _resource_of

    if bundle_type not in ("transaction", "batch"):
        return [], True
    try:
        entry = dataclasses.replace(_entries({"entry": [raw]})[0], index=index)
        if entry.method not in ("POST", "PUT"):
            return [], False
        _resource_of(entry)
    except GatewayError as error:
        where = (error.expression or "").replace("Bundle.entry[0]", f"Bundle.entry[{index}]")
        return [Finding(index + 1, None, "error", error.message, where or None,
                        _full_url(raw), error.issue_code)], False
    return [], True


def _full_url(raw: Any) -> str | None:
    """Return an entry's fullUrl, if it has a text one."""
    value = raw.get("fullUrl") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def check_bundle(report: FileReport, bundle: dict[str, Any], caller: Caller) -> None:
    """Check each entry of a Bundle into ``report`` (position: entry number and fullUrl)."""
    kind = str(bundle.get("type"))
    entries = bundle.get("entry") or []
    document = [i for i in shape_issues(bundle)
                if not ENTRY_RE.match((i.get("expression") or [""])[0])]
    report.findings.extend(_finding(i, None, None) for i in document)
    created = _created_references(entries) if kind == "transaction" else {}
    for index, raw in enumerate(entries):
        report.records += 1
        findings, has_resource = _request_issues(raw, index, kind)
        report.findings.extend(findings)
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if not has_resource or not isinstance(resource, dict):
            continue
        prefix = f"Bundle.entry[{index}].resource"
        found = shape_issues(resource) or resource_issues(
            _replace_references(resource, created), caller)
        report.findings.extend(_finding(i, index + 1, None, _full_url(raw), prefix)
                               for i in found)
    if kind == "transaction" and not report.errors:
        _check_order(report, bundle)


def _created_references(entries: list[Any]) -> dict[str, str]:
    """Return the reference each ``urn:uuid`` entry of a transaction stands for once created
    (FHIR R4 http.html#trules: a transaction resolves them; its own id is not known offline,
    so the uuid stands in for it, a valid FHIR id)."""
    known = {}
    for raw in entries:
        full_url, resource = _full_url(raw), raw.get("resource") if isinstance(raw, dict) \
            else None
        if full_url and full_url.startswith("urn:uuid:") and isinstance(resource, dict):
            known[full_url] = f"{resource.get('resourceType')}/{full_url[len('urn:uuid:'):]}"
    return known


def _replace_references(resource: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    """Return ``resource`` with its references to ``known`` entries rewritten as
    ``POST /fhir`` rewrites them (``adapter.fhir.transaction``)."""
    from adapter.fhir.transaction import _replace_references as replace

    if not known:
        return resource
    replaced: dict[str, Any] = replace(resource, known)
    return replaced


def _check_order(report: FileReport, bundle: dict[str, Any]) -> None:
    """Check a transaction's ``urn:uuid`` references can be resolved in some order."""
    from adapter.fhir.transaction import _entries, processing_order

    try:
        processing_order(_entries(bundle))
    except GatewayError as error:
        report.findings.append(_error_finding(error, None, None))


def check_document(report: FileReport, resource: dict[str, Any], caller: Caller,
                   bundle_kind: str) -> None:
    """Check one parsed FHIR document: a Bundle entry by entry (the file's kind becomes
    ``bundle_kind``), any other resource whole."""
    if resource.get("resourceType") == "Bundle":
        report.kind = bundle_kind
        check_bundle(report, resource, caller)
    else:
        check_resource(report, resource, caller)


def check_fhir_xml(report: FileReport, data: bytes, caller: Caller) -> None:
    """Check a FHIR XML document (a resource, or a Bundle entry by entry) into ``report``."""
    from adapter.fhir.xml import loads_resource

    try:
        resource = loads_resource(data)
    except GatewayError as error:
        entry = ENTRY_RE.match(error.expression or "")
        record = int(entry.group(1)) + 1 if entry else 1
        report.records = max(report.records, record)
        report.findings.append(_error_finding(error, record, None,
                                              "fatal" if report.kind == "bundle-xml"
                                              else "error"))
        return
    check_document(report, resource, caller, "bundle-xml")


def check_fhir_json(report: FileReport, data: bytes, caller: Caller) -> None:
    """Check a FHIR JSON document (a resource, or a Bundle entry by entry) into ``report``."""
    from adapter.fhir.body import parse_json_resource

    try:
        resource = parse_json_resource(data, "The file")
    except BadRequest as error:
        report.findings.append(_error_finding(error, None, None))
        return
    check_document(report, resource, caller, "bundle-json")


# --- directory XML ---------------------------------------------------------------------------

def _record_findings(position: int, line: int | None, item: Any,
                     entries: bool) -> list[Finding]:
    """Return the findings of one record the reader gave (its error, or the parts rule)."""
    from adapter.directory.reader import RecordInvalid
    from adapter.imports.entries import check_parts

    if isinstance(item, RecordInvalid):
        return [Finding(position, line, "error", item.message, item.expression)]
    if entries:
        try:
            check_parts(item)
            live_entry_age_rules(item)
        except Invalid as error:
            return [Finding(position, line, "error", error.message, error.expression)]
    return []


def live_entry_age_rules(data: Any) -> None:
    """A live entry's person is within the directory's age rules, as a FHIR ``$validate``
    and the kit's FHIR check report it (``PatientProvider.validate``): the import refuses
    a new or re-dated live entry outside them (``adapter.store.entry_rules``).

    :raises Invalid: outside the age rules (the rule quoted).
    """
    from adapter.store.entry_rules import require_within_age_rules

    if (data.get("record_status") or "live") == "live":
        require_within_age_rules(data["birth_date"], data["death_date"],
                                 data["extended_retention"], "DirectoryEntry/BirthDate",
                                 "DirectoryEntry/DeathDate")


def check_directory_batch(report: FileReport, source: str | IO[bytes]) -> None:
    """Check a directory XML batch record by record into ``report`` (position: record number
    and line); a document that stops being readable ends with a fatal finding there."""
    from adapter.directory.reader import iter_assessment_data, iter_entry_data

    entries = report.kind == "directory-entries"
    items = iter_entry_data(source) if entries else iter_assessment_data(source)
    try:
        for position, line, item in items:
            report.records = position
            report.findings.extend(_record_findings(position, line, item, entries))
    except BadRequest as error:
        # A line in the message: the document broke inside the record after the last one
        # read; none: it was refused as a whole (a DTD, another root, no Header).
        found = LINE_RE.search(error.message)
        record = report.records + 1 if found else None
        report.records = record or report.records
        report.findings.append(Finding(
            record, int(found.group(1)) if found else None, "fatal",
            f"the document is unreadable from here on: {error.message}", error.expression,
            None, error.issue_code))


def check_directory_record(report: FileReport, data: bytes) -> None:
    """Check a document of one directory XML record (``DirectoryEntry`` or
    ``AssessmentReference``) into ``report``."""
    from adapter.directory.reader import ASSESSMENTS, ENTRIES, _line, _read_record
    from adapter.xmlsafe import parse_bytes

    try:
        root = parse_bytes(data)
    except BadRequest as error:
        report.findings.append(_error_finding(error, 1, None, "fatal"))
        return
    report.records = 1
    entries = report.kind == "directory-entry"
    item = _read_record(root, ENTRIES if entries else ASSESSMENTS)
    report.findings.extend(_record_findings(1, _line(root), item, entries))


# --- files -----------------------------------------------------------------------------------

def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield the non-empty lines of a file with their numbers."""
    with open(path, "rb") as stream:
        for number, text in enumerate(stream, start=1):
            if text.strip():
                yield number, text


def check_file(path: Path, caller: Caller, name: str | None = None) -> FileReport:
    """Check one file; return its report (``unusable`` set when it cannot be checked)."""
    report = FileReport(name or str(path), "unknown")
    try:
        report.kind = kind_of_file(path)
        if report.kind == "ndjson":
            check_ndjson(report, _lines(path), caller)
        elif report.kind in ("directory-entries", "directory-assessments"):
            check_directory_batch(report, str(path))
        elif report.kind in ("directory-entry", "directory-assessment"):
            check_directory_record(report, path.read_bytes())
        elif report.kind in ("fhir-xml", "bundle-xml"):
            check_fhir_xml(report, path.read_bytes(), caller)
        else:
            check_fhir_json(report, path.read_bytes(), caller)
    except Unusable as error:
        report.unusable = str(error)
    except OSError as error:
        report.unusable = f"cannot be read ({error.strerror or error})"
    return report


def live_checks(kind: str) -> tuple[str, ...]:
    """Return the checks of the live gateway that a file of ``kind`` is not put through."""
    return LIVE_CHECKS["directory" if kind.startswith("directory") else "fhir"]


def report_json(report: FileReport) -> dict[str, Any]:
    """Return a file's report as JSON-ready data."""
    return {
        "file": report.name, "kind": report.kind, "records": report.records,
        "errors": report.errors, "warnings": report.warnings,
        **({"unusable": report.unusable} if report.unusable else {}),
        "findings": [{"position": report.position(f), "record": f.record, "line": f.line,
                      **({"fullUrl": f.full_url} if f.full_url else {}),
                      "path": f.path, "severity": f.severity, "code": f.code,
                      "message": f.message} for f in report.findings],
    }


def dumps(value: Any) -> bytes:
    """Return ``value`` as indented JSON."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2)


# --- request bodies --------------------------------------------------------------------------

DIRECTORY_FAMILIES: Final = {"entries": ("directory-entries", "directory-entry"),
                              "assessments": ("directory-assessments", "directory-assessment")}
ROOT_NAMES: Final = {"entries": "DirectoryEntries", "entry": "DirectoryEntry",
                     "assessments": "AssessmentReferences", "assessment": "AssessmentReference"}


class _Rejoined:
    """A binary stream whose first bytes were read already (to tell its kind)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        """Return the next bytes: the head first, then the rest of the stream."""
        if self.head:
            data, self.head = self.head, b""
            return data
        return self.rest.read(size)

    def read_all(self) -> bytes:
        """Return everything not read yet."""
        chunks = [self.read()]
        while chunk := self.rest.read(HEAD_BYTES):
            chunks.append(chunk)
        return b"".join(chunks)


def check_directory_body(source: IO[bytes], family: str) -> FileReport:
    """Check a request body that should be directory XML of ``family`` (``entries`` or
    ``assessments``): a batch record by record, or one record.

    :raises BadRequest: the body is not directory XML of that family.
    """
    head = source.read(HEAD_BYTES)
    wanted = DIRECTORY_FAMILIES[family]
    try:
        kind = kind_of_head(head, lambda: False)
    except Unusable as error:
        kind = str(error)
    if kind not in wanted:
        batch, record = (kind.split("-")[1] for kind in wanted)
        raise BadRequest(f"The body is not a {ROOT_NAMES[batch]} batch nor a "
                         f"{ROOT_NAMES[record]} document of namespace {DIRECTORY_NS}.")
    report = FileReport("body", kind)
    stream = _Rejoined(head, source)
    if kind == wanted[0]:
        check_directory_batch(report, stream)  # type: ignore[arg-type]  # read(size) is all lxml uses
    else:
        check_directory_record(report, stream.read_all())
    return report


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
