"""A prefix match that the databases answer from an index (FHIR R4 search.html#string: a string
parameter matches the start of the value).

PostgreSQL: ``LIKE 'x%'``, served by the ``text_pattern_ops`` indexes of migration 0010 (a plain
b-tree serves ``LIKE`` only under the C collation). SQLite: ``GLOB 'x*'``, which is
case-sensitive like the normalised columns it is used on and which SQLite serves from a BINARY
index, as it does not ``LIKE`` (case-insensitive by default; sqlite.org/optoverview.html).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, literal

_GLOB_SPECIAL = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})


class StartsWith(ColumnElement[bool]):
    """``expression`` starts with the literal ``prefix`` (matched exactly, case-sensitive)."""

    inherit_cache = True
    type = Boolean()

    def __init__(self, expression: Any, prefix: str) -> None:
        self.operand = expression
        self.prefix = prefix


def starts_with(expression: Any, prefix: str) -> StartsWith:
    """Return the condition ``expression`` starts with ``prefix``."""
    return StartsWith(expression, prefix)


def _like_pattern(prefix: str) -> str:
    """Return ``prefix`` as a LIKE pattern (``\\`` escapes ``%``, ``_`` and itself)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


@compiles(StartsWith)
def _compile_like(element: StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    """PostgreSQL (and any other database): LIKE with an escape character."""
    pattern = compiler.process(literal(_like_pattern(element.prefix)), **kw)
    return f"({compiler.process(element.operand, **kw)} LIKE {pattern} ESCAPE '\\')"


@compiles(StartsWith, "sqlite")
def _compile_glob(element: StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    """SQLite: GLOB, with its wildcards bracketed."""
    pattern = compiler.process(literal(element.prefix.translate(_GLOB_SPECIAL) + "*"), **kw)
    return f"({compiler.process(element.operand, **kw)} GLOB {pattern})"
