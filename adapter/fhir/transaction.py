"""``POST /fhir`` with a ``transaction`` Bundle (all or nothing, ``urn:uuid`` references
resolved) or a ``batch`` Bundle (each entry on its own) — FHIR R4 http.html#transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from flask import Flask, Response, has_request_context
from flask import request as current_request
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from adapter.db import get_db
from adapter.errors import BadRequest, ExistingEntry, GatewayError, MethodNotAllowed, NotFound
from adapter.fhir import announce
from adapter.fhir.body import read_resource
from adapter.fhir.bundle import fhir_base, now_instant, renderable, withheld_outcome
from adapter.fhir.handlers import Rendered, ResourceHandler, WriteResult
from adapter.fhir.routes import (
    caller,
    check_id,
    conditional_matches,
    instant,
    parse_etag,
    run_search_page,
)
from adapter.http import fhir_response
from adapter.security import audit
from adapter.security.access import authenticated, require_scope
from adapter.wellformed import Unrenderable, require_shape

# FHIR R4 http.html#trules: DELETE, then POST, then PUT, then GET.
METHOD_ORDER: Final = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
STATUS_TEXT: Final = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    """One request entry of the Bundle, with its position."""

    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict[str, Any] | None
    if_match: str | None
    if_none_exist: str | None


def _entries(bundle: dict[str, Any]) -> list[Entry]:
    """Return the Bundle's request entries.

    :raises BadRequest: an entry without a usable request.
    """
    out = []
    for index, raw in enumerate(bundle.get("entry") or []):
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or request.get("method") not in METHOD_ORDER \
                or not isinstance(request.get("url"), str):
            raise BadRequest("Each entry needs request.method (GET, POST, PUT, DELETE) and "
                             "request.url.", expression=f"Bundle.entry[{index}].request")
        resource = raw.get("resource")
        out.append(Entry(index, request["method"], request["url"], raw.get("fullUrl"),
                         resource if isinstance(resource, dict) else None,
                         request.get("ifMatch"), request.get("ifNoneExist")))
    return out


def _replace_references(value: Any, known: dict[str, str]) -> Any:
    """Return ``value`` with every ``reference`` naming a known ``urn:uuid`` rewritten."""
    if isinstance(value, dict):
        return {k: (known.get(v, v) if k == "reference" and isinstance(v, str)
                    else _replace_references(v, known)) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_references(v, known) for v in value]
    return value


def _urn_references(value: Any) -> set[str]:
    """Return every literal reference inside ``value``: those naming the ``fullUrl`` of a
    create in the Bundle (a ``urn:uuid:`` or an absolute URL) order the entries."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k == "reference" and isinstance(v, str)}
        for child in value.values():
            found |= _urn_references(child)
        return found
    if isinstance(value, list):
        return set().union(*(_urn_references(v) for v in value)) if value else set()
    return set()


def processing_order(entries: list[Entry]) -> list[Entry]:
    """Return entries in FHIR processing order, creates before the entries referring to them.

    :raises BadRequest: references between entries that form a cycle.
    """
    ordered = sorted(entries, key=lambda e: METHOD_ORDER[e.method])
    created = {e.full_url for e in ordered if e.method == "POST" and e.full_url}
    done: set[str] = set()
    result: list[Entry] = []
    pending = ordered
    while pending:
        ready = [e for e in pending if not ((_urn_references(e.resource) & created) - done)]
        if not ready:
            raise BadRequest("The Bundle's references between entries form a cycle.",
                             expression="Bundle.entry")
        for entry in ready:
            result.append(entry)
            if entry.full_url:
                done.add(entry.full_url)
        pending = [e for e in pending if e not in ready]
    return result


def _target(entry: Entry, handlers: dict[str, ResourceHandler]) -> tuple[ResourceHandler, list[str],
                                                                          str]:
    """Return the handler, the path segments after the type, and the query of an entry's URL.

    :raises NotFound: a resource type this server does not serve.
    """
    parts = urlsplit(entry.url)
    path = parts.path.removeprefix(fhir_base()).strip("/")
    if path.startswith("fhir/"):
        path = path[len("fhir/"):]
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0] not in handlers:
        raise NotFound(f"{entry.url}: not a resource type of this server.",
                       expression=f"Bundle.entry[{entry.index}].request.url")
    return handlers[segments[0]], segments[1:], parts.query


def _need(handler: ResourceHandler, interaction: str, entry: Entry) -> None:
    """Check the handler supports ``interaction`` and the caller's scope allows it.

    :raises MethodNotAllowed: the type does not support it.
    :raises Forbidden: no scope.
    """
    if interaction not in handler.interactions:
        raise MethodNotAllowed(f"{handler.resource_type} does not support {interaction}.",
                               expression=f"Bundle.entry[{entry.index}].request")
    scope = {"conditional-update": "update", "search-type": "search"}.get(interaction,
                                                                         interaction)
    require_scope(caller(), handler.resource_type, scope)


def _resource_of(entry: Entry) -> dict[str, Any]:
    """Return the entry's resource.

    :raises BadRequest: POST/PUT without one, or not well-formed FHIR (its element named).
    """
    if entry.resource is None:
        raise BadRequest(f"A {entry.method} entry needs a resource.",
                         expression=f"Bundle.entry[{entry.index}].resource")
    require_shape(entry.resource)  # the body's check left entries to this one
    return entry.resource


def _write_entry(session: Session, entry: Entry, handler: ResourceHandler, rest: list[str],
                 query: str) -> WriteResult:
    """Carry out a POST or PUT entry."""
    resource = _resource_of(entry)
    if entry.method == "POST":
        _need(handler, "create", entry)
        if entry.if_none_exist:
            found = conditional_matches(handler, session, entry.if_none_exist, "ifNoneExist",
                                        f"Bundle.entry[{entry.index}].request.ifNoneExist")
            if found:
                return announce.matched_answer(handler, session, found[0], caller())
            try:
                return handler.create(session, resource, caller())
            except ExistingEntry as existing:
                if existing.resource is None:
                    raise
                # As a conditional create that matched (FHIR R4 http.html#ccreate).
                return announce.matched_answer(handler, session,
                                               existing.resource.split("/")[1], caller())
        return handler.create(session, resource, caller())
    if rest:
        _need(handler, "update", entry)
        if_match = parse_etag(entry.if_match, "ifMatch",
                              f"Bundle.entry[{entry.index}].request.ifMatch") \
            if entry.if_match else None
        return handler.update(session, check_id(handler.resource_type, rest[0]), resource,
                              caller(), if_match)
    _need(handler, "conditional-update", entry)
    found = conditional_matches(handler, session, query, "request.url",
                                f"Bundle.entry[{entry.index}].request.url")
    if not found:
        return handler.create(session, resource, caller())
    return handler.update(session, found[0], resource, caller(), None)


def _response_entry(rendered: Rendered | None, status: int, include_resource: bool = True,
                    notes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return a response entry with status, location, etag and lastModified, and its
    ``outcome``: ``notes`` when given, else the rendered resource's issues."""
    response: dict[str, Any] = {"status": STATUS_TEXT.get(status, str(status))}
    entry: dict[str, Any] = {}
    if rendered is not None:
        resource = rendered.resource
        url = f"{fhir_base()}/{resource['resourceType']}/{resource['id']}"
        entry["fullUrl"] = url
        withheld: list[Unrenderable] = []
        if include_resource and renderable([resource], withheld):
            entry["resource"] = resource
        response.update({"location": f"{url}/_history/{rendered.version}",
                         "etag": f'W/"{rendered.version}"',
                         "lastModified": instant(rendered.last_updated)})
        issues = rendered.issues if notes is None else notes
        if issues:
            response["outcome"] = {"resourceType": "OperationOutcome", "issue": issues}
        if withheld:  # a stored record that cannot be rendered: named, not sent
            response["outcome"] = withheld_outcome(withheld)
    entry["response"] = response
    return entry


def _read_entry(session: Session, entry: Entry, handler: ResourceHandler, rest: list[str],
                query: str) -> dict[str, Any]:
    """Carry out a GET entry (read, vread or search)."""
    if not rest:
        _need(handler, "search-type", entry)
        bundle = run_search_page(handler, session, MultiDict(parse_qsl(query)))
        return {"resource": bundle, "response": {"status": "200 OK"}}
    _need(handler, "read", entry)
    check_id(handler.resource_type, rest[0])
    if len(rest) == 3 and rest[1] == "_history" and rest[2].isdigit():
        return _response_entry(handler.vread(session, rest[0], int(rest[2]), caller()), 200)
    return _response_entry(handler.read(session, rest[0], caller()), 200)


def run_entry(session: Session, entry: Entry, handlers: dict[str, ResourceHandler],
              known: dict[str, str]) -> dict[str, Any]:
    """Carry out one entry and return its response entry; record a created fullUrl."""
    if entry.resource is not None:
        entry.resource = _replace_references(entry.resource, known)
    handler, rest, query = _target(entry, handlers)
    if entry.method == "GET":
        return _read_entry(session, entry, handler, rest, query)
    if entry.method == "DELETE":
        _need(handler, "delete", entry)
        if not rest:
            raise BadRequest("Conditional delete is not supported: name the resource id.",
                             expression=f"Bundle.entry[{entry.index}].request.url")
        handler.delete(session, check_id(handler.resource_type, rest[0]), caller())
        return {"response": {"status": "204 No Content"}}
    result = _write_entry(session, entry, handler, rest, query)
    result.rendered.issues += announce.decided_changes(entry.resource or {}, result)
    resource = result.rendered.resource
    # FHIR R4 http.html#trules: references to a created entry's fullUrl (urn:uuid or an
    # absolute URL of the sender's) are replaced by the id this server assigned.
    if entry.full_url and (entry.method == "POST" or entry.full_url.startswith("urn:uuid:")):
        known[entry.full_url] = f"{resource['resourceType']}/{resource['id']}"
    return _write_response(result)


def _write_response(result: WriteResult) -> dict[str, Any]:
    """Return a write entry's response: 201 for a create (http.html#transaction-response),
    the resource unless ``Prefer: return=minimal`` or ``OperationOutcome`` asked otherwise
    (http.html#ins-return), and the write's notes in ``response.outcome``."""
    prefer = current_request.headers.getlist("Prefer") if has_request_context() else []
    preference = announce.applied_preference(prefer, result)
    notes = announce.outcome_issues(result) if preference == "OperationOutcome" \
        else announce.notes_of(result)
    return _response_entry(result.rendered, 201 if result.created else 200,
                           include_resource=preference == "representation", notes=notes)


def _entry_expression(where: str, expression: str | None) -> str:
    """Return the FHIRPath of an error's element inside the entry ``where``: a resource's
    path (``Patient.name[0]``) continues from ``entry.resource``; anything else (a request
    header or parameter) is kept beside it."""
    if expression is None:
        return f"{where}.resource"
    kind, dot, inner = expression.partition(".")
    if kind[:1].isupper() and kind.isalpha():
        return f"{where}.resource" + (f".{inner}" if dot else "")
    return f"{where}.resource ({expression})"


def _located(error: GatewayError, entry: Entry) -> GatewayError:
    """Return ``error`` with its expression pointing into the failing entry."""
    where = f"Bundle.entry[{entry.index}]"
    if not error.expression or not error.expression.startswith("Bundle."):
        error.expression = _entry_expression(where, error.expression)
    error.message = f"entry {entry.index}: {error.message}"
    return error


def run_transaction(entries: list[Entry], handlers: dict[str, ResourceHandler]) -> list[Any]:
    """Carry out a transaction: every entry, or (on the first error) none.

    :raises GatewayError: the first entry that failed, located.
    """
    known: dict[str, str] = {}
    responses: dict[int, dict[str, Any]] = {}
    failed: Entry | None = None
    try:
        with get_db().write_transaction() as session:
            for entry in processing_order(entries):
                failed = entry
                responses[entry.index] = run_entry(session, entry, handlers, known)
            failed = None  # what fails at the commit is no entry's
    except GatewayError as error:
        if failed is None:
            raise
        if failed.method == "GET":
            # The transaction's own records went with its rollback: the refused read is
            # recorded in a transaction of its own, as a refused GET route's is
            # (adapter.security.audit.record_refusal).
            with get_db().write_transaction() as session:
                _record_refused_read(session, failed, handlers, error)
        raise _located(error, failed) from error
    return [responses[e.index] for e in entries]


def run_batch(entries: list[Entry], handlers: dict[str, ResourceHandler]) -> list[Any]:
    """Carry out a batch: each entry in its own savepoint; failures reported per entry (a
    refused GET entry recorded as a refused read, after its savepoint's rollback)."""
    responses = []
    with get_db().write_transaction() as session:
        for entry in entries:
            try:
                with session.begin_nested():
                    responses.append(run_entry(session, entry, handlers, {}))
            except GatewayError as error:
                if entry.method == "GET":
                    _record_refused_read(session, entry, handlers, error)
                audit.record_duplicate(session, error, caller=caller())
                responses.append({"response": {
                    "status": str(error.status),
                    "outcome": _located(error, entry).to_outcome()}})
    return responses


def _record_refused_read(session: Session, entry: Entry, handlers: dict[str, ResourceHandler],
                         error: GatewayError) -> None:
    """Record a GET entry that was refused (4xx) or failed (5xx) as ``<action>-refused``
    (outcome 4) or ``<action>-failed`` (outcome 8), as a refused GET route is (docs/domain.md
    "Who used it"): the entry's read, vread or search, naming the resource only when it may
    exist (401 or 403: a 404 or 410 names nothing live, and must not put its id in the trail)."""
    try:
        handler, rest, _query = _target(entry, handlers)
    except GatewayError:
        resource_type, rest = None, []
    else:
        resource_type = handler.resource_type
    action = "search" if not rest else "vread" if len(rest) == 3 else "read"
    qualifier, outcome = ("failed", "8") if error.status >= 500 else ("refused", "4")
    named = rest[0] if rest and error.status in (401, 403) else None
    audit.record(session, f"{action}-{qualifier}", resource_type=resource_type,
                 resource_id=named, child_ref=named if resource_type == "Patient" else None,
                 outcome=outcome, caller=caller(),
                 detail=f"batch entry {entry.index}: GET answered HTTP {error.status}")


@authenticated("write")
def bundle_endpoint() -> Response:
    """Accept a transaction or batch Bundle at the FHIR base.

    :raises BadRequest: not a Bundle of type transaction or batch.
    """
    from adapter.fhir.api import current_providers

    bundle = read_resource()
    kind = bundle.get("type")
    if bundle.get("resourceType") != "Bundle" or kind not in ("transaction", "batch"):
        raise BadRequest("POST /fhir takes a Bundle of type transaction or batch.",
                         expression="Bundle.type")
    handlers = current_providers()
    entries = _entries(bundle)
    runner: Callable[..., list[Any]] = run_transaction if kind == "transaction" else run_batch
    return fhir_response({"resourceType": "Bundle", "id": str(uuid.uuid4()),
                          "meta": {"lastUpdated": now_instant()}, "type": f"{kind}-response",
                          "entry": runner(entries, handlers)})


def init_app(app: Flask) -> None:
    """Register ``POST /fhir``."""
    app.add_url_rule("/fhir", endpoint="fhir.system.bundle", view_func=bundle_endpoint,
                     methods=["POST"])
