"""The directory XML interface at ``/directory`` (``schemas/xml/README.md``
"HTTP interface" documents it for callers):

- ``POST /directory/entries`` and ``POST /directory/assessments`` take a batch document
  (``application/xml`` or ``text/xml``), streamed from the request body (never read whole,
  at most ``GATEWAY_MAX_IMPORT_BYTES``: else 413), and answer 200 with an ``ImportReport``:
  one outcome per record and the summary. A body that is not a batch at all (another
  document, a DTD, no header, not XML) is a 400 OperationOutcome and changes nothing.
- ``POST /directory/entries/$validate`` and ``POST /directory/assessments/$validate`` take a
  batch (or one record) as an import does and check it record by record with the import's
  checks that need no stored data (``adapter.directory.check``); they store nothing and answer 200
  with an OperationOutcome naming each bad record's position, element and reason.
- ``GET /directory/entries/{contactpoint-id}``, ``GET /directory/assessments/{assessment-id}``
  and ``GET /directory/{entries|assessments}?authority=<GSS>&changed-since=<instant>&_count=<n>``
  answer a batch document that can be posted back as it is; a further page is named by a
  ``Link: <...>; rel="next"`` header (RFC 8288).

Routes parse the request (an import's body into canonical records, streamed record by record
by ``adapter.directory.reader``), call one service function and render (docs/architecture.md
"Routes are thin"); every error is an OperationOutcome in the format ``Accept`` asks for.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any, Final, cast
from urllib.parse import urlencode

from flask import Flask, Response, current_app, g, request
from werkzeug.datastructures import MultiDict

from adapter import identifiers
from adapter.db import get_db
from adapter.directory.check import check_directory_body
from adapter.directory.reader import iter_assessment_data, iter_entry_data
from adapter.directory.writer import (
    ImportOutcome,
    write_assessments_data,
    write_entries_data,
    write_import_report,
)
from adapter.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, operation_outcome
from adapter.export import directory as export
from adapter.findings import outcome_issues
from adapter.http import fhir_response, public_base
from adapter.imports.directory import import_assessments, import_entries
from adapter.security.access import authenticated, interaction, require_scope
from adapter.store.children import BREAK_GLASS
from adapter.wellformed import Unrenderable

XML_TYPES: Final = frozenset({"application/xml", "text/xml"})
XML_CONTENT: Final = "application/xml; charset=utf-8"
# A report (or a page) is written to memory up to this size, then to a temporary file.
SPOOL_BYTES: Final = 1 << 20
READ_CHUNK: Final = 1 << 16
LIST_PARAMS: Final = frozenset({"authority", "changed-since", "_count", "_cursor", "_format"})
LINE_RE: Final = re.compile(r"line (\d+)")


class LimitedBody:
    """The request body as a binary stream that refuses to go past ``limit`` bytes."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream, self.limit, self.seen = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes of the body.

        :raises PayloadTooLarge: the body goes past the limit.
        """
        wanted = size if size is not None and size > 0 else READ_CHUNK
        data = self.stream.read(min(wanted, self.limit + 1 - self.seen))
        self.seen += len(data)
        if self.seen > self.limit:
            raise PayloadTooLarge(f"The body is over the limit of {self.limit} bytes.")
        return data


def batch_body() -> IO[bytes]:
    """Return the request body of a batch POST as a size-limited stream.

    :raises UnsupportedMediaType: not application/xml or text/xml.
    :raises PayloadTooLarge: a declared length over ``GATEWAY_MAX_IMPORT_BYTES``.
    """
    if request.mimetype.lower() not in XML_TYPES:
        raise UnsupportedMediaType(f"Content-Type {request.mimetype or '(none)'} is not "
                                   "accepted: send a directory XML batch as application/xml "
                                   "or text/xml.")
    limit: int = current_app.config["MAX_IMPORT_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    # lxml reads a file-like object through read(size) only (lxml "Parsing from files").
    return cast("IO[bytes]", LimitedBody(request.stream, limit))


def _reported(first: ImportOutcome, rest: Iterator[ImportOutcome],
              seen: list[int]) -> Iterator[ImportOutcome]:
    """Yield the outcomes; a batch that stops being readable after its first record ends
    with one rejected outcome saying where and why (the records before it were applied)."""
    yield first
    seen[0] = first.record_number
    try:
        for outcome in rest:
            seen[0] = outcome.record_number
            yield outcome
    except BadRequest as error:
        found = LINE_RE.search(error.message)
        yield ImportOutcome(seen[0] + 1, int(found.group(1)) if found else None, "rejected",
                            reason=f"the batch is unreadable from here on ({error.message}); "
                                   "nothing after this point was read")


def _spooled_response(write: Callable[[IO[bytes]], Any], headers: dict[str, str] | None = None,
                      ) -> Response:
    """Return a 200 XML response streamed from what ``write`` wrote to a spooled file."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - response closes it
    try:
        write(spool)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    response = Response(_chunks(spool), status=200, content_type=XML_CONTENT, headers=headers)
    response.call_on_close(spool.close)  # a client that goes away before the end
    return response


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    """Yield a spooled file in chunks, closing it once read."""
    try:
        while chunk := spool.read(READ_CHUNK):
            yield chunk
    finally:
        spool.close()


def import_response(outcomes: Iterator[ImportOutcome]) -> Response:
    """Return the ImportReport of an import as it runs (200).

    :raises BadRequest: the body is not a batch (before any record: nothing changed).
    :raises PayloadTooLarge: the body went past the limit (the records before it applied).
    """
    first = next(outcomes, None)  # a body that is not a batch at all fails here: 400
    if first is None:
        return _spooled_response(lambda spool: write_import_report([], spool))
    seen = [0]
    try:
        return _spooled_response(
            lambda spool: write_import_report(_reported(first, outcomes, seen), spool))
    except PayloadTooLarge as error:
        raise PayloadTooLarge(f"{error.message} The {seen[0]} records before that point were "
                              "applied; send the rest in a smaller batch.") from error


@authenticated("write")
def post_entries() -> Response:
    """Import a DirectoryEntries batch; answer its ImportReport."""
    require_scope(g.caller, "Patient", "create")
    require_scope(g.caller, "Patient", "update")
    return import_response(import_entries(get_db(), iter_entry_data(batch_body()), g.caller))


@authenticated("write")
def post_assessments() -> Response:
    """Import an AssessmentReferences batch; answer its ImportReport."""
    require_scope(g.caller, "CareTeam", "create")
    require_scope(g.caller, "CareTeam", "update")
    return import_response(import_assessments(get_db(), iter_assessment_data(batch_body()),
                                              g.caller))


def validate_response(family: str) -> Response:
    """Return the OperationOutcome of checking the body's records (200; nothing stored).

    :raises BadRequest: the body is not directory XML of this family.
    """
    report = check_directory_body(batch_body(), family)
    return fhir_response(operation_outcome(outcome_issues(report)))


# Like FHIR $validate (adapter.fhir.routes): the type's read scope; nothing is read or stored.
@interaction("Patient", "read", "read")
def validate_entries() -> Response:
    """Check a DirectoryEntries batch or one DirectoryEntry without storing it."""
    return validate_response("entries")


@interaction("CareTeam", "read", "read")
def validate_assessments() -> Response:
    """Check an AssessmentReferences batch or one AssessmentReference without storing it."""
    return validate_response("assessments")


def _instant(value: str) -> dt.datetime:
    """Return an ISO 8601 instant with its time zone.

    :raises BadRequest: not one.
    """
    try:
        moment = dt.datetime.fromisoformat(value.strip())
        if moment.tzinfo is not None:
            return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        pass
    raise BadRequest("changed-since must be an instant with a time zone, e.g. "
                     "2026-08-01T12:00:00Z.", expression="changed-since")


def _count(value: str | None) -> int:
    """Return ``_count`` (default 100, at most 1000).

    :raises BadRequest: not a whole number from 1.
    """
    if value is None:
        return export.DEFAULT_COUNT
    try:
        count = int(value) if value.strip().isascii() else 0
    except ValueError:
        count = 0
    if count < 1:
        raise BadRequest("_count must be a whole number from 1.", expression="_count")
    return min(count, export.MAX_COUNT)


def list_query(args: MultiDict[str, str]) -> export.ListQuery:
    """Return the page a list request asks for.

    :raises BadRequest: an unknown parameter, no valid authority, a malformed instant or count.
    """
    unknown = sorted(set(args) - LIST_PARAMS)
    if unknown:
        raise BadRequest(f"Unknown parameter(s) {', '.join(unknown)}: this list takes "
                         "authority, changed-since, _count and _cursor.", expression=unknown[0])
    try:
        authority = identifiers.validate_gss_code(args.get("authority") or "", "authority")
    except identifiers.InvalidIdentifier as error:
        raise BadRequest(f"authority: {error.reason} (the GSS code of the managing local "
                         "authority).", expression="authority") from None
    since = args.get("changed-since")
    return export.ListQuery(authority, _instant(since) if since else None,
                            _count(args.get("_count")), args.get("_cursor") or None)


def page_headers(page: export.Page, spec: export.ListQuery | None) -> dict[str, str]:
    """Return the Link (next page) and Warning (break-glass) headers of a page."""
    headers: dict[str, str] = {}
    if spec is not None and page.next_cursor is not None:
        params = {"authority": spec.authority, "_count": str(spec.count),
                  "_cursor": page.next_cursor}
        if spec.since is not None:
            params["changed-since"] = spec.since.isoformat().replace("+00:00", "Z")
        headers["Link"] = f'<{public_base()}{request.path}?{urlencode(params)}>; rel="next"'
    if page.overrides:  # RFC 7234 section 5.5: 199 miscellaneous warning, as FHIR reads do
        headers["Warning"] = f'199 contactpoint-gateway "{BREAK_GLASS}"'
    return headers


def entries_response(page: export.Page, spec: export.ListQuery | None = None) -> Response:
    """Return a DirectoryEntries batch of a page (a read by id when ``spec`` is None)."""
    skipped: list[str] = []
    response = _spooled_response(lambda spool: write_entries_data(
        page.records, spool, count=len(page.records), skipped=skipped), page_headers(page, spec))
    return _announce_skipped(response, skipped, spec is None)


def assessments_response(page: export.Page, spec: export.ListQuery | None = None) -> Response:
    """Return an AssessmentReferences batch of a page (a read by id when ``spec`` is None)."""
    skipped: list[str] = []
    response = _spooled_response(lambda spool: write_assessments_data(
        page.records, spool, count=len(page.records), skipped=skipped), page_headers(page, spec))
    return _announce_skipped(response, skipped, spec is None)


def _announce_skipped(response: Response, skipped: list[str], read: bool) -> Response:
    """Name, in a Warning header, the records left out of a page because they cannot be
    rendered (the writer logged them for the operators); the document holds and counts the
    others. A read of such a record answers an OperationOutcome instead, as a FHIR read does
    (docs/architecture.md "Records that cannot be rendered").

    :raises Unrenderable: a read by id of a record that cannot be rendered.
    """
    if skipped and read:
        response.close()
        raise Unrenderable(skipped[0], f"{skipped[0]} cannot be rendered as directory XML. The "
                           "stored record needs correcting; the operators have been told.")
    if skipped:
        response.headers.add("Warning", f'199 contactpoint-gateway "{len(skipped)} record(s) '
                             f'left out: they cannot be rendered ({", ".join(skipped)}); the '
                             'operators have been told"')
    return response


@interaction("Patient", "read", "read")
def get_entry(contactpoint_id: str) -> Response:
    """Return one entry as a batch of one.

    :raises BadRequest: not a ContactPoint ID.
    """
    try:
        cpid = identifiers.validate_contactpoint_id(contactpoint_id)
    except identifiers.InvalidIdentifier as error:
        raise BadRequest(f"Not a ContactPoint ID: {error.reason}.",
                         expression="contactpoint-id") from None
    with get_db().write_transaction() as session:
        page = export.read_entry(session, cpid, g.caller)
    return entries_response(page)


@interaction("Patient", "search", "read")
def list_entries() -> Response:
    """Return a page of an authority's entries."""
    spec = list_query(request.args)
    with get_db().write_transaction() as session:
        page = export.entries_page(session, spec, g.caller)
    return entries_response(page, spec)


@interaction("CareTeam", "read", "read")
def get_assessment(assessment_id: str) -> Response:
    """Return one assessment reference as a batch of one."""
    with get_db().write_transaction() as session:
        page = export.read_assessment(session, assessment_id, g.caller)
    return assessments_response(page)


@interaction("CareTeam", "search", "read")
def list_assessments() -> Response:
    """Return a page of the assessment references of an authority's children."""
    spec = list_query(request.args)
    with get_db().write_transaction() as session:
        page = export.assessments_page(session, spec, g.caller)
    return assessments_response(page, spec)


def init_app(app: Flask) -> None:
    """Register the directory XML routes."""
    rules: list[tuple[str, str, Callable[..., Response], str]] = [
        ("/directory/entries", "directory.entries.import", post_entries, "POST"),
        ("/directory/entries", "directory.entries.list", list_entries, "GET"),
        ("/directory/entries/$validate", "directory.entries.validate", validate_entries,
         "POST"),
        ("/directory/entries/<contactpoint_id>", "directory.entries.read", get_entry, "GET"),
        ("/directory/assessments", "directory.assessments.import", post_assessments, "POST"),
        ("/directory/assessments", "directory.assessments.list", list_assessments, "GET"),
        ("/directory/assessments/$validate", "directory.assessments.validate",
         validate_assessments, "POST"),
        ("/directory/assessments/<assessment_id>", "directory.assessments.read",
         get_assessment, "GET"),
    ]
    for rule, endpoint, view, method in rules:
        app.add_url_rule(rule, endpoint=endpoint, view_func=view, methods=[method])
