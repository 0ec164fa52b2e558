"""Retention of directory entries (docs/domain.md "Retention"; the Children Act 2004 Information
Database (England) Regulations 2007, reg. 13).

An entry is live to the child's 18th birthday, or to the 25th birthday when it is kept on with
consent for a care leaver or a young person with learning difficulties; on death it stays live
for one year after the date of death. Then it is archived: invisible to every ordinary caller,
kept six more years, then purged.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Protocol

from adapter import codes

LIVE_YEARS: Final = 18
EXTENDED_LIVE_YEARS: Final = 25
LIVE_YEARS_AFTER_DEATH: Final = 1
ARCHIVE_YEARS: Final = 6
REGULATION: Final = ("the Children Act 2004 Information Database (England) Regulations 2007, "
                     "SI 2007/2182, regulation 8; docs/domain.md \"Retention\"")
AGE_RULE: Final = ("The directory holds a child's entry live until their 18th birthday; to their "
                   "25th birthday, with their consent, for a care leaver or a young person with "
                   "learning difficulties; and for one year after a death (" + REGULATION + ")")


class RetainedRecord(Protocol):
    """What the retention rules read of a child's record (``adapter.models.Child`` has it)."""

    @property
    def record_status(self) -> str:
        """``live`` or ``archived``."""

    @property
    def retention_date(self) -> dt.date:
        """The day the record stops being live."""


def add_years(day: dt.date, years: int) -> dt.date:
    """Return the anniversary of ``day`` after ``years`` years.

    A 29 February falls on 1 March in a common year: only then have the full years elapsed.
    """
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return dt.date(day.year + years, 3, 1)


def retention_date(birth_date: dt.date, death_date: dt.date | None = None,
                   extended_retention: str | None = None) -> dt.date:
    """Return the first day on which the entry is no longer live (the day it is archived).

    :raises ValueError: ``extended_retention`` is not one of
        ``codes.EXTENDED_RETENTION_REASONS``, or the death date is before the birth date.
    """
    if extended_retention is not None and extended_retention not in \
            codes.EXTENDED_RETENTION_REASONS:
        raise ValueError(f"extended_retention: not one of {codes.EXTENDED_RETENTION_REASONS}")
    if death_date is not None:
        if death_date < birth_date:
            raise ValueError("death_date: before the birth date")
        return add_years(death_date, LIVE_YEARS_AFTER_DEATH)
    years = EXTENDED_LIVE_YEARS if extended_retention else LIVE_YEARS
    return add_years(birth_date, years)


def purge_date(retention: dt.date) -> dt.date:
    """Return the day an archived entry (archived on ``retention``) is purged."""
    return add_years(retention, ARCHIVE_YEARS)


def record_status_on(retention: dt.date, today: dt.date) -> str:
    """Return the record status an entry with this retention date has on ``today``."""
    return "archived" if today >= retention else "live"


def is_archivable(child: RetainedRecord, today: dt.date) -> bool:
    """Return True when a live entry has reached its retention date and must be archived."""
    return child.record_status == "live" and today >= child.retention_date


def is_purgeable(child: RetainedRecord, today: dt.date) -> bool:
    """Return True when an archived entry has been kept its six years and must be purged."""
    return child.record_status == "archived" and today >= purge_date(child.retention_date)


def age_rule_breach(birth_date: dt.date, death_date: dt.date | None,
                    extended_retention: str | None, today: dt.date) -> str | None:
    """Return why a person cannot have a live entry on ``today`` under the directory's age
    rules (docs/domain.md "Retention", the rule quoted), or None when they can.

    A birth date in the future is no child yet; one whose entry would already have stopped
    being live is outside the directory (an adult born 1970 is not a child to hold).
    """
    if birth_date > today:
        return "The birth date is in the future: the directory holds children who are born."
    if death_date is not None and death_date < birth_date:
        return "The date of death is before the date of birth."
    alive_until = retention_date(birth_date, None, extended_retention)
    if death_date is not None and death_date >= alive_until:
        why = ("the death came after the entry would have stopped being live (the 18th "
               "birthday, or the 25th with extended retention)")
    elif retention_date(birth_date, death_date, extended_retention) > today:
        return None
    elif death_date is not None:
        why = "the death was more than a year ago"
    elif extended_retention:
        why = "this person is 25 or older"
    else:
        why = ("this person is 18 or older and no extended retention (care leaver or learning "
               "difficulty) is given")
    return f"Outside the directory's age rules: {why}. {AGE_RULE}."
