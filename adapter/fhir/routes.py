"""The FHIR REST routes (FHIR R4 http.html), generated per resource type from its handler:
each route parses the request, calls one handler method in one transaction and renders the
result in the negotiated format. The access layer knows each route's interaction."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Final
from urllib.parse import parse_qsl

from flask import Flask, Response, g, request
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from adapter.db import get_db
from adapter.errors import (
    BadRequest,
    ExistingEntry,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    UnsupportedMediaType,
    operation_outcome,
)
from adapter.fhir import announce
from adapter.fhir.body import read_resource
from adapter.fhir.bundle import count_bundle, fhir_base, history_bundle, searchset
from adapter.fhir.capability import remember_handler
from adapter.fhir.handlers import Rendered, ResourceHandler, WriteResult
from adapter.fhir.search import SearchRequest, parse_search
from adapter.http import fhir_response
from adapter.security import audit, ledger
from adapter.security.access import access_of, interaction, public
from adapter.security.caller import Caller, anonymous
from adapter.wellformed import require_renderable

View = Callable[..., Response]
# FHIR R4 datatypes.html#id: the shape of every logical id.
FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def check_id(resource_type: str, resource_id: str) -> str:
    """Return ``resource_id`` when it has the shape of a FHIR id (datatypes.html#id).

    Anything else is the id of no resource: answered 404 before any handler or database
    sees it (PostgreSQL refuses a NUL character in text; the id is not echoed back).

    :raises NotFound: it cannot be a FHIR id.
    """
    if not FHIR_ID.fullmatch(resource_id):
        raise NotFound(f"No {resource_type} has this id: a FHIR id is 1 to 64 letters, digits, "
                       "'-' and '.'.")
    return resource_id


def with_checked_id(resource_type: str, view: View) -> View:
    """Return ``view`` answering 404 for a ``resource_id`` that cannot be a FHIR id."""
    @functools.wraps(view)
    def checked(**kwargs: Any) -> Response:
        check_id(resource_type, kwargs["resource_id"])
        return view(**kwargs)
    return checked


def caller() -> Caller:
    """Return the authenticated caller (set by the access layer); on a public route (the
    conformance resources) the anonymous caller, who has no scope and no right."""
    who: Caller | None = g.get("caller")
    if who is not None:
        return who
    declared = access_of(str(request.endpoint))
    if declared is None or not declared.public:  # the access layer let it through: a bug
        raise Unauthorized("A bearer token is required.")
    return anonymous(g.get("request_id"))


def version_headers(rendered: Rendered) -> dict[str, str]:
    """Return ETag and Last-Modified of a rendered resource (FHIR R4 http.html#versioning)."""
    return {"ETag": f'W/"{rendered.version}"',
            "Last-Modified": format_datetime(_aware(rendered.last_updated), usegmt=True)}


def _aware(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` as an aware UTC datetime."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_etag(value: str, header: str, where: str | None = None) -> int:
    """Return the version number of an ETag (``W/"3"`` or ``"3"``); ``where`` names it in an
    error (default: the header).

    :raises BadRequest: not a version ETag of this server.
    """
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest(f'{header} must be a version ETag such as W/"3".',
                         expression=where or header)
    return int(text)


def not_modified(rendered: Rendered) -> bool:
    """Return True when If-None-Match / If-Modified-Since show the client's copy is current."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match:
        return any(tag.strip() == "*" or tag.strip().removeprefix("W/").strip('"')
                   == str(rendered.version) for tag in if_none_match.split(","))
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            moment = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        return _aware(rendered.last_updated).replace(microsecond=0) <= _aware(moment)
    return False


def render(rendered: Rendered, status: int = 200) -> Response:
    """Return a resource response with its version headers (and warnings: break-glass).

    :raises Unrenderable: the stored record cannot be rendered as valid FHIR (an
        OperationOutcome naming it, docs/architecture.md "Records that cannot be rendered").
    """
    require_renderable(rendered.resource)
    headers = version_headers(rendered)
    if status == 200 and request.method == "GET" and not_modified(rendered):
        return Response(status=304, headers=headers)
    return fhir_response(rendered.resource, status, {**headers, **warning_header(rendered)})


def warning_header(rendered: Rendered) -> dict[str, str]:
    """Return the ``Warning`` header of a rendered resource's warnings (break-glass), if any
    (RFC 7234 section 5.5: 199 miscellaneous warning)."""
    # A header carries visible US-ASCII only (RFC 9110 section 5.5); a warning naming what a
    # client sent (an extension's URL) may not fit: it stays in the OperationOutcome notes.
    warnings = [i["diagnostics"].replace('"', "'") for i in rendered.issues
                if i["severity"] == "warning" and i["diagnostics"].isascii()
                and i["diagnostics"].isprintable()]
    if not warnings:
        return {}
    return {"Warning": ", ".join(f'199 contactpoint-gateway "{w}"' for w in warnings)}


def render_write(result: WriteResult, sent: dict[str, Any] | None = None) -> Response:
    """Return a create/update response per ``Prefer: return=`` (FHIR R4 http.html#ins-return):
    the resource by default and with ``representation`` (as the writer may see it: the
    handler rendered it through the disclosure policy), no body with ``minimal``, the write's
    notes (not kept, changed, no change) with ``OperationOutcome``. Location, ETag and
    Last-Modified in every case (http.html#create, #update). ``sent``: the resource as
    written by the client (for the notes of elements the directory decides)."""
    if sent is not None:
        result.rendered.issues += announce.decided_changes(sent, result)
    rendered = result.rendered
    resource = rendered.resource
    location = f"{fhir_base()}/{resource['resourceType']}/{resource['id']}" \
               f"/_history/{rendered.version}"
    headers = {**version_headers(rendered), "Location": location}
    status = 201 if result.created else 200
    prefer = request.headers.getlist("Prefer")
    preference = announce.applied_preference(prefer, result)
    headers.update(announce.preference_applied(prefer, result))
    if preference == "minimal":
        empty = Response(status=status, headers=headers)
        del empty.headers["Content-Type"]  # no body: not the text/html Flask would name
        return empty
    if preference == "OperationOutcome":
        return fhir_response(operation_outcome(announce.outcome_issues(result)), status,
                             headers)
    require_renderable(resource)
    return fhir_response(resource, status, {**headers, **warning_header(rendered)})


def run_search_page(handler: ResourceHandler, session: Any, args: Any) -> dict[str, Any]:
    """Parse and run a search in ``session``; return its Bundle."""
    search = parse_search(args, handler.search_params, handler.includes, handler.revincludes)
    if search.summary == "count":
        return count_bundle(handler.count(session, search, caller()))
    page = handler.search(session, search, caller())
    return searchset(handler.resource_type, page.matches, page.included, page.next_cursor,
                     search.ignored, search.elements, page.total)


def read_transaction(handler: ResourceHandler) -> AbstractContextManager[Session]:
    """Return the transaction of a read, vread, history or search of ``handler``'s type: a
    read transaction (``Database.read_transaction``: the audit records and deliveries it
    gathers are committed before the response is sent), or a write transaction for a type
    whose reads change what they read (``writes_when_read``: a purge Task notes that it
    reached its owner)."""
    db = get_db()
    if getattr(handler, "writes_when_read", False):
        return db.write_transaction()
    return db.read_transaction()


def run_search(handler: ResourceHandler, args: Any) -> Response:
    """Parse a search and return its Bundle (made, audited and committed before it is sent)."""
    with read_transaction(handler) as session:
        return fhir_response(run_search_page(handler, session, args))


def conditional_matches(handler: ResourceHandler, session: Any, query: str,
                        header: str | None = None, where: str | None = None) -> list[str]:
    """Return the ids of resources matching a conditional create/update query (at most 2):
    the ``If-None-Exist`` header's (``header``) or the request's own (None); ``where`` names
    the query in an error (default: the header; a Bundle entry's element in a transaction).

    :raises BadRequest: the query is empty or uses unknown parameters.
    """
    args: MultiDict[str, str] = MultiDict(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    what, where = header or "A conditional update", where or header
    if not args:
        raise BadRequest(f"{what} needs search parameters.", expression=where)
    parsed = parse_search(args, handler.search_params)
    if parsed.ignored or not parsed.criteria:
        raise BadRequest(f"{what} must use supported search parameters "
                         f"({', '.join(sorted(handler.search_params))}).", expression=where)
    search = SearchRequest(criteria=parsed.criteria, count=2)
    return [str(r["id"]) for r in handler.search(session, search, caller()).matches]


def if_match() -> int | None:
    """Return the version of the request's If-Match header, if any."""
    value = request.headers.get("If-Match")
    return parse_etag(value, "If-Match") if value else None


# --- views --------------------------------------------------------------------------------

def read_once(session: Session, read: Callable[[], Rendered]) -> Response:
    """Run ``read`` (load, disclose, audit, record the delivery) and render its response in
    one read transaction (``Database.read_transaction``): a 304 is audited as such and
    delivers nothing, and a rendering that fails writes none of the disclosure it gathered
    (``adapter.security.audit``)."""
    audit.hold(session)
    rendered = read()
    unchanged = request.method == "GET" and not_modified(rendered)
    audit.release(session, audit.NOT_MODIFIED if unchanged else None)
    if unchanged:
        ledger.forget_deliveries(session)
    return render(rendered)


def make_read(handler: ResourceHandler) -> View:
    """Return the read view of ``handler``'s type."""
    def view(resource_id: str) -> Response:
        with read_transaction(handler) as session:
            return read_once(session, lambda: handler.read(session, resource_id, caller()))
    return view


def make_vread(handler: ResourceHandler) -> View:
    """Return the vread view."""
    def view(resource_id: str, version: str) -> Response:
        if not version.isdigit():
            raise BadRequest("The version id is a number.", expression="versionId")
        with read_transaction(handler) as session:
            return read_once(session, lambda: handler.vread(session, resource_id,
                                                            int(version), caller()))
    return view


def make_history(handler: ResourceHandler) -> View:
    """Return the instance history view (rendered in its transaction, as a read is)."""
    def view(resource_id: str) -> Response:
        with read_transaction(handler) as session:
            versions = handler.history(session, resource_id, caller())
            entries = [(r.resource if r else None, str(v), method, instant(updated))
                       for r, v, method, updated in versions]
            return fhir_response(history_bundle(handler.resource_type, resource_id, entries))
    return view


def instant(moment: dt.datetime) -> str:
    """Return a FHIR instant."""
    return _aware(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_search(handler: ResourceHandler) -> View:
    """Return the search view (GET with query, or POST _search with a form)."""
    def view() -> Response:
        if request.method == "POST":
            if request.mimetype != "application/x-www-form-urlencoded":
                raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded.")
            args = MultiDict([*request.args.items(multi=True), *request.form.items(multi=True)])
            return run_search(handler, args)
        return run_search(handler, request.args)
    return view


def make_create(handler: ResourceHandler) -> View:
    """Return the create view (conditional with If-None-Exist)."""
    def view() -> Response:
        resource = read_resource()
        condition = request.headers.get("If-None-Exist")
        with get_db().write_transaction() as session:
            if condition:
                found = conditional_matches(handler, session, condition, "If-None-Exist")
                if len(found) > 1:
                    raise PreconditionFailed("If-None-Exist matches more than one resource.")
                if found:
                    return render_write(
                        announce.matched_answer(handler, session, found[0], caller()))
            try:
                return render_write(handler.create(session, resource, caller()), resource)
            except ExistingEntry as existing:
                if not condition or existing.resource is None:
                    raise
                # The entry the create would duplicate exists: it is the answer to a
                # conditional create (FHIR R4 http.html#ccreate), as if the condition matched.
                return render_write(announce.matched_answer(
                    handler, session, existing.resource.split("/")[1], caller()))
    return view


def make_update(handler: ResourceHandler) -> View:
    """Return the update view (PUT by id)."""
    def view(resource_id: str) -> Response:
        resource = read_resource()
        with get_db().write_transaction() as session:
            return render_write(handler.update(session, resource_id, resource, caller(),
                                               if_match()), resource)
    return view


def make_conditional_update(handler: ResourceHandler) -> View:
    """Return the conditional update view (PUT with search parameters)."""
    def view() -> Response:
        resource = read_resource()
        with get_db().write_transaction() as session:
            found = conditional_matches(handler, session, request.query_string.decode())
            if len(found) > 1:
                raise PreconditionFailed("The conditional update matches more than one "
                                         "resource: narrow the criteria.")
            if not found:
                return render_write(handler.create(session, resource, caller()), resource)
            return render_write(handler.update(session, found[0], resource, caller(),
                                               if_match()), resource)
    return view


def make_delete(handler: ResourceHandler) -> View:
    """Return the delete view."""
    def view(resource_id: str) -> Response:
        with get_db().write_transaction() as session:
            handler.delete(session, resource_id, caller())
        return Response(status=204)
    return view


def make_validate(handler: ResourceHandler) -> View:
    """Return the $validate view: the same checks as an inbound write, nothing stored."""
    def view() -> Response:
        resource = read_resource()
        if resource.get("resourceType") == "Parameters":
            resource = _resource_parameter(resource)
        issues = handler.validate(resource, caller())
        return fhir_response(operation_outcome(issues))
    return view


def _resource_parameter(parameters: dict[str, Any]) -> dict[str, Any]:
    """Return the ``resource`` parameter of a $validate Parameters body.

    :raises BadRequest: there is none.
    """
    for parameter in parameters.get("parameter") or []:
        if isinstance(parameter, dict) and parameter.get("name") == "resource" \
                and isinstance(parameter.get("resource"), dict):
            resource: dict[str, Any] = parameter["resource"]
            return resource
    raise BadRequest("$validate with Parameters needs a 'resource' parameter.",
                     expression="Parameters.parameter")


# interaction name -> (URL suffix, HTTP methods, view factory, scope interaction, kind)
ROUTES: dict[str, tuple[str, list[str], Callable[[ResourceHandler], View], str, str]] = {
    "read": ("/<resource_id>", ["GET"], make_read, "read", "read"),
    "vread": ("/<resource_id>/_history/<version>", ["GET"], make_vread, "read", "read"),
    "history-instance": ("/<resource_id>/_history", ["GET"], make_history, "read", "read"),
    "search-type": ("", ["GET"], make_search, "search", "read"),
    "search-type-post": ("/_search", ["POST"], make_search, "search", "read"),
    "create": ("", ["POST"], make_create, "create", "write"),
    "update": ("/<resource_id>", ["PUT"], make_update, "update", "write"),
    "conditional-update": ("", ["PUT"], make_conditional_update, "update", "write"),
    "delete": ("/<resource_id>", ["DELETE"], make_delete, "delete", "write"),
    "validate": ("/$validate", ["POST"], make_validate, "read", "read"),
}


def register_handler(app: Flask, handler: ResourceHandler) -> None:
    """Add a URL rule for each interaction ``handler`` supports, each with its declaration:
    a conformance resource's routes are public metadata (``conformance`` handlers: the same
    for every caller, no child's data, served in every decommissioning phase), every other
    route is an interaction that needs its scope."""
    kind_type = handler.resource_type
    remember_handler(app, handler)
    conformance = bool(getattr(handler, "conformance", False))
    for name in handler.interactions:
        suffix, methods, factory, scope, kind = ROUTES[name]
        view = factory(handler)
        if "<resource_id>" in suffix:
            view = with_checked_id(kind_type, view)
        view = public("meta")(view) if conformance else interaction(kind_type, scope, kind)(view)
        app.add_url_rule(f"/fhir/{kind_type}{suffix}", endpoint=f"fhir.{kind_type}.{name}",
                         view_func=view, methods=methods)
