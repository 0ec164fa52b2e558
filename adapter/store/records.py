"""Applying an inbound record (a transient canonical object built by a reverse mapping) to the
database: resolve organisations and practitioners by natural key, create or update the child
in place, and tell created / updated / unchanged apart so that re-imports change nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, inspect, or_, select
from sqlalchemy.orm import Session

from adapter import identity
from adapter.errors import Conflict, Invalid

# Defined a layer down, where the access policy (adapter/security/policy/disclosure.py) uses
# them too; importable from here as before.
from adapter.identity import part_key as part_key
from adapter.models import (
    Assessment,
    Carer,
    Child,
    ChildName,
    Involvement,
    LocalIdentifier,
    Organisation,
    Practitioner,
    PractitionerIdentifier,
    TeamMember,
)
from adapter.models.base import BOOKKEEPING as BOOKKEEPING
from adapter.models.base import Base
from adapter.models.base import copy_columns as copy_columns
from adapter.models.canonical import normalise_name
from adapter.retention import retention_date

T = TypeVar("T", bound=Base)


def organisation_key(org: Organisation) -> tuple[str, str]:
    """Return the natural key of an organisation as (column, code) (``identity``'s rule).

    :raises ValueError: the organisation has no code.
    """
    found = identity.organisation_code_column(org)
    if found is None:
        raise ValueError("an organisation needs an ODS code, URN or GSS code")
    return found


def _pending(session: Session) -> dict[tuple[str, ...], Base]:
    """Return the organisations and practitioners this session has added and not flushed
    yet, by natural key: autoflush is off while a record is applied, so a query does not find
    them, and a record that names a new one twice must not create it twice."""
    pending: dict[tuple[str, ...], Base] = session.info.setdefault("pending_by_key", {})
    return pending


def _pending_one(session: Session, key: tuple[str, ...], cls: type[T]) -> T | None:
    """Return the ``cls`` added under ``key`` while it is still pending, else None (once
    flushed a query finds it; once rolled back it is gone)."""
    pending = _pending(session)
    found = pending.get(key)
    if not isinstance(found, cls) or not inspect(found).pending:
        pending.pop(key, None)
        return None
    return found


def resolve_organisation(session: Session, org: Organisation) -> Organisation:
    """Return the stored organisation with ``org``'s natural key, creating or updating it
    (one record naming a new organisation twice creates it once).

    :raises Invalid: a new organisation without its details (a name).
    """
    kind, code = organisation_key(org)
    stored = _pending_one(session, ("organisation", kind, code), Organisation)
    if stored is None:
        stored = session.scalar(select(Organisation).where(getattr(Organisation, kind) == code))
    if stored is None:
        if not org.name:  # a bare key (a FHIR Reference) cannot describe a new organisation
            raise Invalid(f"The organisation {code} is not known here: create its "
                          "Organization first (or name it with its details).")
        stored = Organisation(resource_id=identity.organisation_id(code))
        copy_columns(org, stored, BOOKKEEPING | {"resource_id"})
        session.add(stored)
        _pending(session)[("organisation", kind, code)] = stored
        return stored
    if org.name:  # a reference that carries details updates them; a bare key does not
        copy_columns(org, stored, BOOKKEEPING | {"resource_id"} | _unset_columns(org))
    return stored


def _unset_columns(obj: Base) -> frozenset[str]:
    """Return the names of columns that ``obj`` leaves at None (not given inbound)."""
    return frozenset(c.key for c in inspect(type(obj)).columns if getattr(obj, c.key) is None)


def resolve_practitioner(session: Session, practitioner: Practitioner) -> Practitioner:
    """Return the stored practitioner (organisation + local id, or else national
    identifiers), creating or updating it (one record naming a new practitioner twice creates
    it once); national identifiers it carries are merged into the stored ones."""
    if practitioner.organisation is None:
        return _resolve_by_national_ids(session, practitioner)
    organisation = resolve_organisation(session, practitioner.organisation)
    kind, code = organisation_key(organisation)
    key = ("practitioner", kind, code, practitioner.local_id or "")
    stored = _pending_one(session, key, Practitioner)
    if stored is None and organisation.id is not None:  # a new organisation has no staff yet
        stored = session.scalar(select(Practitioner).where(
            Practitioner.organisation_id == organisation.id,
            Practitioner.local_id == practitioner.local_id))
    if stored is None:
        stored = Practitioner(
            resource_id=identity.practitioner_id(code, practitioner.local_id or ""),
            organisation=organisation)
        session.add(stored)
        _pending(session)[key] = stored
    copy_columns(practitioner, stored, BOOKKEEPING | {"resource_id"})
    merge_national_ids(stored, practitioner.national_ids())
    return stored


def _resolve_by_national_ids(session: Session, practitioner: Practitioner) -> Practitioner:
    """Return the stored practitioner holding ``practitioner``'s national identifiers,
    creating or updating it.

    :raises Invalid: a practitioner with neither a staff id nor a national identifier.
    :raises Conflict: the identifiers are held by different practitioners.
    """
    ids = practitioner.national_ids()
    if not ids:
        raise Invalid("A practitioner needs an employer's staff id or a national identifier.")
    key = ("practitioner", "national", *sorted(f"{s}|{v}" for s, v in ids))
    stored = _pending_one(session, key, Practitioner)
    if stored is None:
        stored = holder_of_national_ids(session, ids)
    if stored is None:
        stored = Practitioner(resource_id=national_resource_id(ids))
        session.add(stored)
        _pending(session)[key] = stored
    copy_columns(practitioner, stored, BOOKKEEPING | {"resource_id", "local_id"})
    merge_national_ids(stored, ids)
    return stored


def national_resource_id(ids: set[tuple[str, str]]) -> str:
    """Return the Practitioner id derived from the first of its national identifiers."""
    return identity.national_practitioner_id(ids)


def merge_national_ids(row: Practitioner, ids: set[tuple[str, str]]) -> bool:
    """Give ``row`` the national identifiers ``ids`` (one per system, replacing that
    system's number; systems not given are kept: a record that knows only the staff id does
    not erase a GMC number another system gave); return True if any changed."""
    sent = dict(ids)
    changed = False
    for held in list(row.identifiers):
        if held.system in sent and sent[held.system] != held.value:
            row.identifiers.remove(held)
            changed = True
    for system, value in sorted(ids - row.national_ids()):
        row.identifiers.append(PractitionerIdentifier(system=system, value=value))
        changed = True
    return changed


def holder_of_national_ids(session: Session, ids: set[tuple[str, str]]) -> Practitioner | None:
    """Return the stored practitioner holding one of the national identifiers ``ids``.

    :raises Conflict: they are held by different practitioners.
    """
    holders = national_id_holders(session, ids)
    if len(holders) > 1:
        raise Conflict(conflict_message(holders), expression="Practitioner.identifier")
    if not holders:
        return None
    return session.scalar(select(Practitioner).where(
        Practitioner.resource_id == next(iter(holders))))


def national_id_holders(session: Session, ids: set[tuple[str, str]]) -> dict[str, list[str]]:
    """Return, by Practitioner id, the systems of ``ids`` each stored practitioner holds."""
    if not ids:
        return {}
    rows = session.execute(
        select(Practitioner.resource_id, PractitionerIdentifier.system)
        .join(PractitionerIdentifier, PractitionerIdentifier.practitioner_id == Practitioner.id)
        .where(or_(*(and_(PractitionerIdentifier.system == system,
                          PractitionerIdentifier.value == value) for system, value in ids)))
        .order_by(Practitioner.resource_id, PractitionerIdentifier.system))
    holders: dict[str, list[str]] = {}
    for resource_id, system in rows:
        holders.setdefault(resource_id, []).append(system)
    return holders


def conflict_message(holders: dict[str, list[str]]) -> str:
    """Return the message of identifiers that name different practitioners."""
    named = "; ".join(f"Practitioner/{rid} holds {', '.join(what)}"
                      for rid, what in sorted(holders.items()))
    return (f"The identifiers name different practitioners here ({named}): send the "
            "identifiers of one practitioner, or correct the stored ones first.")


def practitioner_key_text(person: Practitioner) -> str:
    """Return what names a practitioner in a derived key: the staff id, else its first
    national identifier (``system|value``)."""
    return identity.practitioner_key_text(person.local_id, person.national_ids())


def merge_parts(existing: list[T], incoming: Sequence[T], make: type[T],
                link: Any = None) -> bool:
    """Make ``existing`` hold ``incoming``'s data position by position, in place.

    Updating rows in place (rather than replacing them) keeps their ids and stable resource
    ids, and a row whose data did not change is not written at all.
    """
    changed = len(existing) != len(incoming)
    for position, item in enumerate(incoming):
        if position < len(existing):
            target = existing[position]
        else:
            target = make()
            existing.append(target)
        changed |= copy_columns(item, target, BOOKKEEPING | {"resource_id"})
        if link is not None:
            changed |= link(item, target)
        if target.position != position:  # type: ignore[attr-defined]
            target.position = position  # type: ignore[attr-defined]
    del existing[len(incoming):]
    return changed


def merge_keyed(session: Session, existing: list[Any], incoming: Sequence[Any], make: type,
                link: Any) -> bool:
    """Make ``existing`` hold ``incoming``, matching rows by :func:`part_key` (in place).

    A matched row keeps its id and resource id; unmatched rows are deleted (flushed first, so
    that a new row can take a freed key) and new ones added; positions follow ``incoming``.
    """
    by_key = {part_key(row): row for row in existing}
    keys = [part_key(item) for item in incoming]
    removed = [row for key, row in by_key.items() if key not in keys]
    for row in removed:
        existing.remove(row)
    if any(inspect(row).persistent for row in removed):
        session.flush()
    if len(set(keys)) != len(keys):
        raise Invalid("The same involvement (role, organisation, practitioner, start) is "
                      "listed twice.", expression="involvement")
    changed = bool(removed)
    ordered = []
    for position, (key, item) in enumerate(zip(keys, incoming, strict=True)):
        target = by_key.get(key)
        if target is None:
            target, changed = make(), True
        changed |= copy_columns(item, target, BOOKKEEPING | {"resource_id"})
        changed |= link(item, target)
        target.position = position
        ordered.append(target)
    existing[:] = ordered
    return changed


def _link_involvement(session: Session, cpid: str) -> Any:
    """Return a ``link`` callback resolving an involvement's organisation and practitioner."""
    def link(item: Involvement, target: Involvement) -> bool:
        return _link_part(session, item, target,
                          lambda: identity.involvement_role_id(cpid, part_key(item)))
    return link


def _link_part(session: Session, item: Involvement | TeamMember,
               target: Involvement | TeamMember, role_id: Callable[[], str]) -> bool:
    """Resolve a part's organisation and practitioner onto ``target`` and give a new one
    its role id; return True when either changed."""
    organisation = resolve_organisation(session, item.organisation)
    practitioner = (resolve_practitioner(session, item.practitioner)
                    if item.practitioner is not None else None)
    changed = target.organisation is not organisation or target.practitioner is not practitioner
    target.organisation, target.practitioner = organisation, practitioner
    if not target.resource_id:
        target.resource_id = role_id()
    return changed


def _link_local_identifier(session: Session) -> Any:
    """Return a ``link`` callback resolving a local identifier's issuing organisation."""
    def link(item: LocalIdentifier, target: LocalIdentifier) -> bool:
        organisation = resolve_organisation(session, item.organisation)
        changed = target.organisation is not organisation
        target.organisation = organisation
        return changed
    return link


def _number_positions(parts: Sequence[Any]) -> None:
    """Give inbound parts their list positions (the order is the data's order)."""
    for position, part in enumerate(parts):
        part.position = position


def apply_child(session: Session, record: Child, existing: Child | None) -> tuple[Child, str]:
    """Create ``record`` as a new child or apply it onto ``existing`` in place.

    :returns: the stored child and "created", "updated" or "unchanged".
    """
    for parts in (record.names, record.carers, record.involvements):
        _number_positions(parts)
    for name in record.names:  # derived search keys (ChildName.family_norm / given_norm)
        name.family_norm = normalise_name(name.family or "")[:35]
        name.given_norm = " ".join(normalise_name(g) for g in name.given or [])[:200]
    with session.no_autoflush:
        return _apply_child(session, record, existing)


def _apply_child(session: Session, record: Child, existing: Child | None) -> tuple[Child, str]:
    """Apply ``record`` (see :func:`apply_child`) with autoflush off."""
    child = existing or Child(resource_id=identity.patient_id(record.contactpoint_id))
    record.retention_date = retention_date(record.birth_date, record.death_date,
                                           record.extended_retention)
    changed = copy_columns(record, child, BOOKKEEPING | {"resource_id"})
    authority = resolve_organisation(session, record.managing_organisation)
    changed |= child.managing_organisation is not authority
    child.managing_organisation = authority
    changed |= merge_parts(child.names, record.names, ChildName)
    changed |= merge_parts(child.carers, record.carers, Carer)
    changed |= merge_keyed(session, child.involvements, record.involvements, Involvement,
                           _link_involvement(session, record.contactpoint_id))
    changed |= _merge_local_identifiers(session, child, record.local_identifiers)
    if existing is None:
        session.add(child)
        return child, "created"
    return child, "updated" if changed else "unchanged"


def _merge_local_identifiers(session: Session, child: Child,
                             incoming: Sequence[LocalIdentifier]) -> bool:
    """Merge local identifiers (they have no position column: order by arrival)."""
    link = _link_local_identifier(session)
    changed = len(child.local_identifiers) != len(incoming)
    for index, item in enumerate(incoming):
        if index < len(child.local_identifiers):
            target = child.local_identifiers[index]
        else:
            target = LocalIdentifier()
            child.local_identifiers.append(target)
        changed |= copy_columns(item, target) | link(item, target)
    del child.local_identifiers[len(incoming):]
    return changed


def apply_assessment(session: Session, record: Assessment, child: Child,
                     existing: Assessment | None) -> tuple[Assessment, str]:
    """Create ``record`` as a new assessment reference or apply it onto ``existing``.

    :returns: the stored assessment and "created", "updated" or "unchanged".
    """
    _number_positions(record.members)
    assessment = existing or Assessment(
        resource_id=identity.ecaf_careteam_id(record.assessment_id),
        assessment_id=record.assessment_id)
    changed = copy_columns(record, assessment, BOOKKEEPING | {"resource_id"})
    changed |= assessment.child is not child
    assessment.child = child
    changed |= _link_lead(session, record, assessment)

    def link(item: TeamMember, target: TeamMember) -> bool:
        return _link_part(session, item, target,
                          lambda: identity.member_role_id(record.assessment_id, part_key(item)))

    changed |= merge_keyed(session, assessment.members, record.members, TeamMember, link)
    if existing is None:
        session.add(assessment)
        return assessment, "created"
    return assessment, "updated" if changed else "unchanged"


def _link_lead(session: Session, record: Assessment, assessment: Assessment) -> bool:
    """Resolve the lead professional's organisation and practitioner of an assessment."""
    organisation = resolve_organisation(session, record.lead_organisation)
    practitioner = (resolve_practitioner(session, record.lead_practitioner)
                    if record.lead_practitioner is not None else None)
    changed = (assessment.lead_organisation is not organisation
               or assessment.lead_practitioner is not practitioner)
    assessment.lead_organisation, assessment.lead_practitioner = organisation, practitioner
    return changed
