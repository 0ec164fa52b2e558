"""Children's entries read with SQLAlchemy Core into light records (``adapter.models.rows``):
the read, search, export and notification paths of ``Patient``.

One joined SELECT per entry (or per page of entries): the child, its managing organisation,
names, carers, local identifiers (with their organisations) and involvements (with theirs), the
lists' product being a few rows per child. The statement is built once per visibility and run
on the session's connection, so SQLAlchemy's compiled cache serves it and no ORM object is
hydrated: measured on one entry of 4 rows of 132 columns, 93 µs in sqlite3 itself, 194 µs
through Core, 844 µs through the ORM (docs/scale.md "Reads"). Writes, history and the other
resource types keep the ORM records (``adapter.store.children``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row as SqlRow
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session, aliased

from adapter.db import built_once
from adapter.models import Carer, Child, ChildName, Involvement, LocalIdentifier, Organisation
from adapter.models.rows import (
    CarerRow,
    ChildRow,
    InvolvementRow,
    LocalIdentifierRow,
    NameRow,
    OrganisationRow,
    Row,
)
from adapter.security.caller import Caller


@dataclass(frozen=True)
class Part:
    """Where one table's columns sit in the joined row, and the record class they make."""

    cls: type[Row]
    start: int
    end: int

    def make(self, row: SqlRow[Any]) -> Any:
        """Return the record of this part of ``row`` (None when an outer join found none)."""
        values = row[self.start:self.end]
        if values[0] is None:  # the primary key: no such row
            return None
        return self.cls(zip(self.cls.COLUMNS, values, strict=True))


@dataclass(frozen=True)
class Layout:
    """The parts of the joined row, in its column order."""

    child: Part
    authority: Part
    name: Part
    carer: Part
    local_id: Part
    local_org: Part
    involvement: Part
    involvement_org: Part


@built_once
def _joined() -> tuple[Layout, Select[Any]]:
    """Return the layout of the joined row and the joined SELECT of entries (no condition
    yet), each table's columns in table order."""
    authority, local_org, involvement_org = (aliased(Organisation) for _ in range(3))
    tables: list[tuple[type[Row], Any]] = [
        (ChildRow, Child), (OrganisationRow, authority), (NameRow, ChildName),
        (CarerRow, Carer), (LocalIdentifierRow, LocalIdentifier), (OrganisationRow, local_org),
        (InvolvementRow, Involvement), (OrganisationRow, involvement_org)]
    columns: list[Any] = []
    parts = []
    for cls, entity in tables:
        start = len(columns)
        columns += [getattr(entity, name) for name in cls.COLUMNS]
        parts.append(Part(cls, start, len(columns)))
    statement = (
        select(*columns)
        .join(authority, authority.id == Child.managing_organisation_id)
        .outerjoin(ChildName, ChildName.child_id == Child.id)
        .outerjoin(Carer, Carer.child_id == Child.id)
        .outerjoin(LocalIdentifier, LocalIdentifier.child_id == Child.id)
        .outerjoin(local_org, local_org.id == LocalIdentifier.organisation_id)
        .outerjoin(Involvement, Involvement.child_id == Child.id)
        .outerjoin(involvement_org, involvement_org.id == Involvement.organisation_id))
    return Layout(*parts), statement


@built_once
def one_entry_statement(admin: bool) -> Select[Any]:
    """Return the joined SELECT of one entry by FHIR id (parameter ``rid``), built once per
    visibility: archived entries for administrators only (``visible_to`` of the disclosure
    policy, docs/domain.md "Retention")."""
    statement = _joined()[1]
    live = Child.id.is_not(None) if admin else Child.record_status == "live"
    return statement.where(Child.resource_id == bindparam("rid"), live)


@built_once
def entries_statement() -> Select[Any]:
    """Return the joined SELECT of the entries of a page (parameter ``ids``: internal ids the
    search and its caller's visibility already chose), in id order."""
    statement = _joined()[1]
    return statement.where(Child.id.in_(bindparam("ids", expanding=True))).order_by(Child.id)


def entry_rows(session: Session, resource_id: str, caller: Caller) -> ChildRow | None:
    """Return the entry with FHIR id ``resource_id`` as records, None when there is none
    for ``caller`` (archived for an ordinary caller)."""
    statement = one_entry_statement(caller.has_right("admin"))
    found = grouped(session.connection().execute(statement, {"rid": resource_id}))
    return found[0] if found else None


def entries_rows(session: Session, ids: Sequence[int]) -> list[ChildRow]:
    """Return the entries with internal ids ``ids`` as records, in id order."""
    if not ids:
        return []
    return grouped(session.connection().execute(entries_statement(), {"ids": list(ids)}))


def grouped(rows: Iterable[SqlRow[Any]]) -> list[ChildRow]:
    """Return the entries of joined rows (one entry's rows together), each with its lists
    in the order of the ORM relationships."""
    layout = _joined()[0]
    children: dict[int, ChildRow] = {}
    parts: dict[int, tuple[dict[int, Any], ...]] = {}
    for row in rows:
        child_id = row[layout.child.start]
        child = children.get(child_id)
        if child is None:
            child = children[child_id] = layout.child.make(row)
            child.managing_organisation = layout.authority.make(row)
            parts[child_id] = ({}, {}, {}, {})
        names, carers, local_ids, involvements = parts[child_id]
        _add(names, layout.name, row)
        _add(carers, layout.carer, row)
        if _add(local_ids, layout.local_id, row):
            local_ids[row[layout.local_id.start]].organisation = layout.local_org.make(row)
        if _add(involvements, layout.involvement, row):
            involvements[row[layout.involvement.start]].organisation = \
                layout.involvement_org.make(row)
    for child_id, child in children.items():
        names, carers, local_ids, involvements = parts[child_id]
        child.names = sorted(names.values(), key=_position)
        child.carers = sorted(carers.values(), key=_position)
        child.local_identifiers = sorted(local_ids.values(), key=_id)
        child.involvements = sorted(involvements.values(), key=_position)
    return list(children.values())


def _add(found: dict[int, Any], part: Part, row: SqlRow[Any]) -> bool:
    """Add the record of ``part`` of ``row`` to ``found`` by id; return True when new."""
    key = row[part.start]
    if key is None or key in found:
        return False
    found[key] = part.make(row)
    return True


def _position(record: Any) -> int:
    """Return the list position of a name, carer or involvement."""
    return int(record.position)


def _id(record: Any) -> int:
    """Return the id of a local identifier (its list is in id order)."""
    return int(record.id)
