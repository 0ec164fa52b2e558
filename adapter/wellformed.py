"""The door every inbound FHIR resource passes, whatever its dialect (a JSON or XML body, a
Bundle entry, an NDJSON line): it must be something this gateway can store and render again
in FHIR JSON, FHIR XML and directory XML. Two checks, each run in one place per stage:

- ``shape_flaws`` (the document stage, ``adapter.fhir.body``; again per resource in
  ``adapter.mapping.fhir.validate_resource``): FHIR R4 json.html — no ``null`` except as the
  placeholder of a primitive array whose ``_name`` companion has a value at that index, no
  empty objects or arrays ("elements must have a value or children"); datatypes.html#string —
  no empty or whitespace-only strings (XML drops the whitespace: xml.html "attributes can never
  be empty"), no string over 1 MB; and no character XML 1.0 cannot carry (XML 1.0 section 2.2
  ``Char``: C0 controls but TAB, LF and CR, U+FFFE, U+FFFF, lone surrogates), in values and
  in element names.
- ``content_flaws`` (the resource stage only): a human name with no family, given or text
  part, and a birth or death date in the future (a directory entry is a child with a date of
  birth, never an expected one: docs/domain.md "The directory entry (one per child)").

Each flaw names its element as a FHIRPath expression (``Patient.name[0].family``) and never
repeats the value. The shape rules are also run on what goes out (``require_renderable``), so
that a record stored before this door existed is left out of a page or an export, reported,
instead of failing it (docs/architecture.md "Records that cannot be rendered").
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from adapter.errors import BadRequest, GatewayError, Invalid

log = logging.getLogger(__name__)
# XML 1.0 section 2.2: Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-]
XML_UNSAFE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
MAX_STRING: Final = 1024 * 1024  # datatypes.html#string: "SHALL NOT exceed 1MB"
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Where a resource type carries HumanNames (R4 patient.html, practitioner.html,
# relatedperson.html): dotted paths, each step through arrays.
HUMAN_NAMES: Final = {"Patient": ("name", "contact.name"), "Practitioner": ("name",),
                      "RelatedPerson": ("name",)}
FUTURE_DATES: Final = {"Patient": ("birthDate", "deceasedDateTime")}
ENGLAND: Final = ZoneInfo("Europe/London")


class Malformed(BadRequest, Invalid):
    """A resource that is not well-formed FHIR: 400 (FHIR R4 http.html: "failed basic FHIR
    validation rules"), and an ``Invalid`` for the mapping's callers, which report it as
    they report every other inbound error."""

    status, issue_code = 400, "invalid"


@dataclass(frozen=True)
class Flaw:
    """What is wrong with one element, and where (a FHIRPath expression)."""

    expression: str
    message: str


def _string_flaw(text: str) -> str | None:
    """Return why a string value cannot be stored and rendered, or None."""
    if not text.strip():
        return "is empty or only white space (FHIR R4 datatypes.html#string)"
    found = XML_UNSAFE.search(text)
    if found:
        return (f"holds the character U+{ord(found.group()):04X} at position {found.start()}, "
                "which XML 1.0 cannot carry (XML 1.0 section 2.2)")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_STRING:
        return "is over 1 MB (FHIR R4 datatypes.html#string)"
    return None


def _step(path: str, key: str) -> str:
    """Return ``path`` extended by the element ``key`` (``_given`` is ``given``'s extension
    side: the same FHIRPath element)."""
    name = key[1:] if key.startswith("_") else key
    return f"{path}.{name}" if _NAME.fullmatch(name) else f"{path}.`{name}`"


def _null_allowed(container: Mapping[str, Any], key: str, index: int) -> bool:
    """Return whether ``container[key][index]`` may be null: it is a primitive array's
    placeholder and the companion array (``_key`` / ``key``) has a value there (json.html)."""
    other = container.get(key[1:] if key.startswith("_") else f"_{key}")
    return isinstance(other, list) and index < len(other) and other[index] is not None


def _companion_flaw(container: Mapping[str, Any], key: str, value: list[Any]) -> str | None:
    """Return why a primitive array and its ``_`` companion do not pair up, or None."""
    if not key.startswith("_"):
        return None
    other = container.get(key[1:])
    if isinstance(other, list) and len(other) != len(value):
        return "the array must have as many items as its value array (FHIR R4 json.html)"
    return None


def _walk(value: Any, path: str, skip: frozenset[str]) -> Iterator[Flaw]:
    """Yield the shape flaws of a JSON value at ``path`` (elements in ``skip`` are not
    entered: a Bundle's entry resources are checked one by one, as each is applied)."""
    if path in skip:
        return
    if value is None:
        yield Flaw(path, "null is not allowed: leave the element out (FHIR R4 json.html)")
    elif isinstance(value, str):
        reason = _string_flaw(value)
        if reason:
            yield Flaw(path, f"the value {reason}")
    elif isinstance(value, list):
        yield from _items(value, path, skip, {}, "")
    elif isinstance(value, dict):
        if not value:
            yield Flaw(path, "an empty element is not allowed: it must have a value or "
                             "children (FHIR R4 json.html)")
        for key, item in value.items():
            yield from _member(value, key, item, path, skip)


def _member(container: Mapping[str, Any], key: str, item: Any, path: str,
            skip: frozenset[str]) -> Iterator[Flaw]:
    """Yield the shape flaws of the element ``key`` of an object at ``path``."""
    if not key or XML_UNSAFE.search(key):
        yield Flaw(path, "an element name holds a character XML 1.0 cannot carry (XML 1.0 "
                         "section 2.2)")
        return
    where = _step(path, key)
    if isinstance(item, list):
        reason = _companion_flaw(container, key, item)
        if reason:
            yield Flaw(where, reason)
        yield from _items(item, where, skip, container, key)
    else:
        yield from _walk(item, where, skip)


def _items(items: list[Any], path: str, skip: frozenset[str], container: Mapping[str, Any],
           key: str) -> Iterator[Flaw]:
    """Yield the shape flaws of an array (of the element ``key`` of ``container``, if any)."""
    if not items:
        yield Flaw(path, "an empty array is not allowed: leave the element out (FHIR R4 "
                         "json.html)")
    for index, item in enumerate(items):
        if item is None and key and _null_allowed(container, key, index):
            continue
        yield from _walk(item, f"{path}[{index}]", skip)


def root_expression(resource: Mapping[str, Any]) -> str:
    """Return the FHIRPath root of a resource: its type, when it has a usable one."""
    kind = resource.get("resourceType")
    return kind if isinstance(kind, str) and _NAME.fullmatch(kind) else "Resource"


def shape_flaws(resource: Mapping[str, Any], *, entries_later: bool = False) -> list[Flaw]:
    """Return the shape flaws of a resource; with ``entries_later``, a Bundle's entries are
    left to the checks each meets when it is applied (one bad entry of a batch is refused on
    its own, a request URL no id can match answers 404)."""
    root = root_expression(resource)
    skip: frozenset[str] = frozenset()
    entries = resource.get("entry")
    if entries_later and root == "Bundle" and isinstance(entries, list):
        skip = frozenset(f"Bundle.entry[{i}]" for i in range(len(entries)))
    return list(_walk(resource, root, skip))


def _at(value: Any, steps: list[str], path: str) -> Iterator[tuple[Any, str]]:
    """Yield the values at the dotted ``steps`` below ``value`` with their paths (stepping
    through arrays, indexed)."""
    if not steps:
        yield value, path
        return
    item = value.get(steps[0]) if isinstance(value, dict) else None
    where = f"{path}.{steps[0]}"
    if isinstance(item, list):
        for index, element in enumerate(item):
            yield from _at(element, steps[1:], f"{where}[{index}]")
    elif item is not None:
        yield from _at(item, steps[1:], where)


def _has_text(value: Any) -> bool:
    """Return whether ``value`` is (or is an array holding) a non-blank string."""
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and v.strip() for v in values)


def _name_flaws(resource: Mapping[str, Any], root: str) -> Iterator[Flaw]:
    """Yield each HumanName with no family, given or text part."""
    for spec in HUMAN_NAMES.get(root, ()):
        for name, path in _at(resource, spec.split("."), root):
            if isinstance(name, dict) and not any(_has_text(name.get(part))
                                                  for part in ("family", "given", "text")):
                yield Flaw(path, "the name names nobody: give a family name, a given name "
                                 "or the text of the name")


def _earliest(text: str) -> dt.date | None:
    """Return the first day a FHIR date or dateTime (possibly partial) can mean, or None
    (a malformed one is left to the FHIR model's check)."""
    try:
        numbers = [int(part) for part in text[:10].split("-")]
        year, month, day = (numbers + [1, 1])[:3]
        return dt.date(year, month, day)
    except ValueError:
        return None


def today_in_england() -> dt.date:
    """Return today's date in England (a child born after midnight there is born today)."""
    return dt.datetime.now(ENGLAND).date()


def _date_flaws(resource: Mapping[str, Any], root: str) -> Iterator[Flaw]:
    """Yield each birth or death date that lies in the future (the date in England)."""
    today = today_in_england()
    for key in FUTURE_DATES.get(root, ()):
        value = resource.get(key)
        earliest = _earliest(value) if isinstance(value, str) else None
        if earliest is not None and earliest > today:
            yield Flaw(f"{root}.{key}", "the date is in the future")


def content_flaws(resource: Mapping[str, Any], expression: str | None = None) -> list[Flaw]:
    """Return the flaws of a resource's content (and its contained resources') that its
    shape cannot show: names that name nobody, birth and death dates in the future."""
    root = root_expression(resource)
    flaws = [Flaw((expression or root) + f.expression[len(root):], f.message)
             for f in (*_name_flaws(resource, root), *_date_flaws(resource, root))]
    for index, contained in enumerate(resource.get("contained") or []):
        if isinstance(contained, dict):
            flaws += content_flaws(contained, f"{expression or root}.contained[{index}]")
    return flaws


def _message(flaws: list[Flaw]) -> str:
    """Return the message of the first flaw, saying how many more there are."""
    more = f" ({len(flaws) - 1} more element(s) to correct)" if len(flaws) > 1 else ""
    return f"{flaws[0].expression}: {flaws[0].message}{more}"


def require_shape(resource: Mapping[str, Any], *, entries_later: bool = False) -> None:
    """Refuse a resource that is not well-formed FHIR (see ``shape_flaws``).

    :raises Malformed: the first flaw, with its expression.
    """
    flaws = shape_flaws(resource, entries_later=entries_later)
    if flaws:
        raise Malformed(_message(flaws), expression=flaws[0].expression)


def require_content(resource: Mapping[str, Any]) -> None:
    """Refuse a resource whose content breaks the rules of ``content_flaws``.

    :raises Invalid: the first flaw, with its expression (422: a business rule).
    """
    flaws = content_flaws(resource)
    if flaws:
        raise Invalid(_message(flaws), expression=flaws[0].expression)


class Unrenderable(GatewayError):
    """A stored record that cannot be rendered as valid FHIR (data stored before the inbound
    checks of this module): the read answers this OperationOutcome, a page or an export leaves
    the record out and reports it (docs/architecture.md "Records that cannot be rendered")."""

    status, issue_code = 500, "exception"

    def __init__(self, label: str, message: str, *, expression: str | None = None) -> None:
        super().__init__(message, expression=expression)
        self.label = label  # ``Type/id`` of the record


def well_formed(resource: Mapping[str, Any]) -> bool:
    """Return True when ``resource`` certainly has none of the flaws a stored record can
    bring into a rendered resource (a null, an empty object, array, name or string, a
    whitespace-only string, a character XML 1.0 cannot carry, a string over 1 MB); False
    means "ask ``shape_flaws``", which names the flaw, if any. A rendered resource is checked
    on every read, page and export (the record may have been stored before the door
    existed), so this pass works on the resource's compact JSON text, where C code does
    nearly all of the work (three times cheaper than walking the dict in Python):

    - orjson refuses what JSON cannot carry (lone surrogates, non-string keys);
    - with no backslash in the text, no string holds a control character or a quote (orjson
      escapes both: RFC 8259 section 7), so every quote opens or closes a string and
      splitting at quotes parts strings from structure exactly;
    - a null, ``{}`` or ``[]`` can then only be in the structure (joined with a character
      that is no JSON token, so that ``["a"]`` does not read as ``[]``);
    - a blank string is an empty or ``str.isspace`` part; U+FFFE and U+FFFF are searched for
      only in text that is not ASCII.

    A primitive array and its ``_`` companion pairing up (json.html) is not judged here:
    inbound resources meet ``shape_flaws`` at the door, and the mapping makes each
    outgoing pair from one list (``adapter.mapping.datatypes.bs7666_address``)."""
    try:
        data = orjson.dumps(resource)
    except TypeError:  # orjson.JSONEncodeError: a surrogate, a key that is not a string
        return False
    if len(data) >= MAX_STRING or b"\\" in data:  # under 1 MB in all: no string is over
        return False
    text = data.decode()
    parts = text.split('"')
    strings = parts[1::2]
    if "" in strings or any(map(str.isspace, strings)):
        return False
    structure = "\x00".join(parts[0::2])
    if "null" in structure or "{}" in structure or "[]" in structure:
        return False
    return text.isascii() or ("\ufffe" not in text and "\uffff" not in text)


def require_renderable(resource: Mapping[str, Any]) -> None:
    """Refuse to render a resource that would not be valid FHIR JSON and XML, logging its id
    and the element (never the value) for the operators (``well_formed`` clears the common
    case in one pass; ``shape_flaws`` names what is wrong).

    :raises Unrenderable: naming the resource and the element.
    """
    if well_formed(resource):
        return
    flaws = shape_flaws(resource)
    if not flaws:
        return
    label = resource_label(resource)
    log.error("%s cannot be rendered: %s is not valid FHIR (%d element(s)); the stored "
              "record needs correcting", label, flaws[0].expression, len(flaws))
    raise Unrenderable(label, f"{label} cannot be rendered: {_message(flaws)}. The stored record "
                       "needs correcting; the operators have been told.",
                       expression=flaws[0].expression)


def resource_label(resource: Mapping[str, Any]) -> str:
    """Return ``Type/id`` of a resource (its logical id: no personal data)."""
    return f"{root_expression(resource)}/{resource.get('id')}"
