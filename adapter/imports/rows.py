"""The bulk path of a directory import: new directory entries inserted with one DB-API
``executemany`` per table and batch (the statement compiled once by SQLAlchemy, the values
converted column by column with its bind processors; the children's ids allocated up front, so
no ``RETURNING`` row by row) instead of the ORM's unit of work, with the organisations and
practitioners they name resolved by natural key once per batch (one query per code column),
created or brought up to date as ``apply_child`` does
(``adapter.store.records.resolve_organisation`` / ``resolve_practitioner``). A record whose
descriptions would change a shared record its caller does not own never gets here: the
write-authority policy refuses it first, comparing them with the rows ``SharedRows`` loads
(``adapter.security.policy.authority``).

Rows get the same derived values as the ORM path: FHIR ids from natural keys
(``adapter.identity``), search keys of names, the retention date, version 1; and with them the
outbox event of each new child (``adapter.models.notify``: a change and its event commit
together) and its audit record (``adapter.security.audit``: one per child written).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Boolean, Table, func, insert, select, text, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from adapter import identity
from adapter.identity import ORGANISATION_CODES
from adapter.models.base import Base, utcnow
from adapter.models.canonical import (
    CARER_FIELDS,
    CHILD_FIELDS,
    CHILD_NAME_FIELDS,
    INVOLVEMENT_FIELDS,
    ORGANISATION_FIELDS,
    PRACTITIONER_FIELDS,
    Canonical,
    OrganisationKey,
    PractitionerKey,
    normalise_name,
    organisation_key,
)
from adapter.models.notify import DIRECTORY_TOPIC
from adapter.retention import retention_date
from adapter.security.caller import Caller
from adapter.security.policy import Described

ORG: Final = Base.metadata.tables["organisation"]
PERSON: Final = Base.metadata.tables["practitioner"]
CHILD: Final = Base.metadata.tables["child"]
EVENT: Final = Base.metadata.tables["event"]
AUDIT: Final = Base.metadata.tables["audit_record"]
LOOKUP_CHUNK: Final = 500


def table(name: str) -> Table:
    """Return the table ``name`` of the canonical model."""
    return Base.metadata.tables[name]


def practitioner_key(data: Mapping[str, Any],
                     org_key: Callable[[Any], OrganisationKey] = organisation_key,
                     ) -> PractitionerKey:
    """Return a practitioner dict's natural key: the employer's key (made by ``org_key``: a
    batch's ``BatchKeys.organisation``) and the local id."""
    return org_key(data["organisation"]), str(data["local_id"])


def involvement_key(data: Mapping[str, Any],
                    org_key: Callable[[Any], OrganisationKey] = organisation_key) -> str:
    """Return the natural key of an involvement dict, as ``records.part_key`` makes it from
    an Involvement: role, organisation code (made by ``org_key``), practitioner's local id,
    start date."""
    return identity.involvement_key(data["role"], org_key(data["organisation"])[1],
                                    identity.practitioner_dict_key_text(data["practitioner"]),
                                    data["period_start"])


class BatchKeys:
    """The natural keys of the organisations, practitioners and involvements of one batch's
    canonical dicts, each made once per dict: a new entry's organisation is keyed by the
    write-authority check, the look-up, its practitioners' and involvements' keys and the
    rows' ids (about twenty times a record). A dict is remembered with its key, so that its
    ``id`` stays its own while the batch is applied; the dicts are not changed meanwhile
    (the import reads them only)."""

    def __init__(self) -> None:
        self._organisations: dict[int, tuple[Canonical, OrganisationKey]] = {}
        self._involvements: dict[int, tuple[Canonical, str]] = {}

    def organisation(self, data: Canonical) -> OrganisationKey:
        """Return an organisation dict's natural key (``organisation_key``)."""
        found = self._organisations.get(id(data))
        if found is None:
            found = self._organisations[id(data)] = (data, organisation_key(data))
        return found[1]

    def practitioner(self, data: Canonical) -> PractitionerKey:
        """Return a practitioner dict's natural key (``practitioner_key``)."""
        return practitioner_key(data, self.organisation)

    def involvement(self, data: Canonical) -> str:
        """Return an involvement dict's natural key (``involvement_key``)."""
        found = self._involvements.get(id(data))
        if found is None:
            found = self._involvements[id(data)] = (data, involvement_key(data, self.organisation))
        return found[1]


def _without_practitioner_key(item: Canonical) -> tuple[Any, ...]:
    """Return what identifies an involvement (or a team member) apart from its
    practitioner."""
    return item["role"], organisation_key(item["organisation"]), item.get("period_start")


def national_only(practitioner: Canonical | None) -> bool:
    """Return True for a stored practitioner known only by national numbers, whom the
    directory XML cannot name (it has no employer's staff id: schemas/xml/README.md)."""
    return practitioner is not None and practitioner["local_id"] is None


def with_national_only_practitioners(incoming: list[Canonical],
                                     stored: list[Canonical]) -> list[Canonical]:
    """Return ``incoming`` involvements (or team members) with the stored practitioner put
    back into each that names none where the stored one names a practitioner known only by
    national numbers: a record that leaves the practitioner out says nothing of them, and a
    record read and posted back changes nothing."""
    kept = {_without_practitioner_key(item): item["practitioner"] for item in stored
            if national_only(item["practitioner"])}
    if not kept:
        return incoming
    return [{**item, "practitioner": kept[_without_practitioner_key(item)]}
            if item["practitioner"] is None and _without_practitioner_key(item) in kept
            else item for item in incoming]


def entry_retention(data: Mapping[str, Any]) -> Any:
    """Return the retention date the rules give an entry (``apply_child`` recomputes it)."""
    return retention_date(data["birth_date"], data["death_date"], data["extended_retention"])


def organisations_of(data: Canonical) -> Iterable[Canonical]:
    """Yield every organisation an entry dict names (with practitioners' employers)."""
    yield data["managing_organisation"]
    for item in data["local_identifiers"]:
        yield item["organisation"]
    for involvement in data["involvements"]:
        yield involvement["organisation"]
        if involvement["practitioner"] is not None:
            yield involvement["practitioner"]["organisation"]


def practitioners_of(data: Canonical) -> Iterable[Canonical]:
    """Yield every practitioner an entry dict names."""
    for involvement in data["involvements"]:
        if involvement["practitioner"] is not None:
            yield involvement["practitioner"]


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    """Yield ``values`` in chunks small enough for an ``IN`` list."""
    for start in range(0, len(values), LOOKUP_CHUNK):
        yield values[start:start + LOOKUP_CHUNK]


def stored_organisations(session: Session, keys: Iterable[OrganisationKey],
                         ) -> dict[OrganisationKey, Any]:
    """Return the stored rows of organisations by natural key (one query per code column
    and chunk)."""
    wanted = set(keys)
    found: dict[OrganisationKey, Any] = {}
    for scheme, column in ORGANISATION_CODES:
        codes = sorted(code for kind, code in wanted if kind == scheme)
        for chunk in _chunks(codes):
            rows = session.execute(select(ORG).where(ORG.c[column].in_(chunk)))
            found.update({(scheme, row[column]): row for row in rows.mappings()})
    return found


# --- shared records a record describes (the write-authority policy compares them) -----------

def _described_part(where: str, part: Mapping[str, Any]) -> Iterator[Described]:
    """Yield the organisation and practitioner an involvement, team member or lead names."""
    yield Described(f"{where}/Organisation", "organisation", part["organisation"])
    person = part["practitioner"]
    if person is None:
        return
    if person["organisation"] is not part["organisation"]:
        yield Described(f"{where}/Practitioner/Organisation", "organisation",
                        person["organisation"])
    yield Described(f"{where}/Practitioner", "practitioner", person)


def described_in_entry(data: Canonical) -> Iterator[Described]:
    """Yield every organisation and practitioner a directory entry describes, with its path."""
    yield Described("DirectoryEntry/ManagingAuthority", "organisation",
                    data["managing_organisation"])
    for index, item in enumerate(data["local_identifiers"], start=1):
        yield Described(f"DirectoryEntry/LocalIdentifier[{index}]/Organisation",
                        "organisation", item["organisation"])
    for index, involvement in enumerate(data["involvements"], start=1):
        yield from _described_part(f"DirectoryEntry/Involvement[{index}]", involvement)


def described_in_assessment(data: Canonical) -> Iterator[Described]:
    """Yield every organisation and practitioner an assessment reference describes (its
    child's local identifiers only find the child: they are not written)."""
    yield from _described_part("AssessmentReference/LeadProfessional", {
        "organisation": data["lead_organisation"], "practitioner": data["lead_practitioner"]})
    for index, member in enumerate(data["members"], start=1):
        yield from _described_part(f"AssessmentReference/TeamMember[{index}]", member)


class SharedRows:
    """The stored organisations and practitioners that a batch of records describes, as
    column mappings, loaded in a few queries (``adapter.security.policy.StoredShared``)."""

    def __init__(self, session: Session, described: Iterable[Described]) -> None:
        items = list(described)
        people = [item.data for item in items if item.kind == "practitioner"]
        organisations = [item.data for item in items if item.kind == "organisation"]
        self.organisations = stored_organisations(session, {organisation_key(org) for org in (
            *organisations, *(person["organisation"] for person in people))})
        self.practitioners: dict[tuple[int, str], Any] = {}
        employers = sorted({row["id"] for row in self.organisations.values()})
        local_ids = sorted({str(person["local_id"]) for person in people})
        for chunk in _chunks(local_ids):
            if employers:
                rows = session.execute(select(PERSON).where(
                    PERSON.c.organisation_id.in_(employers), PERSON.c.local_id.in_(chunk)))
                self.practitioners.update({(row["organisation_id"], row["local_id"]): row
                                           for row in rows.mappings()})

    def organisation(self, described: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Return the stored organisation with a description's natural key, or None."""
        found: Mapping[str, Any] | None = self.organisations.get(organisation_key(described))
        return found

    def practitioner(self, described: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Return the stored practitioner (employer and staff id) of a description, or None."""
        employer = self.organisation(described["organisation"])
        if employer is None:
            return None
        found: Mapping[str, Any] | None = self.practitioners.get(
            (employer["id"], str(described["local_id"])))
        return found


@dataclass
class Organisations:
    """The organisations of one batch by natural key: their ids and FHIR ids."""

    session: Session
    ids: dict[OrganisationKey, int] = field(default_factory=dict)
    resource_ids: dict[OrganisationKey, str] = field(default_factory=dict)
    keys: BatchKeys = field(default_factory=BatchKeys)

    def resolve(self, described: Iterable[Canonical]) -> None:
        """Find, create or update every organisation described (the last description of a
        natural key wins, as when records are applied one after the other)."""
        wanted = {self.keys.organisation(data): data for data in described}
        stored = self._stored(wanted)
        fresh = [key for key in wanted if key not in stored]
        for key, row in stored.items():
            self.ids[key], self.resource_ids[key] = row["id"], row["resource_id"]
            self._refresh(row, wanted[key])
        self._insert(fresh, wanted)

    def _stored(self, wanted: Mapping[OrganisationKey, Canonical]) -> dict[OrganisationKey,
                                                                              Any]:
        """Return the stored rows of the wanted organisations, by natural key."""
        return stored_organisations(self.session, wanted)

    def _refresh(self, row: Mapping[str, Any], data: Canonical) -> None:
        """Bring a stored organisation up to date with the details a record gives (a detail
        the record leaves out is kept, as ``resolve_organisation`` does)."""
        changes = {name: value for name in ORGANISATION_FIELDS
                   if (value := data[name]) is not None and row[name] != value}
        if changes:
            self.session.execute(update(ORG).where(ORG.c.id == row["id"]).values(
                **changes, version=ORG.c.version + 1, last_updated=utcnow()))

    def _insert(self, fresh: list[OrganisationKey],
                wanted: Mapping[OrganisationKey, Canonical]) -> None:
        """Create the organisations not stored yet."""
        if not fresh:
            return
        rows = [{**{name: wanted[key][name] for name in ORGANISATION_FIELDS},
                 "resource_id": identity.organisation_id(key[1])} for key in fresh]
        ids = self.session.execute(insert(ORG).returning(ORG.c.id, sort_by_parameter_order=True),
                                   rows).scalars().all()
        for key, row, new_id in zip(fresh, rows, ids, strict=True):
            self.ids[key], self.resource_ids[key] = new_id, row["resource_id"]

    def id_of(self, data: Canonical) -> int:
        """Return the id of a resolved organisation."""
        return self.ids[self.keys.organisation(data)]


@dataclass
class Practitioners:
    """The practitioners of one batch by natural key (employer's key, local id): their ids."""

    session: Session
    organisations: Organisations
    ids: dict[PractitionerKey, int] = field(default_factory=dict)

    def resolve(self, described: Iterable[Canonical]) -> None:
        """Find, create or update every practitioner described (the last description wins;
        every column is taken from it, as ``resolve_practitioner`` does)."""
        wanted = {self.organisations.keys.practitioner(data): data for data in described}
        stored = self._stored(wanted)
        for key, row in stored.items():
            self.ids[key] = row["id"]
            changes = {name: wanted[key][name] for name in PRACTITIONER_FIELDS
                       if row[name] != wanted[key][name]}
            if changes:
                self.session.execute(update(PERSON).where(PERSON.c.id == row["id"]).values(
                    **changes, version=PERSON.c.version + 1, last_updated=utcnow()))
        self._insert([key for key in wanted if key not in stored], wanted)

    def _stored(self, wanted: Mapping[PractitionerKey, Canonical]) -> dict[PractitionerKey, Any]:
        """Return the stored rows of the wanted practitioners, by natural key."""
        by_org = {self.organisations.ids[org]: org for org, _ in wanted}
        found: dict[PractitionerKey, Any] = {}
        for chunk in _chunks(sorted({local_id for _, local_id in wanted})):
            rows = self.session.execute(select(PERSON).where(
                PERSON.c.organisation_id.in_(list(by_org)), PERSON.c.local_id.in_(chunk)))
            for row in rows.mappings():
                key = (by_org[row["organisation_id"]], row["local_id"])
                if key in wanted:
                    found[key] = row
        return found

    def _insert(self, fresh: list[PractitionerKey],
                wanted: Mapping[PractitionerKey, Canonical]) -> None:
        """Create the practitioners not stored yet."""
        if not fresh:
            return
        rows = [{**{name: wanted[key][name] for name in PRACTITIONER_FIELDS},
                 "organisation_id": self.organisations.ids[key[0]],
                 "resource_id": identity.practitioner_id(key[0][1], key[1])}
                for key in fresh]
        ids = self.session.execute(insert(PERSON).returning(
            PERSON.c.id, sort_by_parameter_order=True), rows).scalars().all()
        self.ids.update(zip(fresh, ids, strict=True))

    def id_of(self, data: Canonical | None) -> int | None:
        """Return the id of a resolved practitioner (None for none)."""
        return None if data is None else self.ids[self.organisations.keys.practitioner(data)]


@dataclass
class NewEntries:
    """The rows of a batch of new entries, table by table."""

    organisations: Organisations
    practitioners: Practitioners
    now: dt.datetime = field(default_factory=utcnow)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {
        name: [] for name in ("child_name", "carer", "involvement", "local_identifier")})

    def child_row(self, data: Canonical) -> dict[str, Any]:
        """Return the child row of an entry dict."""
        cpid = data["contactpoint_id"]
        row = {name: data[name] for name in CHILD_FIELDS}
        row.update(resource_id=identity.patient_id(cpid),
                   careteam_id=identity.team_careteam_id(cpid),
                   retention_date=entry_retention(data), version=1, created=self.now,
                   last_updated=self.now,
                   managing_organisation_id=self.organisations.id_of(
                       data["managing_organisation"]))
        return row

    def add_parts(self, data: Canonical, child_id: int) -> None:
        """Add the rows of an entry's names, carers, involvements and local identifiers."""
        for position, name in enumerate(data["names"]):
            self.rows["child_name"].append({
                **{key: name[key] for key in CHILD_NAME_FIELDS}, "child_id": child_id,
                "position": position,
                # The search keys apply_child derives (ChildName.family_norm / given_norm).
                "family_norm": normalise_name(name["family"] or "")[:35],
                "given_norm": " ".join(normalise_name(g) for g in name["given"])[:200]})
        for position, carer in enumerate(data["carers"]):
            self.rows["carer"].append({**{key: carer[key] for key in CARER_FIELDS},
                                       "child_id": child_id, "position": position})
        for position, involvement in enumerate(data["involvements"]):
            self.rows["involvement"].append(self._involvement(data, involvement, child_id,
                                                              position))
        for item in data["local_identifiers"]:
            self.rows["local_identifier"].append({
                "child_id": child_id, "value": item["value"],
                "organisation_id": self.organisations.id_of(item["organisation"])})

    def _involvement(self, data: Canonical, involvement: Canonical, child_id: int,
                     position: int) -> dict[str, Any]:
        """Return an involvement row (its PractitionerRole id as ``apply_child`` derives it)."""
        key = self.organisations.keys.involvement(involvement)
        return {**{name: involvement[name] for name in INVOLVEMENT_FIELDS},
                "resource_id": identity.involvement_role_id(data["contactpoint_id"], key),
                "child_id": child_id, "position": position,
                "organisation_id": self.organisations.id_of(involvement["organisation"]),
                "practitioner_id": self.practitioners.id_of(involvement["practitioner"])}


def insert_entries(session: Session, entries: list[Canonical], caller: Caller,
                   detail: str, keys: BatchKeys | None = None) -> list[str]:
    """Insert new entries (their organisations and practitioners resolved) with their outbox
    events and ``import-create`` audit records; return their FHIR ids, in order. ``keys``:
    the natural keys the batch made already."""
    organisations = Organisations(session, keys=keys or BatchKeys())
    organisations.resolve(org for data in entries for org in organisations_of(data))
    practitioners = Practitioners(session, organisations)
    practitioners.resolve(p for data in entries for p in practitioners_of(data))
    new = NewEntries(organisations, practitioners)
    rows = [new.child_row(data) for data in entries]
    ids = allocate_ids(session, CHILD, len(rows))
    if ids is None:
        ids = list(session.execute(insert(CHILD).returning(
            CHILD.c.id, sort_by_parameter_order=True), rows).scalars().all())
    else:
        for row, child_id in zip(rows, ids, strict=True):
            row["id"] = child_id
        insert_rows(session, CHILD, rows)
    for data, child_id in zip(entries, ids, strict=True):
        new.add_parts(data, child_id)
    for name, part_rows in new.rows.items():
        if part_rows:
            insert_rows(session, table(name), part_rows)
    refs = [row["resource_id"] for row in rows]
    authorities = [organisations.resource_ids[organisations.keys.organisation(
        d["managing_organisation"])] for d in entries]
    insert_events(session, refs, authorities, new.now)
    insert_audit(session, caller, "import-create", refs, detail, new.now)
    return refs


@dataclass(frozen=True)
class _Insert:
    """An ``INSERT`` of some columns of a table compiled once per dialect for ``executemany``:
    its SQL, its parameters in order, the scalar defaults of the columns a row leaves out and
    each parameter's bind processor (None where the driver takes the Python value as it is)."""

    sql: str
    keys: tuple[str, ...]
    positional: bool
    defaults: Mapping[str, Any]
    processors: tuple[Callable[[Any], Any] | None, ...]


@functools.lru_cache(maxsize=64)
def _compiled_insert(dialect: Dialect, target: Table, columns: tuple[str, ...]) -> _Insert | None:
    """Return the compiled insert of ``columns`` into ``target``, or None when a column the
    rows leave out has a default only SQLAlchemy can compute (a callable)."""
    compiled = insert(target).compile(dialect=dialect, column_keys=list(columns),
                                      for_executemany=True)
    keys = tuple(compiled.positiontup or compiled.binds)
    defaults: dict[str, Any] = {}
    for key in keys:
        if key in columns:
            continue
        default = target.c[key].default if key in target.c else None
        if default is None or not default.is_scalar:
            return None
        defaults[key] = default.arg  # type: ignore[attr-defined]
    # Booleans go to the driver as they are (our rows hold bool, which every driver takes);
    # SQLAlchemy's processor would only re-check and coerce each one.
    processors = tuple(None if isinstance(target.c[key].type, Boolean)
                       else target.c[key].type.dialect_impl(dialect).bind_processor(dialect)
                       for key in keys)
    return _Insert(compiled.string, keys, compiled.positiontup is not None, defaults,
                   processors)


def insert_rows(session: Session, target: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) with one DB-API ``executemany``.

    The statement is compiled once and the values converted column by column with the
    dialect's bind processors, which is what ``session.execute(insert(target), rows)`` does
    row by row (and several times slower); the rows go in the session's transaction. Rows
    whose left-out columns need SQLAlchemy's defaults go through SQLAlchemy.
    """
    if not rows:
        return
    connection = session.connection()
    compiled = _compiled_insert(connection.dialect, target, tuple(rows[0]))
    if compiled is None:
        session.execute(insert(target), rows)
        return
    columns: list[Any] = []
    for key, process in zip(compiled.keys, compiled.processors, strict=True):
        if key in compiled.defaults:
            values: Any = [compiled.defaults[key]] * len(rows)
        else:
            values = [row[key] for row in rows]
        columns.append(values if process is None else map(process, values))
    params: Any = list(zip(*columns, strict=True))
    if connection.dialect.name == "postgresql":
        copy_rows(connection, target, compiled.keys, params)
        return
    if not compiled.positional:
        params = [dict(zip(compiled.keys, values, strict=True)) for values in params]
    connection.exec_driver_sql(compiled.sql, params)


def copy_rows(connection: Connection, target: Table, keys: tuple[str, ...],
              params: list[tuple[Any, ...]]) -> None:
    """Send rows (values already through the bind processors, in ``keys`` order) with one
    PostgreSQL ``COPY ... FROM STDIN`` on the session's connection (so in its transaction):
    psycopg's pipelined ``executemany`` still binds and executes the statement row by row,
    ``COPY`` streams the rows as one command (PostgreSQL documentation, "COPY")."""
    preparer = connection.dialect.identifier_preparer
    sql = (f"COPY {preparer.format_table(target)} "
           f"({', '.join(preparer.quote(key) for key in keys)}) FROM STDIN")
    raw: Any = connection.connection.dbapi_connection
    driver_error = connection.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for values in params:
                copy.write_row(values)
    except driver_error as error:
        # As SQLAlchemy raises a driver's error (IntegrityError for a constraint), which the
        # import's record-by-record retry catches (adapter.imports.directory.DB_ERRORS).
        raise DBAPIError.instance(sql, None, error, driver_error) from error


def allocate_ids(session: Session, target: Table, count: int) -> list[int] | None:
    """Return ``count`` fresh ids of ``target``'s ``id`` column, or None where the database
    must assign them as it inserts.

    With the ids known, a batch's rows go in with one plain ``executemany`` per table (an
    ``INSERT ... RETURNING`` in parameter order runs row by row on SQLite). SQLite: the import
    writes in a ``BEGIN IMMEDIATE`` transaction, so no other writer takes the ids after
    ``max(id)`` before the commit (the tables have no AUTOINCREMENT: SQLite gives the same
    ids); a writer that did would meet the primary key, never share a row. PostgreSQL: the
    column's sequence, in one round trip.
    """
    if count == 0:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        top = session.execute(select(func.max(target.c.id))).scalar() or 0
        return list(range(top + 1, top + 1 + count))
    if dialect == "postgresql":
        sequence = session.execute(text("SELECT pg_get_serial_sequence(:name, 'id')"),
                                   {"name": target.name}).scalar()
        if sequence:
            ids = session.execute(text("SELECT nextval(:sequence) FROM generate_series(1, :n)"),
                                  {"sequence": sequence, "n": count}).scalars().all()
            return sorted(ids)
    return None


def insert_events(session: Session, refs: list[str], authorities: list[str],
                  now: dt.datetime) -> None:
    """Insert the outbox event of each new child, as ``adapter.models.notify.emit_changes``
    writes it for a child created through the ORM."""
    insert_rows(session, EVENT, [
        {"topic": DIRECTORY_TOPIC, "action": "create", "focus_type": "Patient",
         "focus_id": ref, "child_ref": ref, "authority_ref": authority, "created": now}
        for ref, authority in zip(refs, authorities, strict=True)])


def insert_audit(session: Session, caller: Caller, action: str, refs: list[str], detail: str,
                 now: dt.datetime) -> None:
    """Insert one audit record per child written, with the fields ``audit.record`` gives."""
    insert_rows(session, AUDIT, [
        {"recorded": now, "client_id": caller.client_id,
         "organisation_code": caller.organisation_code, "action": action,
         "resource_type": "Patient", "resource_id": ref, "child_ref": ref, "outcome": "0",
         "override": False, "purpose_of_use": caller.purpose_of_use, "detail": detail,
         "request_id": caller.request_id} for ref in refs])
