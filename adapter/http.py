"""The HTTP layer shared by every route: content negotiation, rendering, the limit on request
headers and the one error handler that turns every error into a FHIR OperationOutcome
(docs/architecture.md "Routes are thin").

Header limit: the gateway answers oversized headers itself, with a 431 OperationOutcome
(RFC 6585 section 5), before any other check (authentication included) reads them:
``GATEWAY_MAX_HEADER_BYTES`` bounds the header section (every ``Name: value`` line and its
CRLF), and so any single header, and ``MAX_HEADER_COUNT`` their number. gunicorn's own
limits, which answer in plain HTML, are set above these (``adapter/server.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
from flask import Config, Flask, Response, current_app, request
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import parse_accept_header

from adapter.errors import GatewayError, Moved, NotAcceptable, issue, operation_outcome
from adapter.settings import Settings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
# _format values and Accept types (FHIR R4 http.html#mime-type), mapped to json or xml; the
# "+fhir" suffixed names are DSTU2's, which R4 clients still send. Any other _format value
# (turtle, html, ...) is answered 406 (``check_format``).
FORMAT_ALIASES = {
    "json": "json", "application/json": "json", FHIR_JSON: "json", "application/json+fhir": "json",
    "xml": "xml", "text/xml": "xml", "application/xml": "xml", FHIR_XML: "xml",
    "application/xml+fhir": "xml",
}

# The media types Accept may choose among (JSON first: it is the default on a tie).
ACCEPT_TYPES = [t for t in FORMAT_ALIASES if "/" in t]
# Most request headers accepted (gunicorn's default; ``adapter/server.py`` lets it read more).
MAX_HEADER_COUNT: Final = 100
# Where the app keeps the handler behind each type's FHIR routes, by resource type
# (``adapter.fhir.capability.remember_handler``; ``adapter.fhir.api.current_providers`` reads
# the registry's providers from it), and the FHIR XML writer
# (``adapter.fhir.xml.dumps_resource``). The app factory hands the writer in: the FHIR dialect
# sits layers above these helpers (scripts/check_layers.py).
HANDLERS_KEY: Final = "fhir_handlers"
XML_WRITER_KEY: Final = "fhir_xml_writer"


class HeadersTooLarge(GatewayError):
    """The request's headers exceed the documented limits (RFC 6585 section 5)."""

    status, issue_code = 431, "too-long"


def limit_request_headers() -> None:
    """Refuse oversized or too many request headers (before_request, first of all).

    :raises HeadersTooLarge: over ``GATEWAY_MAX_HEADER_BYTES`` or ``MAX_HEADER_COUNT``.
    """
    limit: int = current_app.config["MAX_HEADER_BYTES"]
    lines = [(name, len(name) + len(value) + 4)  # "Name: value\r\n"
             for name, value in request.headers.items()]
    if len(lines) > MAX_HEADER_COUNT:
        raise HeadersTooLarge(f"The request has {len(lines)} headers; at most "
                              f"{MAX_HEADER_COUNT} are accepted.")
    size = sum(line for _name, line in lines)
    if size > limit:
        # Which header is the largest is looked for only in a refusal, which names it.
        name, line = max(lines, key=lambda pair: pair[1])
        raise HeadersTooLarge(f"The request headers take {size} bytes; at most {limit} are "
                              f"accepted (the largest is {name}: {line} bytes).")


def configured_base(config: Mapping[str, Any]) -> str:
    """Return the absolute base URL of this server: ``GATEWAY_PUBLIC_URL``, else
    ``http://127.0.0.1:<GATEWAY_PORT>`` (where ``make run`` serves)."""
    configured = str(config["PUBLIC_URL"] or f"http://127.0.0.1:{config['PORT']}")
    return configured.rstrip("/")


def public_base() -> str:
    """Return the absolute base URL of this server as configured, never the request's
    ``Host``: a client chooses the Host it sends, so it must not choose the token audience,
    the SMART endpoints or the links the gateway writes (RFC 9110 section 7.2; RFC 8707)."""
    return current_settings().public_base


class SettingsConfig(Config):
    """``app.config`` that keeps the app's ``Settings`` in step with it: the app factory
    builds them once; a setting changed afterwards (tests do) gives the app new Settings,
    built from the config at the next :func:`settings_of`."""

    def __init__(self, app: Flask, values: Mapping[str, Any]) -> None:
        super().__init__(app.root_path, dict(values))
        self.changed = True

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.changed = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed = True

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Update the values (as ``dict.update``)."""
        super().update(*args, **kwargs)
        self.changed = True


def settings_of(app: Flask) -> Settings:
    """Return ``app``'s Settings (rebuilt from ``app.config`` if it changed since)."""
    config = app.config
    if isinstance(config, SettingsConfig) and config.changed:
        config.changed = False
        app.extensions["settings"] = Settings.from_mapping(config)
    settings: Settings = app.extensions["settings"]
    return settings


def current_settings() -> Settings:
    """Return the Settings of the app handling the request (or command): the web layer's one
    way to read them; everything below it is passed them."""
    return settings_of(current_app)


def fhir_base() -> str:
    """Return the absolute FHIR base URL."""
    return f"{public_base()}/fhir"


def fhir_path(path: str) -> bool:
    """Return True for a path of the FHIR API (``/fhir`` and below)."""
    return path == "/fhir" or path.startswith("/fhir/")


def check_format() -> None:
    """Refuse a FHIR request whose ``_format`` is not FHIR JSON or XML (before_request): the
    gateway serves no other representation (FHIR R4 http.html#mime-type: turtle is optional),
    and answering JSON to a client that asked for something else hides the mistake.

    :raises NotAcceptable: any other ``_format`` value.
    """
    requested = request.args.get("_format")
    if not requested or not fhir_path(request.path) or format_alias(requested) is not None:
        return
    raise NotAcceptable("_format must name FHIR JSON (json, application/fhir+json, "
                        "application/json) or FHIR XML (xml, application/fhir+xml, "
                        "application/xml, text/xml); this server has no other "
                        "representation.")


def format_alias(value: str) -> str | None:
    """Return "json" or "xml" for a ``_format`` value (None: neither). A "+" sent unescaped
    arrives as a space (``_format=application/fhir+xml``); it is read as the "+" it was."""
    return FORMAT_ALIASES.get(value.split(";")[0].strip().lower().replace(" ", "+"))


def accept_trailing_slashes(app: Flask) -> None:
    """Let every FHIR route answer with a trailing slash as without it (``/fhir/``,
    ``/fhir/Patient/``): clients build URLs by joining a base that ends in "/" (fhir-kit-client
    posts a transaction to ``[base]/``), and a redirect is no answer to a POST or PUT, which
    clients do not repeat reliably (RFC 9110 section 15.4). Run after every route is added."""
    for rule in app.url_map.iter_rules():
        if fhir_path(rule.rule):
            rule.strict_slashes = False


def negotiated_format() -> str:
    """Return "json" or "xml" from ``_format``, then ``Accept``; JSON is the default."""
    requested = request.args.get("_format")
    if requested:
        return format_alias(requested) or "json"
    return accepted_format(request.headers.get("Accept", ""))


@functools.lru_cache(maxsize=256)
def accepted_format(accept: str) -> str:
    """Return "json" or "xml" for an ``Accept`` header value (RFC 9110 section 12.5.1).

    Cached: a client sends the same few values on every request, and parsing one cost about
    a tenth of a millisecond per read (``bench/http.py``). The answer depends on the value
    alone; ``maxsize`` bounds what distinct values a caller can make it keep.
    """
    best = parse_accept_header(accept, MIMEAccept).best_match(ACCEPT_TYPES, default=FHIR_JSON)
    return FORMAT_ALIASES.get(best or FHIR_JSON, "json")


def json_response(body: Any, status: int = 200, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> Response:
    """Return ``body`` serialised with orjson."""
    return Response(orjson.dumps(body), status=status, content_type=content_type,
                    headers=headers)


def fhir_response(resource: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """Return a FHIR resource in the negotiated format (JSON or XML)."""
    if negotiated_format() == "xml":
        write_xml: Callable[[dict[str, Any]], bytes] = current_app.extensions[XML_WRITER_KEY]
        return Response(write_xml(resource), status=status,
                        content_type=f"{FHIR_XML}; charset=utf-8", headers=headers)
    return json_response(resource, status, f"{FHIR_JSON}; charset=utf-8", headers)


def handle_gateway_error(error: GatewayError) -> Response:
    """Render a GatewayError as an OperationOutcome."""
    if error.status >= 500:
        log.error("request failed with %s: %s", error.status, type(error).__name__)
    if isinstance(error, Moved):
        error.headers["Location"] = moved_location(error)
    return fhir_response(error.to_outcome(), error.status, error.headers)


def moved_location(moved: Moved) -> str:
    """Return the request's URL with the old id replaced by the new one: the same
    interaction (read, vread, ``_history``) and query on the resource's new id."""
    marker = f"/{moved.resource_type}/{moved.old_id}"
    rest = request.path.split(marker, 1)[1] if marker in request.path else ""
    query = f"?{request.query_string.decode()}" if request.query_string else ""
    return f"{fhir_base()}/{moved.resource_type}/{moved.new_id}{rest}{query}"


OPERATION_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH")


def operation_methods(path: str) -> list[str]:
    """Return the methods an operation URL answers (its last segment a ``$name``, such as
    ``/fhir/Patient/$export``): those of the routes that name the operation, never those of
    the instance route the segment would also fill as an id (``PUT /fhir/Patient/<id>``):
    "$" marks an operation and is no character of a FHIR id (FHIR R4 operations.html,
    datatypes.html#id). Empty for any other path, or an operation no route names. ``HEAD``
    is not listed: on a kick-off URL it starts nothing and is refused (README "Bulk FHIR
    export")."""
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    if not segment.startswith("$"):
        return []
    urls = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in OPERATION_METHODS:
        try:
            rule, _values = urls.match(path, method=method, return_rule=True)
        except HTTPException:
            continue
        if rule.rule.rstrip("/").endswith(f"/{segment}"):
            allowed.append(method)
    return allowed


def refuse_other_methods_on_operations() -> None:
    """Answer 405 (with the operation's methods in ``Allow``) to a method an operation URL
    does not answer, which the URL map would otherwise give to the instance route with the
    operation's name as the id ("No Patient has this id" to ``PUT /fhir/Patient/$export``,
    a read of entry "$validate" to ``GET /directory/entries/$validate``).

    :raises MethodNotAllowed: the path names an operation that answers other methods.
    """
    segment = request.path.rstrip("/").rsplit("/", 1)[-1]
    rule = request.url_rule
    if segment.startswith("$") and rule is not None \
            and not rule.rule.rstrip("/").endswith(f"/{segment}"):
        allowed = operation_methods(request.path)
        if allowed:
            raise MethodNotAllowed(valid_methods=allowed)


def handle_http_exception(error: HTTPException) -> Response:
    """Render a werkzeug HTTP error (404 route, 405 method, 413 size) as an OperationOutcome."""
    code = error.code or 500
    issue_code = {404: "not-found", 405: "not-supported", 413: "too-costly"}.get(code, "invalid")
    allowed: list[str] = list(getattr(error, "valid_methods", None) or ())
    if code == 405:
        allowed = operation_methods(request.path) or allowed
    text = _not_allowed(allowed) if code == 405 else error.description or error.name
    response = fhir_response(operation_outcome([issue("error", issue_code, text)]), code)
    if code == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _not_allowed(allowed: list[str]) -> str:
    """Return what a 405 tells the client: the methods this URL answers and, for a write to
    a FHIR type that is written through another resource, where to write it instead."""
    text = (f"{request.method} is not supported at this URL; it answers "
            f"{', '.join(allowed) or 'no method'} (GET /fhir/metadata lists each type's "
            "interactions).")
    segments = request.path.removeprefix("/fhir/").split("/")
    if request.path.startswith("/fhir/") and request.method in ("POST", "PUT", "PATCH"):
        handler = current_app.extensions.get(HANDLERS_KEY, {}).get(segments[0])
        written_through = getattr(handler, "written_through", "")
        if written_through:
            text = f"{written_through} {text}"
    return text


def handle_database_unavailable(error: DBAPIError) -> Response:
    """Answer 503 when the database connection failed (server down or restarted), and 400
    when the database refused a value of the request (e.g. a NUL character in PostgreSQL)."""
    if isinstance(error, DataError):
        outcome = operation_outcome([issue("error", "invalid", "A value in the request cannot "
                                           "be used (e.g. it holds a NUL character).")])
        return fhir_response(outcome, 400)
    if not error.connection_invalidated and not isinstance(error, OperationalError):
        return handle_unexpected(error)
    log.warning("database unavailable: %s", type(error.orig).__name__)
    outcome = operation_outcome([issue("error", "transient", "The database is unavailable or "
                                       "was restarted; retry the request.")])
    return fhir_response(outcome, 503, {"Retry-After": "5"})


def handle_unexpected(error: Exception) -> Response:
    """Render an unexpected error as a 500 OperationOutcome without internals (a bug: logged)."""
    log.exception("unhandled error: %s", type(error).__name__)
    outcome = operation_outcome([issue("fatal", "exception",
                                       "Internal error; it has been logged for the operators.")])
    return fhir_response(outcome, 500)


def init_app(app: Flask, write_xml: Callable[[dict[str, Any]], bytes]) -> None:
    """Install the header limit, the ``_format`` check and the operation URLs' methods (before
    every other before_request hook) and the error handlers; keep ``write_xml``, the FHIR XML
    writer of ``fhir_response``."""
    app.extensions[XML_WRITER_KEY] = write_xml
    app.before_request_funcs.setdefault(None, []).insert(0, limit_request_headers)
    app.before_request_funcs[None].insert(1, check_format)
    app.before_request_funcs[None].insert(2, refuse_other_methods_on_operations)
    app.register_error_handler(GatewayError, handle_gateway_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DBAPIError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
