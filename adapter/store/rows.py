"""Children's entries read with SQLAlchemy Core into light records (``adapter.models.rows``):
the read, search, export and notification paths of ``Patient``.

One joined SELECT per entry (or per handful of entries): the child, its managing
organisation, names, carers, local identifiers (with their organisations) and involvements
(with theirs), the lists' product being a few rows per child. A page of many entries is read
by one SELECT of the children and one per list instead (``listed_rows``): the product repeats
every child's columns in each of its rows, which costs more than four more statements once a
page holds more than a few entries (``LISTED_FROM``). The statements are built once and run
on the session's connection, so SQLAlchemy's compiled cache serves them and no ORM object is
hydrated: measured on one entry of 4 rows of 132 columns, 93 µs in sqlite3 itself, 194 µs
through Core, 844 µs through the ORM (docs/scale.md "Reads"). Writes, history and the other
resource types keep the ORM records (``adapter.store.children``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    JSON,
    LABEL_STYLE_NONE,
    Select,
    Text,
    bindparam,
    cast,
    select,
)
from sqlalchemy.orm import Session, aliased

from adapter.db import built_once, driver_form
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

# From this many entries on, a page is read by one SELECT per table rather than the joined
# SELECT, whose rows are the product of each entry's lists, every one repeating the child's
# columns: measured on 1,000 demo children (docs/scale.md "Reads"), a page of 100 took half
# the CPU and half the time on both databases read per table, one entry twice as long
# (five statements instead of one), the two even at about 16 to 20 entries.
LISTED_FROM: Final = 16


@dataclass(frozen=True)
class Part:
    """Where one table's columns sit in the joined row, the record class they make, and its
    JSON columns (selected as their text, decoded here)."""

    cls: type[Row]
    start: int
    end: int
    json: tuple[str, ...]

    def make(self, row: Sequence[Any]) -> Any:
        """Return the record of this part of ``row`` (None when an outer join found none)."""
        values = row[self.start:self.end]
        if values[0] is None:  # the primary key: no such row
            return None
        record = self.cls(zip(self.cls.COLUMNS, values, strict=True))
        fields = record.__dict__
        for name in self.json:
            if fields[name] is not None:  # SQL NULL stays None, as the JSON type reads it
                fields[name] = json.loads(fields[name])
        return record


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


def _part_columns(cls: type[Row], entity: Any, start: int) -> tuple[list[Any], Part]:
    """Return the selected columns of ``entity`` in ``cls.COLUMNS`` order (JSON ones as
    their text) and the part they make at ``start``."""
    attributes = [getattr(entity, name) for name in cls.COLUMNS]
    json_names = tuple(name for name, attribute in zip(cls.COLUMNS, attributes, strict=True)
                       if isinstance(attribute.type, JSON))
    columns = [cast(attribute, Text) if isinstance(attribute.type, JSON) else attribute
               for attribute in attributes]
    return columns, Part(cls, start, start + len(columns), json_names)


@built_once
def _joined() -> tuple[Layout, Select[Any]]:
    """Return the layout of the joined row and the joined SELECT of entries (no condition
    yet), each table's columns in table order."""
    authority, local_org, involvement_org = (aliased(Organisation, name=name)
                                             for name in ("o1", "o2", "o3"))
    tables: list[tuple[type[Row], Any]] = [
        (ChildRow, Child), (OrganisationRow, authority), (NameRow, ChildName),
        (CarerRow, Carer), (LocalIdentifierRow, LocalIdentifier), (OrganisationRow, local_org),
        (InvolvementRow, Involvement), (OrganisationRow, involvement_org)]
    columns: list[Any] = []
    parts = []
    for cls, entity in tables:
        more, part = _part_columns(cls, entity, len(columns))
        columns += more
        parts.append(part)
    statement = (
        select(*columns)
        .set_label_style(LABEL_STYLE_NONE)
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


@built_once
def one_entry_by_id_statement() -> Select[Any]:
    """Return the joined SELECT of one entry by internal id (parameter ``cid``), which the
    search and its caller's visibility already chose."""
    return _joined()[1].where(Child.id == bindparam("cid"))


@dataclass(frozen=True)
class ListQuery:
    """One of an entry's lists (names, carers, local identifiers, involvements) selected for
    the entries of a page: its record part, the organisation part joined to it (if any), the
    ``ChildRow`` attribute it fills and the key its items are sorted by."""

    statement: Select[Any]
    part: Part
    organisation: Part | None
    attribute: str
    key: Callable[[Any], int]


@built_once
def _page_statements() -> tuple[Select[Any], Part, Part, tuple[ListQuery, ...]]:
    """Return the SELECT of a page's children with their managing organisations, its two
    parts, and one SELECT per list (parameter ``ids``: the children's internal ids)."""
    ids: Any = bindparam("ids", expanding=True)
    child_columns, child = _part_columns(ChildRow, Child, 0)
    authority = aliased(Organisation, name="o1")
    org_columns, org = _part_columns(OrganisationRow, authority, child.end)
    children = (select(*child_columns, *org_columns).set_label_style(LABEL_STYLE_NONE)
                .join(authority, authority.id == Child.managing_organisation_id)
                .where(Child.id.in_(ids)).order_by(Child.id))
    tables: list[tuple[type[Row], Any, str, Callable[[Any], int], bool]] = [
        (NameRow, ChildName, "names", _position, False),
        (CarerRow, Carer, "carers", _position, False),
        (LocalIdentifierRow, LocalIdentifier, "local_identifiers", _id, True),
        (InvolvementRow, Involvement, "involvements", _position, True)]
    lists = []
    for cls, entity, attribute, key, joined in tables:
        columns, part = _part_columns(cls, entity, 0)
        organisation = None
        statement = select(*columns)
        if joined:
            holder = aliased(Organisation, name="o2")
            more, organisation = _part_columns(OrganisationRow, holder, part.end)
            statement = select(*columns, *more).outerjoin(
                holder, holder.id == entity.organisation_id)
        statement = (statement.set_label_style(LABEL_STYLE_NONE)
                     .where(entity.child_id.in_(ids)))
        lists.append(ListQuery(statement, part, organisation, attribute, key))
    return children, child, org, tuple(lists)


def listed_rows(session: Session, ids: Sequence[int]) -> list[ChildRow]:
    """Return the entries with internal ids ``ids`` as records, in id order, read by one
    SELECT of the children and one per list (``_page_statements``)."""
    if not ids:
        return []
    statement, child_part, org_part, lists = _page_statements()
    connection = session.connection()
    wanted = {"ids": list(ids)}
    organisations: dict[int, OrganisationRow] = {}
    children: dict[int, ChildRow] = {}
    for row in connection.execute(statement, wanted).all():
        child = children[row[0]] = child_part.make(row)
        child.managing_organisation = _organisation(organisations, org_part, row)
    for query in lists:
        found: dict[int, list[Any]] = {key: [] for key in children}
        for row in connection.execute(query.statement, wanted).all():
            record = query.part.make(row)
            if query.organisation is not None:
                record.organisation = (_organisation(organisations, query.organisation, row)
                                       if row[query.organisation.start] is not None else None)
            found[record.child_id].append(record)
        for child_id, items in found.items():
            items.sort(key=query.key)
            setattr(children[child_id], query.attribute, items)
    return list(children.values())


def entry_rows(session: Session, resource_id: str, caller: Caller) -> ChildRow | None:
    """Return the entry with FHIR id ``resource_id`` as records, None when there is none
    for ``caller`` (archived for an ordinary caller); its SELECT runs on the driver's cursor
    (``DriverStatement``: a read by id is the hottest path)."""
    driver = driver_form(one_entry_statement(caller.has_right("admin")),
                         session.get_bind().dialect, "rid")
    found = grouped(driver.rows(session, {"rid": resource_id}))
    return found[0] if found else None


def entries_rows(session: Session, ids: Sequence[int]) -> list[ChildRow]:
    """Return the entries with internal ids ``ids`` as records, in id order: by the joined
    SELECT for a few, by one SELECT per table from ``LISTED_FROM`` entries on."""
    if not ids:
        return []
    if len(ids) >= LISTED_FROM:
        return listed_rows(session, ids)
    return joined_rows(session, ids)


def joined_rows(session: Session, ids: Sequence[int]) -> list[ChildRow]:
    """Return the entries with internal ids ``ids`` as records, in id order, read by the
    joined SELECT (``entries_statement``); one entry (a search by identifier's hit) on the
    driver's cursor, as a read by id (``one_entry_by_id_statement``)."""
    if not ids:
        return []
    if len(ids) == 1:
        driver = driver_form(one_entry_by_id_statement(), session.get_bind().dialect, "cid")
        return grouped(driver.rows(session, {"cid": ids[0]}))
    return grouped(session.connection().execute(entries_statement(), {"ids": list(ids)}).all())


def grouped(rows: Iterable[Sequence[Any]]) -> list[ChildRow]:
    """Return the entries of joined rows (one entry's rows together), each with its lists
    in the order of the ORM relationships.

    An organisation met again (an authority, a GP practice of many children) is the record
    made the first time, as the ORM's identity map shares it; nothing writes to it (the
    disclosure policy copies what it changes, ``ChildRow.only``)."""
    layout = _joined()[0]
    children: dict[int, ChildRow] = {}
    parts: dict[int, tuple[dict[int, Any], ...]] = {}
    organisations: dict[int, OrganisationRow] = {}
    for row in rows:
        child_id = row[layout.child.start]
        child = children.get(child_id)
        if child is None:
            child = children[child_id] = layout.child.make(row)
            child.managing_organisation = _organisation(organisations, layout.authority, row)
            parts[child_id] = ({}, {}, {}, {})
        names, carers, local_ids, involvements = parts[child_id]
        _add(names, layout.name, row)
        _add(carers, layout.carer, row)
        if _add(local_ids, layout.local_id, row):
            local_ids[row[layout.local_id.start]].organisation = \
                _organisation(organisations, layout.local_org, row)
        if _add(involvements, layout.involvement, row):
            involvements[row[layout.involvement.start]].organisation = \
                _organisation(organisations, layout.involvement_org, row)
    for child_id, child in children.items():
        names, carers, local_ids, involvements = parts[child_id]
        child.names = sorted(names.values(), key=_position)
        child.carers = sorted(carers.values(), key=_position)
        child.local_identifiers = sorted(local_ids.values(), key=_id)
        child.involvements = sorted(involvements.values(), key=_position)
    return list(children.values())


def _add(found: dict[int, Any], part: Part, row: Sequence[Any]) -> bool:
    """Add the record of ``part`` of ``row`` to ``found`` by id; return True when new."""
    key = row[part.start]
    if key is None or key in found:
        return False
    found[key] = part.make(row)
    return True


def _organisation(made: dict[int, OrganisationRow], part: Part,
                  row: Sequence[Any]) -> OrganisationRow:
    """Return the organisation of ``part`` of ``row``: the record in ``made`` by id, else a new
    one, kept there (an inner join or a non-null key of an outer join: there is one)."""
    key = row[part.start]
    found = made.get(key)
    if found is None:
        found = made[key] = part.make(row)
    return found


def _position(record: Any) -> int:
    """Return the list position of a name, carer or involvement."""
    return int(record.position)


def _id(record: Any) -> int:
    """Return the id of a local identifier (its list is in id order)."""
    return int(record.id)
