"""Element paths of the ``to`` key of a field map, compiled into writers and readers.

Grammar (mappings/README.md "Paths"): steps separated by ``.``; a step is a JSON key, optionally
followed by a selector on a list: ``[]`` (the whole list), ``[k=v]`` (items whose ``k`` is ``v``),
``[k^=v]`` (``k`` starts with ``v``) or ``[k!=v]`` (no ``k`` is ``v``). ``k`` may be a dotted
path through lists (``coding.system``). ``.`` alone is the item itself (inside a part).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

Path = tuple[str | int, ...]
Put = Callable[[dict[str, Any], Any], None]
Match = tuple[Path, Any]

_STEP: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]*)\])?(?:\.|$)")
_SELECTOR: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(\^=|!=|=)(.+)")


class PathError(ValueError):
    """A ``to`` path does not follow the grammar."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a path: a key and an optional list selector."""

    key: str
    op: str | None = None  # None: plain key; "[]": whole list; "=", "^=", "!=": selector
    sel: tuple[str, ...] = ()
    value: str = ""

    @property
    def is_list(self) -> bool:
        """Whether the step addresses a list."""
        return self.op is not None

    def matches(self, item: Any) -> bool:
        """Return whether a list item satisfies this step's selector."""
        if self.op == "[]":
            return True
        found = list(leaves(item, self.sel))
        if self.op == "=":
            return self.value in found
        if self.op == "^=":
            return any(isinstance(v, str) and v.startswith(self.value) for v in found)
        return self.value not in found


def leaves(node: Any, keys: tuple[str, ...]) -> Iterator[Any]:
    """Yield the values at ``keys`` below ``node``, stepping through lists."""
    if isinstance(node, list):
        for item in node:
            yield from leaves(item, keys)
    elif not keys:
        yield node
    elif isinstance(node, dict) and keys[0] in node:
        yield from leaves(node[keys[0]], keys[1:])


def parse_path(text: str) -> tuple[Step, ...]:
    """Parse a ``to`` path; ``.`` gives the empty path (the item itself).

    :raises PathError: the text does not follow the grammar.
    """
    if text == ".":
        return ()
    steps, end = [], 0
    for match in _STEP.finditer(text):
        if match.start() != end:
            break
        steps.append(_parse_step(match.group(1), match.group(2), text))
        end = match.end()
    if end != len(text) or not steps:
        raise PathError(f"path {text!r} does not follow the grammar")
    return tuple(steps)


def _parse_step(key: str, selector: str | None, text: str) -> Step:
    """Return the step for ``key`` and its selector text.

    :raises PathError: the selector does not follow the grammar.
    """
    if selector is None:
        return Step(key)
    if selector == "":
        return Step(key, "[]")
    match = _SELECTOR.fullmatch(selector)
    if not match:
        raise PathError(f"path {text!r}: selector [{selector}] does not follow the grammar")
    return Step(key, match.group(2), tuple(match.group(1).split(".")), match.group(3))


def compile_put(steps: tuple[Step, ...]) -> Put:
    """Return a writer that stores a value at ``steps``, creating what is missing.

    A path ending in a list step appends the value (or extends by a list value); a list step
    inside the path finds or creates the item whose single-key selector matches.

    :raises PathError: a list step inside the path cannot create its item.
    """
    for step in steps[:-1]:
        if step.is_list and (step.op != "=" or len(step.sel) != 1):
            raise PathError(f"{step.key}: only [key=value] may be followed by more steps")
    head, last = steps[:-1], steps[-1]
    if not head and not last.is_list:
        return _put_key(last.key)
    if len(head) == 1 and head[0].op == "=" and not last.is_list:
        return _put_in_item(head[0], last.key)
    if len(head) == 1 and head[0].op is None:
        return _put_in_child(head[0].key, last.key, last.is_list)

    def put(out: dict[str, Any], value: Any) -> None:
        node = out
        for step in head:
            node = _descend(node, step)
        if last.is_list:
            items = node.setdefault(last.key, [])
            items.extend(value) if isinstance(value, list) else items.append(value)
        else:
            node[last.key] = value
    return put


def _put_key(key: str) -> Put:
    """Return a writer of one key of the output."""
    def put(out: dict[str, Any], value: Any) -> None:
        out[key] = value
    return put


def _put_in_child(name: str, key: str, is_list: bool) -> Put:
    """Return a writer of ``name.key`` or of a list ``name.key[...]`` (``meta.versionId``,
    ``meta.security[system=...]``): the general writer without its loop over the path."""
    def put(out: dict[str, Any], value: Any) -> None:
        child = out.get(name)
        if child is None:
            child = out[name] = {}
        if not is_list:
            child[key] = value
            return
        items = child.setdefault(key, [])
        items.extend(value) if isinstance(value, list) else items.append(value)
    return put


def _put_in_item(step: Step, key: str) -> Put:
    """Return a writer of ``list[sel=value].key`` (an extension's value, a slice's value)."""
    name, wanted, list_key = step.sel[0], step.value, step.key

    def put(out: dict[str, Any], value: Any) -> None:
        items = out.get(list_key)
        if items is None:
            out[list_key] = [{name: wanted, key: value}]
            return
        for item in items:
            if item.get(name) == wanted:
                item[key] = value
                return
        items.append({name: wanted, key: value})
    return put


def _descend(node: dict[str, Any], step: Step) -> dict[str, Any]:
    """Return the child object of ``node`` at ``step``, creating it when absent."""
    if step.op is None:
        child: dict[str, Any] | None = node.get(step.key)
        if child is None:
            child = node[step.key] = {}
        return child
    items = node.setdefault(step.key, [])
    name = step.sel[0]
    for item in items:
        if item.get(name) == step.value:
            return item  # type: ignore[no-any-return]
    created = {name: step.value}
    items.append(created)
    return created


def select(resource: dict[str, Any], steps: tuple[Step, ...], base: Path = ()) -> list[Match]:
    """Return ``(path, value)`` for every element of ``resource`` that ``steps`` addresses.

    Along the way, a list step inside the path takes its first matching item only (the writer
    creates one); a final list step with a selector yields every matching item.
    """
    node: Any = resource
    path = base
    for step in steps[:-1]:
        if not isinstance(node, dict) or step.key not in node:
            return []
        node, path = node[step.key], path + (step.key,)
        if step.is_list:
            found = _first_match(node, step)
            if found is None:
                return []
            path, node = path + (found,), node[found]
    return _select_last(node, steps[-1], path)


def _first_match(items: Any, step: Step) -> int | None:
    """Return the index of the first item of ``items`` matching ``step``, if any."""
    if isinstance(items, list):
        for index, item in enumerate(items):
            if step.matches(item):
                return index
    return None


def _select_last(node: Any, step: Step, path: Path) -> list[Match]:
    """Return the matches of the final step below ``node``."""
    if not isinstance(node, dict) or step.key not in node:
        return []
    value, path = node[step.key], path + (step.key,)
    if step.op is None or step.op == "[]":
        return [(path, value)]
    if not isinstance(value, list):
        return []
    return [(path + (i,), item) for i, item in enumerate(value) if step.matches(item)]


def selector_paths(steps: tuple[Step, ...], match: Path) -> list[Path]:
    """Return the paths of the selector keys that located ``match`` (read, so consumed)."""
    found: list[Path] = []
    depth = 0
    for step in steps:
        depth += 1
        if step.op in ("=", "^=") and len(step.sel) == 1 and depth < len(match):
            depth += 1
            found.append(match[:depth] + (step.sel[0],))
    return found


def format_path(root: str, path: Path) -> str:
    """Return ``path`` as a FHIRPath-style expression: ``Patient.identifier[0].value``."""
    text = root
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
