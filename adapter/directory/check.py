"""Checking directory XML record by record without storing it: a ``DirectoryEntries`` or
``AssessmentReferences`` batch, or one record, through the XSD and the rules of
``adapter.directory.reader`` and, for entries, the parts rule of
``adapter.imports.entries.check_parts`` and the age rules of a live entry — the checks an
import makes before it looks anything up (docs/architecture.md "Inbound validation"). Used by
the directory ``$validate`` routes (``adapter.directory.routes``) and the conformance kit
(``adapter.kit.check``).
"""

from __future__ import annotations

from typing import IO, Any, Final

from adapter.errors import BadRequest, Invalid
from adapter.findings import (
    DIRECTORY_NS,
    HEAD_BYTES,
    LINE_RE,
    FileReport,
    Finding,
    Unusable,
    error_finding,
    kind_of_head,
)


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
        report.findings.append(error_finding(error, 1, None, "fatal"))
        return
    report.records = 1
    entries = report.kind == "directory-entry"
    item = _read_record(root, ENTRIES if entries else ASSESSMENTS)
    report.findings.extend(_record_findings(1, _line(root), item, entries))


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
