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
  the directory's own check (``adapter.directory.check``), which its ``$validate`` routes use.

What only the live gateway can check (it needs the stored directory, or the network) is
listed in ``adapter.findings.LIVE_CHECKS`` and said in every report.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from flask import current_app

from adapter.directory.check import check_directory_batch, check_directory_record
from adapter.errors import BadRequest, GatewayError, Invalid, issue
from adapter.fhir import validation
from adapter.fhir.handlers import ResourceHandler
from adapter.findings import (
    HEAD_BYTES,
    FileReport,
    Finding,
    Unusable,
    error_finding,
    kind_of_head,
)
from adapter.security.caller import Caller
from adapter.wellformed import root_expression, shape_flaws

REPORT_TYPES: Final = frozenset({"OperationOutcome"})
ENTRY_RE: Final = re.compile(r"^Bundle\.entry\[(\d+)\]")


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

    return {h.resource_type: h for h in HANDLERS or handlers()
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
            report.findings.append(error_finding(error, report.records, number))
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
        report.findings.append(error_finding(error, None, None))


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
        report.findings.append(error_finding(error, record, None,
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
        report.findings.append(error_finding(error, None, None))
        return
    check_document(report, resource, caller, "bundle-json")


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
