"""Conformance resources (StructureDefinition, ValueSet, CodeSystem) read from folders.

The registry indexes every definition in its folders by canonical URL, JSON or XML, and turns
each into its FHIR JSON shape on first use. XML is read with the hardened parser
(``adapter.xmlsafe``: no DTD, entities or network) and converted by the FHIR R4 XML and JSON
rules (xml.html, json.html) with the element types and cardinalities of the base definitions,
taken from the ``fhir.resources.R4B`` models (the same base as ``adapter.fhir.xml``).

The service's own definitions are written against ``DEFAULT_CANONICAL_BASE``; a server that
runs with another ``GATEWAY_CANONICAL_BASE`` reads every string that starts with the default
base as if it started with its own (urls, fixed identifier systems, bindings).
"""

from __future__ import annotations

import functools
import logging
import threading
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from lxml import etree

from adapter.errors import BadRequest, is_resource_type
from adapter.fhir.xml import unwrap_field
from adapter.systems import DEFAULT_CANONICAL_BASE
from adapter.xmlsafe import parse_bytes

log = logging.getLogger(__name__)

FHIR_NS: Final = "http://hl7.org/fhir"
XHTML_NS: Final = "http://www.w3.org/1999/xhtml"
# Canonical URLs of the base resources and data types (FHIR R4 structuredefinition.html).
CORE_BASE: Final = "http://hl7.org/fhir/StructureDefinition/"
DEFINITION_TYPES: Final = frozenset({"StructureDefinition", "ValueSet", "CodeSystem"})
_INT_TYPES: Final = frozenset({"integer", "unsignedInt", "positiveInt", "integer64"})


class ProfileError(Exception):
    """A conformance resource cannot be read, resolved or used for checking."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One element of a base FHIR type as the R4 JSON format carries it."""

    name: str
    type_code: str  # FHIR type: "string", "Identifier", backbone class "PatientContact", "Resource"
    is_list: bool
    primitive: bool
    choice: str | None  # choice group of a ``[x]`` element ("value" for valueString)
    enum: frozenset[str] | None  # codes of a required binding on a ``code`` element
    ref_types: frozenset[str] | None  # target resource types of a Reference


def _model(type_name: str) -> Any:
    """Return the ``fhir.resources.R4B`` model class of a FHIR type.

    :raises ProfileError: no such type.
    """
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(type_name)
    except ValueError:
        raise ProfileError(f"{type_name} is not a FHIR R4 type") from None


def _type_code(item: Any) -> tuple[str, bool]:
    """Return the FHIR type code of a field's item type and whether it is a primitive."""
    if item is bool:
        return "boolean", True
    if typing.get_origin(item) is typing.Annotated:
        marker = type(typing.get_args(item)[-1]).__name__  # Uri, DateTime, UnsignedInt, ...
        return marker[0].lower() + marker[1:], True
    return str(item.get_model_klass().__name__), False


def _field_spec(name: str, info: Any) -> FieldSpec:
    """Return the FieldSpec of one model field (``info`` a pydantic FieldInfo)."""
    item, repeats = unwrap_field(info.annotation)
    code, primitive = _type_code(item)
    extra = info.json_schema_extra or {}
    enum = extra.get("enum_values")
    refs = extra.get("enum_reference_types")
    return FieldSpec(name, code, repeats, primitive, extra.get("one_of_many"),
                     frozenset(enum) if enum else None, frozenset(refs) if refs else None)


@functools.cache
def type_fields(type_name: str) -> Mapping[str, FieldSpec]:
    """Return the elements of a base FHIR type (resource, data type or backbone) by JSON name.

    :raises ProfileError: no such type.
    """
    model = _model(type_name)
    fields: dict[str, FieldSpec] = {}
    for key, info in model.model_fields.items():
        name = info.alias or key
        if name == "fhir_comments" or name.startswith("_") or key.endswith("__ext"):
            continue
        fields[name] = _field_spec(name, info)
    return types.MappingProxyType(fields)


@functools.cache
def choice_types() -> Mapping[str, str]:
    """Return the JSON suffix -> FHIR type code of every type a ``[x]`` element may take.

    The open type list is the one of ``Extension.value[x]`` (FHIR R4 datatypes.html#open).
    """
    suffixes = {spec.name[len("value"):]: spec.type_code
                for spec in type_fields("Extension").values() if spec.choice == "value"}
    return types.MappingProxyType(suffixes)


def core_type(url: str) -> str | None:
    """Return the type a base definition URL stands for, or None if it is not one."""
    if not url.startswith(CORE_BASE):
        return None
    name = url[len(CORE_BASE):]
    try:
        type_fields(name)
    except ProfileError:
        return None
    return name


def canonical(url: str) -> str:
    """Return a canonical reference without its ``|version`` (FHIR R4 references.html#canonical)."""
    return url.split("|", 1)[0]


# ---------------------------------------------------------------------------------------------
# XML -> JSON


def _primitive_value(text: str | None, type_code: str) -> Any:
    """Return an XML ``value`` attribute as its FHIR JSON value (json.html "primitive types")."""
    if text is None:
        return None
    if type_code == "boolean":
        return text == "true"
    if type_code in _INT_TYPES:
        return int(text)
    if type_code == "decimal":
        return int(text) if text.lstrip("-").isdigit() else float(text)
    return text


def _local(element: Any) -> str:
    """Return the local name of an element in the FHIR namespace.

    :raises ProfileError: the element is in another namespace.
    """
    qname = etree.QName(element)
    if qname.namespace != FHIR_NS:
        raise ProfileError(f"element {qname.localname} is not in the FHIR namespace")
    return str(qname.localname)


def _element_extras(element: Any) -> dict[str, Any] | None:
    """Return the ``_name`` companion (id, extension) of a primitive XML element, if any."""
    extras: dict[str, Any] = {}
    if element.get("id") is not None:
        extras["id"] = element.get("id")
    extensions = [_xml_object(child, "Extension") for child in element
                  if isinstance(child.tag, str) and _local(child) == "extension"]
    if extensions:
        extras["extension"] = extensions
    return extras or None


def _child_value(child: Any, spec: FieldSpec) -> tuple[Any, dict[str, Any] | None]:
    """Return the JSON value of one child element and its primitive companion."""
    if spec.type_code == "xhtml":
        return etree.tostring(child, encoding="unicode", with_tail=False), None
    if spec.primitive:
        return _primitive_value(child.get("value"), spec.type_code), _element_extras(child)
    if spec.type_code == "Resource":
        inner = [node for node in child if isinstance(node.tag, str)]
        if len(inner) != 1:
            raise ProfileError(f"{spec.name} must hold exactly one resource")
        return xml_to_json(inner[0]), None
    return _xml_object(child, spec.type_code), None


def _add_child(out: dict[str, Any], spec: FieldSpec, value: Any, extras: Any) -> None:
    """Add one converted child to ``out``, as a list item when the element repeats."""
    if not spec.is_list:
        if value is not None:
            out[spec.name] = value
        if extras is not None:
            out["_" + spec.name] = extras
        return
    values = out.setdefault(spec.name, [])
    companions = out.setdefault("_" + spec.name, [])
    values.append(value)
    companions.append(extras)


def _tidy_lists(out: dict[str, Any]) -> None:
    """Drop companion lists that carry nothing and value lists of a primitive only extended."""
    for key in [k for k in out if k.startswith("_") and isinstance(out[k], list)]:
        if all(item is None for item in out[key]):
            del out[key]
    for key in [k for k in out if isinstance(out[k], list) and not k.startswith("_")]:
        if all(item is None for item in out[key]):
            del out[key]


def _xml_object(element: Any, type_name: str) -> dict[str, Any]:
    """Return a complex XML element of type ``type_name`` as a JSON object.

    :raises ProfileError: an element unknown to the type.
    """
    fields = type_fields(type_name)
    out: dict[str, Any] = {}
    for attribute in ("id", "url"):  # attributes in XML, properties in JSON (xml.html)
        if element.get(attribute) is not None and attribute in fields:
            out[attribute] = element.get(attribute)
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = "div" if etree.QName(child).namespace == XHTML_NS else _local(child)
        spec = fields.get(name)
        if spec is None:
            raise ProfileError(f"unknown element {name} in {type_name}")
        _add_child(out, spec, *_child_value(child, spec))
    _tidy_lists(out)
    return out


def xml_to_json(element: Any) -> dict[str, Any]:
    """Return a FHIR XML resource element as its FHIR JSON object.

    :raises ProfileError: not a FHIR resource, or an element unknown to its type.
    """
    name = _local(element)
    if not is_resource_type(name):
        raise ProfileError(f"{name} is not a FHIR resource type")
    return {"resourceType": name, **_xml_object(element, name)}


# ---------------------------------------------------------------------------------------------
# The registry


def rebase(value: Any, old: str, new: str) -> Any:
    """Return ``value`` with every string under the ``old`` canonical base moved to ``new``."""
    if isinstance(value, str):
        if value == old or value.startswith(old + "/"):
            return new + value[len(old):]
        return value
    if isinstance(value, list):
        return [rebase(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: rebase(item, old, new) for key, item in value.items()}
    return value


@dataclass(slots=True)
class _Entry:
    """One indexed definition: where it came from and, once read, its JSON form."""

    source: Path
    resource_type: str
    url: str
    xml: Any = None  # the parsed XML root, converted on first use
    content: dict[str, Any] | None = None
    value_set: str | None = None  # CodeSystem.valueSet: the value set of all its codes


class DefinitionRegistry:
    """StructureDefinitions, ValueSets and CodeSystems from folders, by canonical URL.

    Folders come in priority order: a URL defined in two folders is taken from the first.
    """

    def __init__(self, folders: Iterable[Path | str],
                 canonical_base: str = DEFAULT_CANONICAL_BASE) -> None:
        self.folders: tuple[Path, ...] = tuple(Path(folder) for folder in folders)
        self.canonical_base = canonical_base.rstrip("/")
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        for folder in self.folders:
            self._index_folder(folder)

    def _rebase(self, value: Any) -> Any:
        """Return ``value`` moved from the default canonical base to this registry's base."""
        if self.canonical_base == DEFAULT_CANONICAL_BASE:
            return value
        return rebase(value, DEFAULT_CANONICAL_BASE, self.canonical_base)

    def _index_folder(self, folder: Path) -> None:
        """Index every JSON and XML definition under ``folder``.

        :raises ProfileError: the folder does not exist, or a file cannot be read.
        """
        if not folder.is_dir():
            raise ProfileError(f"definition folder {folder} does not exist")
        for path in sorted(folder.rglob("*")):
            if path.suffix == ".json":
                self._index_json(path)
            elif path.suffix == ".xml":
                self._index_xml(path)

    def _add(self, entry: _Entry) -> None:
        """Index ``entry`` unless an earlier folder already defines its URL."""
        key = (entry.resource_type, entry.url)
        if key in self._entries:
            log.debug("%s %s from %s shadowed by %s", entry.resource_type, entry.url,
                      entry.source, self._entries[key].source)
            return
        self._entries[key] = entry

    def _index_json(self, path: Path) -> None:
        """Index a JSON file if it holds a definition (other resources are skipped).

        :raises ProfileError: the file is not JSON or the definition has no url.
        """
        try:
            content = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ProfileError(f"{path}: not JSON ({exc})") from None
        if not isinstance(content, dict) or content.get("resourceType") not in DEFINITION_TYPES:
            return
        content = self._rebase(content)
        url = content.get("url")
        if not isinstance(url, str):
            raise ProfileError(f"{path}: {content['resourceType']} without url")
        declared = content.get("valueSet")
        self._add(_Entry(path, content["resourceType"], url, content=content,
                         value_set=canonical(declared) if isinstance(declared, str) else None))

    def _index_xml(self, path: Path) -> None:
        """Index an XML file if it holds a definition (other documents are skipped).

        :raises ProfileError: the file is not well-formed XML or the definition has no url.
        """
        try:
            root = parse_bytes(path.read_bytes())
        except BadRequest as exc:
            raise ProfileError(f"{path}: {exc.message}") from None
        qname = etree.QName(root)
        if qname.namespace != FHIR_NS or qname.localname not in DEFINITION_TYPES:
            return
        url = root.find(f"{{{FHIR_NS}}}url")
        if url is None or not url.get("value"):
            raise ProfileError(f"{path}: {qname.localname} without url")
        declared = root.find(f"{{{FHIR_NS}}}valueSet")
        value_set = None if declared is None or not declared.get("value") else canonical(
            str(self._rebase(declared.get("value"))))
        self._add(_Entry(path, qname.localname, self._rebase(url.get("value")), xml=root,
                         value_set=value_set))

    def _content(self, entry: _Entry) -> dict[str, Any]:
        """Return the JSON form of ``entry``, converting its XML on first use.

        :raises ProfileError: the XML does not follow the FHIR definitions.
        """
        if entry.content is None:
            with self._lock:
                if entry.content is None:
                    try:
                        entry.content = self._rebase(xml_to_json(entry.xml))
                    except ProfileError as exc:
                        raise ProfileError(f"{entry.source}: {exc}") from None
                    entry.xml = None
        return entry.content

    def get(self, resource_type: str, url: str) -> dict[str, Any] | None:
        """Return the definition of ``resource_type`` with canonical ``url``, or None.

        :raises ProfileError: the definition's file cannot be converted.
        """
        entry = self._entries.get((resource_type, canonical(url)))
        return None if entry is None else self._content(entry)

    def structure_definition(self, url: str) -> dict[str, Any] | None:
        """Return the StructureDefinition with canonical ``url``, or None."""
        return self.get("StructureDefinition", url)

    def value_set(self, url: str) -> dict[str, Any] | None:
        """Return the ValueSet with canonical ``url``, or None."""
        return self.get("ValueSet", url)

    def code_system(self, url: str) -> dict[str, Any] | None:
        """Return the CodeSystem with canonical ``url``, or None."""
        return self.get("CodeSystem", url)

    def urls(self, resource_type: str, folder: Path | None = None) -> list[str]:
        """Return the URLs of every indexed ``resource_type`` (those read from ``folder``)."""
        return [entry.url for (kind, _url), entry in self._entries.items()
                if kind == resource_type
                and (folder is None or entry.source.is_relative_to(folder))]

    def code_systems_declaring(self, value_set_url: str) -> list[str]:
        """Return the CodeSystems whose ``valueSet`` (all their codes) is ``value_set_url``."""
        return [url for (kind, url), entry in self._entries.items()
                if kind == "CodeSystem" and entry.value_set == canonical(value_set_url)]


# ---------------------------------------------------------------------------------------------
# Value sets (FHIR R4 valueset.html "compose", codesystem.html)


@dataclass(frozen=True, slots=True)
class CodeSet:
    """What is known locally of a value set's content.

    ``codes`` holds, per system, codes known to be in the set; ``unresolved`` the systems whose
    membership cannot be decided here (a code system or filter not available locally);
    ``partial`` says why no membership can be denied at all (an unresolvable value set).
    """

    codes: Mapping[str, frozenset[str]]
    unresolved: frozenset[str] = frozenset()
    partial: str | None = None

    def contains(self, system: str | None, code: str | None) -> bool | None:
        """Return True/False when membership of ``system|code`` is known, else None."""
        if code is None:
            return False
        if system is None:
            if any(code in codes for codes in self.codes.values()):
                return True
            return None if self.unresolved or self.partial else False
        if code in self.codes.get(system, ()):
            return True
        return None if self.partial or system in self.unresolved else False

    def why_unknown(self, system: str | None) -> str:
        """Return why membership of a code of ``system`` cannot be decided."""
        if system in self.unresolved:
            return f"the content of {system} is not available locally"
        return self.partial or "part of the value set is not available locally"


def _union(parts: Iterable[CodeSet]) -> CodeSet:
    """Return the union of code sets (several compose.include)."""
    codes: dict[str, set[str]] = {}
    unresolved: set[str] = set()
    partial = None
    for part in parts:
        for system, values in part.codes.items():
            codes.setdefault(system, set()).update(values)
        unresolved |= part.unresolved
        partial = partial or part.partial
    return CodeSet({s: frozenset(v) for s, v in codes.items()}, frozenset(unresolved), partial)


def _intersection(parts: list[CodeSet]) -> CodeSet:
    """Return the intersection of code sets (one include naming a system and value sets)."""
    if len(parts) == 1:
        return parts[0]
    systems = set().union(*(set(p.codes) | p.unresolved for p in parts))
    if any(p.partial or p.unresolved for p in parts):
        reason = next((p.partial for p in parts if p.partial), None)
        return CodeSet({}, frozenset(systems), reason)
    codes = {s: frozenset.intersection(*(p.codes.get(s, frozenset()) for p in parts))
             for s in systems}
    return CodeSet({s: c for s, c in codes.items() if c})


def _difference(base: CodeSet, excluded: CodeSet) -> CodeSet:
    """Return ``base`` without ``excluded`` (compose.exclude); unknown exclusions stay open."""
    if excluded.partial:
        return CodeSet({}, frozenset(base.codes) | base.unresolved,
                       base.partial or excluded.partial)
    codes = {s: c - excluded.codes.get(s, frozenset()) for s, c in base.codes.items()
             if s not in excluded.unresolved}
    return CodeSet(codes, base.unresolved | (excluded.unresolved & set(base.codes)),
                   base.partial)


def _concepts(concepts: Iterable[Any], parent: str | None,
              found: dict[str, dict[str, Any]], parents: dict[str, set[str]]) -> None:
    """Collect nested ``CodeSystem.concept`` entries and their parents (is-a hierarchy)."""
    for concept in concepts:
        code = concept.get("code")
        if not isinstance(code, str):
            continue
        found[code] = concept
        links = parents.setdefault(code, set())
        if parent is not None:
            links.add(parent)
        for prop in concept.get("property", []):
            if prop.get("code") == "parent" and isinstance(prop.get("valueCode"), str):
                links.add(prop["valueCode"])  # codesystem.html "concept properties": parent
        _concepts(concept.get("concept", []), code, found, parents)


@dataclass(frozen=True, slots=True)
class _CodeSystemIndex:
    """The concepts of one complete local CodeSystem and their is-a hierarchy."""

    concepts: Mapping[str, Mapping[str, Any]]
    children: Mapping[str, frozenset[str]]

    def descendants(self, code: str) -> set[str]:
        """Return every code below ``code`` (not ``code`` itself)."""
        found: set[str] = set()
        pending = [code]
        while pending:
            for child in self.children.get(pending.pop(), frozenset()):
                if child not in found:
                    found.add(child)
                    pending.append(child)
        return found

    def with_property(self, name: str, value: str) -> set[str]:
        """Return the codes whose property ``name`` has ``value`` (compared as text)."""
        matched = set()
        for code, concept in self.concepts.items():
            for prop in concept.get("property", []):
                if prop.get("code") == name and any(
                        str(v).lower() == value.lower() if isinstance(v, bool) else str(v) == value
                        for k, v in prop.items() if k.startswith("value")):
                    matched.add(code)
        return matched


def _index_code_system(content: Mapping[str, Any]) -> _CodeSystemIndex:
    """Return the concept index of a CodeSystem resource."""
    found: dict[str, dict[str, Any]] = {}
    parents: dict[str, set[str]] = {}
    _concepts(content.get("concept", []), None, found, parents)
    children: dict[str, set[str]] = {}
    for code, links in parents.items():
        for parent in links:
            children.setdefault(parent, set()).add(code)
    return _CodeSystemIndex(found, {c: frozenset(k) for c, k in children.items()})


class Terminology:
    """Value set contents computed from local ValueSets and CodeSystems, cached."""

    def __init__(self, registry: DefinitionRegistry) -> None:
        self.registry = registry
        self._sets: dict[str, CodeSet | None] = {}
        self._systems: dict[str, _CodeSystemIndex | None] = {}

    def codes(self, url: str, _stack: tuple[str, ...] = ()) -> CodeSet | None:
        """Return what is known of value set ``url``, or None if it is not available locally."""
        url = canonical(url)
        if url in _stack:
            return CodeSet({}, partial=f"value set {url} includes itself")
        if url not in self._sets:
            self._sets[url] = self._resolve(url, (*_stack, url))
        return self._sets[url]

    def _resolve(self, url: str, stack: tuple[str, ...]) -> CodeSet | None:
        """Return the content of value set ``url`` (compose, else a complete expansion)."""
        value_set = self.registry.value_set(url)
        if value_set is None:
            systems = self.registry.code_systems_declaring(url)  # CodeSystem.valueSet: all codes
            return _union(self._include({"system": s}, stack) for s in systems) if systems else None
        compose = value_set.get("compose") or {}
        result = _union(self._include(item, stack) for item in compose.get("include", []))
        for item in compose.get("exclude", []):
            result = _difference(result, self._include(item, stack))
        if not compose or result.partial or result.unresolved:
            expansion = _complete_expansion(value_set.get("expansion"))
            if expansion is not None:
                return expansion
        return result

    def _include(self, item: Mapping[str, Any], stack: tuple[str, ...]) -> CodeSet:
        """Return the codes of one compose.include (or exclude) entry."""
        parts = []
        for url in item.get("valueSet", []):
            part = self.codes(url, stack)
            parts.append(part if part is not None
                         else CodeSet({}, partial=f"value set {canonical(url)} is not available "
                                                  "locally"))
        system = item.get("system")
        if isinstance(system, str):
            parts.append(self._system_part(system, item))
        return _intersection(parts) if parts else CodeSet({})

    def _system_part(self, system: str, item: Mapping[str, Any]) -> CodeSet:
        """Return the codes an include selects from ``system`` (all, a list, or filters)."""
        listed = [c.get("code") for c in item.get("concept", []) if isinstance(c.get("code"), str)]
        if listed:
            return CodeSet({system: frozenset(listed)})
        index = self._code_system(system)
        if index is None:
            return CodeSet({}, frozenset({system}))
        selected = set(index.concepts)
        for flt in item.get("filter", []):
            matched = _apply_filter(index, flt)
            if matched is None:
                return CodeSet({}, frozenset({system}))
            selected &= matched
        return CodeSet({system: frozenset(selected)})

    def _code_system(self, url: str) -> _CodeSystemIndex | None:
        """Return the index of a complete local CodeSystem, or None (absent or incomplete)."""
        if url not in self._systems:
            content = self.registry.code_system(url)
            # Only content "complete" lists every code (codesystem.html#content).
            complete = content is not None and content.get("content") == "complete"
            self._systems[url] = _index_code_system(content) if complete and content else None
        return self._systems[url]


def _apply_filter(index: _CodeSystemIndex, flt: Mapping[str, Any]) -> set[str] | None:
    """Return the codes a compose filter selects, or None for a filter not supported here."""
    prop, op, value = flt.get("property"), flt.get("op"), flt.get("value")
    if not isinstance(value, str):
        return None
    if prop == "concept" and op == "is-a":
        return {value} | index.descendants(value) if value in index.concepts else set()
    if prop == "concept" and op == "descendent-of":
        return index.descendants(value)
    if prop == "concept" and op == "is-not-a":
        return set(index.concepts) - {value} - index.descendants(value)
    if prop == "concept" and op in ("in", "not-in"):
        listed = {code.strip() for code in value.split(",")}
        return listed & set(index.concepts) if op == "in" else set(index.concepts) - listed
    if op == "=" and isinstance(prop, str) and prop != "concept":
        return index.with_property(prop, value)
    return None


def _expansion_codes(contains: Iterable[Any], codes: dict[str, set[str]]) -> int:
    """Collect selectable codes of ``expansion.contains`` (nested); return how many entries."""
    count = 0
    for entry in contains:
        count += 1
        system, code = entry.get("system"), entry.get("code")
        if isinstance(system, str) and isinstance(code, str) and not entry.get("abstract"):
            codes.setdefault(system, set()).add(code)
        count += _expansion_codes(entry.get("contains", []), codes)
    return count


def _complete_expansion(expansion: Mapping[str, Any] | None) -> CodeSet | None:
    """Return a shipped expansion as a CodeSet when it lists the whole value set, else None."""
    if not expansion or expansion.get("offset", 0) not in (0, None):
        return None
    codes: dict[str, set[str]] = {}
    count = _expansion_codes(expansion.get("contains", []), codes)
    total = expansion.get("total")
    if total is not None and total != count:
        return None  # a page of a larger expansion (valueset.html#expansion "total")
    return CodeSet({s: frozenset(c) for s, c in codes.items()})
