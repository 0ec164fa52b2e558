"""Organisations and practitioners as FHIR Organization and Practitioner (the REST handlers of
both types): read, search, create and update by an administrator or by the organisation itself;
and the look-ups that inbound CareTeam and PractitionerRole references resolve through.

Neither is a child's data (docs/domain.md: the directory of services and staff), so reads are not
audited; who works with which child is disclosed only through CareTeams and PractitionerRoles.
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar

from sqlalchemy import Select, String, and_, cast, false, func, or_, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from adapter import codes
from adapter import settings as settings_module
from adapter.errors import (
    BadRequest,
    Conflict,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
)
from adapter.fhir import systems
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import (
    EXACT_CONTAINS,
    NOT,
    Criterion,
    SearchParam,
    SearchRequest,
    decode_cursor,
    encode_cursor,
    negated,
    split_token,
)
from adapter.fhir.validation import require_valid, validate_inbound
from adapter.identifiers import resource_id_for
from adapter.mapping import fhir as mapping
from adapter.mapping.conceptmaps import load_translations
from adapter.models import Organisation, Practitioner, PractitionerIdentifier
from adapter.models.base import utcnow
from adapter.security.caller import Caller
from adapter.security.policy import require_organisation_writer, require_practitioner_writer
from adapter.store.records import (
    BOOKKEEPING,
    conflict_message,
    copy_columns,
    holder_of_national_ids,
    merge_national_ids,
    national_id_holders,
    national_resource_id,
    organisation_key,
)

ORGANISATION_CODES: Final = ("ods_code", "urn", "gss_code")
CURRENT_ONLY: Final = ("Only the current version of {type}/{id} is kept (version {version}); "
                       "earlier versions are not served.")


def base() -> str:
    """Return the canonical base of this server's own systems (the bound settings')."""
    return settings_module.current().canonical_base


def own_systems() -> systems.OwnSystems:
    """Return this server's own systems under the canonical base."""
    return systems.OwnSystems(base())


# --- search helpers shared by the handlers of this package ---------------------------------

def _like_escaped(value: str) -> str:
    """Return ``value`` with LIKE's wildcards and escape character escaped."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def string_match(column: Any, value: str, modifier: str | None) -> Any:
    """Return a FHIR string match (search.html#string): starts with, case-insensitive;
    ``:contains`` anywhere; ``:exact`` the whole value, case-sensitive."""
    if modifier == "exact":
        return column == value
    pattern = _like_escaped(value.lower()) + "%"
    return func.lower(column).like(("%" if modifier == "contains" else "") + pattern,
                                   escape="\\")


def matching_codes(map_name: str, vocabulary: Iterable[str], value: str) -> set[str]:
    """Return the codes of ``vocabulary`` that a token matches: the code of this server's own
    code system, or a code it is translated to by the ConceptMap ``map_name``."""
    system, code = split_token(value)
    translation = load_translations(base())[map_name]
    found = set()
    for source in vocabulary:
        codings = {(translation.source_system, source)}
        codings |= {(s, c) for s, c, _display in translation.translate(source)}
        if any(c == code and system in (None, s) for s, c in codings):
            found.add(source)
    return found


def token_condition(criterion: Criterion, condition: Callable[[str], Any]) -> Any:
    """Return the OR of ``condition`` over a token criterion's values, negated for ``:not``."""
    return negated(criterion, or_(*(condition(value) for value in criterion.values)))


def organisation_identifier_condition(value: str) -> Any:
    """Return a condition on Organisation matching one identifier token (system|value): ODS
    code, school URN, GSS code or DfE local authority number; no system: any of them."""
    system, code = split_token(value)
    own = own_systems()
    by_system = {systems.ODS_CODE: Organisation.ods_code == code.upper(),
                 own.school_urn: Organisation.urn == code,
                 own.gss_code: Organisation.gss_code == code.upper(),
                 own.la_number: Organisation.la_number == code}
    if system is None:
        return or_(*by_system.values())
    return by_system.get(system, false())


def national_id_condition(system: str | None, value: str) -> Any:
    """Return a condition on Practitioner: it holds the national identifier (any national
    system when ``system`` is None)."""
    held = select(PractitionerIdentifier.practitioner_id).where(
        PractitionerIdentifier.value == value)
    if system is not None:
        held = held.where(PractitionerIdentifier.system == system)
    return Practitioner.id.in_(held)


def practitioner_identifier_condition(value: str) -> Any:
    """Return a condition on Practitioner matching one identifier token: the system of the
    employing organisation's local ids (``<base>/Id/local/<code>``) and the staff id, or a
    national system (GMC, GMP, NMC, HCPC, GPhC number, SDS user id) and its number; no
    system: a staff id or a national number."""
    system, code = split_token(value)
    prefix = own_systems().local_id("")
    if system is None:
        return or_(Practitioner.local_id == code, national_id_condition(None, code))
    if system in systems.PRACTITIONER_SYSTEMS:
        return national_id_condition(system, code)
    if not system.startswith(prefix) or len(system) == len(prefix):
        return false()
    employer = organisation_identifier_condition(system[len(prefix):])
    return and_(Practitioner.local_id == code,
                Practitioner.organisation_id.in_(select(Organisation.id).where(employer)))


def organisation_codes(org: Organisation) -> set[str]:
    """Return every code that names an organisation (ODS code, school URN, GSS code)."""
    return {code for code in (org.ods_code, org.urn, org.gss_code) if code}


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


@contextmanager
def write_errors(what: str) -> Iterator[None]:
    """Turn the database's refusals of a write (also in an autoflush) into answers.

    :raises PreconditionFailed: a concurrent update won (optimistic lock).
    :raises Conflict: a unique key (identifier) is taken by another record.
    :raises Invalid: a value the database cannot hold (too long, a NUL character).
    """
    try:
        yield
    except DataError as exc:
        raise Invalid(f"The {what} holds a value that cannot be stored (too long, or a NUL "
                      "character).") from exc
    except StaleDataError as exc:
        raise PreconditionFailed(f"The {what} changed while you were updating it: read it "
                                 "again and re-apply.") from exc
    except IntegrityError as exc:
        raise Conflict(f"The {what} conflicts with another one (an identifier is taken).") \
            from exc


def flush_write(session: Session, what: str) -> None:
    """Flush a write (see :func:`write_errors`).

    :raises PreconditionFailed: a concurrent update won.
    :raises Conflict: a unique key is taken.
    """
    with write_errors(what):
        session.flush()


def check_version(current: int, if_match: int | None) -> None:
    """Compare ``If-Match`` with the current version (FHIR R4 http.html#concurrency).

    :raises PreconditionFailed: ``If-Match`` names another version.
    """
    if if_match is not None and if_match != current:
        raise PreconditionFailed(f"If-Match names version {if_match}, the current version is "
                                 f"{current}: read it again and re-apply.")


def method_of(version: int) -> str:
    """Return the HTTP method a history entry shows: POST for the first version, else PUT."""
    return "POST" if version == 1 else "PUT"


def check_body_id(resource: dict[str, Any], resource_id: str, resource_type: str) -> None:
    """An update's body names the resource of its URL (FHIR R4 http.html#update).

    :raises Invalid: the body's id differs.
    """
    if resource.get("id") not in (None, resource_id):
        raise Invalid(f"The {resource_type}'s id must match the id in the URL.",
                      expression=f"{resource_type}.id")


# --- resolving inbound references -----------------------------------------------------------

def stored_organisation(session: Session, ref: Organisation, expression: str) -> Organisation:
    """Return the stored organisation an inbound reference names (logical id or natural key).

    :raises Invalid: no such organisation here, or the id and the identifier disagree.
    """
    found = None
    if ref.resource_id:
        found = session.scalar(select(Organisation).where(
            Organisation.resource_id == ref.resource_id))
    keys = [(name, getattr(ref, name)) for name in ORGANISATION_CODES if getattr(ref, name)]
    if found is None and keys:
        found = session.scalar(select(Organisation).where(
            or_(*(getattr(Organisation, name) == code for name, code in keys))))
    if found is None:
        named = keys[0][1] if keys else f"Organization/{ref.resource_id}"
        raise Invalid(f"{expression}: the organisation {named} is not known here: create the "
                      "Organization first, then refer to it.", expression=expression)
    if any(getattr(found, name) != code for name, code in keys):
        raise Invalid(f"{expression}: the reference and its identifier name different "
                      "organisations.", expression=expression)
    return found


def organisation_key_copy(org: Organisation) -> Organisation:
    """Return a transient organisation carrying only ``org``'s codes: applying it resolves to
    ``org`` without changing its details."""
    return Organisation(ods_code=org.ods_code, urn=org.urn, gss_code=org.gss_code)


def stored_practitioner(session: Session, ref: Practitioner, expression: str) -> Practitioner:
    """Return the stored practitioner an inbound reference names (logical id, or employer and
    staff id).

    :raises Invalid: no such practitioner here.
    """
    found = None
    if ref.resource_id:
        found = session.scalar(select(Practitioner).where(
            Practitioner.resource_id == ref.resource_id))
    if found is None and ref.organisation is not None and ref.local_id:
        employer = stored_organisation(session, ref.organisation, expression)
        found = session.scalar(select(Practitioner).where(
            Practitioner.organisation_id == employer.id, Practitioner.local_id == ref.local_id))
    if found is None and ref.identifiers:
        found = holder_of_national_ids(session, ref.national_ids())
    if found is None:
        raise Invalid(f"{expression}: the practitioner is not known here: create the "
                      "Practitioner first, then refer to it.", expression=expression)
    return found


def practitioner_copy(person: Practitioner) -> Practitioner:
    """Return a transient copy of a stored practitioner (every detail, the employer's codes):
    applying it resolves to ``person`` without changing it."""
    copy = Practitioner()
    copy_columns(person, copy, BOOKKEEPING | {"resource_id"})
    copy.organisation = (organisation_key_copy(person.organisation)
                         if person.organisation is not None else None)
    copy.identifiers = [PractitionerIdentifier(system=system, value=value)
                        for system, value in sorted(person.national_ids())]
    return copy


# --- the handlers of Organization and Practitioner -----------------------------------------

def with_notes(rendered: Rendered, notes: list[dict[str, Any]]) -> Rendered:
    """Return ``rendered`` carrying the inbound validation's notes (what was not kept)."""
    rendered.issues = notes + rendered.issues
    return rendered


# The records a RecordHandler serves: both have resource_id, version, last_updated and id.
R = TypeVar("R", Organisation, Practitioner)


@dataclass
class Inbound(Generic[R]):
    """A validated inbound resource: the transient record, the id its key derives, its
    employer (a practitioner's) and the validation's notes (what was not kept)."""

    record: R
    derived_id: str
    notes: list[dict[str, Any]]
    employer: Organisation | None = None


class RecordHandler(ABC, Generic[R]):
    """The REST handler of a directory record of which only the current version is kept
    (Organization, Practitioner): read, vread and history of the current version, keyset
    search, create and update (also at the id derived from its key); never deleted.

    Parameterised by the model, the resource type, the condition of one search criterion and
    the renderer; a subclass says how an inbound resource is read and checked.
    """

    resource_type: ClassVar[str]
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "vread", "history-instance", "search-type", "search-type-post", "create",
        "update", "conditional-update", "validate")
    search_params: ClassVar[dict[str, SearchParam]]
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None]
    what: ClassVar[str]  # the record in messages: "organisation", "practitioner"
    key_name: ClassVar[str]  # what its id derives from: "its code", "its identifier"
    taken_message: ClassVar[str]  # a create whose key is taken: "{type}/{id} has ..."
    not_deleted: ClassVar[str]  # why a delete is refused

    def __init__(self, model: type[R], condition: Callable[[Criterion], Any],
                 render: Callable[[R], Rendered]) -> None:
        self.model: type[R] = model
        self.condition: Callable[[Criterion], Any] = condition
        self.render: Callable[[R], Rendered] = render

    def _find(self, session: Session, resource_id: str) -> R | None:
        """Return the record with FHIR id ``resource_id``, if any."""
        return session.scalar(select(self.model).where(self.model.resource_id == resource_id))

    def _load(self, session: Session, resource_id: str) -> R:
        """Return the record with FHIR id ``resource_id``.

        :raises NotFound: none.
        """
        row = self._find(session, resource_id)
        if row is None:
            raise NotFound(f"No {self.resource_type}/{resource_id} on this server.")
        return row

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the resource."""
        return self.render(self._load(session, resource_id))

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return the current version (the only one kept).

        :raises NotFound: another version.
        """
        row = self._load(session, resource_id)
        if version != row.version:
            raise NotFound(CURRENT_ONLY.format(type=self.resource_type, id=resource_id,
                                               version=row.version))
        return self.render(row)

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return the current version (no history is kept for these records)."""
        row = self._load(session, resource_id)
        return [(self.render(row), row.version, method_of(row.version), row.last_updated)]

    def _select(self, search: SearchRequest) -> Select[Any]:
        """Return the select of the records matching ``search``."""
        query = select(self.model)
        for criterion in search.criteria:
            query = query.where(self.condition(criterion))
        return query

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of resources (keyset paging on the internal id)."""
        return keyset_page(session, self._select(search), self.model.id, search,
                           lambda row: self.render(row).resource)

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many resources match."""
        return count_of(session, self._select(search), self.model.id)

    # --- what each type says about an inbound resource -------------------------------------

    @abstractmethod
    def _inbound(self, session: Session, resource: dict[str, Any],
                 caller: Caller) -> Inbound[R]:
        """Validate and map an inbound resource.

        :raises Invalid: not valid.
        :raises Forbidden: (where the type checks it here) the caller may not write it.
        """

    def _authorise_create(self, inbound: Inbound[R], caller: Caller) -> None:
        """Check that ``caller`` may create the record (nothing more by default).

        :raises Forbidden: it may not.
        """

    @abstractmethod
    def _taken(self, session: Session, inbound: Inbound[R]) -> str | None:
        """Return the id of the stored record holding the inbound one's key, if any."""

    @abstractmethod
    def _new(self, inbound: Inbound[R]) -> R:
        """Return the new record of an inbound resource, at its derived id."""

    @abstractmethod
    def _check_update(self, session: Session, row: R, inbound: Inbound[R],
                      caller: Caller) -> None:
        """Check that ``inbound`` may replace ``row``.

        :raises Forbidden: the caller may not.
        :raises Invalid: the change is not allowed.
        :raises Conflict: it would take another record's key.
        """

    def _apply(self, row: R, inbound: Inbound[R]) -> bool:
        """Copy the inbound record's data onto ``row``; return True if anything changed."""
        return copy_columns(inbound.record, row, BOOKKEEPING | {"resource_id"})

    # --- writes ------------------------------------------------------------------------------

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create the record.

        :raises Forbidden: the caller may not.
        :raises Conflict: a record with its key exists.
        """
        inbound = self._inbound(session, resource, caller)
        self._authorise_create(inbound, caller)
        taken = self._taken(session, inbound)
        if taken is not None:
            raise Conflict(self.taken_message.format(type=self.resource_type, id=taken),
                           expression=f"{self.resource_type}.identifier")
        row = self._new(inbound)
        self._apply(row, inbound)
        session.add(row)
        flush_write(session, self.what)
        return WriteResult(with_notes(self.render(row), inbound.notes), True)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update the record (or create it at the id derived from its key).

        :raises PreconditionFailed: stale ``If-Match``.
        :raises Forbidden: the caller may not.
        :raises Invalid: the body's id differs from the URL's, or the change is not allowed.
        """
        check_body_id(resource, resource_id, self.resource_type)
        row = self._find(session, resource_id)
        if row is None:
            return self._create_at(session, resource_id, resource, caller)
        check_version(row.version, if_match)
        inbound = self._inbound(session, resource, caller)
        self._check_update(session, row, inbound, caller)
        changed = self._apply(row, inbound)
        if changed:
            row.last_updated = utcnow()
        flush_write(session, self.what)
        return WriteResult(with_notes(self.render(row), inbound.notes), False, changed)

    def _create_at(self, session: Session, resource_id: str, resource: dict[str, Any],
                   caller: Caller) -> WriteResult:
        """Create through PUT: only at the id this server derives from the key.

        :raises Invalid: another id.
        """
        if self._inbound(session, resource, caller).derived_id != resource_id:
            raise Invalid(f"A new {self.resource_type} can be created by PUT only at the id "
                          f"derived from {self.key_name}; use POST instead.",
                          expression=f"{self.resource_type}.id")
        return self.create(session, resource, caller)

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """These records are not deleted through FHIR: records of children refer to them
        (declared without ``delete``).

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed(self.not_deleted)

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues a create of ``resource`` would meet (nothing is stored)."""
        return validate_inbound(self.resource_type, resource)


# --- Organization -------------------------------------------------------------------------

ORGANIZATION_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Organization", modifiers=NOT),
    SearchParam("identifier", "token",
                "system|value: ODS code, school URN, GSS code or DfE local authority number",
                "http://hl7.org/fhir/SearchParameter/Organization-identifier", NOT),
    SearchParam("name", "string", "Name (starts with, case-insensitive)",
                "http://hl7.org/fhir/SearchParameter/Organization-name", EXACT_CONTAINS),
    SearchParam("type", "token",
                "Organisation type: this server's organisation-type code or its "
                "organization-type translation",
                "http://hl7.org/fhir/SearchParameter/Organization-type", NOT),
)}


def organisation_condition(criterion: Criterion) -> Any:
    """Return the SQL condition of one Organization search criterion."""
    name = criterion.param.name
    if name == "name":
        return or_(*(string_match(Organisation.name, value, criterion.modifier)
                     for value in criterion.values))
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Organisation.resource_id == v,
        "identifier": organisation_identifier_condition,
        "type": lambda v: Organisation.type.in_(
            sorted(matching_codes("organisation-type", codes.ORGANISATION_TYPES, v))),
    }
    return token_condition(criterion, builders[name])


def render_organisation(org: Organisation) -> Rendered:
    """Return an organisation as its Organization."""
    return Rendered(mapping.organisation_to_fhir(org, base=base()), org.version,
                    org.last_updated)


class OrganizationHandler(RecordHandler[Organisation]):
    """The REST handler of ``Organization``: written by an administrator or by the
    organisation itself."""

    resource_type: ClassVar[str] = "Organization"
    search_params: ClassVar[dict[str, SearchParam]] = ORGANIZATION_PARAMS
    profile: ClassVar[str | None] = "Organization"
    what: ClassVar[str] = "organisation"
    key_name: ClassVar[str] = "its code"
    taken_message: ClassVar[str] = "{type}/{id} has one of these codes: update it with PUT."
    not_deleted: ClassVar[str] = "An Organization is not deleted: records of children refer to it."

    def __init__(self) -> None:
        super().__init__(Organisation, organisation_condition, render_organisation)

    def _inbound(self, session: Session, resource: dict[str, Any],
                 caller: Caller) -> Inbound[Organisation]:
        """Validate and map an Organization to a transient organisation.

        :raises Invalid: not valid, or without a code this directory keys organisations by.
        """
        notes = require_valid("Organization", resource)
        record, _ignored = mapping.organization_to_organisation(resource, base=base())
        if not organisation_codes(record):
            raise Invalid("An Organization needs an ODS code, a school URN or a GSS code.",
                          expression="Organization.identifier")
        if record.type == "local-authority" and not record.gss_code:
            raise Invalid("A local authority needs its GSS code.",
                          expression="Organization.identifier")
        derived = resource_id_for("Organization", organisation_key(record)[1])
        return Inbound(record, derived, notes)

    def _authorise_create(self, inbound: Inbound[Organisation], caller: Caller) -> None:
        """An administrator, or the organisation itself.

        :raises Forbidden: another organisation's record.
        """
        require_organisation_writer(inbound.record, caller, "Organization.identifier")

    def _taken(self, session: Session, inbound: Inbound[Organisation]) -> str | None:
        """Return the id of an organisation holding one of the inbound codes."""
        record = inbound.record
        return session.scalar(select(Organisation.resource_id).where(or_(*(
            getattr(Organisation, name) == getattr(record, name)
            for name in ORGANISATION_CODES if getattr(record, name)))))

    def _new(self, inbound: Inbound[Organisation]) -> Organisation:
        """Return the new organisation at its derived id."""
        return Organisation(resource_id=inbound.derived_id)

    def _check_update(self, session: Session, row: Organisation,
                      inbound: Inbound[Organisation], caller: Caller) -> None:
        """An administrator, or the organisation itself keeping codes of its own.

        :raises Forbidden: another organisation's record, or giving it another's codes.
        """
        require_organisation_writer(row, caller, "Organization")
        require_organisation_writer(inbound.record, caller, "Organization.identifier")


# --- Practitioner -------------------------------------------------------------------------

PRACTITIONER_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Practitioner", modifiers=NOT),
    SearchParam("identifier", "token",
                "system|value: the employing organisation's staff id (system "
                "<base>/Id/local/<organisation code>) or a national identifier (GMC, GMP, "
                "NMC, HCPC, GPhC number, SDS user id); a bare value matches any of them",
                "http://hl7.org/fhir/SearchParameter/Practitioner-identifier", NOT),
    SearchParam("name", "string",
                "Family or given name (starts with, case-insensitive)",
                "http://hl7.org/fhir/SearchParameter/Practitioner-name", EXACT_CONTAINS),
)}


def given_match(value: str, modifier: str | None, column: Any = Practitioner.given) -> Any:
    """Return a FHIR string match on any of the given names (a JSON list of strings in
    ``column``: a practitioner's by default, or a child's).

    The list is stored as JSON text (``["Sam", "Alex"]``, non-ASCII escaped, ``ë`` as ``\\u00eb``):
    a given name starting with ``value`` follows a double quote; an exact one is also
    followed by one (found with ``replace``, case-sensitive on both databases, where SQLite's
    LIKE is not).
    """
    text = cast(column, String)
    if modifier == "exact":
        return func.replace(text, f'"{_json_text(value)}"', "") != text
    escaped = _like_escaped(_json_text(value.lower()))
    opening = "" if modifier == "contains" else '"'
    return func.lower(text).like(f"%{opening}{escaped}%", escape="\\")


def _json_text(value: str) -> str:
    """Return ``value`` as it appears inside a JSON string."""
    return json.dumps(value)[1:-1]


def practitioner_condition(criterion: Criterion) -> Any:
    """Return the SQL condition of one Practitioner search criterion."""
    name = criterion.param.name
    if name == "name":
        return or_(*(or_(string_match(Practitioner.family, value, criterion.modifier),
                         given_match(value, criterion.modifier)) for value in criterion.values))
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: Practitioner.resource_id == v,
        "identifier": practitioner_identifier_condition,
    }
    return token_condition(criterion, builders[name])


def render_practitioner(person: Practitioner) -> Rendered:
    """Return a practitioner as its Practitioner."""
    return Rendered(mapping.practitioner_to_fhir(person, base=base()), person.version,
                    person.last_updated)


class PractitionerHandler(RecordHandler[Practitioner]):
    """The REST handler of ``Practitioner``: written by an administrator or by the employing
    organisation (one known only by national numbers: by any organisation's system); the
    staff id (employer and staff id), once given, never changes; each national identifier
    names one practitioner."""

    resource_type: ClassVar[str] = "Practitioner"
    search_params: ClassVar[dict[str, SearchParam]] = PRACTITIONER_PARAMS
    profile: ClassVar[str | None] = "Practitioner"
    what: ClassVar[str] = "practitioner"
    key_name: ClassVar[str] = "its identifier"
    taken_message: ClassVar[str] = ("{type}/{id} has this staff id or national identifier: "
                                    "update it with PUT.")
    not_deleted: ClassVar[str] = "A Practitioner is not deleted: records of children refer to them."

    def __init__(self) -> None:
        super().__init__(Practitioner, practitioner_condition, render_practitioner)

    def _inbound(self, session: Session, resource: dict[str, Any],
                 caller: Caller) -> Inbound[Practitioner]:
        """Validate and map a Practitioner, with its stored employer (if it has a staff id).

        :raises Invalid: not valid, or an employer not known here.
        :raises Forbidden: the caller is neither the employer nor an administrator.
        """
        notes = require_valid("Practitioner", resource)
        record, _ignored = mapping.practitioner_from_fhir(resource, base=base())
        employer = (stored_organisation(session, record.organisation, "Practitioner.identifier")
                    if record.organisation is not None else None)
        require_practitioner_writer(employer, caller, "Practitioner.identifier")
        return Inbound(record, practitioner_derived_id(employer, record), notes, employer)

    def _holders(self, session: Session, inbound: Inbound[Practitioner]) -> dict[str, list[str]]:
        """Return, by Practitioner id, which of the inbound identifiers each stored
        practitioner holds (the staff id, national systems)."""
        holders = national_id_holders(session, inbound.record.national_ids())
        if inbound.employer is not None:
            staff = session.scalar(select(Practitioner.resource_id).where(
                Practitioner.organisation_id == inbound.employer.id,
                Practitioner.local_id == inbound.record.local_id))
            if staff is not None:
                holders.setdefault(staff, []).insert(0, "the staff id")
        return holders

    def _taken(self, session: Session, inbound: Inbound[Practitioner]) -> str | None:
        """Return the id of the stored practitioner holding an inbound identifier.

        :raises Conflict: different practitioners hold them.
        """
        holders = self._holders(session, inbound)
        if len(holders) > 1:
            raise Conflict(conflict_message(holders), expression="Practitioner.identifier")
        return next(iter(holders), None)

    def _new(self, inbound: Inbound[Practitioner]) -> Practitioner:
        """Return the new practitioner (of its employer, if any) at its derived id."""
        return Practitioner(resource_id=inbound.derived_id, organisation=inbound.employer)

    def _check_update(self, session: Session, row: Practitioner,
                      inbound: Inbound[Practitioner], caller: Caller) -> None:
        """A staff id, once given, stays; the inbound identifiers are held by no other
        practitioner.

        :raises Invalid: the body changes or drops the staff id.
        :raises Conflict: another practitioner holds one of its identifiers.
        """
        if row.local_id is not None and (inbound.employer is not row.organisation
                                         or inbound.record.local_id != row.local_id):
            raise Invalid("A practitioner's staff id (employer and staff id) cannot change or "
                          "be left out; send it with any national identifiers.",
                          expression="Practitioner.identifier")
        others = {rid: what for rid, what in self._holders(session, inbound).items()
                  if rid != row.resource_id}
        if others:
            raise Conflict(conflict_message({row.resource_id: ["this Practitioner"], **others}),
                           expression="Practitioner.identifier")

    def _apply(self, row: Practitioner, inbound: Inbound[Practitioner]) -> bool:
        """Copy name, contact and staff id; merge the national identifiers: a system sent
        replaces that system's number, a system left out keeps it (a client that knows only
        the staff id does not erase a GMC number another system gave)."""
        changed = copy_columns(inbound.record, row, BOOKKEEPING | {"resource_id"})
        if inbound.employer is not None and row.organisation is not inbound.employer:
            row.organisation = inbound.employer
            changed = True
        return merge_national_ids(row, inbound.record.national_ids()) or changed


def practitioner_derived_id(employer: Organisation | None, record: Practitioner) -> str:
    """Return the id derived from a practitioner's key: the employer's code and the staff
    id, else its first national identifier (in PRACTITIONER_SYSTEMS order)."""
    if employer is not None:
        return resource_id_for("Practitioner",
                               f"{organisation_key(employer)[1]}/{record.local_id}")
    return national_resource_id(record.national_ids())

