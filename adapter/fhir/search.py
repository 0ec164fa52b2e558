"""FHIR search requests (FHIR R4 search.html): parameters with their types and modifiers,
prefixes on dates, OR (comma) and AND (repetition), result parameters, and the
``Prefer: handling=strict|lenient`` rule for parameters the server does not know.

Modifiers are declared per parameter, by the handler that applies them (``SearchParam``'s
``modifiers``), and published with it in the CapabilityStatement: a modifier the type allows
but the handler does not apply is no modifier of that parameter. Any other modifier makes the
whole ``name:modifier`` key unknown — 400 under ``handling=strict``, reported as ignored under
``lenient`` (FHIR R4 search.html#errors) — so a search is never answered as if the modifier
were absent (``gender:not=male`` answering the males)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from flask import request
from sqlalchemy import false, func, not_, or_
from werkzeug.datastructures import MultiDict

from adapter.errors import BadRequest
from adapter.mapping.conceptmaps import load_translations

DEFAULT_COUNT: Final = 50
MAX_COUNT: Final = 1000
# Longest value of one search parameter; SQLite refuses LIKE patterns over
# 50,000 bytes, and no identifier, name or date comes near this.
MAX_VALUE_LENGTH: Final = 2000
PREFIXES: Final = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Result and framework parameters (search.html#return, http.html#parameters).
CONTROL: Final = frozenset({"_count", "_summary", "_elements", "_include", "_revinclude",
                            "_format", "_cursor", "_pretty"})
# The modifiers FHIR R4 defines for each parameter type (search.html#modifiers): what a
# parameter may declare. ``missing`` is allowed on every type.
TYPE_MODIFIERS: Final = {
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "not", "text", "in", "not-in", "below", "above", "of-type"}),
    "date": frozenset({"missing"}), "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "reference": frozenset({"missing", "type", "identifier", "above", "below"}),
    "uri": frozenset({"missing", "below", "above"}), "composite": frozenset({"missing"}),
    "special": frozenset({"missing"}),
}
DATE_RE: Final = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2}))?)?)?")

# Common declarations.
NOT: Final = frozenset({"not"})
EXACT_CONTAINS: Final = frozenset({"exact", "contains"})
BY_IDENTIFIER: Final = frozenset({"identifier"})


@dataclass(frozen=True)
class SearchParam:
    """A search parameter this server supports on one resource type."""

    name: str
    type: str
    description: str
    definition: str | None = None
    # The modifiers the handler applies to this parameter (declared in the CapabilityStatement).
    modifiers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        """Refuse a declaration FHIR does not allow for the type (a programming error)."""
        wrong = self.modifiers - TYPE_MODIFIERS[self.type]
        if wrong:
            raise ValueError(f"{self.name}: {sorted(wrong)} are no {self.type} modifiers")


@dataclass(frozen=True)
class Criterion:
    """One occurrence of a parameter: its modifier and its OR-ed values."""

    param: SearchParam
    modifier: str | None
    values: tuple[str, ...]


@dataclass
class SearchRequest:
    """A parsed search: criteria (AND-ed), paging and result parameters."""

    criteria: list[Criterion] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    cursor: str | None = None
    summary: str | None = None
    elements: list[str] | None = None
    includes: list[str] = field(default_factory=list)
    revincludes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def values_of(self, name: str) -> list[Criterion]:
        """Return the criteria on parameter ``name``."""
        return [c for c in self.criteria if c.param.name == name]


@dataclass(frozen=True)
class DateRange:
    """A date search value: prefix and the half-open range [start, end) its precision covers."""

    prefix: str
    start: dt.datetime
    end: dt.datetime


def _strict() -> bool:
    """Return True when the client asked for strict handling of unknown parameters."""
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "handling=strict" for part in prefer.split(","))


def _parse_count(raw: str) -> int:
    """Return a valid ``_count``.

    :raises BadRequest: not a non-negative integer.
    """
    if not raw.isdigit():
        raise BadRequest("_count must be a non-negative integer.", expression="_count")
    return min(int(raw), MAX_COUNT)


def parse_search(args: MultiDict[str, str], params: dict[str, SearchParam],
                 includes: frozenset[str] = frozenset(),
                 revincludes: frozenset[str] = frozenset()) -> SearchRequest:
    """Parse query arguments against the supported ``params``.

    :raises BadRequest: a malformed value, or (strict handling) an unknown parameter.
    """
    search = SearchRequest()
    strict = _strict()
    for key, raw in args.items(multi=True):
        name, _, modifier = key.partition(":")
        _check_no_nul(key, name, raw)
        if key in CONTROL:
            _apply_control(search, key, raw, includes, revincludes, strict)
        elif name in params and (not modifier or modifier in params[name].modifiers):
            values = tuple(v for v in raw.split(",") if v != "")
            if not values:
                raise BadRequest(f"Parameter {key} has no value.", expression=key)
            if len(raw) > MAX_VALUE_LENGTH:  # hostile input: the database refuses huge patterns
                raise BadRequest(f"Parameter {key} is longer than {MAX_VALUE_LENGTH} characters.",
                                 expression=key)
            search.criteria.append(Criterion(params[name], modifier or None, values))
        elif strict:
            raise BadRequest(f"Unknown or unsupported search parameter '{key}' "
                             "(Prefer: handling=strict).", expression=key)
        else:
            search.ignored.append(key)
    return search


def _check_no_nul(key: str, name: str, raw: str) -> None:
    """Refuse a NUL character in a search parameter: no stored text holds one, PostgreSQL
    refuses it outright and XML cannot carry it back (the value is not echoed).

    :raises BadRequest: the value (or the parameter's name) holds one.
    """
    if "\x00" in raw or "\x00" in key:
        clean = "\x00" not in name
        raise BadRequest(f"{'Parameter ' + name if clean else 'A search parameter'}: a search "
                         "value cannot hold a NUL character.", expression=name if clean else None)


def _apply_control(search: SearchRequest, key: str, raw: str, includes: frozenset[str],
                   revincludes: frozenset[str], strict: bool) -> None:
    """Apply one result parameter.

    :raises BadRequest: a malformed or (strict) unsupported value.
    """
    if key == "_count":
        search.count = _parse_count(raw)
    elif key == "_cursor":
        search.cursor = raw
    elif key == "_summary":
        if raw not in ("count", "false"):
            raise BadRequest("_summary supports 'count' and 'false'.", expression="_summary")
        search.summary = raw
    elif key == "_elements":
        search.elements = [e.strip() for e in raw.split(",") if e.strip()]
    elif key in ("_include", "_revinclude"):
        allowed = includes if key == "_include" else revincludes
        if raw in allowed:
            (search.includes if key == "_include" else search.revincludes).append(raw)
        elif strict:
            raise BadRequest(f"{key}={raw} is not supported here; supported: "
                             f"{', '.join(sorted(allowed)) or 'none'}.", expression=key)
        else:
            search.ignored.append(f"{key}={raw}")


def negated(criterion: Criterion, matched: Any) -> Any:
    """Return ``matched`` (the OR of a token criterion's values), negated for ``:not``.

    FHIR R4 search.html#token: ``:not`` also finds resources without a value, so a NULL
    column (no match known) counts as not matching.
    """
    if criterion.modifier != "not":
        return matched
    return not_(func.coalesce(matched, false()))


def token_condition(criterion: Criterion, condition: Callable[[str], Any]) -> Any:
    """Return the OR of ``condition`` over a token criterion's values, negated for ``:not``."""
    return negated(criterion, or_(*(condition(value) for value in criterion.values)))


def matching_codes(map_name: str, vocabulary: Iterable[str], value: str, base: str) -> set[str]:
    """Return the codes of ``vocabulary`` that a token matches: the code of this server's own
    code system (under the canonical ``base``), or a code it is translated to by the
    ConceptMap ``map_name`` (FHIR R4 search.html#token: system|code, or code alone)."""
    system, code = split_token(value)
    translation = load_translations(base)[map_name]
    found = set()
    for source in vocabulary:
        codings = {(translation.source_system, source)}
        codings |= {(s, c) for s, c, _display in translation.translate(source)}
        if any(c == code and system in (None, s) for s, c in codings):
            found.add(source)
    return found


def split_prefix(value: str) -> tuple[str, str]:
    """Split a search value into its comparison prefix (default ``eq``) and the rest."""
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] == "-"):
        return value[:2], value[2:]
    return "eq", value


def parse_date(value: str, name: str) -> DateRange:
    """Parse a date search value with prefix into the range its precision covers.

    :raises BadRequest: not a FHIR date/dateTime.
    """
    prefix, text = split_prefix(value)
    match = DATE_RE.fullmatch(text)
    if not match:
        raise BadRequest(f"{name}: '{text}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a "
                         "dateTime with a time zone).", expression=name)
    try:
        start, end = _date_bounds(match)
    except ValueError as exc:
        raise BadRequest(f"{name}: '{text}' is not a valid date ({exc}).",
                         expression=name) from exc
    return DateRange(prefix, start, end)


def _date_bounds(match: re.Match[str]) -> tuple[dt.datetime, dt.datetime]:
    """Return the half-open UTC range covered by a matched date at its precision."""
    year, month, day, hour, minute, second, zone = match.groups()
    if hour is not None:
        tz = dt.UTC if zone == "Z" else dt.datetime.strptime(zone, "%z").tzinfo
        start = dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                            int(second or 0), tzinfo=tz).astimezone(dt.UTC)
        return start, start + dt.timedelta(seconds=1 if second else 60)
    if day is not None:
        start = dt.datetime(int(year), int(month), int(day), tzinfo=dt.UTC)
        return start, start + dt.timedelta(days=1)
    if month is not None:
        start = dt.datetime(int(year), int(month), 1, tzinfo=dt.UTC)
        next_month = dt.datetime(int(year) + int(month) // 12, int(month) % 12 + 1, 1,
                                 tzinfo=dt.UTC)
        return start, next_month
    return (dt.datetime(int(year), 1, 1, tzinfo=dt.UTC),
            dt.datetime(int(year) + 1, 1, 1, tzinfo=dt.UTC))


def split_token(value: str) -> tuple[str | None, str]:
    """Split a token value ``system|code`` into (system or None, code); ``|code`` has system ""."""
    if "|" in value:
        system, _, code = value.partition("|")
        return system, code
    return None, value


# FHIR R4 search.html#reference: [id], [type]/[id] (optionally /_history/[vid]), or [url].
_SEARCH_REFERENCE: Final = re.compile(
    r"(?:(https?://[^\s?#]+?)/)?([A-Z][A-Za-z]+)/([^/\s]+)(?:/_history/[^/\s]+)?")
# The id a URL of another server resolves to: no stored resource has an empty id.
NOTHING_HERE: Final = ""


def search_reference(value: str, types: tuple[str, ...], name: str) -> tuple[str | None, str]:
    """Return (type, or None for a bare id; logical id) of a reference search value. This
    server's absolute URL is its ``Type/id``; a URL of another server names nothing stored
    here, so it matches nothing (``NOTHING_HERE``).

    :raises BadRequest: a reference to another type, or not a reference.
    """
    text = value.strip().rstrip("/")
    if "/" not in text:
        return None, text
    match = _SEARCH_REFERENCE.fullmatch(text)
    wanted = " or ".join(types)
    if match is None:
        raise BadRequest(f"{name}: give the id, {types[0]}/<id> or this server's URL of a "
                         f"{wanted} (FHIR R4 search.html#reference).", expression=name)
    server, kind, rid = match.groups()
    if kind not in types:
        raise BadRequest(f"{name} must reference a {wanted}.", expression=name)
    if server is not None and server.rstrip("/").lower() != _own_base().lower():
        return kind, NOTHING_HERE
    return kind, rid


def _own_base() -> str:
    """Return this server's FHIR base URL."""
    from adapter.fhir.bundle import fhir_base

    return fhir_base().rstrip("/")


def reference_id(value: str, resource_type: str, name: str) -> str:
    """Return the logical id of a reference search value (see :func:`search_reference`).

    :raises BadRequest: a reference to another resource type.
    """
    return search_reference(value, (resource_type,), name)[1]


def encode_cursor(*keys: object) -> str:
    """Return an opaque keyset cursor for the last row of a page."""
    text = "|".join(str(k) for k in keys)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[str]:
    """Return the keys of a cursor made by ``encode_cursor``.

    :raises BadRequest: not a cursor of this server.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("_cursor is not a paging cursor of this server: follow the "
                         "Bundle's next link.", expression="_cursor") from exc
    keys = text.split("|")
    if len(keys) != arity:
        raise BadRequest("_cursor is not a paging cursor of this search.", expression="_cursor")
    return keys
