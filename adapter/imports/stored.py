"""The stored entries of an import batch as canonical dicts, read with SQLAlchemy Core: one
query per table for the whole batch, no ORM objects. The dicts have exactly the shape of
``canonical_dump(child, meta=False)`` (a test proves it), so a record that says what is stored
is told "unchanged" without any unit-of-work; only changed entries are loaded as ORM objects
(``apply_child`` needs them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from sqlalchemy import Table, select
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
from adapter.store.membership import one_of

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


class _Columns:
    """Reads named columns of a table's rows (selected whole, as tuples) into canonical dict
    fields as ``canonical._fields`` gives them: booleans as bool, ``given`` as a list."""

    def __init__(self, table: Table, names: Iterable[str]) -> None:
        positions = {column.key: index for index, column in enumerate(table.c)}
        self.names = tuple(names)
        self.get = itemgetter(*(positions[name] for name in self.names))
        self.booleans = tuple(name for name in self.names if name in BOOLEAN_FIELDS)
        self.given = "given" in self.names

    def __call__(self, row: Sequence[Any]) -> Canonical:
        """Return the fields of one row."""
        out: Canonical = dict(zip(self.names, self.get(row), strict=True))
        for name in self.booleans:
            out[name] = bool(out[name])
        if self.given:
            out["given"] = list(out["given"] or ())
        return out


def _position(table: Table, name: str) -> int:
    """Return the position of column ``name`` in a row of ``select(table)``."""
    return list(table.c.keys()).index(name)


CHILD: Final = TABLES["child"]
ORGANISATION: Final = TABLES["organisation"]
PRACTITIONER: Final = TABLES["practitioner"]
CHILD_COLUMNS: Final = _Columns(CHILD, CHILD_FIELDS)
ORGANISATION_COLUMNS: Final = _Columns(ORGANISATION, ORGANISATION_FIELDS)
PRACTITIONER_COLUMNS: Final = _Columns(PRACTITIONER, PRACTITIONER_FIELDS)
NAME_COLUMNS: Final = _Columns(TABLES["child_name"], CHILD_NAME_FIELDS)
CARER_COLUMNS: Final = _Columns(TABLES["carer"], CARER_FIELDS)
INVOLVEMENT_COLUMNS: Final = _Columns(TABLES["involvement"], INVOLVEMENT_FIELDS)
# Positions of the keys read from the rows (ids, links, state); every table's id comes first.
ID: Final = 0
if any(_position(TABLES[name], "id") != ID for name in (
        "child", "organisation", "practitioner", *(part for part, _ in PARTS))):
    raise RuntimeError("entry_stored expects every table's id column first")
CHILD_AT: Final = {name: _position(CHILD, name) for name in (
    "contactpoint_id", "managing_organisation_id", "version", "shielded", "record_status")}
PART_CHILD_ID: Final = {name: _position(TABLES[name], "child_id") for name, _ in PARTS}
ORG_ID_OF: Final = {name: _position(TABLES[name], "organisation_id")
                    for name in ("involvement", "local_identifier", "practitioner")}
PRACTITIONER_ID: Final = _position(TABLES["involvement"], "practitioner_id")
VALUE: Final = _position(TABLES["local_identifier"], "value")


def _rows_by_child(session: Session, name: str, order: str,
                   child_ids: list[int]) -> dict[int, list[Any]]:
    """Return the rows of a part table for the given children, grouped and in order."""
    table = TABLES[name]
    at = PART_CHILD_ID[name]
    grouped: dict[int, list[Any]] = {child_id: [] for child_id in child_ids}
    rows = session.connection().execute(
        select(table).where(one_of(session, table.c.child_id, child_ids))
        .order_by(table.c.child_id, table.c[order]))
    for row in rows:
        grouped[row[at]].append(row)
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
        people = list(session_rows(self.session, PRACTITIONER, practitioner_ids))
        employer = ORG_ID_OF["practitioner"]
        # A practitioner known only by national numbers has no employer here (README
        # "Identifiers").
        organisation_ids |= {row[employer] for row in people if row[employer] is not None}
        for row in session_rows(self.session, ORGANISATION, organisation_ids):
            self.organisations[row[ID]] = ORGANISATION_COLUMNS(row)
        national = self._national_identifiers([row[ID] for row in people
                                                if row[employer] is None])
        for row in people:
            data = PRACTITIONER_COLUMNS(row)
            data["organisation"] = None if row[employer] is None \
                else self.organisations[row[employer]]
            if row[employer] is None:  # its key (canonical.practitioner_key) is its numbers
                data["identifiers"] = national.get(row[ID], [])
            self.practitioners[row[ID]] = data

    def _national_identifiers(self, practitioner_ids: list[int]) -> dict[int, list[Canonical]]:
        """Return the national identifiers of these practitioners, sorted as
        ``canonical.practitioner_dump`` lists them."""
        if not practitioner_ids:
            return {}
        table = TABLES["practitioner_identifier"]
        found: dict[int, list[Canonical]] = {}
        for owner, system, value in self.session.connection().execute(
                select(table.c.practitioner_id, table.c.system, table.c.value)
                .where(one_of(self.session, table.c.practitioner_id, practitioner_ids))
                .order_by(table.c.practitioner_id, table.c.system, table.c.value)):
            found.setdefault(owner, []).append({"system": system, "value": value})
        return found

    def involvement(self, row: Sequence[Any]) -> Canonical:
        """Return an involvement row as a canonical dict."""
        data = INVOLVEMENT_COLUMNS(row)
        data["organisation"] = self.organisations[row[ORG_ID_OF["involvement"]]]
        practitioner_id = row[PRACTITIONER_ID]
        data["practitioner"] = None if practitioner_id is None \
            else self.practitioners.get(practitioner_id)
        return data


def session_rows(session: Session, table: Any, ids: set[int]) -> Sequence[Any]:
    """Return the rows of ``table`` with these ids (as tuples, in ``select(table)`` order)."""
    if not ids:
        return []
    return session.connection().execute(
        select(table).where(one_of(session, table.c.id, sorted(ids)))).all()


def load_stored(session: Session, contactpoint_ids: list[str]) -> dict[str, StoredEntry]:
    """Return the stored entries with these ContactPoint IDs, by ContactPoint ID."""
    children = session.connection().execute(select(CHILD).where(
        one_of(session, CHILD.c.contactpoint_id, contactpoint_ids))).all()
    if not children:
        return {}
    ids = [row[ID] for row in children]
    parts = {name: _rows_by_child(session, name, order, ids) for name, order in PARTS}
    directory = _Directory(session)
    directory.load(
        {row[CHILD_AT["managing_organisation_id"]] for row in children}
        | {r[ORG_ID_OF[name]] for name in ("involvement", "local_identifier")
           for rows in parts[name].values() for r in rows},
        {r[PRACTITIONER_ID] for rows in parts["involvement"].values() for r in rows
         if r[PRACTITIONER_ID] is not None})
    return {row[CHILD_AT["contactpoint_id"]]: _entry(row, parts, directory)
            for row in children}


def _entry(row: Sequence[Any], parts: Mapping[str, Mapping[int, list[Any]]],
           directory: _Directory) -> StoredEntry:
    """Return one stored entry with its canonical dict."""
    child_id = row[ID]
    authority = directory.organisations[row[CHILD_AT["managing_organisation_id"]]]
    data = CHILD_COLUMNS(row)
    data["managing_organisation"] = authority
    data["names"] = [NAME_COLUMNS(r) for r in parts["child_name"][child_id]]
    issuer = ORG_ID_OF["local_identifier"]
    data["local_identifiers"] = [
        {"organisation": directory.organisations[r[issuer]], "value": r[VALUE]}
        for r in parts["local_identifier"][child_id]]
    data["carers"] = [CARER_COLUMNS(r) for r in parts["carer"][child_id]]
    data["involvements"] = [directory.involvement(r) for r in parts["involvement"][child_id]]
    codes = frozenset(c for c in (authority["ods_code"], authority["urn"], authority["gss_code"])
                      if c)
    return StoredEntry(child_id, row[CHILD_AT["version"]], bool(row[CHILD_AT["shielded"]]),
                       row[CHILD_AT["record_status"]], codes, data)
