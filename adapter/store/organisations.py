"""Organisations and practitioners as FHIR Organization and Practitioner (served by their
providers, adapter/fhir/providers/organization.py and practitioner.py): search conditions,
rendering, the checks of a write; and the look-ups that inbound CareTeam and PractitionerRole
references resolve through.

Neither is a child's data (docs/domain.md: the directory of services and staff), so reads are not
audited; who works with which child is disclosed only through CareTeams and PractitionerRoles.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Select, String, and_, cast, false, func, or_, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from adapter import codes, identity, systems
from adapter import settings as settings_module
from adapter.errors import BadRequest, Conflict, Invalid, PreconditionFailed
from adapter.fhir.handlers import Page, Rendered
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
from adapter.mapping import fhir as mapping
from adapter.mapping.conceptmaps import load_translations
from adapter.models import Organisation, Practitioner, PractitionerIdentifier
from adapter.store.records import (
    BOOKKEEPING,
    copy_columns,
    holder_of_national_ids,
    national_resource_id,
    organisation_key,
)

ORGANISATION_CODES: Final = tuple(column for _scheme, column in identity.ORGANISATION_CODES)
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
    return Rendered(mapping.organisation_to_fhir(org, base=base()), org.version, org.last_updated)




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




def practitioner_derived_id(employer: Organisation | None, record: Practitioner) -> str:
    """Return the id derived from a practitioner's key: the employer's code and the staff
    id, else its first national identifier (in PRACTITIONER_SYSTEMS order)."""
    if employer is not None:
        return identity.practitioner_id(organisation_key(employer)[1], record.local_id or "")
    return national_resource_id(record.national_ids())
