"""Reading a request body as a FHIR resource: strict content types (415), size and depth
limits (413, 400), hardened XML, and a clear error for what is wrong."""

from __future__ import annotations

from typing import Any, Final

import orjson
from flask import current_app, request

from adapter.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from adapter.wellformed import require_shape

JSON_TYPES: Final = frozenset({"application/fhir+json", "application/json",
                               "application/json+fhir"})
XML_TYPES: Final = frozenset({"application/fhir+xml", "application/xml", "text/xml",
                              "application/xml+fhir"})
MAX_JSON_DEPTH: Final = 40
BODY_KEY: Final = "contactpoint_gateway.body"  # the body once read (WSGI environ key)


def body_format() -> str:
    """Return "json" or "xml" from the request's Content-Type.

    :raises UnsupportedMediaType: any other content type, or none.
    """
    mimetype = request.mimetype.lower()
    if mimetype in JSON_TYPES:
        return "json"
    if mimetype in XML_TYPES:
        return "xml"
    raise UnsupportedMediaType(
        f"Content-Type {mimetype or '(none)'} is not accepted: send application/fhir+json "
        "or application/fhir+xml.")


def raw_body() -> bytes:
    """Return the request body, refusing it when over the configured size.

    :raises PayloadTooLarge: the body is over ``GATEWAY_MAX_BODY_BYTES``.
    """
    cached: bytes | None = request.environ.get(BODY_KEY)
    if cached is not None:  # read already (the phase check may look at a body first)
        return cached
    limit: int = current_app.config["MAX_BODY_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    request.environ[BODY_KEY] = data
    return data


def _depth(value: Any, limit: int) -> int:
    """Return the nesting depth of a JSON value, stopping once past ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) \
            else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_resource(data: bytes, what: str = "The body") -> dict[str, Any]:
    """Parse a JSON body (or an NDJSON line: ``what`` names it) into a resource dict.

    :raises BadRequest: not JSON, not an object with ``resourceType``, nested too deep, or
        not well-formed FHIR (``adapter.wellformed``: nulls, empty elements, characters
        XML cannot carry), naming the element.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}.") from exc
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadRequest(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep.")
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise BadRequest(f"{what} must be a FHIR resource: a JSON object with resourceType.")
    require_shape(value, entries_later=True)
    return value


def read_resource() -> dict[str, Any]:
    """Return the request body as a FHIR resource dict (JSON or XML).

    :raises UnsupportedMediaType: wrong content type.
    :raises PayloadTooLarge: over the size limit.
    :raises BadRequest: malformed, or not well-formed FHIR (as ``parse_json_resource``).
    """
    fmt = body_format()
    data = raw_body()
    if not data.strip():
        raise BadRequest("The request has no body: send a FHIR resource.")
    if fmt == "json":
        return parse_json_resource(data)
    from adapter.fhir.xml import loads_resource

    resource = loads_resource(data)
    require_shape(resource, entries_later=True)
    return resource
