"""The condition "a column is one of these values", written for each database: a list of values
the caller holds (``one_of``) or the values a SELECT returns (``in_selected``). PostgreSQL takes
both as ``= ANY`` of an array (postgresql.org/docs/current/functions-comparisons.html), SQLite as
``IN``; why each is faster that way is told at each helper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Boolean, CompoundSelect, Select, any_, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement


def one_of(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """Return the condition ``column`` is one of ``values``: on PostgreSQL ``= ANY`` of one
    array parameter (an ``IN`` list of a batch's ids is rendered, and parsed by psycopg,
    value by value on every execution), elsewhere ``IN``."""
    condition: ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        condition = column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    else:
        condition = column.in_(values)
    return condition


class InSelected(ColumnElement[bool]):
    """``expression`` is one of the values ``selected`` returns."""

    inherit_cache = True
    type = Boolean()
    # A comparison, not a boolean value (adapter/store/prefix.py ``StartsWith``).
    _is_implicitly_boolean = True

    def __init__(self, expression: Any, selected: Select[Any] | CompoundSelect[Any]) -> None:
        self.operand = expression
        self.selected = selected


def in_selected(expression: Any, selected: Select[Any] | CompoundSelect[Any]) -> InSelected:
    """Return the condition ``expression`` is among the values ``selected`` returns, written
    so that each database finds the values first, from their index, and then walks the page's
    rows in ``expression``'s order, stopping at the page's end."""
    return InSelected(expression, selected)


@compiles(InSelected)
def _compile_in_selected(element: InSelected, compiler: SQLCompiler, **kw: Any) -> str:
    """PostgreSQL: ``= ANY (ARRAY (...))``, an InitPlan computed once: the primary key's
    index then returns the rows in order, and the page stops at its end
    (postgresql.org/docs/current/functions-comparisons.html). An ``IN (...)`` there becomes a
    join, which for a page in id order PostgreSQL plans as a walk of the whole primary key
    merged with the matches."""
    selected = compiler.process(element.selected.scalar_subquery(), **kw)
    return f"{compiler.process(element.operand, **kw)} = ANY (ARRAY{selected})"


@compiles(InSelected, "sqlite")
def _compile_in_selected_sqlite(element: InSelected, compiler: SQLCompiler, **kw: Any) -> str:
    """SQLite: ``IN (...)``, whose values it gathers into a sorted list first and walks in
    order (sqlite.org/optoverview.html "The IN operator")."""
    selected = compiler.process(element.selected.scalar_subquery(), **kw)
    return f"{compiler.process(element.operand, **kw)} IN {selected}"
