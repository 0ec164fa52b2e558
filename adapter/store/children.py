"""Children's directory entries: the loads of a read (as light records, ``adapter.store.rows``,
or as ORM records for a write and for history), the completion of a record written from a
Patient, the entry rules and the write itself. The FHIR dialect of ``Patient`` (its search,
validation and rendering) is its provider's (adapter/fhir/providers/patient.py,
adapter/fhir/patient_search.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import Select, bindparam, or_, select
from sqlalchemy.orm import Session, joinedload, selectinload

from adapter import identifiers
from adapter.db import built_once
from adapter.errors import Conflict, Gone, NotFound, issue
from adapter.models import Child, Involvement, Organisation
from adapter.models.rows import ChildRow
from adapter.security.caller import Caller
from adapter.security.policy import (
    copy_involvement,
    implied_managing_authority,
    organisation_code,
    require_child_writer,
    withheld_local_identifiers,
)
from adapter.store import history
from adapter.store.entry_rules import (
    age_rules_apply,
    require_unique_nhs_number,
    require_within_age_rules,
)
from adapter.store.organisations import organisation_key_copy, stored_organisation, write_errors
from adapter.store.rows import entry_rows

MANAGING: Final = "Patient.managingOrganization"
NHS_NUMBER_EXPRESSION: Final = "Patient.identifier.where(system='https://fhir.nhs.uk/Id/nhs-number')"
BREAK_GLASS: Final = ("This child is shielded: your access used the shielding right, has been "
                      "recorded as an override and will be reviewed.")


def child_query() -> Select[Child]:
    """Return a select of children with every part a mapping needs loaded."""
    return select(Child).options(
        joinedload(Child.managing_organisation), selectinload(Child.names),
        selectinload(Child.carers), selectinload(Child.involvements),
        selectinload(Child.local_identifiers))


def _joined_child() -> Select[Child]:
    """Return a select of children loading, in the same SELECT, their names, carers,
    involvements (with their organisations) and local ids. One child's lists are short, so
    their product is a few rows, far cheaper to load than a statement per list; an
    involvement's practitioner, which a Patient does not show, is loaded only if asked for (a
    redacted copy)."""
    return select(Child).options(
        joinedload(Child.managing_organisation), joinedload(Child.names),
        joinedload(Child.carers), joinedload(Child.local_identifiers),
        joinedload(Child.involvements).lazyload(Involvement.practitioner))


@built_once
def _one_child_statement(admin: bool) -> Select[Child]:
    """Return the statement of a read by id (parameter ``rid``), built once per visibility
    (archived entries only for admins, as ``visible_to``)."""
    return _joined_child().where(
        Child.resource_id == bindparam("rid"),
        Child.id.is_not(None) if admin else Child.record_status == "live")


@built_once
def children_statement() -> Select[Child]:
    """Return the statement loading the children of a search page as ORM records (parameter
    ``ids``, ids already filtered by the search and its caller's visibility), in id order:
    for what is rendered from ORM records (a page's CareTeams, ``_revinclude``); the page's
    Patients are read as light records (``adapter.store.rows.entries_rows``)."""
    return _joined_child().where(Child.id.in_(bindparam("ids", expanding=True))) \
        .order_by(Child.id)


def load_child(session: Session, resource_id: str, caller: Caller) -> Child:
    """Return the child with FHIR id ``resource_id`` as ORM records (for a write, or as the
    current state an earlier version is judged by).

    :raises NotFound: no such child, or archived for this caller.
    :raises Gone: the child was deleted.
    """
    child = session.scalars(_one_child_statement(caller.has_right("admin")),
                            {"rid": resource_id}).unique().one_or_none()
    if child is None:
        raise _missing(session, resource_id)
    return child


def load_entry(session: Session, resource_id: str, caller: Caller) -> ChildRow:
    """Return the current entry with FHIR id ``resource_id`` as light records, for a read
    (``adapter.store.rows``: no ORM object is made).

    :raises NotFound: no such child, or archived for this caller.
    :raises Gone: the child was deleted.
    """
    entry = entry_rows(session, resource_id, caller)
    if entry is None:
        raise _missing(session, resource_id)
    return entry


def _missing(session: Session, resource_id: str) -> Gone | NotFound:
    """Return the error of a read of an entry not found: Gone when it was deleted."""
    versions = history.child_versions(session, resource_id)
    if versions and versions[0].deleted:
        return Gone(f"Patient/{resource_id} has been deleted.")
    return NotFound(f"No Patient/{resource_id} on this server.")


def require_own_authority(child_authority: Organisation | None, caller: Caller) -> None:
    """A client writes only entries its own organisation manages (the write-authority policy).

    :raises Forbidden: another authority's entry.
    """
    require_child_writer(child_authority, caller, "Patient.managingOrganization")


def _allocate_contactpoint_id(session: Session) -> str:
    """Return a ContactPoint ID not yet used."""
    while True:
        cpid = identifiers.allocate_contactpoint_id()
        if session.scalar(select(Child.id).where(Child.contactpoint_id == cpid)) is None:
            return cpid


def _merged_involvements(record: Child, existing: Child) -> list[Any]:
    """Return the involvements of an entry updated from a Patient, in their stored order:
    every involvement other than the GP unchanged (a Patient carries only
    ``generalPractitioner``), the stored GP practices the Patient still names, then GP
    practices it adds."""
    named = {organisation_code(i.organisation): i for i in record.involvements if i.role == "gp"}
    kept = [copy_involvement(i) for i in existing.involvements
            if i.role != "gp" or organisation_code(i.organisation) in named]
    stored = {organisation_code(i.organisation) for i in existing.involvements if i.role == "gp"}
    return kept + [i for code, i in named.items() if code not in stored]


def complete_record(session: Session, record: Child, caller: Caller,
                    existing: Child | None) -> list[dict[str, Any]]:
    """Complete a transient Child mapped from a Patient with what a Patient does not carry:
    its organisations as stored records' keys, a ContactPoint ID, the managing authority
    (the stored entry's, else its writer's), and from the stored entry the involvements other
    than the GP and other organisations' local ids. Returns the notes of what was decided
    (the implied authority).

    :raises Invalid: an organisation not known here, or no authority to manage the entry.
    """
    notes: list[dict[str, Any]] = []
    _refer_to_stored(session, record)
    if not record.contactpoint_id:
        record.contactpoint_id = existing.contactpoint_id if existing else \
            _allocate_contactpoint_id(session)
    if record.managing_organisation is None and existing is not None:
        record.managing_organisation = existing.managing_organisation
    elif record.managing_organisation is None:
        notes.append(_implied_authority(session, record, caller))
    if existing is not None:
        record.involvements = _merged_involvements(record, existing)
        record.local_identifiers = [*record.local_identifiers,
                                    *withheld_local_identifiers(existing, caller)]
    return notes


def _implied_authority(session: Session, record: Child, caller: Caller) -> dict[str, Any]:
    """Give a new entry without ``managingOrganization`` its writer's authority (the policy
    decides whether the writer is an authority's system); return the note saying so.

    :raises Invalid: the writer is not an authority's system (a national client).
    """
    own = session.scalar(select(Organisation).where(or_(
        Organisation.gss_code == caller.organisation_code,
        Organisation.ods_code == caller.organisation_code,
        Organisation.urn == caller.organisation_code)))
    authority = implied_managing_authority(caller, own, MANAGING)
    record.managing_organisation = organisation_key_copy(authority)
    return issue("information", "informational",
                 f"{MANAGING} was not given: the entry is managed by your authority "
                 f"({authority.gss_code}), whose system wrote it.", MANAGING)


def require_entry_rules(session: Session, record: Child, existing: Child | None,
                        caller: Caller) -> None:
    """Check the rules on a live entry that a Patient write makes: within the directory's
    age rules (when the write is judged by them), and no other live entry with its NHS number.

    :raises Invalid: outside the age rules (the rule quoted).
    :raises ExistingEntry: another live entry has the NHS number (409).
    """
    if (record.record_status or "live") != "live":
        return
    if age_rules_apply(record.birth_date, record.death_date, record.extended_retention,
                       existing.retention_date if existing else None,
                       existing.record_status if existing else None):
        require_within_age_rules(record.birth_date, record.death_date,
                                 record.extended_retention, "Patient.birthDate",
                                 "Patient.deceasedDateTime")
    require_unique_nhs_number(session, record.nhs_number, record.contactpoint_id, caller,
                              NHS_NUMBER_EXPRESSION)


@contextmanager
def entry_write(session: Session, record: Child, caller: Caller) -> Iterator[None]:
    """Apply and flush an entry (the body of the ``with``) in a savepoint: when a concurrent
    writer took its NHS number since :func:`require_entry_rules` looked (the unique index of
    migration 0011 refuses the second), the 409 still names the entry that won. The session
    holds no pending change when it starts (the savepoint would flush it outside).

    :raises ExistingEntry: a concurrent writer's live entry has the NHS number.
    :raises Conflict: another unique key is taken.
    :raises PreconditionFailed: a concurrent update won (optimistic lock).
    """
    try:
        with write_errors("entry"), session.begin_nested():
            yield
            session.flush()
    except Conflict:
        if (record.record_status or "live") == "live":
            require_unique_nhs_number(session, record.nhs_number, record.contactpoint_id,
                                      caller, NHS_NUMBER_EXPRESSION)
        raise


def _refer_to_stored(session: Session, record: Child) -> None:
    """Resolve the organisations a Patient refers to (managing authority, GP practices; by
    logical id and/or identifier) to keys of stored records: a reference names a shared
    record, it never creates or changes one (``adapter.security.policy.authority``).

    :raises Invalid: an organisation not known here, or a reference whose id and identifier
        disagree.
    """
    if record.managing_organisation is not None:
        record.managing_organisation = organisation_key_copy(stored_organisation(
            session, record.managing_organisation, "Patient.managingOrganization"))
    for involvement in record.involvements:
        involvement.organisation = organisation_key_copy(stored_organisation(
            session, involvement.organisation, "Patient.generalPractitioner"))
