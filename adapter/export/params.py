"""The kick-off request of a bulk export: headers and query parameters (FHIR Bulk Data Access
IG v2, export.html "Bulk Data Kick-off Request", "Headers" and "Query Parameters")."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from werkzeug.datastructures import MultiDict

from adapter.errors import BadRequest, Forbidden, issue
from adapter.security.access import require_scope
from adapter.security.caller import Caller

# The resource types an export writes, in the order of the manifest's output array.
EXPORT_TYPES: Final = ("Patient", "CareTeam", "PractitionerRole", "Organization", "Practitioner")
# export.html "_outputFormat": the server SHALL accept application/fhir+ndjson and the
# abbreviations application/ndjson and ndjson.
OUTPUT_FORMATS: Final = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON: Final = "application/fhir+ndjson"
SUPPORTED: Final = frozenset({"_type", "_since", "_outputFormat", "_format"})
# FHIR instant (datatypes.html#instant): seconds and a time zone are required.
INSTANT_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class ExportRequest:
    """What a kick-off asked for, checked against what this server and the caller may do."""

    types: tuple[str, ...]
    since: dt.datetime | None
    output_format: str
    # Issues for the error file: parameters ignored under Prefer: handling=lenient.
    notes: list[dict[str, Any]] = field(default_factory=list)


def prefer_tokens(values: Iterable[str]) -> set[str]:
    """Return the preferences of every ``Prefer`` header (RFC 7240), lower-cased."""
    return {token.strip().lower() for value in values
            for token in re.split(r"[,;]", value) if token.strip()}


def require_async(prefer: set[str]) -> None:
    """export.html "Headers": the client SHALL send ``Prefer: respond-async``.

    :raises BadRequest: it did not.
    """
    if "respond-async" not in prefer:
        raise BadRequest("A bulk export runs asynchronously: send the header "
                         "'Prefer: respond-async' (Bulk Data IG, export.html 'Headers').",
                         expression="Prefer")


def _unsupported(name: str, detail: str, lenient: bool,
                 notes: list[dict[str, Any]]) -> None:
    """Refuse what the server does not support, or note it as ignored when lenient.

    export.html "Query Parameters": a server that does not support a parameter SHOULD return
    an error, and MAY process the request without it under ``Prefer: handling=lenient``.

    :raises BadRequest: not lenient.
    """
    if not lenient:
        raise BadRequest(f"{detail} (send 'Prefer: handling=lenient' to have it ignored).",
                         expression=name)
    notes.append(issue("warning", "not-supported", f"Ignored: {detail}.", name))


def parse_types(args: MultiDict[str, str], lenient: bool,
                notes: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """Return the ``_type`` values (comma-separated, repeatable), None when absent.

    :raises BadRequest: an unsupported type (strict), or no supported type left.
    """
    values = [v.strip() for raw in args.getlist("_type") for v in raw.split(",") if v.strip()]
    if "_type" not in args:
        return None
    kept = []
    for value in values:
        if value in EXPORT_TYPES:
            kept.append(value)
        else:
            _unsupported("_type", f"_type {value!r} is not exported by this server (it "
                         f"exports {', '.join(EXPORT_TYPES)})", lenient, notes)
    if not kept:
        raise BadRequest(f"_type names no type this server exports ({', '.join(EXPORT_TYPES)}).",
                         expression="_type")
    return tuple(t for t in EXPORT_TYPES if t in kept)


def parse_instant(value: str, name: str = "_since") -> dt.datetime:
    """Return a FHIR instant as an aware UTC datetime.

    A ``+`` of the zone that arrived unencoded in a query string reads as a space: it is
    taken back as ``+``.

    :raises BadRequest: not an instant (seconds and a time zone are required).
    """
    text = re.sub(r" (\d{2}:\d{2})$", r"+\1", value.strip())
    if not INSTANT_RE.fullmatch(text):
        raise BadRequest(f"{name} must be a FHIR instant such as 2026-01-31T09:00:00Z.",
                         expression=name)
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{name} is not a valid instant ({exc}).", expression=name) from exc


def parse_output_format(args: MultiDict[str, str]) -> str:
    """Return the output format: NDJSON, the only one this server writes.

    :raises BadRequest: another format.
    """
    value = args.get("_outputFormat", NDJSON).strip()
    if value.lower() not in OUTPUT_FORMATS:
        raise BadRequest(f"_outputFormat {value!r} is not supported: use {NDJSON} "
                         "(or application/ndjson, ndjson).", expression="_outputFormat")
    return NDJSON


def authorised_types(requested: tuple[str, ...] | None, caller: Caller) -> tuple[str, ...]:
    """Return the types to export: every requested one needs a read scope; without
    ``_type``, the types the caller may read (export.html "_type": all supported resources
    within the scope of the client's authorization).

    :raises Forbidden: a requested type without scope, or no type the caller may read.
    """
    if requested is not None:
        for resource_type in requested:
            require_scope(caller, resource_type, "export")
        return requested
    allowed = tuple(t for t in EXPORT_TYPES if caller.may(t, "export"))
    if not allowed:
        raise Forbidden("The token's scopes allow reading none of the exported types "
                        f"({', '.join(EXPORT_TYPES)}).")
    return allowed


def parse_export_request(args: MultiDict[str, str], prefer: set[str],
                         caller: Caller) -> ExportRequest:
    """Return the checked kick-off request.

    :raises BadRequest: a malformed or unsupported parameter (strict handling).
    :raises Forbidden: the caller may not read a requested type.
    """
    require_async(prefer)
    lenient = "handling=lenient" in prefer
    notes: list[dict[str, Any]] = []
    for name in sorted(set(args) - SUPPORTED):
        _unsupported(name, f"the parameter {name} is not supported by this server's "
                     "$export", lenient, notes)
    output_format = parse_output_format(args)
    since = parse_instant(args["_since"]) if args.get("_since") else None
    types = authorised_types(parse_types(args, lenient, notes), caller)
    return ExportRequest(types, since, output_format, notes)
