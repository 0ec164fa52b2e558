"""Keyset paging of searches over stored rows: one page in internal-id order after the
search's cursor, over one kind of row or several kinds behind one resource type (a CareTeam is a
child's team or an eCAF team; a PractitionerRole an involvement, a member or a lead), so that
a page deep into a result starts with an index seek (FHIR R4 http.html#paging leaves the
cursor to the server: ours is ``encode_cursor`` of the last row's keys)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func
from sqlalchemy.orm import Session

from adapter.errors import BadRequest
from adapter.fhir.handlers import Page
from adapter.fhir.search import SearchRequest, decode_cursor, encode_cursor


def keyset_page(session: Session, query: Select[Any], id_column: Any, search: SearchRequest,
                render: Callable[[Any], dict[str, Any]]) -> Page:
    """Return one page of ``query`` in ``id_column`` order after the search's cursor."""
    if search.cursor:
        query = query.where(id_column > int(cursor_keys(search.cursor, 1)[0]))
    rows = list(session.scalars(query.order_by(id_column).limit(search.count + 1)).unique())
    more = len(rows) > search.count
    rows = rows[:search.count]
    cursor = encode_cursor(rows[-1].id) if more and rows else None
    return Page([render(row) for row in rows], [], cursor)


def cursor_keys(cursor: str, arity: int) -> list[str]:
    """Return the keys of a paging cursor whose last key is a row id.

    :raises BadRequest: not a cursor of this server.
    """
    keys = decode_cursor(cursor, arity)
    if not keys[-1].isdigit():
        raise BadRequest("_cursor is not a paging cursor of this search.", expression="_cursor")
    return keys


@dataclass(frozen=True)
class Kind:
    """One kind of record behind a resource type, searched as one part of a keyset page."""

    name: str
    query: Select[Any]
    id_column: Any
    render: Callable[[Any], dict[str, Any]]


def kinds_page(session: Session, kinds: list[Kind],
               search: SearchRequest) -> tuple[list[tuple[Kind, Any]], str | None]:
    """Return one page of rows over several kinds, each in id order, kind after kind; the
    cursor is (kind, last id), so that a page deep into the result starts with an index seek.

    :raises BadRequest: a cursor of another search.
    """
    start, after = 0, 0
    if search.cursor:
        name, last = cursor_keys(search.cursor, 2)
        names = [kind.name for kind in kinds]
        if name not in names:
            raise BadRequest("_cursor is not a paging cursor of this search.",
                             expression="_cursor")
        start, after = names.index(name), int(last)
    rows: list[tuple[Kind, Any]] = []
    for index in range(start, len(kinds)):
        kind = kinds[index]
        query = kind.query.where(kind.id_column > after) if index == start else kind.query
        limit = search.count + 1 - len(rows)
        rows += [(kind, row) for row in
                 session.scalars(query.order_by(kind.id_column).limit(limit)).unique()]
        if len(rows) > search.count:
            break
    more = len(rows) > search.count
    rows = rows[:search.count]
    cursor = encode_cursor(rows[-1][0].name, rows[-1][1].id) if more and rows else None
    return rows, cursor


def count_of(session: Session, query: Select[Any], id_column: Any) -> int:
    """Return how many rows ``query`` selects."""
    counted = query.with_only_columns(func.count(id_column)).order_by(None)
    return int(session.scalar(counted) or 0)
