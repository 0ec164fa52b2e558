"""Code translations read from the FHIR R4 ConceptMap resources in ``mappings/conceptmaps``.

Semantics of ``$translate`` (FHIR R4 conceptmap.html, conceptmap-operation-translate.html):
every group whose ``source`` is the code's system is consulted; a group that lists the code
gives its targets (a target with equivalence ``unmatched`` or ``disjoint`` gives none); a group
that does not list it applies its ``unmapped`` rule: ``fixed`` gives that code, ``other-map``
continues in the map at ``url``. Every group must have an ``unmapped`` rule, so a code is never
dropped silently. The way back accepts only ``equivalent``/``equal`` targets (a ``wider`` target
names a broader concept and cannot be read back as the source code).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from adapter.config import PROJECT_ROOT
from adapter.systems import DEFAULT_CANONICAL_BASE

CONCEPTMAP_DIR: Final = PROJECT_ROOT / "mappings" / "conceptmaps"
CODESYSTEM_DIR: Final = PROJECT_ROOT / "schemas" / "fhir"
NO_TARGET: Final = frozenset({"unmatched", "disjoint"})
EXACT: Final = frozenset({"equivalent", "equal"})

Coding = tuple[str, str, str]  # system, code, display


class ConceptMapError(ValueError):
    """A ConceptMap cannot be used: no unmapped rule, a broken other-map chain, a bad mode."""


@dataclass(slots=True)
class Group:
    """One group compiled: its listed codes and its unmapped rule."""

    target: str
    table: dict[str, tuple[Coding, ...]]
    fixed: tuple[Coding, ...] | None
    other: Translation | None

    def translate(self, code: str) -> tuple[Coding, ...]:
        """Return this group's targets for ``code``, or its unmapped rule's."""
        listed = self.table.get(code)
        if listed is not None:
            return listed
        if self.fixed is not None:
            return self.fixed
        return self.other.translate(code) if self.other is not None else ()


@dataclass(slots=True)
class Translation:
    """One ConceptMap compiled for look-ups both ways."""

    url: str
    source_system: str
    source_display: dict[str, str]
    groups: list[Group] = field(default_factory=list)
    reverse: dict[tuple[str, str], str] = field(default_factory=dict)
    forward: dict[str, tuple[Coding, ...]] = field(default_factory=dict)
    codes: frozenset[str] = frozenset()  # every source code known (``known_codes``), cached

    def translate(self, code: str) -> tuple[Coding, ...]:
        """Return the target codings of a source code (unmapped rules for unlisted codes)."""
        found = self.forward.get(code)
        if found is None:
            found = tuple(c for group in self.groups for c in group.translate(code))
        return found

    def source_coding(self, code: str) -> Coding:
        """Return the coding of ``code`` in the source code system."""
        return (self.source_system, code, self.source_display.get(code, code))

    def back(self, system: str | None, code: str) -> str | None:
        """Return the source code that an exact target coding stands for, if any."""
        if system is None:
            matches = {src for (_s, c), src in self.reverse.items() if c == code}
            return matches.pop() if len(matches) == 1 else None
        return self.reverse.get((system, code))

    def known_codes(self) -> set[str]:
        """Return every source code listed here or in a map reached by other-map."""
        codes = set(self.source_display)
        for group in self.groups:
            if group.other is not None:
                codes |= group.other.known_codes()
        return codes


def read_conceptmaps(folder: Path = CONCEPTMAP_DIR) -> dict[str, dict[str, Any]]:
    """Return every ConceptMap JSON of ``folder`` by file name stem."""
    return {path.stem: orjson.loads(path.read_bytes()) for path in sorted(folder.glob("*.json"))}


def rebase(resource: Any, base: str) -> Any:
    """Return ``resource`` with every string under the default canonical base moved to ``base``."""
    if base == DEFAULT_CANONICAL_BASE:
        return resource
    text = orjson.dumps(resource).decode()
    return orjson.loads(text.replace(DEFAULT_CANONICAL_BASE, base))


@functools.lru_cache(maxsize=8)
def load_translations(base: str) -> Mapping[str, Translation]:
    """Return the compiled ConceptMaps under ``base`` by name (cached per base).

    :raises ConceptMapError: a map has no unmapped rule or a broken ``other-map`` chain.
    """
    raw = {name: rebase(cm, base) for name, cm in read_conceptmaps().items()}
    by_url = {cm["url"]: cm for cm in raw.values()}
    displays = code_displays(base)
    translations = {name: compile_conceptmap(cm, by_url) for name, cm in raw.items()}
    for translation in translations.values():
        for code, display in displays.get(translation.source_system, {}).items():
            translation.source_display.setdefault(code, display)
        translation.codes = frozenset(translation.known_codes())
    return translations


def code_displays(base: str, folder: Path = CODESYSTEM_DIR) -> dict[str, dict[str, str]]:
    """Return the displays of the service's own CodeSystems (``schemas/fhir``) by system URL."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob("CodeSystem-*.json")):
        system = rebase(orjson.loads(path.read_bytes()), base)
        found[system["url"]] = {c["code"]: c.get("display", c["code"])
                                for c in system.get("concept", [])}
    return found


def compile_conceptmap(cm: Mapping[str, Any], by_url: Mapping[str, Mapping[str, Any]],
                       seen: frozenset[str] = frozenset()) -> Translation:
    """Compile one ConceptMap, following ``other-map`` into the maps of ``by_url``.

    :raises ConceptMapError: no groups, a group without an unmapped rule, a broken chain.
    """
    groups = cm.get("group") or []
    if not groups:
        raise ConceptMapError(f"{cm.get('url')}: a ConceptMap needs at least one group")
    result = Translation(cm["url"], groups[0]["source"], {})
    for group in groups:
        result.groups.append(_compile_group(cm, group, by_url, seen | {cm["url"]}, result))
    result.codes = frozenset(result.known_codes())
    for code in result.codes:
        result.forward[code] = tuple(c for g in result.groups for c in g.translate(code))
    return result


def _compile_group(cm: Mapping[str, Any], group: Mapping[str, Any],
                   by_url: Mapping[str, Mapping[str, Any]], seen: frozenset[str],
                   result: Translation) -> Group:
    """Compile one group's elements and unmapped rule, adding exact targets to the way back.

    :raises ConceptMapError: the group has no usable unmapped rule.
    """
    table: dict[str, tuple[Coding, ...]] = {}
    for element in group.get("element", []):
        code = element["code"]
        result.source_display.setdefault(code, element.get("display", code))
        targets = [t for t in element.get("target", []) if t["equivalence"] not in NO_TARGET]
        table[code] = tuple((group["target"], t["code"], t.get("display", t["code"]))
                            for t in targets)
        for target in targets:
            if target["equivalence"] in EXACT:
                result.reverse.setdefault((group["target"], target["code"]), code)
    fixed, other = _unmapped(cm, group, by_url, seen, result)
    return Group(group["target"], table, fixed, other)


def _unmapped(cm: Mapping[str, Any], group: Mapping[str, Any],
              by_url: Mapping[str, Mapping[str, Any]], seen: frozenset[str],
              result: Translation) -> tuple[tuple[Coding, ...] | None, Translation | None]:
    """Return a group's unmapped rule: fixed codings, or the compiled other map.

    :raises ConceptMapError: the rule is missing, unsupported or loops.
    """
    rule = group.get("unmapped") or {}
    mode = rule.get("mode")
    if mode == "fixed" and rule.get("code"):
        return ((group["target"], rule["code"], rule.get("display", rule["code"])),), None
    if mode == "other-map" and rule.get("url") in by_url:
        if rule["url"] in seen:
            raise ConceptMapError(f"{cm['url']}: other-map chain loops")
        other = compile_conceptmap(by_url[rule["url"]], by_url, seen)
        for key, code in other.reverse.items():
            result.reverse.setdefault(key, code)
        for code, display in other.source_display.items():
            result.source_display.setdefault(code, display)
        return None, other
    raise ConceptMapError(f"{cm['url']}: every group needs unmapped mode fixed (with a code) "
                          "or other-map (with the url of a known map)")
