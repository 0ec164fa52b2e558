"""The rules every write of a directory entry meets, whatever its dialect (a FHIR Patient by
POST, PUT, conditional create or update, in a transaction or batch Bundle or through the
``import`` command; a directory XML record): one live entry per NHS number, and the
directory's age rules (docs/domain.md "The directory entry", "Retention")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapter.errors import ExistingEntry, Invalid
from adapter.models import Child
from adapter.retention import age_rule_breach, retention_date
from adapter.security.caller import Caller
from adapter.security.policy import may_link_identifier
from adapter.store.membership import one_of
from adapter.wellformed import today_in_england

ONE_LIVE_ENTRY: Final = ("One live directory entry per NHS number: an NHS number identifies one "
                         "person and the directory keeps one entry per child (docs/domain.md "
                         "\"The directory entry\"; NHS Data Dictionary, \"NHS Number\").")
LOOKUP_CHUNK: Final = 500


@dataclass(frozen=True)
class Holder:
    """The live entry that holds an NHS number."""

    contactpoint_id: str
    resource_id: str
    shielded: bool


def live_holders(session: Session, nhs_numbers: Iterable[str]) -> dict[str, Holder]:
    """Return the live entries holding these NHS numbers, by NHS number (a Core query: it
    neither loads nor flushes ORM objects)."""
    wanted = sorted(set(nhs_numbers))
    found: dict[str, Holder] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        rows = session.connection().execute(
            select(Child.nhs_number, Child.contactpoint_id, Child.resource_id, Child.shielded)
            .where(Child.record_status == "live",
                   one_of(session, Child.nhs_number, wanted[start:start + LOOKUP_CHUNK])))
        for nhs_number, cpid, resource_id, shielded in rows:
            found[str(nhs_number)] = Holder(cpid, resource_id, bool(shielded))
    return found


def duplicate_refusal(holder: Holder, caller: Caller, expression: str) -> ExistingEntry:
    """Return the 409 of a write that would give a second live entry ``holder``'s NHS
    number. It names the existing entry only when the caller may link the NHS number to it:
    never a shielded child's without the shielding right (docs/domain.md "Shielding": a
    search by NHS number never finds one), whom it tells only that the number is taken."""
    resource = f"Patient/{holder.resource_id}"
    if may_link_identifier(holder.shielded, caller):
        return ExistingEntry(f"{ONE_LIVE_ENTRY} {resource} is the live entry with this NHS "
                             "number: update that entry rather than create another.",
                             resource=resource, expression=expression)
    return ExistingEntry(f"{ONE_LIVE_ENTRY} A live entry already has this NHS number, and it "
                         "is not one you may be shown: check the number; if it is right, the "
                         "national directory team can resolve the duplicate with the entry's "
                         "managing authority.", resource=None, expression=expression,
                         holder=resource)


def require_unique_nhs_number(session: Session, nhs_number: str | None, contactpoint_id: str,
                              caller: Caller, expression: str) -> None:
    """A live entry's NHS number is held by no other live entry.

    :raises ExistingEntry: another live entry holds it.
    """
    if not nhs_number:
        return
    holder = live_holders(session, [nhs_number]).get(nhs_number)
    if holder is not None and holder.contactpoint_id != contactpoint_id:
        raise duplicate_refusal(holder, caller, expression)


def age_rules_apply(birth_date: dt.date, death_date: dt.date | None,
                    extended_retention: str | None, stored_retention: dt.date | None,
                    stored_status: str | None) -> bool:
    """Return True when a write of a live entry is judged by the age rules: a new entry, an
    archived one made live, or one whose birth, death or extended retention move its
    retention date. A live entry the archiving has not reached yet stays correctable."""
    if stored_retention is None or stored_status != "live":
        return True
    try:
        return retention_date(birth_date, death_date, extended_retention) != stored_retention
    except ValueError:  # death before birth: the rules' own check names it
        return True


def require_within_age_rules(birth_date: dt.date, death_date: dt.date | None,
                             extended_retention: str | None, birth_expression: str,
                             death_expression: str) -> None:
    """A live entry is held only for a person the directory's age rules cover, born by today
    in England (the 2007 Regulations, regulation 8; docs/domain.md "Retention").

    :raises Invalid: the rule quoted, naming the birth date (or the date of death).
    """
    today = today_in_england()
    breach = age_rule_breach(birth_date, death_date, extended_retention, today)
    if breach is not None:
        by_death = death_date is not None and birth_date <= today
        raise Invalid(breach, expression=death_expression if by_death else birth_expression)
