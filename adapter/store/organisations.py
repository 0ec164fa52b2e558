"""The directory's organisations and practitioners (served as FHIR Organization and
Practitioner by their providers, adapter/fhir/providers/organization.py and practitioner.py,
which hold their search parameters and rendering): matching them by identifier system and
value and by name, the look-ups that inbound references resolve through, and the checks and
errors of a write.

Neither is a child's data (docs/domain.md: the directory of services and staff), so reads are not
audited; who works with which child is disclosed only through CareTeams and PractitionerRoles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import String, and_, cast, false, func, or_, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from adapter import identity, systems
from adapter.errors import Conflict, Invalid, PreconditionFailed
from adapter.models import Organisation, Practitioner, PractitionerIdentifier
from adapter.store.records import (
    BOOKKEEPING,
    copy_columns,
    holder_of_national_ids,
    national_resource_id,
    organisation_key,
)

ORGANISATION_CODES: Final = tuple(column for _scheme, column in identity.ORGANISATION_CODES)


# --- matching --------------------------------------------------------------------------------

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


def organisation_code_condition(system: str | None, code: str, own: systems.OwnSystems) -> Any:
    """Return a condition on Organisation: it holds ``code`` in the identifier ``system`` (ODS
    code, school URN, GSS code or DfE local authority number, the last three under this
    server's systems ``own``); no system: in any of them."""
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


def practitioner_code_condition(system: str | None, code: str, own: systems.OwnSystems) -> Any:
    """Return a condition on Practitioner: it holds ``code`` in the identifier ``system``: the
    system of the employing organisation's local ids (``<base>/Id/local/<code>``, under this
    server's systems ``own``) and the staff id, or a national system (GMC, GMP, NMC, HCPC,
    GPhC number, SDS user id) and its number; no system: a staff id or a national number."""
    prefix = own.local_id("")
    if system is None:
        return or_(Practitioner.local_id == code, national_id_condition(None, code))
    if system in systems.PRACTITIONER_SYSTEMS:
        return national_id_condition(system, code)
    if not system.startswith(prefix) or len(system) == len(prefix):
        return false()
    employer = organisation_code_condition(None, system[len(prefix):], own)
    return and_(Practitioner.local_id == code,
                Practitioner.organisation_id.in_(select(Organisation.id).where(employer)))


def organisation_codes(org: Organisation) -> set[str]:
    """Return every code that names an organisation (ODS code, school URN, GSS code)."""
    return {code for code in (org.ods_code, org.urn, org.gss_code) if code}


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


def practitioner_derived_id(employer: Organisation | None, record: Practitioner) -> str:
    """Return the id derived from a practitioner's key: the employer's code and the staff
    id, else its first national identifier (in PRACTITIONER_SYSTEMS order)."""
    if employer is not None:
        return identity.practitioner_id(organisation_key(employer)[1], record.local_id or "")
    return national_resource_id(record.national_ids())
