"""Profile conformance of FHIR JSON resources, read from the StructureDefinitions themselves.

A profile is compiled once: the differentials of its chain (this service's SD -> UK Core SD,
down from the base resource, FHIR R4 profiling.html "differential") are merged by element id
into one tree of ``ElementRule``s, and each resource is then checked against that tree:

- cardinality (``min``/``max``) of every constrained element, slice by slice;
- ``fixed[x]`` (exact) and ``pattern[x]`` (subset) values (elementdefinition.html#fixed);
- slicing with ``value``/``pattern``/``type``/``exists``/``profile`` discriminators; extensions
  are sliced by ``url`` without saying so (profiling.html#slicing, extensibility.html);
- the types a choice element may take, Reference target types (``targetProfile``), type
  profiles and ``maxLength``;
- bindings: ``required`` codes must be in the value set, ``extensible`` ones should be
  (terminologies.html#strength), decided from local ValueSets and CodeSystems; a code that
  cannot be decided locally is a warning, never a silent pass.

Independently of the profiles, every extension in the resource is checked against its own
StructureDefinition (found by ``url``; unknown ones are a warning, or an error for a modifier
extension or one under this service's canonical base), every ``code`` element against the
required binding of the base definition, every Reference against the base target types, and
every contained or Bundle-entry resource against the profiles it declares.

The base resources and data types (element names, types, repetition, the codes of required
bindings on ``code`` elements, Reference targets) come from the ``fhir.resources.R4B`` models
(``adapter.fhir.profiles``); every differential path is checked against them when a profile is
compiled, so a misspelt element fails the profile instead of constraining nothing.

Not checked here: FHIRPath invariants (``constraint``: each one met is reported once, as
information), ``minValue``/``maxValue``, extension contexts, and base structure (unknown
elements, base cardinality, primitive formats), which ``fhir.resources`` and the official
schemas check. A profile that cannot be used (a discriminator it cannot evaluate, a missing
base) is an error on each resource that claims it, never a pass.

Use: ``configure([uk_core_folder], canonical_base)`` once at start-up, then
``check_resource(resource)`` (profiles from ``meta.profile``) and ``to_operation_outcome``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from adapter.config import PROJECT_ROOT
from adapter.errors import is_resource_type, issue, operation_outcome
from adapter.fhir.profiles import (
    DefinitionRegistry,
    FieldSpec,
    ProfileError,
    Terminology,
    canonical,
    choice_types,
    core_type,
    type_fields,
)
from adapter.systems import DEFAULT_CANONICAL_BASE

OWN_DEFINITIONS: Final = PROJECT_ROOT / "schemas" / "fhir"
EXTENSION_ELEMENTS: Final = frozenset({"extension", "modifierExtension"})
# Base R4 Element.extension is sliced by url, open (extensibility.html "Extension element").
_EXTENSION_SLICING_PATH: Final = "url"
_SEGMENT: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_ANY_RESOURCE: Final = frozenset({"Resource", "DomainResource"})

Item = tuple[Any, Any, str, "str | None"]  # (value, primitive companion, expression, choice type)


class UnknownProfile(ProfileError):
    """No StructureDefinition with that URL is available locally."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding: ``severity`` and ``code`` per OperationOutcome.issue (issue-type codes)."""

    severity: str  # fatal | error | warning | information
    code: str
    expression: str  # FHIRPath of the element, e.g. Patient.identifier[0].system
    message: str


def has_errors(issues: Iterable[Issue]) -> bool:
    """Return whether any issue is an error or fatal."""
    return any(found.severity in ("error", "fatal") for found in issues)


def to_operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    """Return ``issues`` as a FHIR OperationOutcome (all OK when there are none)."""
    return operation_outcome([issue(found.severity, found.code, found.message, found.expression)
                              for found in issues])


@dataclass(frozen=True, slots=True)
class Discriminator:
    """One slicing discriminator (profiling.html#discriminator)."""

    type: str
    path: str

    @property
    def segments(self) -> tuple[str, ...]:
        """Return the path as element names (``$this`` is the empty path)."""
        return () if self.path == "$this" else tuple(self.path.split("."))


@dataclass(frozen=True, slots=True)
class Slicing:
    """ElementDefinition.slicing."""

    discriminators: tuple[Discriminator, ...]
    rules: str = "open"
    ordered: bool = False


@dataclass(frozen=True, slots=True)
class Binding:
    """ElementDefinition.binding (strength and canonical value set)."""

    strength: str
    value_set: str


@dataclass(slots=True)
class SliceRule:
    """A slice and the discriminator values an item must show to belong to it."""

    rule: ElementRule
    keys: tuple[tuple[Discriminator, Any], ...] = ()


@dataclass(slots=True, eq=False)
class ElementRule:
    """The merged constraints on one element (or slice) of a profile; read-only once built."""

    id: str
    name: str  # the element name as in the path: "identifier", "value[x]"
    slice_name: str | None = None
    definition: dict[str, Any] | None = None
    min: int = 0
    max: int | None = None  # None: unbounded
    fixed: tuple[str, Any] | None = None  # (fixedUri, value)
    pattern: tuple[str, Any] | None = None
    type_codes: frozenset[str] = frozenset()
    type_profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extension_urls: tuple[str, ...] = ()
    target_types: frozenset[str] | None = None
    binding: Binding | None = None
    max_length: int | None = None
    constraints: tuple[tuple[str, str], ...] = ()
    slicing: Slicing | None = None
    children: dict[str, ElementRule] = field(default_factory=dict)
    slices: list[SliceRule] = field(default_factory=list)
    choice_keys: dict[str, str] | None = None  # JSON name -> type for a [x] element
    required: bool = False  # min > 0 here or in a slice: checked even when absent
    slice_lookup: dict[str, int] | None = None  # one text discriminator: value -> slice

    def is_trivial(self) -> bool:
        """Return whether the rule constrains nothing (only documents the element)."""
        return not (self.required or self.max is not None or self.fixed or self.pattern
                    or (self.binding and self.binding.strength in ("required", "extensible"))
                    or self.max_length is not None or self.constraints or self.slices
                    or self.children or self.type_codes)

    @property
    def fhirpath_name(self) -> str:
        """Return the element's name in FHIRPath (``value`` for ``value[x]``)."""
        return self.name[:-3] if self.name.endswith("[x]") else self.name

    def child(self, name: str) -> ElementRule:
        """Return (creating) the child element ``name``."""
        if name not in self.children:
            self.children[name] = ElementRule(f"{self.id}.{name}", name)
        return self.children[name]

    def slice(self, slice_name: str) -> ElementRule:
        """Return (creating) the slice ``slice_name`` of this element (a re-slice of a slice)."""
        for existing in self.slices:
            if existing.rule.slice_name == slice_name:
                return existing.rule
        separator = ":" if self.slice_name is None else "/"
        rule = ElementRule(f"{self.id}{separator}{slice_name}", self.name, slice_name)
        self.slices.append(SliceRule(rule))
        return rule


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    """A profile ready for checking: its type, root rule and chain of definitions."""

    url: str
    type: str
    root: ElementRule
    chain: tuple[str, ...]


@dataclass(slots=True)
class _Run:
    """The state of one check: issues found so far and what references can resolve to."""

    contained: dict[str, str] = field(default_factory=dict)
    full_urls: dict[str, str] = field(default_factory=dict)
    profile: str | None = None
    issues: list[Issue] = field(default_factory=list)
    seen: set[tuple[str, str, str, str]] = field(default_factory=set)
    invariants: set[tuple[str, str]] = field(default_factory=set)

    def add(self, severity: str, code: str, expression: str, message: str) -> None:
        """Record an issue once (the same finding through two profiles is one issue)."""
        key = (severity, code, expression, message)
        if key in self.seen:
            return
        self.seen.add(key)
        source = f" (profile {self.profile})" if self.profile else ""
        self.issues.append(Issue(severity, code, expression, message + source))

    @property
    def failed(self) -> bool:
        """Return whether an error has been recorded."""
        return has_errors(self.issues)


def _json(value: Any) -> str:
    """Return ``value`` as compact JSON for messages."""
    return orjson.dumps(value).decode()


# ---------------------------------------------------------------------------------------------
# Value comparison (elementdefinition.html#fixed, #pattern)


def _same(actual: Any, expected: Any) -> bool:
    """Return whether ``actual`` is exactly ``expected`` (fixed[x] semantics)."""
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(_same(actual[key], value) for key, value in expected.items()))
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(_same(a, e) for a, e in zip(actual, expected, strict=True)))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


def _matches(actual: Any, pattern: Any) -> bool:
    """Return whether ``actual`` holds everything ``pattern`` has (pattern[x] semantics)."""
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(
            _matches(actual.get(key), value) for key, value in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and all(
            any(_matches(a, p) for a in actual) for p in pattern)
    return _same(actual, pattern)


def _values_at(value: Any, segments: tuple[str, ...]) -> list[Any]:
    """Return the values at a discriminator path below ``value`` (lists flattened)."""
    current = [value]
    for segment in segments:
        found: list[Any] = []
        for item in current:
            if isinstance(item, dict):
                child = item.get(segment)
                if isinstance(child, list):
                    found.extend(c for c in child if c is not None)
                elif child is not None:
                    found.append(child)
        current = found
    return current


# ---------------------------------------------------------------------------------------------
# Walking instance data


def _companions(container: Mapping[str, Any], key: str, expression: str,
                type_code: str | None) -> list[Item]:
    """Return the items of ``key`` in ``container`` with their ``_key`` companions."""
    value, extra = container.get(key), container.get("_" + key)
    if value is None and extra is None:
        return []
    if not isinstance(value, list) and not isinstance(extra, list):
        return [(value, extra, expression, type_code)]
    values = value if isinstance(value, list) else []
    extras = extra if isinstance(extra, list) else []
    items = []
    for index in range(max(len(values), len(extras))):
        item = values[index] if index < len(values) else None
        companion = extras[index] if index < len(extras) else None
        if item is not None or companion is not None:
            items.append((item, companion, f"{expression}[{index}]", type_code))
    return items


def _gather(value: Any, extra: Any, expression: str, rule: ElementRule) -> list[Item]:
    """Return the items of element ``rule`` inside one item (a primitive: its companion)."""
    container = value if isinstance(value, dict) else extra
    if not isinstance(container, dict):
        return []
    if rule.choice_keys is None:
        return _companions(container, rule.name, f"{expression}.{rule.name}", None)
    items: list[Item] = []
    names = {key.lstrip("_") for key in container}
    for key in sorted(names & rule.choice_keys.keys()):
        type_code = rule.choice_keys[key]
        items += _companions(container, key,
                             f"{expression}.{rule.fhirpath_name}.ofType({type_code})", type_code)
    return items


def _referenced_type(reference: Mapping[str, Any], run: _Run) -> str | None:
    """Return the resource type a Reference points to, when it can be told locally."""
    literal = reference.get("reference")
    if isinstance(literal, str):
        if literal.startswith("#"):
            return run.contained.get(literal[1:])
        if literal.startswith(("urn:uuid:", "urn:oid:")):
            return run.full_urls.get(literal)
        path = literal.split("?", 1)[0].split("/")
        if "_history" in path:
            path = path[:path.index("_history")]
        candidate = path[0] if "?" in literal and len(path) == 1 else (
            path[-2] if len(path) >= 2 else None)
        if candidate and is_resource_type(candidate):
            return candidate
    declared = reference.get("type")
    return declared.rsplit("/", 1)[-1] if isinstance(declared, str) else None


def _reference_targets(resource: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Return the contained resources by id and a Bundle's entries by fullUrl, with types."""
    contained = {item["id"]: str(item.get("resourceType", ""))
                 for item in _as_list(resource.get("contained"))
                 if isinstance(item, dict) and isinstance(item.get("id"), str)}
    full_urls = {}
    if resource.get("resourceType") == "Bundle":
        for entry in _as_list(resource.get("entry")):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(inner, dict) and isinstance(entry.get("fullUrl"), str):
                full_urls[entry["fullUrl"]] = str(inner.get("resourceType", ""))
    return contained, full_urls


def _as_list(value: Any) -> list[Any]:
    """Return ``value`` if it is a JSON array, else an empty list (malformed input)."""
    return value if isinstance(value, list) else []


def declared_profiles(resource: Mapping[str, Any]) -> list[str]:
    """Return the canonical URLs in ``meta.profile``."""
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return [canonical(url) for url in _as_list(profiles) if isinstance(url, str)]


def _codings(value: Any, type_code: str | None,
             expression: str) -> list[tuple[str | None, str | None, str]] | None:
    """Return the (system, code, expression) a coded value carries; None if not coded."""
    if isinstance(value, str):
        return [(None, value, expression)]
    if not isinstance(value, dict):
        return None
    if type_code == "CodeableConcept" or "coding" in value or (
            "text" in value and "code" not in value):
        return [(_text(coding.get("system")), _text(coding.get("code")),
                 f"{expression}.coding[{index}]")
                for index, coding in enumerate(_as_list(value.get("coding")))
                if isinstance(coding, dict)]
    if "code" in value or "system" in value:
        return [(_text(value.get("system")), _text(value.get("code")), expression)]
    return None


def _text(value: Any) -> str | None:
    """Return ``value`` if it is a string (a malformed system or code counts as absent)."""
    return value if isinstance(value, str) else None


def _is_absolute(url: str) -> bool:
    """Return whether an extension url is absolute (extensibility.html "url")."""
    return "://" in url or url.startswith("urn:")


# ---------------------------------------------------------------------------------------------
# Compiling profiles


def _merge_differentials(chain: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge the differentials of ``chain`` (base first) by element id, later ones winning.

    :raises ProfileError: an element without id (sdf-14: every element has an id).
    """
    merged: dict[str, dict[str, Any]] = {}
    for definition in chain:
        for element in (definition.get("differential") or {}).get("element", []):
            element_id = element.get("id")
            if not isinstance(element_id, str):
                raise ProfileError(f"{definition.get('url')}: element {element.get('path')} "
                                   "has no id (sdf-14)")
            prior = merged.get(element_id, {})
            combined = {**prior, **element}
            combined["constraint"] = prior.get("constraint", []) + element.get("constraint", [])
            merged[element_id] = combined
    return merged


def _check_path(type_name: str, path: str, element_id: str) -> None:
    """Check that an element path exists in the base type (catches misspelt elements).

    :raises ProfileError: the path names an element the base type does not have.
    """
    current: str | None = type_name
    for segment in path.split(".")[1:]:
        if current is None:  # a primitive: only id and extension inside (datatypes.html)
            if segment not in ("id", "extension", "value"):
                raise ProfileError(f"{element_id}: a primitive has no element {segment}")
            current = "Extension" if segment == "extension" else None
            if segment != "extension":
                return
            continue
        fields = type_fields(current)
        if segment.endswith("[x]"):
            if not any(spec.choice == segment[:-3] for spec in fields.values()):
                raise ProfileError(f"{element_id}: {current} has no choice element {segment}")
            return  # the type is chosen per instance
        spec = fields.get(segment)
        if spec is None:
            raise ProfileError(f"{element_id}: {current} has no element {segment}")
        if spec.type_code == "Resource":
            return
        current = None if spec.primitive else spec.type_code


def _build_tree(type_name: str, merged: Mapping[str, dict[str, Any]]) -> ElementRule:
    """Return the rule tree of the merged differential elements (not yet compiled).

    :raises ProfileError: an element id or path that does not fit the type.
    """
    root = ElementRule(type_name, type_name)
    for element_id, element in merged.items():
        segments = element_id.split(".")
        if segments[0] != type_name:
            raise ProfileError(f"{element_id}: not an element of {type_name}")
        _check_path(type_name, str(element.get("path", element_id)), element_id)
        rule = root
        for segment in segments[1:]:
            name, _, slice_names = segment.partition(":")
            rule = rule.child(name)
            for slice_name in filter(None, slice_names.split("/")):
                rule = rule.slice(slice_name)
        rule.definition = element
    return root


def _fixed_or_pattern(element: Mapping[str, Any], prefix: str) -> tuple[str, Any] | None:
    """Return the first ``fixed[x]`` or ``pattern[x]`` of an element definition."""
    for key, value in element.items():
        if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
            return key, value
    return None


def _constraint_texts(element: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Return (key, human) of the invariants an element definition adds."""
    return tuple((str(c.get("key", "")), str(c.get("human", c.get("expression", ""))))
                 for c in element.get("constraint", []) if isinstance(c, dict))


def _slicing(element: Mapping[str, Any]) -> Slicing | None:
    """Return ElementDefinition.slicing, or None.

    :raises ProfileError: a discriminator path this checker cannot evaluate.
    """
    slicing = element.get("slicing")
    if not isinstance(slicing, dict):
        return None
    discriminators = []
    for item in slicing.get("discriminator", []):
        discriminator = Discriminator(str(item.get("type")), str(item.get("path")))
        if discriminator.type not in ("value", "pattern", "type", "exists", "profile") or not all(
                _SEGMENT.match(s) for s in discriminator.segments):
            raise ProfileError(f"{element.get('id')}: discriminator {discriminator.type} "
                               f"{discriminator.path!r} is not supported")
        discriminators.append(discriminator)
    return Slicing(tuple(discriminators), str(slicing.get("rules", "open")),
                   bool(slicing.get("ordered", False)))


def _rule_at(rule: ElementRule, segments: tuple[str, ...]) -> tuple[ElementRule, tuple[str, ...]]:
    """Return the deepest rule along ``segments`` and the segments left below it."""
    for index, segment in enumerate(segments):
        if segment not in rule.children:
            return rule, segments[index:]
        rule = rule.children[segment]
    return rule, ()


def _declared_values(rule: ElementRule, segments: tuple[str, ...]) -> list[Any]:
    """Return the fixed or pattern values a slice declares at a discriminator path."""
    target, rest = _rule_at(rule, segments)
    declared = target.fixed or target.pattern
    if declared is None:
        return []
    return _values_at(declared[1], rest) if rest else [declared[1]]


def _slice_lookup(slices: list[SliceRule]) -> dict[str, int] | None:
    """Return value -> slice index when each slice is told by one text value (url, system)."""
    if not slices:
        return None
    lookup: dict[str, int] = {}
    for index, slice_rule in enumerate(slices):
        if len(slice_rule.keys) != 1:
            return None
        discriminator, expected = slice_rule.keys[0]
        if discriminator.type not in ("value", "pattern") or len(expected) != 1 or not (
                isinstance(expected[0], str)):
            return None
        lookup.setdefault(expected[0], index)
    return lookup


def _prune(rule: ElementRule) -> None:
    """Drop the rules that only document an element (mustSupport, short): nothing to check."""
    for child in rule.children.values():
        _prune(child)
    for slice_rule in rule.slices:
        _prune(slice_rule.rule)
    rule.children = {name: child for name, child in rule.children.items()
                     if not child.is_trivial()}


def _code_text(system: str | None, code: str | None) -> str:
    """Return ``system|code`` for messages."""
    return f"{system}|{code}" if system else repr(code)


def _item_type(value: Any, type_code: str | None) -> str | None:
    """Return the type of an item when the instance says it (choice suffix, resourceType)."""
    if type_code is not None:
        return type_code
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return str(value["resourceType"])
    return None


def _choice_slice_type(rule: ElementRule, slice_rule: ElementRule) -> frozenset[str]:
    """Return the type a choice slice stands for by its name (``valueQuantity``: Quantity)."""
    if rule.choice_keys is None or slice_rule.slice_name not in rule.choice_keys:
        return frozenset()
    return frozenset({rule.choice_keys[str(slice_rule.slice_name)]})


def _walk_name(spec: FieldSpec) -> str:
    """Return the FHIRPath step of an element (``value.ofType(string)`` for a choice)."""
    return f"{spec.choice}.ofType({spec.type_code})" if spec.choice else spec.name


class Validator:
    """Checks resources against the profiles of a DefinitionRegistry, each compiled once."""

    def __init__(self, registry: DefinitionRegistry) -> None:
        self.registry = registry
        self.terminology = Terminology(registry)
        self._profiles: dict[str, CompiledProfile | ProfileError] = {}
        self._compiling: set[str] = set()
        self._lock = threading.RLock()

    # -- compiling -------------------------------------------------------------------------

    def profile(self, url: str) -> CompiledProfile:
        """Return the compiled profile ``url`` (compiled on first use, then cached).

        :raises UnknownProfile: no such StructureDefinition here.
        :raises ProfileError: it, or a definition it builds on, cannot be used.
        """
        url = canonical(url)
        found = self._profiles.get(url)
        if found is None:
            with self._lock:
                found = self._profiles.get(url)
                if found is None:
                    try:
                        found = self._compile(url)
                    except ProfileError as exc:
                        found = exc
                    self._profiles[url] = found
        if isinstance(found, ProfileError):
            raise type(found)(str(found))
        return found

    def _compile(self, url: str) -> CompiledProfile:
        """Return profile ``url`` compiled from the merged differentials of its chain.

        :raises ProfileError: see ``profile``.
        """
        base = core_type(url)
        if base is not None:  # the base resource itself: nothing beyond the base definition
            return CompiledProfile(url, base, ElementRule(base, base), (url,))
        if url in self._compiling:
            raise ProfileError(f"{url} depends on itself")
        type_name, chain = self._chain(url)
        self._compiling.add(url)
        try:
            root = _build_tree(type_name, _merge_differentials(chain))
            self._finish(root, None)
            _prune(root)
        finally:
            self._compiling.discard(url)
        return CompiledProfile(url, type_name, root, tuple(str(sd["url"]) for sd in chain))

    def _chain(self, url: str) -> tuple[str, list[dict[str, Any]]]:
        """Return the profile's type and its definitions from the base-most one to ``url``.

        :raises ProfileError: a definition is missing, not a constraint, or of another type.
        """
        chain: list[dict[str, Any]] = []
        current = url
        while True:
            definition = self.registry.structure_definition(current)
            if definition is None:
                if not chain:
                    raise UnknownProfile(f"profile {url} is not known")
                raise ProfileError(f"base definition {current} of {chain[-1]['url']} "
                                   "is not available")
            if any(sd["url"] == definition["url"] for sd in chain):
                raise ProfileError(f"{url}: baseDefinition chain loops at {current}")
            if definition.get("derivation", "constraint") != "constraint":
                raise ProfileError(f"{current} is a specialization, not a profile")
            chain.append(definition)
            base = definition.get("baseDefinition")
            if not isinstance(base, str):
                raise ProfileError(f"{current} has no baseDefinition")
            base_type = core_type(canonical(base))
            if base_type is not None:
                break
            current = canonical(base)
        if any(sd.get("type") != base_type for sd in chain):
            raise ProfileError(f"{url}: type differs from its base {base_type}")
        return base_type, chain[::-1]

    def _finish(self, rule: ElementRule, owner: ElementRule | None) -> None:
        """Compile ``rule`` from its merged definition, then its children and slices.

        ``owner`` is the rule of the element that holds this one (for a complex extension's
        parts, the extension slice whose definition names their urls).

        :raises ProfileError: a definition this checker cannot use.
        """
        self._apply_definition(rule, rule.definition or {})
        for child in rule.children.values():
            self._finish(child, rule)
        for slice_rule in rule.slices:
            self._finish(slice_rule.rule, owner)
        self._slice_keys(rule, owner)
        rule.required = rule.min > 0 or any(s.rule.min > 0 for s in rule.slices)

    def _apply_definition(self, rule: ElementRule, element: Mapping[str, Any]) -> None:
        """Set the constraints of ``rule`` from its merged ElementDefinition.

        :raises ProfileError: a definition this checker cannot use.
        """
        if "min" in element:
            rule.min = int(element["min"])
        if element.get("max") is not None:
            rule.max = None if element["max"] == "*" else int(element["max"])
        rule.fixed = _fixed_or_pattern(element, "fixed")
        rule.pattern = _fixed_or_pattern(element, "pattern")
        self._apply_types(rule, element)
        binding = element.get("binding") or {}
        if isinstance(binding.get("valueSet"), str):
            rule.binding = Binding(str(binding.get("strength")), canonical(binding["valueSet"]))
        if element.get("maxLength") is not None:
            rule.max_length = int(element["maxLength"])
        rule.constraints = _constraint_texts(element)
        rule.slicing = _slicing(element)
        if rule.name.endswith("[x]"):
            prefix = rule.name[:-3]
            rule.choice_keys = {prefix + suffix: code for suffix, code in choice_types().items()}
        if rule.slice_name is not None and element.get("max") is None and rule.extension_urls:
            rule.max = self._extension_max(rule.extension_urls[0])

    def _apply_types(self, rule: ElementRule, element: Mapping[str, Any]) -> None:
        """Set the allowed types, type profiles and Reference target types of ``rule``.

        :raises ProfileError: a targetProfile that is not available.
        """
        types = [t for t in element.get("type", []) if isinstance(t, dict)]
        if not types:
            return
        rule.type_codes = frozenset(str(t.get("code")) for t in types)
        targets: set[str] = set()
        any_target = False
        for entry in types:
            code = str(entry.get("code"))
            profiles = tuple(canonical(p) for p in entry.get("profile", []))
            if code == "Extension":
                rule.extension_urls += profiles
            elif profiles:
                rule.type_profiles[code] = profiles
            if code == "Reference":
                any_target = any_target or not entry.get("targetProfile")
                targets |= {self._profile_type(p) for p in entry.get("targetProfile", [])}
        rule.target_types = None if any_target or not targets else frozenset(targets)

    def _profile_type(self, url: str) -> str:
        """Return the resource type a targetProfile constrains.

        :raises ProfileError: the profile is not available locally.
        """
        url = canonical(url)
        base = core_type(url)
        definition = None if base else self.registry.structure_definition(url)
        if base is None and definition is None:
            raise ProfileError(f"targetProfile {url} is not available")
        return base or str((definition or {}).get("type"))

    def _extension_max(self, url: str) -> int | None:
        """Return the root max of extension ``url``: a slice's default (elementdefinition.html)."""
        try:
            return self.profile(url).root.max
        except ProfileError:
            return None  # the extension itself is reported where it is used

    def _slice_keys(self, rule: ElementRule, owner: ElementRule | None) -> None:
        """Work out the discriminator values of each slice of ``rule``.

        :raises ProfileError: slices without slicing, or a slice without discriminator value.
        """
        if not rule.slices:
            return
        if rule.slicing is None and rule.name in EXTENSION_ELEMENTS:
            rule.slicing = Slicing((Discriminator("value", _EXTENSION_SLICING_PATH),))
        if rule.slicing is None and rule.choice_keys is not None:
            # slices named valueQuantity etc. of a choice element slice it by type
            rule.slicing = Slicing((Discriminator("type", "$this"),))
        if rule.slicing is None:
            raise ProfileError(f"{rule.id} has slices but no slicing")
        kept = []
        for slice_rule in rule.slices:
            keys = self._keys_of(rule, rule.slicing, slice_rule.rule, owner)
            if keys is not None:
                slice_rule.keys = keys
                kept.append(slice_rule)
        rule.slices = kept
        rule.slice_lookup = _slice_lookup(kept)

    def _keys_of(self, rule: ElementRule, slicing: Slicing, slice_rule: ElementRule,
                 owner: ElementRule | None) -> tuple[tuple[Discriminator, Any], ...] | None:
        """Return a slice's (discriminator, expected) pairs; None to leave the slice out.

        :raises ProfileError: the slice declares nothing a discriminator could match.
        """
        keys = []
        for discriminator in slicing.discriminators:
            target, rest = _rule_at(slice_rule, discriminator.segments)
            expected: Any
            if discriminator.type in ("value", "pattern"):
                expected = self._expected_values(rule, slice_rule, discriminator, owner)
                if expected is None:
                    return None
            elif discriminator.type == "type" and not rest and (
                    target.type_codes or _choice_slice_type(rule, slice_rule)):
                expected = target.type_codes or _choice_slice_type(rule, slice_rule)
            elif discriminator.type == "exists" and not rest and (target.min or target.max == 0):
                expected = target.min >= 1
            elif discriminator.type == "profile" and not rest and (
                    target.type_profiles or target.extension_urls):
                expected = target.extension_urls + tuple(
                    url for urls in target.type_profiles.values() for url in urls)
            else:
                raise ProfileError(f"{slice_rule.id}: nothing to match discriminator "
                                   f"{discriminator.type} {discriminator.path!r}")
            keys.append((discriminator, expected))
        return tuple(keys)

    def _expected_values(self, rule: ElementRule, slice_rule: ElementRule,
                         discriminator: Discriminator,
                         owner: ElementRule | None) -> tuple[Any, ...] | None:
        """Return the values a slice shows at a value/pattern discriminator; None: leave out.

        :raises ProfileError: the slice fixes no value there.
        """
        values = _declared_values(slice_rule, discriminator.segments)
        if values:
            return tuple(values)
        if rule.name in EXTENSION_ELEMENTS and discriminator.path == _EXTENSION_SLICING_PATH:
            if slice_rule.extension_urls:
                return (slice_rule.extension_urls[0],)
            outer = owner.extension_urls[0] if owner is not None and owner.extension_urls else None
            if outer is not None:
                return self._sub_extension_url(outer, str(slice_rule.slice_name))
        raise ProfileError(f"{slice_rule.id}: no value for discriminator "
                           f"{discriminator.type} {discriminator.path!r}")

    def _sub_extension_url(self, outer: str, slice_name: str) -> tuple[str, ...] | None:
        """Return the url of sub-extension ``slice_name`` as the complex extension defines it.

        None when the extension is not available locally: its use is then reported, by the
        extension check, as not checked, and the profile's notes on its parts are left out.

        :raises ProfileError: the extension is known but has no such sub-extension.
        """
        if self.registry.structure_definition(outer) is None:
            return None
        extensions = self.profile(outer).root.children.get("extension")
        for candidate in extensions.slices if extensions else []:
            if candidate.rule.slice_name == slice_name:
                return tuple(candidate.keys[0][1])
        raise ProfileError(f"extension {outer} has no sub-extension {slice_name}")

    # -- checking --------------------------------------------------------------------------

    def check(self, resource: Any, profile_url: str | None = None) -> list[Issue]:
        """Return the issues of ``resource`` against ``profile_url`` (default: meta.profile)."""
        run = _Run()
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            run.add("fatal", "structure", "", "not a FHIR resource (no resourceType)")
            return run.issues
        run.contained, run.full_urls = _reference_targets(resource)
        resource_type = resource["resourceType"]
        profiles = [canonical(profile_url)] if profile_url else declared_profiles(resource)
        if not profiles:
            run.add("error", "required", f"{resource_type}.meta.profile",
                    "the resource declares no profile (meta.profile) to be checked against")
        try:
            self._check_resource(resource, profiles, resource_type, run)
        except RecursionError:  # nesting deeper than Python's stack; no FHIR content is
            run.add("fatal", "too-costly", resource_type, "the resource is nested too deeply")
        return run.issues

    def check_value(self, value: Any, profile_url: str, expression: str) -> list[Issue]:
        """Return the issues of a data type or extension value against a profile of its type.

        ``expression`` is where the value sits, e.g. ``Patient.identifier[0].extension[0]``.
        """
        run = _Run()
        self._check_against(canonical(profile_url), (value, None, expression, None), run)
        try:
            type_name = self.profile(profile_url).type
        except ProfileError:
            return run.issues  # reported by _check_against
        if isinstance(value, dict):
            self._walk(value, type_name, expression, run)
        return run.issues

    def _check_resource(self, resource: dict[str, Any], profiles: Iterable[str],
                        expression: str, run: _Run) -> None:
        """Check a resource against ``profiles``, then its extensions and base bindings."""
        for url in profiles:
            self._check_against(url, (resource, None, expression, None), run)
        self._walk(resource, str(resource["resourceType"]), expression, run)

    def _check_against(self, url: str, item: Item, run: _Run) -> None:
        """Check one item (a resource or a data type value) against profile ``url``."""
        expression = item[2]
        try:
            profile = self.profile(url)
        except UnknownProfile:
            run.add("error", "not-found", expression, f"profile {url} is not known")
            return
        except ProfileError as exc:
            run.add("error", "not-supported", expression, f"profile {url} cannot be used: {exc}")
            return
        found = _item_type(item[0], None)
        if is_resource_type(profile.type) and found != profile.type:
            run.add("error", "structure", expression,
                    f"profile {url} constrains {profile.type}, not {found}")
            return
        saved, run.profile = run.profile, url
        try:
            self._check_item(profile.root, item, run)
        finally:
            run.profile = saved

    def _check_item(self, rule: ElementRule, item: Item, run: _Run) -> None:
        """Check one value of an element against its rule, then the rules of its children."""
        value, extra, expression, type_code = item
        kind = _item_type(value, type_code)
        if kind is not None and rule.type_codes and not (
                kind in rule.type_codes or rule.type_codes & _ANY_RESOURCE):
            run.add("error", "structure", expression, f"{rule.id}: type {kind} is not allowed "
                    f"(allowed: {', '.join(sorted(rule.type_codes))})")
            return
        self._check_value(rule, item, run)
        for child in rule.children.values():
            items = _gather(value, extra, expression, child)
            if items or child.required:
                self._check_element(child, items, expression, run)
        for key, human in rule.constraints:
            if (str(run.profile), key) not in run.invariants:
                run.invariants.add((str(run.profile), key))
                run.add("information", "informational", expression,
                        f"{rule.id}: invariant {key} is not evaluated here ({human})")

    def _check_element(self, rule: ElementRule, items: list[Item], parent: str,
                       run: _Run) -> None:
        """Check an element's cardinality, its slices and each of its values."""
        expression = f"{parent}.{rule.fhirpath_name}"
        self._check_count(rule, len(items), expression, run)
        if rule.slices:
            self._check_slices(rule, items, expression, run)
        for item in items:
            self._check_item(rule, item, run)

    def _check_count(self, rule: ElementRule, count: int, expression: str, run: _Run) -> None:
        """Check the number of values of an element (or slice) against min and max."""
        if count < rule.min:
            run.add("error", "required", expression,
                    f"{rule.id}: minimum cardinality is {rule.min}, found {count}")
        if rule.max is not None and count > rule.max:
            run.add("error", "structure", expression,
                    f"{rule.id}: maximum cardinality is {rule.max}, found {count}")

    def _check_value(self, rule: ElementRule, item: Item, run: _Run) -> None:
        """Check fixed and pattern values, maxLength, binding, reference targets, profiles."""
        value, _extra, expression, type_code = item
        if rule.fixed is not None and not _same(value, rule.fixed[1]):
            run.add("error", "value", expression, f"{rule.id}: must be {_json(rule.fixed[1])} "
                    f"({rule.fixed[0]}), found {_json(value)}")
        if rule.pattern is not None and not _matches(value, rule.pattern[1]):
            run.add("error", "value", expression, f"{rule.id}: must match "
                    f"{rule.pattern[0]} {_json(rule.pattern[1])}")
        if rule.max_length is not None and isinstance(value, str) and len(value) > rule.max_length:
            run.add("error", "too-long", expression,
                    f"{rule.id}: {len(value)} characters, more than maxLength {rule.max_length}")
        if rule.binding is not None:
            self._check_binding(rule, rule.binding, item, run)
        if rule.target_types is not None and isinstance(value, dict):
            self._check_target(rule.id, rule.target_types, value, expression, run)
        if rule.type_profiles:
            self._check_type_profiles(rule, item, run)

    def _check_target(self, label: str, allowed: frozenset[str], reference: Mapping[str, Any],
                      expression: str, run: _Run) -> None:
        """Check that a Reference points to a resource type ``allowed`` (when it can be told)."""
        found = _referenced_type(reference, run)
        if found is None or found in allowed or allowed & _ANY_RESOURCE:
            return
        run.add("error", "value", expression, f"{label}: refers to a {found}, but only "
                f"{', '.join(sorted(allowed))} may be referenced here")

    def _check_type_profiles(self, rule: ElementRule, item: Item, run: _Run) -> None:
        """Check a value against the profiles its type must conform to (one of them)."""
        value, _extra, expression, type_code = item
        kind = _item_type(value, type_code)
        if kind is None and len(rule.type_codes) == 1:
            kind = next(iter(rule.type_codes))
        profiles = rule.type_profiles.get(kind or "") or rule.type_profiles.get("Resource", ())
        if len(profiles) == 1:
            if self.registry.structure_definition(profiles[0]) is None and not core_type(
                    profiles[0]):
                run.add("warning", "not-found", expression,
                        f"{rule.id}: profile {profiles[0]} is not available locally: not checked")
            else:
                self._check_against(profiles[0], item, run)
        elif profiles and not any(self._conforms(item, url, run) for url in profiles):
            run.add("error", "structure", expression,
                    f"{rule.id}: conforms to none of the profiles {', '.join(profiles)}")

    def _conforms(self, item: Item, url: str, run: _Run) -> bool:
        """Return whether an item conforms to profile ``url`` (no errors), recording nothing."""
        trial = _Run(contained=run.contained, full_urls=run.full_urls)
        self._check_against(url, (item[0], item[1], "$this", item[3]), trial)
        return not trial.failed

    def _check_slices(self, rule: ElementRule, items: list[Item], expression: str,
                      run: _Run) -> None:
        """Sort the values of a sliced element into slices and check each slice."""
        groups: list[list[Item]] = [[] for _ in rule.slices]
        positions: list[int | None] = []
        for item in items:
            chosen = self._choose_slice(rule, item, run)
            positions.append(chosen)
            if chosen is not None:
                groups[chosen].append(item)
        for slice_rule, matched in zip(rule.slices, groups, strict=True):
            self._check_count(slice_rule.rule, len(matched), expression, run)
            if slice_rule.rule.slices:
                self._check_slices(slice_rule.rule, matched, expression, run)
            for item in matched:
                self._check_item(slice_rule.rule, item, run)
        self._check_slicing_rules(rule, items, positions, run)

    def _check_slicing_rules(self, rule: ElementRule, items: list[Item],
                             positions: list[int | None], run: _Run) -> None:
        """Check closed and openAtEnd slicing and slice order (profiling.html#slicing)."""
        slicing = rule.slicing or Slicing(())
        unmatched_seen, last = False, -1
        for item, position in zip(items, positions, strict=True):
            if position is None:
                if slicing.rules == "closed":
                    names = ", ".join(str(s.rule.slice_name) for s in rule.slices)
                    run.add("error", "structure", item[2], f"{rule.id}: matches none of the "
                            f"slices ({names}) and the slicing is closed")
                unmatched_seen = True
                continue
            if unmatched_seen and slicing.rules == "openAtEnd":
                run.add("error", "structure", item[2], f"{rule.id}: a slice follows content "
                        "that is in no slice, but the slicing is open only at the end")
            if slicing.ordered and position < last:
                run.add("error", "structure", item[2], f"{rule.id}: slice "
                        f"{rule.slices[position].rule.slice_name} is out of order")
            last = max(last, position)

    def _choose_slice(self, rule: ElementRule, item: Item, run: _Run) -> int | None:
        """Return the index of the first slice an item belongs to, or None."""
        if rule.slice_lookup is not None:
            segments = rule.slices[0].keys[0][0].segments
            found = [rule.slice_lookup[value] for value in _values_at(item[0], segments)
                     if isinstance(value, str) and value in rule.slice_lookup]
            return min(found, default=None)
        return next((index for index, candidate in enumerate(rule.slices)
                     if self._in_slice(candidate, item, run)), None)

    def _in_slice(self, slice_rule: SliceRule, item: Item, run: _Run) -> bool:
        """Return whether an item shows every discriminator value of a slice."""
        value = item[0]
        for discriminator, expected in slice_rule.keys:
            found = _values_at(value, discriminator.segments)
            if discriminator.type in ("value", "pattern"):
                if not all(any(_matches(a, e) for a in found) for e in expected):
                    return False
            elif discriminator.type == "type":
                kinds = {_item_type(v, item[3] if not discriminator.segments else None)
                         for v in found}
                if not kinds & expected:
                    return False
            elif discriminator.type == "exists":
                if bool(found) != expected:
                    return False
            elif not any(self._conforms((v, None, item[2], None), url, run)
                         for v in found for url in expected):
                return False
        return True

    # -- terminology -----------------------------------------------------------------------

    def _check_binding(self, rule: ElementRule, binding: Binding, item: Item,
                       run: _Run) -> None:
        """Check a coded value against a required or extensible binding (terminologies.html)."""
        if binding.strength not in ("required", "extensible"):
            return  # preferred and example bindings constrain nothing
        value, _extra, expression, type_code = item
        codings = _codings(value, type_code, expression)
        if codings is None:
            return
        if not codings:
            if binding.strength == "required":  # text alone does not meet a required binding
                run.add("error", "code-invalid", expression, f"{rule.id}: no coding from the "
                        f"required value set {binding.value_set}")
            return
        codes = self.terminology.codes(binding.value_set)
        verdicts = [None if codes is None else codes.contains(system, code)
                    for system, code, _where in codings]
        if True not in verdicts:
            self._report_codes(rule, binding, codings, verdicts, expression, run)

    def _report_codes(self, rule: ElementRule, binding: Binding,
                      codings: list[tuple[str | None, str | None, str]],
                      verdicts: list[bool | None], expression: str, run: _Run) -> None:
        """Report codings none of which is known to be in the bound value set."""
        unknown = [coding for coding, verdict in zip(codings, verdicts, strict=True)
                   if verdict is None]
        if unknown:
            system, code, where = unknown[0]
            codes = self.terminology.codes(binding.value_set)
            reason = ("the value set is not available locally" if codes is None
                      else codes.why_unknown(system))
            run.add("warning", "not-found", where, f"{rule.id}: cannot check "
                    f"{_code_text(system, code)} against the {binding.strength} value set "
                    f"{binding.value_set}: {reason}")
            return
        severity = "error" if binding.strength == "required" else "warning"
        where = codings[0][2] if len(codings) == 1 else expression
        found = ", ".join(_code_text(system, code) for system, code, _where in codings)
        run.add(severity, "code-invalid", where,
                f"{rule.id}: {found} is not in the {binding.strength} value set "
                f"{binding.value_set}")

    # -- every element: extensions, base bindings, nested resources ------------------------

    def _walk(self, obj: Mapping[str, Any], type_name: str, expression: str,
              run: _Run) -> None:
        """Check what the base definitions and extension definitions require, everywhere."""
        try:
            fields = type_fields(type_name)
        except ProfileError:
            run.add("error", "structure", expression, f"{type_name} is not a FHIR R4 type")
            return
        for key, value in obj.items():
            companion = key[:1] == "_"  # a primitive's id and extensions (json.html)
            spec = fields.get(key[1:] if companion else key)
            if spec is None or value is None or (
                    spec.primitive and spec.enum is None and not companion):
                continue
            path = f"{expression}.{_walk_name(spec)}"
            if not isinstance(value, list):
                self._walk_item(spec, type_name, value, path, companion, run)
                continue
            for index, item in enumerate(value):
                if item is not None:
                    self._walk_item(spec, type_name, item, f"{path}[{index}]", companion, run)

    def _walk_item(self, spec: FieldSpec, parent: str, value: Any, expression: str,
                   companion: bool, run: _Run) -> None:
        """Walk one value of an element, or the companion of a primitive value."""
        if not companion:
            self._walk_value(spec, parent, value, expression, run)
        elif isinstance(value, dict):
            self._walk(value, "Element", expression, run)

    def _walk_value(self, spec: FieldSpec, parent: str, value: Any, expression: str,
                    run: _Run) -> None:
        """Check one value of a base element, then walk into it."""
        if spec.primitive:
            if spec.enum is not None and isinstance(value, str) and value not in spec.enum:
                run.add("error", "code-invalid", expression,
                        f"{parent}.{spec.name}: {value!r} is not in the required value set of "
                        f"the base definition ({' | '.join(sorted(spec.enum))})")
            return
        if not isinstance(value, dict):
            return
        if spec.type_code == "Resource":
            self._walk_resource(value, expression, spec.name, run)
            return
        if spec.name in EXTENSION_ELEMENTS:
            self._check_extension(value, expression, spec.name, parent == "Extension", run)
        elif spec.ref_types is not None and spec.type_code == "Reference":
            self._check_target(f"{parent}.{spec.name} (base definition)", spec.ref_types, value,
                               expression, run)
        self._walk(value, spec.type_code, expression, run)

    def _walk_resource(self, resource: dict[str, Any], expression: str, field_name: str,
                       run: _Run) -> None:
        """Check a contained or Bundle-entry resource against the profiles it declares."""
        if not isinstance(resource.get("resourceType"), str):
            run.add("error", "structure", expression, "not a FHIR resource (no resourceType)")
            return
        saved = run.contained, run.full_urls
        if field_name != "contained":  # "#id" points into the resource that holds it
            contained, full_urls = _reference_targets(resource)
            run.contained, run.full_urls = contained, full_urls or run.full_urls
        try:
            self._check_resource(resource, declared_profiles(resource), expression, run)
        finally:
            run.contained, run.full_urls = saved

    def _check_extension(self, extension: Mapping[str, Any], expression: str,
                         field_name: str, nested: bool, run: _Run) -> None:
        """Check an extension against the StructureDefinition its url names."""
        url = extension.get("url")
        if not isinstance(url, str) or not url:
            run.add("error", "required", f"{expression}.url", "Extension.url is required")
            return
        if extension.get("extension") and any(key.startswith("value") for key in extension):
            run.add("error", "invariant", expression,
                    "ext-1: an extension has either extensions or a value[x], not both")
        if not _is_absolute(url):
            if not nested:  # relative urls name the parts of a complex extension only
                run.add("error", "value", f"{expression}.url",
                        f"extension url {url!r} is not an absolute URL")
            return
        try:
            profile = self.profile(url)
        except UnknownProfile:
            self._unknown_extension(url, expression, field_name, run)
            return
        except ProfileError as exc:
            run.add("error", "not-supported", expression, f"extension {url} cannot be used: {exc}")
            return
        if profile.type != "Extension":
            run.add("error", "structure", f"{expression}.url",
                    f"{url} is a profile of {profile.type}, not an extension")
            return
        self._check_against(url, (extension, None, expression, None), run)

    def _unknown_extension(self, url: str, expression: str, field_name: str,
                           run: _Run) -> None:
        """Report an extension whose definition is not available locally."""
        if field_name == "modifierExtension":  # may not be ignored (extensibility.html#modifiers)
            run.add("error", "extension", expression,
                    f"modifier extension {url} is not known, and cannot be ignored")
        elif url.startswith(self.registry.canonical_base + "/"):
            run.add("error", "extension", expression,
                    f"extension {url} is under this service's canonical base but is not defined")
        else:
            run.add("warning", "extension", expression,
                    f"extension {url} has no StructureDefinition available locally: not checked")


# ---------------------------------------------------------------------------------------------
# The process-wide validator

_DEFAULT: Validator | None = None
_DEFAULT_LOCK = threading.Lock()


def configure(folders: Sequence[Path | str] = (),
              canonical_base: str = DEFAULT_CANONICAL_BASE) -> Validator:
    """Make the default validator read ``schemas/fhir`` and then ``folders`` (e.g. UK Core).

    :raises ProfileError: a folder does not exist or holds an unreadable definition.
    """
    global _DEFAULT
    validator = Validator(DefinitionRegistry([OWN_DEFINITIONS, *folders], canonical_base))
    with _DEFAULT_LOCK:
        _DEFAULT = validator
    return validator


def default_validator() -> Validator:
    """Return the default validator (only ``schemas/fhir`` until ``configure`` is called)."""
    with _DEFAULT_LOCK:
        validator = _DEFAULT
    return validator if validator is not None else configure()


def check_resource(resource: Any, profile_url: str | None = None, *,
                   validator: Validator | None = None) -> list[Issue]:
    """Return the conformance issues of ``resource`` against ``profile_url`` or meta.profile."""
    return (validator or default_validator()).check(resource, profile_url)
