"""A prefix match that the databases answer from an index (FHIR R4 search.html#string: a string
parameter matches the start of the value).

PostgreSQL: ``LIKE 'x%'``, served by the ``text_pattern_ops`` indexes of migration 0010 (a plain
b-tree serves ``LIKE`` only under the C collation). SQLite: ``GLOB 'x*'``, which is
case-sensitive like the normalised columns it is used on and which SQLite serves from a BINARY
index, as it does not ``LIKE`` (case-insensitive by default; sqlite.org/optoverview.html).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, String, func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, literal, literal_column

_GLOB_SPECIAL = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})
# The LIKE pattern of a value of three words or more (words of a normalised name are single
# spaces apart: adapter.models.canonical.normalise_name).
THREE_WORDS = "% % %"


class StartsWith(ColumnElement[bool]):
    """``expression`` starts with the literal ``prefix`` (matched exactly, case-sensitive)."""

    inherit_cache = True
    type = Boolean()
    # A comparison, not a boolean value: without this SQLAlchemy writes ``(... GLOB 'x*') = 1``
    # on SQLite (no native boolean), and SQLite serves no such term from an index.
    _is_implicitly_boolean = True

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


class AfterFirstWord(ColumnElement[str]):
    """``expression`` from its second word on (the whole of it when it has one word)."""

    inherit_cache = True
    type = String()

    def __init__(self, expression: Any) -> None:
        self.operand = expression


def after_first_word(expression: Any) -> AfterFirstWord:
    """Return ``expression`` from its second word on: the expression of the indexes
    ``ix_child_name_given_rest`` (migration 0015), written as they are (constants inline, so
    that PostgreSQL matches the index's expression)."""
    return AfterFirstWord(expression)


@compiles(AfterFirstWord)
def _compile_after_first_word(element: AfterFirstWord, compiler: SQLCompiler, **kw: Any) -> str:
    """PostgreSQL: ``strpos`` finds the first space."""
    operand = compiler.process(element.operand, **kw)
    return f"substr({operand}, strpos({operand}, ' ') + 1)"


@compiles(AfterFirstWord, "sqlite")
def _compile_after_first_word_sqlite(element: AfterFirstWord, compiler: SQLCompiler,
                                     **kw: Any) -> str:
    """SQLite: ``instr`` finds the first space."""
    operand = compiler.process(element.operand, **kw)
    return f"substr({operand}, instr({operand}, ' ') + 1)"


def has_three_words(expression: Any) -> Any:
    """Return the condition ``expression`` has three words or more: the predicate of the
    partial index ``ix_child_name_given_many`` (migration 0015), written as it is."""
    return expression.like(literal_column(f"'{THREE_WORDS}'"))


def contains_word_starting(expression: Any, prefix: str) -> Any:
    """Return the condition a word of ``expression`` after its first starts with ``prefix``."""
    return expression.like("% " + _like_pattern(prefix), escape="\\")


# How many leading letters of a normalised family name ``ix_child_name_family_walk`` keys
# (migration 0016).
FIRST_LETTERS = 3


def first_letters(expression: Any) -> Any:
    """Return the first ``FIRST_LETTERS`` characters of ``expression``: the expression of the
    index ``ix_child_name_family_walk`` (migration 0016), constants inline as it declares
    them (a bound parameter there is another expression, which no index serves)."""
    return func.substr(expression, literal_column("1"), literal_column(str(FIRST_LETTERS)))
