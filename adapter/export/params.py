"""The kick-off request of a bulk export: headers, and the parameters of a GET query or of a
POST ``Parameters`` body, checked alike (FHIR Bulk Data Access IG v2, export.html "Bulk Data
Kick-off Request", "Headers" and "Query Parameters")."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from werkzeug.datastructures import MultiDict

from adapter.errors import BadRequest, Forbidden, issue
from adapter.registry import export_types
from adapter.security.access import require_scope
from adapter.security.caller import Caller

# export.html "_outputFormat": the server SHALL accept application/fhir+ndjson and the
# abbreviations application/ndjson and ndjson.
OUTPUT_FORMATS: Final = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON: Final = "application/fhir+ndjson"
SUPPORTED: Final = frozenset({"_type", "_since", "_outputFormat", "_format"})
# export.html "Query Parameters": ``patient`` is for POST kick-offs at Patient and Group level.
PATIENT: Final = "patient"
COMPARTMENT_LEVELS: Final = frozenset({"patient", "group"})
# More Patients than this in one kick-off is a Group's work (one database query names them).
MAX_PATIENTS: Final = 5000
# FHIR instant (datatypes.html#instant): seconds and a time zone are required.
INSTANT_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
# FHIR R4 datatypes.html#id: the shape of every logical id.
FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# The value[x] a Parameters body may give a kick-off's string, code or instant parameter in.
PRIMITIVE_VALUES: Final = ("valueString", "valueCode", "valueInstant", "valueDateTime",
                           "valueUri", "valueCanonical")


@dataclass(frozen=True)
class ExportRequest:
    """What a kick-off asked for, checked against what this server and the caller may do."""

    types: tuple[str, ...]
    since: dt.datetime | None
    output_format: str
    # Issues for the error file: parameters ignored under Prefer: handling=lenient.
    notes: list[dict[str, Any]] = field(default_factory=list)
    # The logical ids of the ``patient`` parameter (POST), None when it was not given.
    patients: tuple[str, ...] | None = None


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
    exported, kept = export_types(), []
    for value in values:
        if value in exported:
            kept.append(value)
        else:
            _unsupported("_type", f"_type {value!r} is not exported by this server (it "
                         f"exports {', '.join(exported)})", lenient, notes)
    if not kept:
        raise BadRequest(f"_type names no type this server exports ({', '.join(exported)}).",
                         expression="_type")
    return tuple(t for t in exported if t in kept)


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
    exported = export_types()
    allowed = tuple(t for t in exported if caller.may(t, "export"))
    if not allowed:
        raise Forbidden("The token's scopes allow reading none of the exported types "
                        f"({', '.join(exported)}).")
    return allowed


def parameters_of(body: Any, base: str) -> tuple[MultiDict[str, str], list[str] | None]:
    """Return the parameters of a POST kick-off's ``Parameters`` body as the GET query's
    (name -> values), and the logical ids of its ``patient`` parameters (None when none);
    ``base`` is this server's FHIR base, whose absolute Patient URLs are accepted.

    export.html "Bulk Data Kick-off Request": a POST sends a FHIR Parameters resource with
    the query parameters as its ``parameter`` entries, ``patient`` as a valueReference.

    :raises BadRequest: not a Parameters resource, or an entry without a usable value.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("A POST $export sends a FHIR Parameters resource (Bulk Data IG, "
                         "export.html 'Bulk Data Kick-off Request').",
                         expression="resourceType")
    entries = body.get("parameter", [])
    if not isinstance(entries, list):
        raise BadRequest("Parameters.parameter must be a list.", expression="Parameters.parameter")
    args: MultiDict[str, str] = MultiDict()
    patients: list[str] | None = None
    for index, entry in enumerate(entries):
        path = f"Parameters.parameter[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise BadRequest(f"{path} has no name.", expression=f"{path}.name")
        if name == PATIENT:
            patients = [*(patients or []), patient_id(entry, path, base)]
            if len(patients) > MAX_PATIENTS:
                raise BadRequest(f"At most {MAX_PATIENTS} patient parameters in one kick-off: "
                                 "export a Group, or split the list.", expression=path)
        elif name in SUPPORTED:
            args.add(name, _primitive(entry, path))
        else:  # refused or ignored by its name (strict or lenient handling), whatever its value
            args.add(name, "")
    return args, patients


def _primitive(entry: dict[str, Any], path: str) -> str:
    """Return the string value of a string, code or instant parameter.

    :raises BadRequest: it has none.
    """
    for key in PRIMITIVE_VALUES:
        if isinstance(entry.get(key), str):
            value: str = entry[key]
            return value
    raise BadRequest(f"{path} ({entry['name']}) needs a value: valueString (valueInstant for "
                     "_since).", expression=path)


def patient_id(entry: dict[str, Any], path: str, base: str) -> str:
    """Return the logical id of a ``patient`` parameter's reference (``Patient/<id>`` or this
    server's absolute URL of it).

    :raises BadRequest: no valueReference, or not a reference to a Patient.
    """
    reference = entry.get("valueReference")
    text = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(text, str):
        raise BadRequest(f"{path}: the patient parameter is a valueReference with a reference "
                         "such as 'Patient/<id>'.", expression=f"{path}.valueReference")
    kind, _, logical_id = text.removeprefix(base.rstrip("/") + "/").partition("/")
    if kind != "Patient" or not FHIR_ID.fullmatch(logical_id):
        raise BadRequest(f"{path}: {text[:100]!r} is not a reference to a Patient of this "
                         "server: give 'Patient/<id>'.",
                         expression=f"{path}.valueReference.reference")
    return logical_id


def _unsupported_detail(name: str, level: str, posted: bool) -> str:
    """Return why the parameter ``name`` is not taken by this kick-off (``posted``: it came
    in a POST's Parameters body)."""
    if name == PATIENT and level not in COMPARTMENT_LEVELS:
        return ("the parameter patient applies to Patient- and Group-level exports only, not "
                "to a system-level $export")
    if name == PATIENT and not posted:
        return ("the parameter patient is taken in the Parameters body of a POST kick-off "
                "only (export.html 'Query Parameters')")
    return f"the parameter {name} is not supported by this server's $export"


def parse_export_request(args: MultiDict[str, str], prefer: set[str], caller: Caller,
                         level: str = "system", patients: list[str] | None = None,
                         posted: bool = False,
                         query_on_post: Iterable[str] = ()) -> ExportRequest:
    """Return the checked kick-off request of a GET query or of a POST body (``posted``):
    ``args`` and, from a POST, the ``patient`` parameter's logical ids; ``query_on_post``
    names a POST's query parameters, which a POST kick-off does not take (its parameters go
    in the body).

    :raises BadRequest: a malformed or unsupported parameter (strict handling).
    :raises Forbidden: the caller may not read a requested type.
    """
    require_async(prefer)
    lenient = "handling=lenient" in prefer
    notes: list[dict[str, Any]] = []
    names = set(args) - SUPPORTED
    if patients is not None:
        names.add(PATIENT)
    for name in sorted(names):
        if name == PATIENT and patients is not None and level in COMPARTMENT_LEVELS:
            continue
        _unsupported(name, _unsupported_detail(name, level, posted), lenient, notes)
    for name in sorted(set(query_on_post)):
        _unsupported(name, f"the query parameter {name} is not taken by a POST kick-off: send "
                     "it in the Parameters body", lenient, notes)
    output_format = parse_output_format(args)
    since = parse_instant(args["_since"]) if args.get("_since") else None
    types = authorised_types(parse_types(args, lenient, notes), caller)
    wanted = tuple(patients) if patients is not None and level in COMPARTMENT_LEVELS else None
    return ExportRequest(types, since, output_format, notes, wanted)
