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
