"""The stored entries of an import batch as canonical dicts, read with SQLAlchemy Core: one
query per table for the whole batch, no ORM objects. The dicts have exactly the shape of
``canonical_dump(child, meta=False)`` (a test proves it), so a record that says what is stored
is told "unchanged" without any unit-of-work; only changed entries are loaded as ORM objects
(``apply_child`` needs them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.models.base import Base
from adapter.models.canonical import (
    BOOLEAN_FIELDS,
    CARER_FIELDS,
    CHILD_FIELDS,
    CHILD_NAME_FIELDS,
    INVOLVEMENT_FIELDS,
    ORGANISATION_FIELDS,
    PRACTITIONER_FIELDS,
    Canonical,
)

TABLES: Final = Base.metadata.tables
# Child table -> the column its rows are ordered by within a child (the relationships' order_by).
PARTS: Final = (("child_name", "position"), ("carer", "position"),
                ("involvement", "position"), ("local_identifier", "id"))


@dataclass(frozen=True)
class StoredEntry:
    """What an import needs of a stored entry: its keys and state, and its canonical dict."""

    id: int
    version: int
    shielded: bool
    record_status: str
    authority_codes: frozenset[str]
    data: Canonical


def _fields(row: Mapping[Any, Any], names: Iterable[str]) -> Canonical:
    """Return the named columns of a row as ``canonical._fields`` gives them."""
    out: Canonical = {}
    for name in names:
        value = row[name]
        if name in BOOLEAN_FIELDS:
            value = bool(value)
        elif name == "given":
            value = list(value or ())
        out[name] = value
    return out


def _rows_by_child(session: Session, name: str, order: str,
                   child_ids: list[int]) -> dict[int, list[Any]]:
    """Return the rows of a part table for the given children, grouped and in order."""
    table = TABLES[name]
    grouped: dict[int, list[Any]] = {child_id: [] for child_id in child_ids}
    rows = session.execute(select(table).where(table.c.child_id.in_(child_ids))
                           .order_by(table.c.child_id, table.c[order])).mappings()
    for row in rows:
        grouped[row["child_id"]].append(row)
    return grouped


class _Directory:
    """Organisations and practitioners of a batch by id, as canonical dicts."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.organisations: dict[int, Canonical] = {}
        self.practitioners: dict[int, Canonical] = {}

    def load(self, organisation_ids: set[int], practitioner_ids: set[int]) -> None:
        """Read the organisations and practitioners (and their employers) in two queries
        each at most."""
        person = TABLES["practitioner"]
        people = list(session_rows(self.session, person, practitioner_ids))
        organisation_ids |= {row["organisation_id"] for row in people}
        for row in session_rows(self.session, TABLES["organisation"], organisation_ids):
            self.organisations[row["id"]] = _fields(row, ORGANISATION_FIELDS)
        for row in people:
            data = _fields(row, PRACTITIONER_FIELDS)
            data["organisation"] = self.organisations[row["organisation_id"]]
            self.practitioners[row["id"]] = data

    def involvement(self, row: Mapping[str, Any]) -> Canonical:
        """Return an involvement row as a canonical dict."""
        data = _fields(row, INVOLVEMENT_FIELDS)
        data["organisation"] = self.organisations[row["organisation_id"]]
        data["practitioner"] = self.practitioners.get(row["practitioner_id"]) \
            if row["practitioner_id"] is not None else None
        return data


def session_rows(session: Session, table: Any, ids: set[int]) -> Iterable[Any]:
    """Return the rows of ``table`` with these ids."""
    if not ids:
        return []
    return session.execute(select(table).where(table.c.id.in_(sorted(ids)))).mappings().all()


def load_stored(session: Session, contactpoint_ids: list[str]) -> dict[str, StoredEntry]:
    """Return the stored entries with these ContactPoint IDs, by ContactPoint ID."""
    child = TABLES["child"]
    children = session.execute(select(child).where(
        child.c.contactpoint_id.in_(contactpoint_ids))).mappings().all()
    if not children:
        return {}
    ids = [row["id"] for row in children]
    parts = {name: _rows_by_child(session, name, order, ids) for name, order in PARTS}
    directory = _Directory(session)
    directory.load(
        {row["managing_organisation_id"] for row in children}
        | {r["organisation_id"] for name in ("involvement", "local_identifier")
           for rows in parts[name].values() for r in rows},
        {r["practitioner_id"] for rows in parts["involvement"].values() for r in rows
         if r["practitioner_id"] is not None})
    return {row["contactpoint_id"]: _entry(row, parts, directory) for row in children}


def _entry(row: Mapping[Any, Any], parts: Mapping[str, Mapping[int, list[Any]]],
           directory: _Directory) -> StoredEntry:
    """Return one stored entry with its canonical dict."""
    child_id = row["id"]
    authority = directory.organisations[row["managing_organisation_id"]]
    data = _fields(row, CHILD_FIELDS)
    data["managing_organisation"] = authority
    data["names"] = [_fields(r, CHILD_NAME_FIELDS) for r in parts["child_name"][child_id]]
    data["local_identifiers"] = [
        {"organisation": directory.organisations[r["organisation_id"]], "value": r["value"]}
        for r in parts["local_identifier"][child_id]]
    data["carers"] = [_fields(r, CARER_FIELDS) for r in parts["carer"][child_id]]
    data["involvements"] = [directory.involvement(r) for r in parts["involvement"][child_id]]
    codes = frozenset(c for c in (authority["ods_code"], authority["urn"], authority["gss_code"])
                      if c)
    return StoredEntry(child_id, row["version"], bool(row["shielded"]), row["record_status"],
                       codes, data)
