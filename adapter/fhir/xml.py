"""FHIR R4 XML (https://hl7.org/fhir/R4/xml.html): a fast writer and a hardened reader for
resources in their FHIR JSON shape (plain dicts, as the mappings build them for orjson).

Element order, cardinality and types come from the FHIR definitions, read once per process
from the ``fhir.resources.R4B`` models (``elements_sequence()`` and each field's type) into
one table per type; serving then walks the dict against those tables and builds the XML text
directly, without model validation (validity is proven by the tests against
the official R4 XSD). The service declares FHIR 4.0.1: only the resource types in
``R4_RESOURCE_TYPES`` are handled, whose R4B definitions match R4 (a test compares every one
with the R4 ``fhir-single.xsd``), and elements typed with a data type that R4B added
(``R4B_ONLY_TYPES``) are refused rather than written.

Decimals read from XML become JSON numbers: ``int`` for integer literals, else ``float``
(what orjson can write); a decimal's trailing zeros and digits beyond binary64 precision are
not kept (FHIR R4 json.html "decimal" warns of the same for JSON parsers).
"""

from __future__ import annotations

import copy
import functools
import math
import re
import threading
import types
import typing
from decimal import Decimal
from typing import Any, Final

import orjson
from lxml import etree

from adapter.errors import Invalid
from adapter.registry import xml_types
from adapter.xmlsafe import parse_bytes, safe_parser

FHIR_NS: Final = "http://hl7.org/fhir"
XHTML_NS: Final = "http://www.w3.org/1999/xhtml"
_XHTML_DIV: Final = f"{{{XHTML_NS}}}div"
_XHTML_NSMAP: Final[dict[Any, str]] = {None: XHTML_NS}
_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>'

# The resource types this service reads and writes as XML, as ``adapter.registry``
# declares them (docs/architecture.md "The outside contract").
R4_RESOURCE_TYPES: Final = xml_types()
# Data types new in R4B (https://hl7.org/fhir/R4B/diff.html): not in FHIR 4.0.1.
R4B_ONLY_TYPES: Final = frozenset({"CodeableReference", "RatioRange"})

# Field kinds. Primitive kinds come first so that ``kind <= _DEC`` tests for a primitive.
_STR, _BOOL, _INT, _DEC = 0, 1, 2, 3
_COMPLEX, _RESOURCE, _XHTML, _COMPANION, _ATTR, _R4B_ONLY = 4, 5, 6, 7, 8, 9
_INT_MARKERS: Final = frozenset({"Integer", "UnsignedInt", "PositiveInt", "Integer64"})
_MARKER_KINDS: Final = {"Decimal": _DEC, "Xhtml": _XHTML}

# A field: (kind, child table, repeats, XML element name / value key, companion key); the
# child table of a field that is not complex-typed is the empty ``_NO_TABLE``.
# For a primitive ``given`` the companion is ``_given`` (FHIR R4 json.html "primitive
# types"); the companion's own entry names ``given`` as its value key.
Field = tuple[int, "TypeTable", bool, str, str]
# How the writer writes one key of an object (``_plan``): one of the ``_DO_*`` cases, the
# key, its field, and the text that opens its element (``<name value="`` for a primitive,
# ``<name`` for an object).
Step = tuple[int, str, Field, str]
# The attributes found in an object, then the steps of its elements in definition order, then
# the texts written for a small object of strings only, by its start and values (``_plan``).
Plan = tuple[tuple[str, ...], tuple[Step, ...], "dict[tuple[Any, ...], str] | None"]


class TypeTable:
    """The children of one FHIR type in definition order, for writing and reading XML."""

    __slots__ = ("name", "is_resource", "attrs", "order", "fields", "by_tag", "plans")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.is_resource = is_resource
        # Element.id and Extension.url are XML attributes (FHIR R4 xml.html).
        self.attrs: tuple[str, ...] = () if is_resource else ("id",)
        self.order: dict[str, int] = {}
        self.fields: dict[str, Field] = {}
        self.by_tag: dict[str, Field] = {}
        # How to write an object of this type, by its keys in their order (``_plan``).
        self.plans: dict[tuple[str, ...], Plan] = {}


_NO_TABLE: Final = TypeTable("", False)
_LOCK = threading.Lock()
_TABLES: dict[Any, TypeTable] = {}
_RESOURCES: dict[str, TypeTable] = {}


def unwrap_field(annotation: Any) -> tuple[Any, bool]:
    """Return the item type of a fhir.resources field annotation and whether the field
    repeats (``list[X] | None`` gives ``(X, True)``)."""
    repeats = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin is list:
            annotation, repeats = typing.get_args(annotation)[0], True
        else:
            return annotation, repeats


def _primitive_kind(item: Any) -> int | None:
    """Return the kind of a primitive item type, or None for a complex type or resource."""
    if item is bool:
        return _BOOL
    if typing.get_origin(item) is typing.Annotated:
        marker = type(typing.get_args(item)[-1]).__name__
        return _INT if marker in _INT_MARKERS else _MARKER_KINDS.get(marker, _STR)
    return None


def _model_kind(item: Any) -> tuple[int, Any]:
    """Return the kind and model class of a complex or resource item type."""
    from fhir.resources.R4B.resource import Resource

    model = item.get_model_klass()
    if model is Resource:
        return _RESOURCE, None
    if model.__name__ in R4B_ONLY_TYPES:
        return _R4B_ONLY, None
    return _COMPLEX, model


def _add_field(table: TypeTable, index: int, name: str, annotation: Any) -> Any:
    """Add one element of ``table``; return the model class still to tabulate, if any."""
    item, repeats = unwrap_field(annotation)
    kind = _primitive_kind(item)
    model = None
    if kind is None:
        kind, model = _model_kind(item)
    if name in table.attrs:
        table.order[name] = -1
        table.fields[name] = (_ATTR, _NO_TABLE, False, name, name)
        return None
    table.order[name] = 2 * index
    table.fields[name] = (kind, _NO_TABLE, repeats, name, "_" + name)
    tag = _XHTML_DIV if kind == _XHTML else f"{{{FHIR_NS}}}{name}"
    table.by_tag[tag] = table.fields[name]
    if kind <= _DEC:  # xhtml has no _div: narrative cannot carry extensions (narrative.html)
        table.order["_" + name] = 2 * index + 1
        table.fields["_" + name] = (_COMPANION, _NO_TABLE, repeats, name, "_" + name)
    return model


def _tabulate(model: Any) -> TypeTable:
    """Return the table of ``model``, building it and every type it uses (lock held)."""
    from fhir.resources.R4B.resource import Resource

    table = _TABLES.get(model)
    if table is not None:
        return table
    table = _TABLES[model] = TypeTable(model.__name__, issubclass(model, Resource))
    if table.name == "Extension":
        table.attrs = ("id", "url")
    if table.is_resource:
        table.order["resourceType"] = -1
        table.fields["resourceType"] = (_ATTR, _NO_TABLE, False, "resourceType", "resourceType")
    aliases = {info.alias or key: info for key, info in model.model_fields.items()}
    for index, name in enumerate(model.elements_sequence()):
        child_model = _add_field(table, index, name, aliases[name].annotation)
        if child_model is not None:
            child = _tabulate(child_model)
            kind, _none, repeats, tag, companion = table.fields[name]
            table.fields[name] = table.by_tag[f"{{{FHIR_NS}}}{name}"] = (
                kind, child, repeats, tag, companion)
    return table


def resource_table(resource_type: str) -> TypeTable:
    """Return the table of a supported resource type, built once per process.

    :raises KeyError: ``resource_type`` is not one of ``R4_RESOURCE_TYPES``.
    """
    table = _RESOURCES.get(resource_type)
    if table is not None:
        return table
    if resource_type not in R4_RESOURCE_TYPES:
        raise KeyError(resource_type)
    from fhir.resources.R4B import get_fhir_model_class

    with _LOCK:
        if resource_type not in _RESOURCES:
            _RESOURCES[resource_type] = _tabulate(get_fhir_model_class(resource_type))
    return _RESOURCES[resource_type]


@functools.cache
def element_table() -> TypeTable:
    """Return the table of ``Element``: what a primitive carries besides its value."""
    from fhir.resources.R4B.element import Element

    with _LOCK:
        return _tabulate(Element)


# ---------------------------------------------------------------------------------------------
# Writing


class _ShapeError(ValueError):
    """The dict is not a FHIR R4 resource this writer can express; ``path`` says where."""

    def __init__(self, reason: str, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = list(path)


# Attribute values keep tabs and line ends as character references: a parser would
# otherwise normalise them to spaces (XML 1.0 section 3.3.3).
_ESCAPES: Final = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"),
                   ("\t", "&#9;"), ("\n", "&#10;"), ("\r", "&#13;"))
_NEEDS_ESCAPE: Final = re.compile(r'[&<>"\t\n\r]').search
# Characters XML 1.0 cannot carry (section 2.2), which FHIR strings cannot hold either.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]").search
_BOOL_TEXT: Final = {True: "true", False: "false"}
_THREAD = threading.local()


def _escape(text: str) -> str:
    """Return ``text`` escaped for a double-quoted XML attribute value."""
    if _NEEDS_ESCAPE(text) is None:
        return text
    for char, reference in _ESCAPES:
        text = text.replace(char, reference)
    return text


def _is_plain(resource: dict[str, Any]) -> bool:
    """Return True if every string in ``resource`` can go into XML as it is.

    One scan of orjson's C-speed serialisation replaces a check per value on the common
    path; anything orjson cannot write (lone surrogates) takes the checked
    path. In JSON text a string needing an XML escape shows &, < or > as they are, or a
    backslash for ", tab, line ends and every other control character (RFC 8259 section 7);
    U+FFFE and U+FFFF, not XML characters, are the only others to look for.
    """
    try:
        text = orjson.dumps(resource)
    except orjson.JSONEncodeError:
        return False
    if b"&" in text or b"<" in text or b">" in text or b"\\" in text:
        return False
    return text.isascii() or not (b"\xef\xbf\xbe" in text or b"\xef\xbf\xbf" in text)


def _number_text(value: Any) -> str:
    """Return a JSON number as FHIR XML writes it: as given, never in exponent form.

    :raises _ShapeError: the value is not a finite number.
    """
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value) or type(value) is Decimal:
        text = str(value)
        # xs:decimal (the XSD's decimal-primitive) has no exponent form.
        return format(Decimal(text), "f") if "e" in text or "E" in text else text
    raise _ShapeError(f"expected a number, got {type(value).__name__}")


def _value_text(kind: int, value: Any) -> str:
    """Return the ``value`` attribute text of a primitive of ``kind``.

    :raises _ShapeError: the value's JSON type does not match the element's FHIR type.
    """
    if kind == _STR and type(value) is str:
        return _escape(value)
    if kind == _BOOL and type(value) is bool:
        return _BOOL_TEXT[value]
    if kind == _INT and type(value) is int:
        return str(value)
    if kind == _DEC and type(value) is not bool:
        return _number_text(value)
    raise _ShapeError(f"a value of JSON type {type(value).__name__} does not fit this element")


def _write_primitive(out: list[str], kind: int, tag: str, value: Any, extra: Any,
                     raw: bool) -> None:
    """Write one primitive element: ``value`` as the attribute, ``extra`` its id/extensions.

    :raises _ShapeError: the value or its ``_`` companion is malformed.
    """
    head = f"<{tag}" if value is None else f'<{tag} value="{_value_text(kind, value)}"'
    if extra is None:
        if value is None:
            raise _ShapeError("a primitive needs a value, an id or extensions (ele-1)")
        out.append(head + "/>")
        return
    if type(extra) is not dict or not extra:
        raise _ShapeError("the _ companion of a primitive must be a non-empty object")
    _write_element(out, tag, extra, element_table(), head, raw)


def _write_primitives(out: list[str], field: Field, value: Any, extra: Any,
                      raw: bool) -> None:
    """Write a primitive element, or each item of a repeating one with its companion item.

    :raises _ShapeError: the arrays are malformed or of different lengths.
    """
    kind, _child, repeats, tag, _companion = field
    if not repeats:
        _write_primitive(out, kind, tag, value, extra, raw)
        return
    values = _nonempty_list(value if value is not None else [None] * len(extra or ()))
    extras = [None] * len(values) if extra is None else _nonempty_list(extra)
    if len(extras) != len(values):
        raise _ShapeError("a repeating primitive and its _ companion differ in length")
    for index, (item, item_extra) in enumerate(zip(values, extras, strict=True)):
        try:
            _write_primitive(out, kind, tag, item, item_extra, raw)
        except _ShapeError as exc:
            exc.path.insert(0, f"[{index}]")
            raise


def _nonempty_list(value: Any) -> list[Any]:
    """Return ``value`` if it is a non-empty list (FHIR R4 json.html: no empty arrays).

    :raises _ShapeError: it is not.
    """
    if type(value) is not list or not value:
        raise _ShapeError("a repeating element must be a non-empty array")
    return value


def _write_div(out: list[str], value: Any) -> None:
    """Write ``Narrative.div``: the XHTML string, parsed safely and re-serialised.

    :raises _ShapeError: it is not a well-formed XHTML ``div`` (FHIR R4 narrative.html).
    """
    try:
        div = etree.fromstring(value.encode("utf-8"), _parser()) if type(value) is str else None
    except etree.XMLSyntaxError as exc:
        raise _ShapeError(f"the narrative div is not well-formed XML: {exc.msg}") from None
    if div is None or div.tag != _XHTML_DIV or div.getroottree().docinfo.internalDTD is not None:
        raise _ShapeError(f'the narrative must be one <div xmlns="{XHTML_NS}"> element')
    out.append(etree.tostring(div, encoding="unicode"))


def _write_items(out: list[str], tag: str, items: Any, table: TypeTable, repeats: bool,
                 raw: bool) -> None:
    """Write a complex-typed element for each object of ``items``.

    :raises _ShapeError: an item is not a non-empty object, or there are no items.
    """
    if not items:
        raise _ShapeError("a repeating element must be a non-empty array")
    head = "<" + tag
    for index, item in enumerate(items):
        try:
            if type(item) is not dict or not item:
                raise _ShapeError("a complex element must be a non-empty object")
            _write_element(out, tag, item, table, head, raw)
        except _ShapeError as exc:
            exc.path.insert(0, f"[{index}]" if repeats else "")
            raise


def _write_resources(out: list[str], field: Field, value: Any, raw: bool) -> None:
    """Write resources nested in an element (``contained``, ``Bundle.entry.resource``).

    :raises _ShapeError: an item is not a resource of a supported type.
    """
    tag = field[3]
    items = _nonempty_list(value) if field[2] else [value]
    for index, item in enumerate(items):
        out.append(f"<{tag}>")
        try:
            _write_resource(out, item, "", raw)
        except _ShapeError as exc:
            exc.path.insert(0, f"[{index}]" if field[2] else "")
            raise
        out.append(f"</{tag}>")


def _write_field(out: list[str], obj: dict[str, Any], key: str, field: Field,
                 raw: bool) -> None:
    """Write the element(s) of ``obj[key]`` as ``field`` describes them (the general case).

    :raises _ShapeError: the value does not fit the element.
    """
    kind, child, repeats, tag, companion = field
    value = obj[key]
    if value is None:
        raise _ShapeError("null is not a FHIR value (FHIR R4 json.html)")
    if kind <= _DEC:
        _write_primitives(out, field, value, obj.get(companion), raw)
    elif kind == _COMPLEX:
        _write_items(out, tag, value if repeats else (value,), child, repeats, raw)
    elif kind == _COMPANION and tag not in obj:
        _write_primitives(out, (_STR, _NO_TABLE, repeats, tag, key), None, value, raw)
    elif kind == _RESOURCE:
        _write_resources(out, field, value, raw)
    elif kind == _XHTML:
        _write_div(out, value)
    elif kind == _R4B_ONLY:
        raise _ShapeError("this element exists only in FHIR R4B, not in FHIR R4 (4.0.1)")


def _ordered_keys(obj: dict[str, Any], table: TypeTable) -> list[str]:
    """Return the keys of ``obj`` in the order of the type's definition.

    :raises _ShapeError: a key is not an element of the type.
    """
    try:
        return sorted(obj, key=table.order.__getitem__)
    except KeyError as exc:
        raise _ShapeError(f"{table.name} has no element {exc.args[0]!r}",
                          str(exc.args[0])) from None


# How ``_write_element`` writes one key (``_plan``): a string, a boolean, a repeating string
# without or with its ``_`` companion, objects, or anything else (``_write_field``).
_DO_STR, _DO_BOOL, _DO_STRS, _DO_NOTED_STRS, _DO_OBJECTS, _DO_FIELD = 0, 1, 2, 3, 4, 5
# Key orders remembered per type: the mappings give a handful; beyond this many (arbitrary
# dicts written back), an object is planned each time rather than the table growing.
_MAX_PLANS: Final = 256
# A small object of strings only (a Coding, an Extension with a url and a code, a line's part
# label) is written from its remembered text when its values have been seen before: the same
# few codes recur in every resource. At most this many texts per key order, at most this many
# keys (values unseen before, an identifier's value, cost a look-up and are soon not kept).
_MAX_TEXTS: Final = 64
_MAX_TEXT_KEYS: Final = 4


def _plan(obj: dict[str, Any], table: TypeTable) -> Plan:
    """Return how to write an object with the keys of ``obj`` (in their order), remembered
    in ``table.plans``: which attributes it has, then each element's case, in definition
    order. What the plan decides from the keys alone (the order, which are attributes,
    whether a primitive has its ``_`` companion) is not looked at again per object.

    :raises _ShapeError: an attribute is not a string, or a key is not an element of the type.
    """
    names = tuple(name for name in table.attrs if name in obj)
    for name in names:  # checked before the keys, as the writer always has
        if type(obj[name]) is not str:
            raise _ShapeError(f"{name} must be a string", name)
    fields = table.fields
    steps = tuple(_plan_step(key, fields[key], obj) for key in _ordered_keys(obj, table)
                  if fields[key][0] != _ATTR)
    small = len(obj) <= _MAX_TEXT_KEYS and all(step[0] == _DO_STR for step in steps)
    plan: Plan = (names, steps, {} if small and steps else None)
    if len(table.plans) < _MAX_PLANS:
        table.plans[tuple(obj)] = plan
    return plan


def _plan_step(key: str, field: Field, obj: dict[str, Any]) -> Step:
    """Return the writer's case for ``key`` of an object with the keys of ``obj``."""
    kind, _child, repeats, name, companion = field
    if kind == _STR and companion not in obj:
        return (_DO_STRS if repeats else _DO_STR, key, field, f'<{name} value="')
    if kind == _STR and repeats:
        return (_DO_NOTED_STRS, key, field, f'<{name} value="')
    if kind == _BOOL and not repeats and companion not in obj:
        return (_DO_BOOL, key, field, f'<{name} value="')
    if kind == _COMPLEX:
        return (_DO_OBJECTS, key, field, "<" + name)
    return (_DO_FIELD, key, field, "")


def _write_strings(out: list[str], opening: str, items: list[Any], raw: bool) -> bool:
    """Write each string of a repeating string element without companion; return False,
    having written nothing, when an item is not a string (``_write_field`` says why)."""
    mark = len(out)
    for item in items:
        if type(item) is not str:
            del out[mark:]
            return False
        out.append(f'{opening}{item if raw else _escape(item)}"/>')
    return True


def _write_noted_strings(out: list[str], opening: str, tag: str, values: Any, extras: Any,
                         raw: bool) -> bool:
    """Write each string of a repeating string element with its ``_`` companion item (an
    Address.line with its part label); return False, having written nothing, for anything
    else, such as an item without a value (``_write_field`` writes or refuses it).

    :raises _ShapeError: a companion item does not fit Element.
    """
    if (type(values) is not list or type(extras) is not list or not values
            or len(values) != len(extras)):
        return False
    mark = len(out)
    table = element_table()
    for index, (item, extra) in enumerate(zip(values, extras, strict=True)):
        if type(item) is not str or (extra is not None and (type(extra) is not dict or not extra)):
            del out[mark:]
            return False
        head = f'{opening}{item if raw else _escape(item)}"'
        if extra is None:
            out.append(head + "/>")
            continue
        try:
            _write_element(out, tag, extra, table, head, raw)
        except _ShapeError as exc:
            exc.path.insert(0, f"[{index}]")
            raise
    return True


def _write_remembered(out: list[str], tag: str, obj: dict[str, Any], table: TypeTable,
                      head: str, plan: Plan) -> None:
    """Write a small object of strings of a plain resource (no escapes) from the text
    remembered for its start and values, else compose the text as ``_write_element`` writes
    it and remember it. A value that is not a string is written (or refused) by
    ``_write_element`` and never remembered. Once its plan holds ``_MAX_TEXTS`` texts, that
    key order is written as any other (its values hardly recur: an identifier's, a period's).

    :raises _ShapeError: the content does not fit the element's type.
    """
    names, steps, texts = plan
    key = (tag, head, *obj.values())
    try:
        text = texts.get(key) if texts is not None else None
    except TypeError:  # an unhashable value (a list or object): not a string
        text = None
    if text is not None:
        out.append(text)
        return
    if texts is None or not all(type(value) is str for value in key):
        _write_element(out, tag, obj, table, head, False)
        return
    for name in names:
        head = f'{head} {name}="{obj[name]}"'
    text = "".join([head, ">", *[f'{opening}{obj[step_key]}"/>' for _case, step_key, _field, opening
                                 in steps], f"</{tag}>"])
    if len(texts) < _MAX_TEXTS:
        texts[key] = text
    else:
        table.plans[tuple(obj)] = (names, steps, None)
    out.append(text)


def _write_element(out: list[str], tag: str, obj: dict[str, Any], table: TypeTable,
                   head: str, raw: bool) -> None:
    """Write an element: ``head`` (the open start tag), its attributes, children, end tag.

    Strings, booleans and objects, nearly every element, are written here directly: this
    loop is the serving path's cost. ``raw``: no string needs an escape (``_is_plain``).

    :raises _ShapeError: the content does not fit the element's type.
    """
    plan = table.plans.get(tuple(obj)) or _plan(obj, table)
    names, steps, texts = plan
    if texts is not None and raw:
        _write_remembered(out, tag, obj, table, head, plan)
        return
    for name in names:
        text = obj[name]
        if type(text) is not str:
            raise _ShapeError(f"{name} must be a string", name)
        head = f'{head} {name}="{text if raw else _escape(text)}"'
    if not steps:  # every step writes at least one element (or raises)
        out.append(head + "/>")
        return
    out.append(head + ">")
    for case, key, field, opening in steps:
        value = obj[key]
        try:
            if case == _DO_STR and type(value) is str:
                out.append(f'{opening}{value if raw else _escape(value)}"/>')
            elif case == _DO_OBJECTS and type(value) is dict and value and not field[2]:
                _write_element(out, field[3], value, field[1], opening, raw)
            elif case == _DO_OBJECTS and type(value) is list and field[2] and value:
                # _write_items inline: one call less per repeating element.
                child_tag, child = field[3], field[1]
                for index, item in enumerate(value):
                    try:
                        if type(item) is not dict or not item:
                            raise _ShapeError("a complex element must be a non-empty object")
                        _write_element(out, child_tag, item, child, opening, raw)
                    except _ShapeError as exc:
                        exc.path.insert(0, f"[{index}]")
                        raise
            elif case == _DO_BOOL and type(value) is bool:
                out.append(f'{opening}{_BOOL_TEXT[value]}"/>')
            elif case == _DO_STRS and type(value) is list and value:
                if not _write_strings(out, opening, value, raw):
                    _write_field(out, obj, key, field, raw)
            elif not (case == _DO_NOTED_STRS and _write_noted_strings(
                    out, opening, field[3], value, obj[field[4]], raw)):
                _write_field(out, obj, key, field, raw)
        except _ShapeError as exc:
            exc.path.insert(0, key)
            raise
    out.append(f"</{tag}>")


def _write_resource(out: list[str], resource: Any, namespace: str, raw: bool) -> None:
    """Write a resource as an element named after its type.

    :raises _ShapeError: it is not a resource of a supported type.
    """
    if type(resource) is not dict:
        raise _ShapeError("a resource must be an object")
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str or resource_type not in R4_RESOURCE_TYPES:
        raise _ShapeError(f"resource type {resource_type!r} is not supported in FHIR R4 XML "
                          f"by this service")
    table = resource_table(resource_type)
    _write_element(out, resource_type, resource, table, f"<{resource_type}{namespace}", raw)


def dumps_resource(resource: dict[str, Any]) -> bytes:
    """Return a FHIR resource (JSON shape) as FHIR R4 XML in UTF-8 (FHIR R4 xml.html).

    :raises ValueError: the dict is not a FHIR R4 resource of a supported type; the message
        names the element (a mapping bug: output is never guessed).
    """
    out = [_DECLARATION]
    plain = _is_plain(resource)
    try:
        _write_resource(out, resource, f' xmlns="{FHIR_NS}"', plain)
    except _ShapeError as exc:
        where = ".".join(part for part in exc.path if part).replace(".[", "[")
        raise ValueError(f"{exc.reason} (at {resource.get('resourceType')}.{where})") from None
    text = "".join(out)
    if not plain and _NOT_XML(text):
        raise ValueError("a string holds a character that XML 1.0 cannot carry")
    return text.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Reading


class _ReadError(Exception):
    """The XML is well-formed but not a FHIR R4 resource; ``path`` says where."""

    def __init__(self, reason: str, element: etree._Element, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = element.sourceline
        self.path = list(path)


# Lexical forms of FHIR R4 datatypes.html (integer, decimal); ranges are left to validation.
_INTEGER: Final = re.compile(r"[+-]?(0|[1-9][0-9]*)").fullmatch
_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?").fullmatch
_BOOLEANS: Final = {"true": True, "false": False}
_KIND_NAMES: Final = {_BOOL: "boolean", _INT: "integer", _DEC: "decimal"}


def _parser() -> etree.XMLParser:
    """Return this thread's hardened parser (an lxml parser is used by one thread at a time)."""
    parser: etree.XMLParser | None = getattr(_THREAD, "parser", None)
    if parser is None:
        parser = _THREAD.parser = safe_parser(remove_comments=True)
    return parser


def _local_name(element: etree._Element) -> str:
    """Return the element's name as a FHIRPath step (its namespace when not FHIR's)."""
    tag = element.tag
    if not isinstance(tag, str):
        return "?"
    if not tag.startswith("{"):
        return tag
    namespace, _brace, local = tag[1:].partition("}")
    return local if namespace == FHIR_NS else tag


def _convert(kind: int, text: str, element: etree._Element) -> Any:
    """Return the JSON value of a primitive's ``value`` attribute (FHIR R4 json.html).

    :raises _ReadError: the text is not a lexical form of the element's type.
    """
    if kind == _STR:
        return text
    if kind == _BOOL and text in _BOOLEANS:
        return _BOOLEANS[text]
    if kind == _INT and _INTEGER(text):
        return int(text)
    if kind == _DEC and _DECIMAL(text):
        number = int(text) if _INTEGER(text) else float(text)
        if math.isfinite(number):
            return number
    # The value itself is not repeated: it may be personal data.
    raise _ReadError(f"the value is not a valid {_KIND_NAMES[kind]} (FHIR R4 datatypes.html)",
                     element)


def _check_text(element: etree._Element, text: str | None) -> None:
    """Refuse character data where FHIR XML has only elements (FHIR R4 xml.html).

    :raises _ReadError: ``text`` holds more than white space.
    """
    if text is not None and not text.isspace():
        raise _ReadError("text content is not allowed here; FHIR puts values in attributes",
                         element)


def _read_attributes(element: etree._Element, names: tuple[str, ...], obj: dict[str, Any],
                     skip: str = "") -> None:
    """Copy the XML attributes ``names`` (``id``, ``Extension.url``) of ``element`` to ``obj``.

    :raises _ReadError: the element has another attribute.
    """
    for name, value in element.attrib.items():
        if name == skip:
            continue
        if name not in names:
            raise _ReadError(f"unknown attribute {name!r}", element)
        obj[name] = value


def _read_children(element: etree._Element, table: TypeTable, obj: dict[str, Any]) -> None:
    """Add the child elements of ``element`` to ``obj`` as ``table`` describes them.

    :raises _ReadError: a child is not an element of the type, or does not fit it.
    """
    _check_text(element, element.text)
    by_tag = table.by_tag
    for child in element:
        field = by_tag.get(child.tag)
        if field is None or field[0] == _R4B_ONLY:
            name = _local_name(child)
            raise _ReadError(f"unknown element {name!r} in {table.name}", child, name)
        try:
            _read_field(child, field, obj)
        except _ReadError as exc:
            name, repeats = field[3], field[2]
            exc.path.insert(0, f"{name}[{len(obj.get(name) or ())}]" if repeats else name)
            raise
        _check_text(child, child.tail)


def _read_field(element: etree._Element, field: Field, obj: dict[str, Any]) -> None:
    """Add one child element to ``obj``.

    :raises _ReadError: it does not fit its definition, or repeats where it may not.
    """
    kind, table, repeats, name, _companion = field
    if kind <= _DEC:
        _read_primitive(element, field, obj)
        return
    if kind == _COMPLEX:
        value: Any = _read_element(element, table)
    elif kind == _RESOURCE:
        value = _read_contained(element)
    else:
        value = _read_div(element)
    if repeats:
        obj.setdefault(name, []).append(value)
    elif name in obj:
        raise _ReadError(f"{name} appears more than once but allows one", element)
    else:
        obj[name] = value


def _read_element(element: etree._Element, table: TypeTable) -> dict[str, Any]:
    """Return the object of a complex-typed element.

    :raises _ReadError: its content does not fit the type, or it is empty (ele-1).
    """
    obj: dict[str, Any] = {}
    if element.attrib:
        _read_attributes(element, table.attrs, obj)
    _read_children(element, table, obj)
    if not obj:
        raise _ReadError("an element needs attributes or children (ele-1)", element)
    return obj


def _read_primitive(element: etree._Element, field: Field, obj: dict[str, Any]) -> None:
    """Add a primitive element's value to ``obj``, and its id/extensions to the companion.

    :raises _ReadError: the value is not valid, or the element is empty (ele-1).
    """
    kind, _table, repeats, name, companion = field
    text = element.get("value")
    value = None if text is None else _convert(kind, text, element)
    extra: dict[str, Any] | None = None
    if len(element) or len(element.attrib) > (text is not None) or element.text:
        extra = {}
        _read_attributes(element, ("id",), extra, skip="value")
        _read_children(element, element_table(), extra)
    if value is None and not extra:
        raise _ReadError("a primitive needs a value, an id or extensions (ele-1)", element)
    if repeats:
        _append_aligned(obj, name, companion, value, extra or None)
    elif name in obj or companion in obj:
        raise _ReadError(f"{name} appears more than once but allows one", element)
    else:
        if value is not None:
            obj[name] = value
        if extra:
            obj[companion] = extra


def _append_aligned(obj: dict[str, Any], name: str, companion: str, value: Any,
                    extra: dict[str, Any] | None) -> None:
    """Append to a repeating primitive's value array and keep its ``_`` array aligned.

    FHIR R4 json.html: a missing value is null in the value array, a missing id/extension
    null in the ``_`` array, which is left out when every item would be null.
    """
    values = obj.setdefault(name, [])
    values.append(value)
    extras = obj.get(companion)
    if extra is not None:
        if extras is None:
            extras = obj[companion] = [None] * (len(values) - 1)
        extras.append(extra)
    elif extras is not None:
        extras.append(None)


def _read_contained(element: etree._Element) -> dict[str, Any]:
    """Return the resource inside a resource-typed element (``contained``, ``resource``).

    :raises _ReadError: the element does not hold exactly one resource.
    """
    children = list(element)
    if len(children) != 1 or element.attrib:
        raise _ReadError("a resource element must hold exactly one resource", element)
    _check_text(element, element.text)
    _check_text(children[0], children[0].tail)
    return _read_resource(children[0])


def _read_div(element: etree._Element) -> str:
    """Return ``Narrative.div`` as an XHTML string with the XHTML namespace as the default."""
    nsmap = element.nsmap
    if element.prefix is not None or len(nsmap) != 1 or nsmap.get(None) != XHTML_NS:
        # Re-root the div so that the string declares only the XHTML namespace, as FHIR
        # JSON's div does (FHIR R4 narrative.html).
        root = etree.Element(_XHTML_DIV, nsmap=_XHTML_NSMAP)
        for name, value in element.attrib.items():
            root.set(name, value)
        root.text = element.text
        root.extend(copy.deepcopy(child) for child in element)
        etree.cleanup_namespaces(root)
        element = root
    return etree.tostring(element, encoding="unicode", with_tail=False)


def _read_resource(element: etree._Element) -> dict[str, Any]:
    """Return the JSON shape of a resource element.

    :raises _ReadError: it is not a FHIR resource of a supported type, or does not fit it.
    """
    tag = element.tag
    resource_type = tag[len(FHIR_NS) + 2:] if isinstance(tag, str) else ""
    if not isinstance(tag, str) or not tag.startswith(f"{{{FHIR_NS}}}"):
        raise _ReadError(f"{_local_name(element)!r} is not a FHIR resource "
                         f"(namespace {FHIR_NS})", element)
    try:
        table = resource_table(resource_type)
    except KeyError:
        raise _ReadError(f"resource type {resource_type!r} is not supported", element) from None
    if element.attrib:
        raise _ReadError("a resource element has no attributes", element)
    obj: dict[str, Any] = {"resourceType": resource_type}
    _read_children(element, table, obj)
    return obj


def loads_resource(data: bytes) -> dict[str, Any]:
    """Return the FHIR JSON shape of a FHIR R4 XML resource, parsed with the hardened parser.

    :raises BadRequest: the body is not well-formed XML or declares a DTD.
    :raises Invalid: it is not a FHIR R4 resource of a supported type; ``expression`` names
        the offending element.
    """
    root = parse_bytes(data, _parser())
    try:
        return _read_resource(root)
    except _ReadError as exc:
        base = _local_name(root)
        where = ".".join([base, *exc.path]).replace(".[", "[")
        raise Invalid(f"{exc.reason} (line {exc.line})", expression=where) from None
