"""The mapping engine: one TOML field map compiled into two plain callables.

``Compiled.forward(record, options)`` builds the FHIR JSON dict of a canonical ORM object;
``Compiled.reverse(resource)`` builds a transient ORM object from a FHIR JSON dict and lists the
element paths it did not keep. Compilation resolves everything once (URL variables, paths,
transforms, ConceptMaps, attribute getters), so the hot path is getters, small functions and
dict writes. The keys of a mapping file are documented in ``mappings/README.md``.
"""

from __future__ import annotations

import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any, Final

from sqlalchemy import String, inspect

from adapter.errors import Invalid
from adapter.identifiers import InvalidIdentifier
from adapter.mapping import datatypes  # noqa: F401  (registers the complex-type transforms)
from adapter.mapping.conceptmaps import Translation
from adapter.mapping.paths import (
    Path,
    Step,
    compile_put,
    format_path,
    parse_path,
    select,
    selector_paths,
)
from adapter.mapping.transforms import TRANSFORMS, Drop, Env, ValueNotAccepted
from adapter.models import (
    Assessment,
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    Practitioner,
    TeamMember,
)

MODELS: Final[dict[str, type]] = {m.__name__: m for m in (
    Assessment, Carer, Child, ChildName, Involvement, LocalIdentifier, Organisation,
    Practitioner, TeamMember)}
FIELD_KEYS: Final = frozenset({
    "from", "to", "transform", "conceptmap", "keep_source", "values", "reverse_default",
    "const", "part", "where", "direction", "required", "absent", "fallback", "note"})
_URL_VARIABLE: Final = re.compile(r"\{(base|profile|ext|id|cs|vs)(?::([^}]*))?\}")
_MISSING: Final = object()
# List attributes the canonical model bounds (items, characters of each): the given names of
# a person (schemas/xml/common.xsd PersonNameStructure: at most five, of at most 35
# characters each), so that every stored name also renders as directory XML.
LIST_LIMITS: Final = {"given": (5, 35)}
XML_SPACE: Final = " \t\r\n"  # XML 1.0 section 2.3 S, and XML Schema's \s

Forward = Callable[[Any, dict[str, Any], Mapping[str, Any]], None]
Reverse = Callable[[dict[str, Any], Any, "Trace", Path, set[str]], None]
FinalCheck = Callable[[Any, set[str], str, Path], None]
EMPTY: Final[Mapping[str, Any]] = {}
_EMPTYABLE: Final = frozenset({str, list, dict})


class MappingError(ValueError):
    """A mapping file is wrong: unknown key, attribute, transform, ConceptMap or path."""


# --- specifications (base-independent, read from TOML) ------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    """One ``[[field]]`` of a mapping file."""

    to: str
    source: tuple[str, ...] = ()
    transform: str | None = None
    conceptmap: str | None = None
    keep_source: bool = False
    values: Mapping[str, Any] | None = None
    reverse_default: Any = None
    const: Any = None
    part: str | None = None
    where: Mapping[str, Any] | None = None
    direction: str = "both"
    required: bool = False
    absent: Any = _MISSING
    fallback: bool = False


@dataclass(frozen=True)
class PartSpec:
    """A ``[part.<name>]`` table: the mapping of the items of a list (names, carers, ...)."""

    name: str
    source: str
    fields: tuple[FieldSpec, ...]
    index: str | None = None


@dataclass(frozen=True)
class MappingSpec:
    """One mapping file."""

    name: str
    version: int
    source: str
    target: str
    profile: str
    fields: tuple[FieldSpec, ...]
    parts: Mapping[str, PartSpec]
    not_carried: tuple[str, ...]
    silent: tuple[str, ...]


def read_spec(path: FilePath) -> MappingSpec:
    """Read a mapping file.

    :raises MappingError: a required key is missing or a field has an unknown key.
    """
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    try:
        parts = {name: PartSpec(name, p["source"], _fields(p.get("field", []), path),
                                p.get("index")) for name, p in data.get("part", {}).items()}
        inbound = data.get("ignored_inbound", {})
        return MappingSpec(path.stem, int(data["version"]), data["source"], data["target"],
                           data["profile"], _fields(data.get("field", []), path), parts,
                           tuple(data.get("not_carried", [])), tuple(inbound.get("silent", [])))
    except KeyError as exc:
        raise MappingError(f"{path.name}: missing key {exc}") from None


def _fields(items: list[dict[str, Any]], path: FilePath) -> tuple[FieldSpec, ...]:
    """Return the field specs of a ``field`` array.

    :raises MappingError: a field has an unknown key or no ``to``.
    """
    specs = []
    for item in items:
        unknown = set(item) - FIELD_KEYS
        if unknown or "to" not in item:
            raise MappingError(f"{path.name}: field {item.get('to')!r}: unknown keys "
                               f"{sorted(unknown)} or no 'to'")
        source = item.get("from", ())
        specs.append(FieldSpec(
            to=item["to"], source=(source,) if isinstance(source, str) else tuple(source),
            transform=item.get("transform"), conceptmap=item.get("conceptmap"),
            keep_source=item.get("keep_source", False), values=item.get("values"),
            reverse_default=item.get("reverse_default"), const=item.get("const"),
            part=item.get("part"), where=item.get("where"),
            direction=item.get("direction", "both"), required=item.get("required", False),
            absent=item.get("absent", _MISSING), fallback=item.get("fallback", False)))
    return tuple(specs)


# --- compiled form ------------------------------------------------------------------------

class Trace:
    """What a reverse run read (consumed paths) and what transforms said they did not keep."""

    def __init__(self) -> None:
        self.consumed: set[Path] = {("resourceType",)}
        self.dropped: list[Path] = []

    def unread(self, resource: Any) -> list[Path]:
        """Return the paths of ``resource`` not consumed and the dropped ones, in order."""
        touched = {p[:i] for p in self.consumed for i in range(len(p) + 1)}
        found: list[Path] = []
        _collect_unread(resource, (), self.consumed, touched, found)
        return sorted(set(found) | set(self.dropped), key=_path_key)


def _path_key(path: Path) -> tuple[tuple[int, str], ...]:
    """Sort key of a path: indices numerically, keys alphabetically."""
    return tuple((0, f"{p:08d}") if isinstance(p, int) else (1, p) for p in path)


def _collect_unread(node: Any, path: Path, consumed: set[Path], touched: set[Path],
                    found: list[Path]) -> None:
    """Append to ``found`` the outermost paths below ``node`` that nothing consumed."""
    if path in consumed:
        return
    if path not in touched:
        found.append(path)
        return
    if isinstance(node, dict):
        for key, value in node.items():
            _collect_unread(value, path + (key,), consumed, touched, found)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _collect_unread(value, path + (index,), consumed, touched, found)


@dataclass
class Compiled:
    """A mapping compiled under one canonical base: ``forward`` and ``reverse``."""

    spec: MappingSpec
    profile: str
    model: type
    forwards: list[Forward]
    reverses: list[Reverse]
    finals: list[FinalCheck]
    silent: tuple[tuple[str, ...], ...] = ()
    index: str | None = None  # a part: the attribute that takes the item's list position
    whole_item: bool = False  # a part whose one field maps the item itself (``to = "."``)

    def forward(self, record: Any, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return the FHIR JSON dict of a canonical record."""
        out: dict[str, Any] = {"resourceType": self.spec.target}
        opts = options or EMPTY
        for run in self.forwards:
            run(record, out, opts)
        return out

    def reverse(self, resource: dict[str, Any]) -> tuple[Any, list[str]]:
        """Return a transient canonical object and the FHIR paths not kept.

        :raises Invalid: an element cannot be mapped (``expression`` names it).
        """
        resource = without_nulls(resource)
        trace = Trace()
        for keys in self.silent:
            trace.consumed.update(_paths_at(resource, keys, ()))
        obj = self.model()
        assigned: set[str] = set()
        for run in self.reverses:
            run(resource, obj, trace, (), assigned)
        for final in self.finals:
            final(obj, assigned, self.spec.target, ())
        return obj, [format_path(self.spec.target, p) for p in trace.unread(resource)]


def without_nulls(value: Any, keep_null_items: bool = False) -> Any:
    """Return JSON without nulls and empty objects or arrays.

    FHIR JSON has none of them, except the positional nulls of a primitive array's
    ``_name`` companion (FHIR R4 json.html#primitive); readers that accept them
    (fhir.resources does) mean "absent", and so does the mapping.
    """
    if isinstance(value, dict):
        items = ((k, without_nulls(v, k.startswith("_"))) for k, v in value.items())
        return {k: v for k, v in items if v is not None and v != {} and v != []}
    if isinstance(value, list):
        items_ = (without_nulls(v) for v in value)
        return [v for v in items_ if keep_null_items or (v is not None and v != {} and v != [])]
    return value


def _paths_at(node: Any, keys: tuple[str, ...], path: Path) -> list[Path]:
    """Return the concrete paths of ``keys`` below ``node``, stepping through lists."""
    if isinstance(node, list):
        return [p for i, item in enumerate(node) for p in _paths_at(item, keys, path + (i,))]
    if not keys:
        return [path]
    if isinstance(node, dict) and keys[0] in node:
        return _paths_at(node[keys[0]], keys[1:], path + (keys[0],))
    return []


@dataclass(frozen=True)
class Context:
    """Everything a compilation resolves against: the base's systems and ConceptMaps."""

    env: Env
    translations: Mapping[str, Translation]


def compile_mapping(spec: MappingSpec, context: Context) -> Compiled:
    """Compile a mapping spec under one canonical base.

    :raises MappingError: an attribute, transform, ConceptMap, part or path is wrong.
    """
    profile = expand(spec.profile, context, "")
    model = _model(spec.source, spec.name)
    forwards, reverses, finals = _compile_fields(spec, spec.fields, model, context, profile)
    silent = tuple(tuple(expand(s, context, profile).split(".")) for s in spec.silent)
    return Compiled(spec, profile, model, forwards, reverses, finals, silent)


def _model(name: str, where: str) -> type:
    """Return the ORM class called ``name``.

    :raises MappingError: no such class.
    """
    if name not in MODELS:
        raise MappingError(f"{where}: unknown source model {name!r}")
    return MODELS[name]


def expand(text: str, context: Context, profile: str) -> str:
    """Replace the ``{base}``, ``{profile}``, ``{ext:}``, ``{id:}``, ``{cs:}``, ``{vs:}``
    URL variables of a mapping string with URLs under the context's base."""
    own = context.env.own

    def one(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "base":
            return own.base
        if kind == "profile":
            return own.profile(arg) if arg else profile
        table = {"ext": own.extension, "id": own.id_system, "cs": own.code_system}
        return table[kind](arg) if kind in table else f"{own.base}/ValueSet/{arg}"
    return _URL_VARIABLE.sub(one, text)


def _expand_all(value: Any, context: Context, profile: str) -> Any:
    """Expand the URL variables in every string of a constant."""
    if isinstance(value, str):
        return expand(value, context, profile)
    if isinstance(value, list):
        return [_expand_all(v, context, profile) for v in value]
    if isinstance(value, dict):
        return {k: _expand_all(v, context, profile) for k, v in value.items()}
    return value


def _compile_fields(spec: MappingSpec, fields: tuple[FieldSpec, ...], model: type,
                    context: Context, profile: str
                    ) -> tuple[list[Forward], list[Reverse], list[FinalCheck]]:
    """Compile a list of fields against ``model``.

    :raises MappingError: a field is wrong.
    """
    forwards: list[Forward] = []
    reverses: list[Reverse] = []
    finals: list[FinalCheck] = []
    for spec_field in fields:
        built = FieldCompiler(spec, spec_field, model, context, profile)
        if built.forward is not None:
            forwards.append(built.forward)
        reverses.append(built.reverse)
        if built.final is not None:
            finals.append(built.final)
    return forwards, reverses, finals


def column_limits(model: type) -> dict[str, int]:
    """Return the maximum length of every bounded string column of ``model``."""
    limits: dict[str, int] = {}
    columns: list[Any] = list(inspect(model).columns)
    for column in columns:
        if isinstance(column.type, String) and column.type.length:
            limits[column.key] = column.type.length
    return limits


def canonical_text(text: str, target: str, path: Path) -> str:
    """Return ``text`` as the canonical model keeps it: without surrounding white space (FHIR
    R4 datatypes.html#string: it "SHOULD be removed" in XML; directory XML text types allow
    none, schemas/xml/common.xsd ``\\S(.*\\S)?``).

    :raises Invalid: a line break inside, which no directory XML text type can carry.
    """
    trimmed = text.strip(XML_SPACE)
    if "\n" in trimmed or "\r" in trimmed:
        raise invalid(target, path, ValueNotAccepted("a line break is not accepted here"))
    return trimmed


def _check_list(items: list[Any], name: str, target: str, path: Path) -> None:
    """Refuse a list attribute longer, or with a longer item, than ``LIST_LIMITS`` allows.

    :raises Invalid: naming the element at ``path``.
    """
    most, longest = LIST_LIMITS[name]
    if len(items) > most:
        raise invalid(target, path, ValueNotAccepted(f"more than {most} {name} names"))
    if any(isinstance(item, str) and len(item) > longest for item in items):
        raise invalid(target, path, ValueNotAccepted(
            f"a {name} name is longer than {longest} characters"))


def fresh(value: Any) -> Any:
    """Return a new copy of a constant made of dicts, lists and primitives."""
    if isinstance(value, dict):
        return {k: fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fresh(v) for v in value]
    return value


def invalid(target: str, path: Path, exc: Exception) -> Invalid:
    """Return the Invalid error for a value at ``path`` (the message never holds the value)."""
    if isinstance(exc, InvalidIdentifier):
        message = exc.reason
    elif isinstance(exc, ValueNotAccepted):
        message = str(exc)
    else:
        message = "value not accepted"
    expression = format_path(target, path)
    return Invalid(f"{expression}: {message}", expression=expression)


class FieldCompiler:
    """Compiles one field: getter, conversion pipeline, writer, reader and final checks."""

    def __init__(self, spec: MappingSpec, fs: FieldSpec, model: type, context: Context,
                 profile: str) -> None:
        self.spec, self.fs, self.model, self.context = spec, fs, model, context
        self.where = f"{spec.name}: field {fs.to!r}"
        self.steps: tuple[Step, ...] = parse_path(expand(fs.to, context, profile))
        self.const = _expand_all(fs.const, context, profile)
        self.limits = column_limits(model)
        self._check_sources()
        self.part = self._part(profile) if fs.part else None
        self.convert, self.unconvert = self._pipeline()
        self.forward: Forward | None = None if fs.direction == "in" else self._forward()
        self.reverse: Reverse = self._reverse()
        self.final = self._final() if (fs.required or fs.absent is not _MISSING) else None

    def _fail(self, message: str) -> MappingError:
        """Return a MappingError naming this field."""
        return MappingError(f"{self.where}: {message}")

    def _check_sources(self) -> None:
        """Check that every ``from`` attribute exists on the model.

        :raises MappingError: an attribute, option or direction is wrong.
        """
        attrs: list[str] = list(inspect(self.model).attrs.keys())
        for name in self.fs.source:
            if name != "." and not name.startswith("$") and name not in attrs:
                raise self._fail(f"{self.model.__name__} has no attribute {name!r}")
        if self.fs.direction not in ("both", "in", "out"):
            raise self._fail(f"direction {self.fs.direction!r} is not both, in or out")
        if not self.fs.source and self.fs.const is None:
            raise self._fail("a field needs 'from' or 'const'")

    def _part(self, profile: str) -> Compiled:
        """Compile the part a list field maps its items with.

        :raises MappingError: no such part.
        """
        part = self.spec.parts.get(self.fs.part or "")
        if part is None:
            raise self._fail(f"unknown part {self.fs.part!r}")
        model = _model(part.source, self.where)
        forwards, reverses, finals = _compile_fields(self.spec, part.fields, model,
                                                     self.context, profile)
        whole = any(f.to == "." for f in part.fields)
        if whole and len(part.fields) != 1:
            raise self._fail(f"part {part.name!r}: a '.' field must be the part's only field")
        return Compiled(self.spec, profile, model, forwards, reverses, finals, (),
                        part.index, whole)

    def _pipeline(self) -> tuple[Callable[[Any], Any], Callable[[Any, Drop], Any]]:
        """Return the value conversion out (values, ConceptMap, transform) and back.

        :raises MappingError: an unknown transform or ConceptMap.
        """
        fs = self.fs
        stages: list[tuple[Callable[[Any], Any] | None, Callable[[Any, Drop], Any] | None]] = []
        if fs.values is not None:
            stages.append(self._values())
        if fs.conceptmap is not None:
            stages.append(self._conceptmap())
        if fs.transform is not None:
            if fs.transform not in TRANSFORMS:
                raise self._fail(f"unknown transform {fs.transform!r}")
            bound = TRANSFORMS[fs.transform](self.context.env)
            stages.append((bound.forward, bound.reverse))
        return _chain_out([s[0] for s in stages]), _chain_back([s[1] for s in stages])

    def _values(self) -> tuple[Callable[[Any], Any], Callable[[Any, Drop], Any]]:
        """Return the inline value table's look-ups both ways."""
        table = dict(self.fs.values or {})
        back = {v: k for k, v in table.items()}
        default = self.fs.reverse_default

        def unconvert(value: Any, drop: Drop) -> Any:
            if value in back:
                return back[value]
            if default is None:
                raise ValueNotAccepted("code not recognised")
            drop(())
            return default
        return table.__getitem__, unconvert

    def _conceptmap(self) -> tuple[Callable[[Any], Any], Callable[[Any, Drop], Any]]:
        """Return a ConceptMap's translation both ways (with the exact source code if kept).

        :raises MappingError: no such ConceptMap.
        """
        name = self.fs.conceptmap or ""
        if name not in self.context.translations:
            raise self._fail(f"unknown conceptmap {name!r}")
        cmap = self.context.translations[name]
        keep, default = self.fs.keep_source, self.fs.reverse_default
        table = {code: _with_source(cmap, code, keep) for code in cmap.codes}

        def convert(code: Any) -> Any:
            found = table.get(code)
            return found if found is not None else _with_source(cmap, code, keep)

        def unconvert(codings: Any, drop: Drop) -> Any:
            code = read_coded(cmap, codings)
            if code is not None:
                return code
            if default is None:
                raise ValueNotAccepted("code not recognised")
            drop(())
            return default
        return convert, unconvert

    def _getter(self) -> Callable[[Any, Mapping[str, Any]], Any]:
        """Return the function reading this field's value from a record (or options)."""
        source, const = self.fs.source, self.const
        if not source:
            return lambda _record, _opts: fresh(const)
        if len(source) == 1 and source[0] == ".":
            return lambda record, _opts: record
        if len(source) == 1 and source[0].startswith("$"):
            option = source[0][1:]
            return lambda _record, opts: opts.get(option)
        return attribute_reader(source)

    def _forward(self) -> Forward:
        """Return the forward runner: read, convert, skip empties, write."""
        get, convert, source = self._getter(), self.convert, self.fs.source
        put = _item_put if not self.steps else compile_put(self.steps)
        # A path of one plain key is written inline by the runners below (no put call).
        key = self.steps[0].key if len(self.steps) == 1 and not self.steps[0].is_list else None
        attribute = len(source) == 1 and source[0][0] not in "$."
        if self.part is not None and attribute:
            return _part_to_put(source[0], key, put,
                                _items_mapper(self.part, dict(self.fs.where or {})))
        if self.part is not None:
            get = self._part_getter(get, self.part)
        elif attribute:
            return _attribute_to_put(source[0], key, put, convert)
        elif len(source) > 1 and convert is not _identity:
            return _attributes_to_put(source, key, put, convert)
        if convert is _identity:
            def run_plain(record: Any, out: dict[str, Any], opts: Mapping[str, Any]) -> None:
                value = get(record, opts)
                if value is None or (type(value) in _EMPTYABLE and not value):
                    return
                put(out, value[:] if type(value) is list else value)
            return run_plain

        def run(record: Any, out: dict[str, Any], opts: Mapping[str, Any]) -> None:
            value = get(record, opts)
            if value is None:
                return
            value = convert(value)
            if value is None or (type(value) in _EMPTYABLE and not value):
                return
            put(out, value)
        return run

    def _part_getter(self, get: Callable[[Any, Mapping[str, Any]], Any], part: Compiled
                     ) -> Callable[[Any, Mapping[str, Any]], Any]:
        """Return a getter mapping each (filtered) item of a list with the part."""
        mapped = _items_mapper(part, dict(self.fs.where or {}))
        return lambda record, opts: mapped(get(record, opts), opts)

    def _reverse(self) -> Reverse:
        """Return the reverse runner: consume only, map a list with the part, or assign."""
        if self.fs.direction == "out" or (not self.fs.source and self.fs.const is not None):
            return self._consume_only()
        if self.part is not None:
            return self._reverse_part(self.part)
        return self._reverse_value()

    def _consume_only(self) -> Reverse:
        """Return a runner that marks this field's elements as read (derived or fixed)."""
        steps = self.steps

        def run(resource: dict[str, Any], _obj: Any, trace: Trace, base: Path,
                _assigned: set[str]) -> None:
            for path, _value in (select(resource, steps, base) if steps else [(base, None)]):
                trace.consumed.add(path)
        return run

    def _reverse_value(self) -> Reverse:
        """Return a runner that reads one element, converts it back and assigns it."""
        steps, unconvert, assign = self.steps, self.unconvert, self._assigner()
        target = self.spec.target

        def run(resource: dict[str, Any], obj: Any, trace: Trace, base: Path,
                assigned: set[str]) -> None:
            found = select(resource, steps, base) if steps else [(base, resource)]
            if not found:
                return
            path, value = found[0]
            trace.consumed.add(path)
            trace.consumed.update(base + p for p in selector_paths(steps, path[len(base):]))
            try:
                value = unconvert(value, lambda sub: trace.dropped.append(path + sub))
            except (InvalidIdentifier, ValueNotAccepted) as exc:
                raise invalid(target, path, exc) from None
            assign(obj, value, path, assigned)
        return run

    def _assigner(self) -> Callable[[Any, Any, Path, set[str]], None]:
        """Return the function setting the converted value on the object (checked lengths)."""
        names, limits, target = self.fs.source, self.limits, self.spec.target
        fallback = self.fs.fallback
        if len(names) > 1 and any(n.startswith("$") or n == "." for n in names):
            raise self._fail("options and '.' cannot be combined with other attributes")

        def assign(obj: Any, value: Any, path: Path, assigned: set[str]) -> None:
            pairs = zip(names, value, strict=True) if len(names) > 1 else [(names[0], value)]
            for name, item in pairs:
                if (item is None and len(names) > 1) or (fallback and name in assigned):
                    continue
                if isinstance(item, str):
                    item = canonical_text(item, target, path)
                elif isinstance(item, list):
                    item = [canonical_text(x, target, path) if isinstance(x, str) else x
                            for x in item]
                limit = limits.get(name)
                if limit is not None and isinstance(item, str) and len(item) > limit:
                    exc = ValueNotAccepted(f"longer than {limit} characters")
                    raise invalid(target, path, exc)
                if isinstance(item, list) and name in LIST_LIMITS:
                    _check_list(item, name, target, path)
                setattr(obj, name, item)
                assigned.add(name)
        return assign

    def _reverse_part(self, part: Compiled) -> Reverse:
        """Return a runner mapping every addressed list item back with the part."""
        steps, name = self.steps, self.fs.source[0]
        where, item_reverse = dict(self.fs.where or {}), _item_reverse(part)
        ends_in_selector = steps[-1].op not in (None, "[]")

        def run(resource: dict[str, Any], obj: Any, trace: Trace, base: Path,
                assigned: set[str]) -> None:
            found = select(resource, steps, base)
            if not ends_in_selector:
                found = [(p + (i,), item) for p, items in found if isinstance(items, list)
                         for i, item in enumerate(items)]
            items = []
            for index, (path, item) in enumerate(found):
                items.append(item_reverse(item, trace, path, index, where))
            setattr(obj, name, items)
            assigned.add(name)
        return run

    def _final(self) -> FinalCheck:
        """Return the check run after all fields: the ``absent`` default, ``required``."""
        names, absent, required = self.fs.source, self.fs.absent, self.fs.required
        steps = self.steps

        def final(obj: Any, assigned: set[str], target: str, base: Path) -> None:
            if assigned.intersection(names):
                return
            if absent is not _MISSING:
                setattr(obj, names[0], fresh(absent))
                assigned.add(names[0])
            elif required:
                expression = format_path(target, base + tuple(s.key for s in steps))
                raise Invalid(f"{expression}: required", expression=expression)
        return final


def _with_source(cmap: Translation, code: str, keep: bool) -> tuple[tuple[str, str, str], ...]:
    """Return the target codings of ``code``, then its exact source coding when kept."""
    found = cmap.translate(code)
    return (*found, cmap.source_coding(code)) if keep else found


def read_coded(cmap: Translation, codings: Any) -> str | None:
    """Return the source code that codings stand for: the exact source coding first, then
    an exact (equivalent/equal) target of the map."""
    codings = [c for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)]
    for coding in codings:
        if coding.get("system") == cmap.source_system and coding["code"] in cmap.codes:
            return str(coding["code"])
    for coding in codings:
        code = cmap.back(coding.get("system"), coding["code"])
        if code is not None:
            return code
    return None


def _chain_out(stages: Sequence[Callable[[Any], Any] | None]) -> Callable[[Any], Any]:
    """Compose forward stages (None is the identity) into one function."""
    funcs = [s for s in stages if s is not None]
    if not funcs:
        return _identity
    if len(funcs) == 1:
        return funcs[0]
    first, second = funcs[0], _chain_out(funcs[1:])
    return lambda value: None if (v := first(value)) is None else second(v)


def _chain_back(stages: Sequence[Callable[[Any, Drop], Any] | None]
                ) -> Callable[[Any, Drop], Any]:
    """Compose reverse stages, last stage first (None is the identity)."""
    funcs = [s for s in reversed(stages) if s is not None]
    if not funcs:
        return lambda value, _drop: value

    def run(value: Any, drop: Drop) -> Any:
        for func in funcs:
            value = func(value, drop)
        return value
    return run


def _attribute_to_put(name: str, key: str | None, put: Callable[[dict[str, Any], Any], None],
                      convert: Callable[[Any], Any]) -> Forward:
    """Return the runner of the commonest field: one attribute to one element (the hot path:
    the read, the check and, for a plain ``key``, the write inline; one call for the
    conversion, none without one). The two commonest shapes, a plain key with and without a
    conversion, get a runner each, with no branch on what is known when compiling."""
    if key is not None and convert is _identity:
        return _attribute_to_key(name, key)
    if key is not None:
        return _converted_attribute_to_key(name, key, convert)
    identity = convert is _identity

    def run(record: Any, out: dict[str, Any], _opts: Mapping[str, Any]) -> None:
        try:
            value = record.__dict__[name]
        except KeyError:
            value = getattr(record, name)
        if value is None:
            return
        if identity:
            # A list column (given names) is copied: no output shares a mutable object
            # with the record or with another output.
            if type(value) is list:
                value = value[:]
        else:
            value = convert(value)
            if value is None:
                return
        if type(value) in _EMPTYABLE and not value:
            return
        put(out, value)
    return run


def _attribute_to_key(name: str, key: str) -> Forward:
    """Return the runner of one attribute copied as it is to one plain key."""
    def run(record: Any, out: dict[str, Any], _opts: Mapping[str, Any]) -> None:
        try:
            value = record.__dict__[name]
        except KeyError:
            value = getattr(record, name)
        if value is None:
            return
        kind = type(value)
        if kind is str:
            if not value:
                return
        elif kind is list:
            if not value:
                return
            # A list column (given names) is copied: no output shares a mutable object
            # with the record or with another output.
            value = value[:]
        elif kind is dict and not value:
            return
        out[key] = value
    return run


def _converted_attribute_to_key(name: str, key: str, convert: Callable[[Any], Any]) -> Forward:
    """Return the runner of one attribute converted to one plain key."""
    def run(record: Any, out: dict[str, Any], _opts: Mapping[str, Any]) -> None:
        try:
            value = record.__dict__[name]
        except KeyError:
            value = getattr(record, name)
        if value is None:
            return
        value = convert(value)
        if value is None or (type(value) in _EMPTYABLE and not value):
            return
        out[key] = value
    return run


def _attributes_to_put(names: tuple[str, ...], key: str | None,
                       put: Callable[[dict[str, Any], Any], None],
                       convert: Callable[[Any], Any]) -> Forward:
    """Return the runner of a field reading several attributes for a transform (inline;
    ``itemgetter`` reads them from the instance dict as one tuple, at C speed)."""
    read = operator.itemgetter(*names)

    def run(record: Any, out: dict[str, Any], _opts: Mapping[str, Any]) -> None:
        try:
            args = read(record.__dict__)
        except KeyError:
            args = tuple([getattr(record, name) for name in names])
        value = convert(args)
        if value is None or (type(value) in _EMPTYABLE and not value):
            return
        if key is None:
            put(out, value)
        else:
            out[key] = value
    return run


def _items_mapper(part: Compiled, where: dict[str, Any]
                  ) -> Callable[[Any, Mapping[str, Any]], list[Any]]:
    """Return the function mapping the items of a list with ``part``: the items whose
    attributes have the ``where`` values, each left out when it maps to nothing."""
    item = _item_forward(part)
    if not where:
        return lambda items, opts: [r for i in items if (r := item(i, opts))]
    keys = operator.attrgetter(*where)
    wanted = tuple(where.values()) if len(where) > 1 else next(iter(where.values()))
    return lambda items, opts: [r for i in items if keys(i) == wanted if (r := item(i, opts))]


def _part_to_put(name: str, key: str | None, put: Callable[[dict[str, Any], Any], None],
                 mapper: Callable[[Any, Mapping[str, Any]], list[Any]]) -> Forward:
    """Return the runner of a list attribute mapped item by item with a part
    (``_items_mapper``), read from the record inline."""
    def run(record: Any, out: dict[str, Any], opts: Mapping[str, Any]) -> None:
        try:
            items = record.__dict__[name]
        except KeyError:
            items = getattr(record, name)
        mapped = mapper(items, opts)
        if not mapped:
            return
        if key is None:
            put(out, mapped)
        else:
            out[key] = mapped
    return run


def attribute_reader(names: tuple[str, ...]) -> Callable[[Any, Mapping[str, Any]], Any]:
    """Return a reader of one attribute (its value) or several (a tuple).

    Loaded attributes are read from the instance dict, which SQLAlchemy keeps them in, to save
    the descriptor call on the hot path; anything not there (unloaded, expired, never set)
    goes through ``getattr`` and so loads or defaults as usual.
    """
    if len(names) == 1:
        name = names[0]

        def read_one(record: Any, _opts: Mapping[str, Any]) -> Any:
            try:
                return record.__dict__[name]
            except KeyError:
                return getattr(record, name)
        return read_one

    def read_many(record: Any, _opts: Mapping[str, Any]) -> tuple[Any, ...]:
        values = record.__dict__
        try:
            return tuple([values[name] for name in names])
        except KeyError:
            return tuple([getattr(record, name) for name in names])
    return read_many


def _identity(value: Any) -> Any:
    """Return the value."""
    return value


def _item_put(out: dict[str, Any], value: Any) -> None:
    """Store a part's whole-item value (``to = "."``) under a private key."""
    out["."] = value


def _item_forward(part: Compiled) -> Callable[[Any, Mapping[str, Any]], Any]:
    """Return the function mapping one list item with a part (a dict, or the item value)."""
    runs, whole = part.forwards, part.whole_item

    def item(record: Any, opts: Mapping[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for run in runs:
            run(record, out, opts)
        return out.get(".") if whole else out
    return item


def _item_reverse(part: Compiled) -> Callable[..., Any]:
    """Return the function mapping one FHIR list item back to a new part object."""
    index_attr = part.index

    def item(value: Any, trace: Trace, path: Path, index: int, where: Mapping[str, Any]) -> Any:
        obj = part.model()
        assigned: set[str] = set()
        for run in part.reverses:
            run(value, obj, trace, path, assigned)
        for final in part.finals:
            final(obj, assigned, part.spec.target, path)
        for key, wanted in where.items():
            setattr(obj, key, wanted)
        if index_attr:
            setattr(obj, index_attr, index)
        return obj
    return item
