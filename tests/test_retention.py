"""Retention rules (docs/domain.md "Retention")."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from adapter.retention import (
    add_years,
    is_archivable,
    is_purgeable,
    purge_date,
    record_status_on,
    retention_date,
)

D = dt.date


@dataclass
class Entry:
    """A record as the retention rules see it."""

    record_status: str
    retention_date: dt.date


@pytest.mark.parametrize(("birth", "death", "extended", "expected"), [
    (D(2010, 5, 17), None, None, D(2028, 5, 17)),                          # 18th birthday
    (D(2010, 5, 17), None, "care-leaver", D(2035, 5, 17)),                 # 25th birthday
    (D(2010, 5, 17), None, "learning-difficulty", D(2035, 5, 17)),
    (D(2010, 5, 17), D(2015, 3, 2), None, D(2016, 3, 2)),                  # a year after death
    (D(2010, 5, 17), D(2028, 1, 9), None, D(2029, 1, 9)),                  # death at 17
    (D(2004, 5, 17), D(2026, 6, 30), "care-leaver", D(2027, 6, 30)),       # death at 22
    (D(2010, 5, 17), D(2010, 5, 17), None, D(2011, 5, 17)),                # death at birth
    (D(2012, 2, 29), None, None, D(2030, 3, 1)),                           # leap day birthday
    (D(2008, 2, 29), None, None, D(2026, 3, 1)),
    (D(2008, 2, 29), None, "care-leaver", D(2033, 3, 1)),
    (D(2011, 2, 28), D(2012, 2, 29), None, D(2013, 3, 1)),                 # leap day death
])
def test_retention_date(birth: dt.date, death: dt.date | None, extended: str | None,
                        expected: dt.date) -> None:
    """Live to 18, to 25 with extended retention, one year after death."""
    assert retention_date(birth, death, extended) == expected


def test_leap_year_anniversary_keeps_29_february() -> None:
    """In a leap year the anniversary of 29 February is 29 February."""
    assert add_years(D(2008, 2, 29), 4) == D(2012, 2, 29)
    assert add_years(D(2008, 2, 29), 1) == D(2009, 3, 1)


@pytest.mark.parametrize(("death", "extended", "message"), [
    (D(2009, 1, 1), None, "death_date"),
    (None, "adoption", "extended_retention"),
])
def test_retention_date_refuses_inconsistent_input(death: dt.date | None,
                                                   extended: str | None, message: str) -> None:
    """A death before birth or an unknown extension reason is an error naming the field."""
    with pytest.raises(ValueError, match=message):
        retention_date(D(2010, 1, 1), death, extended)


def test_archive_then_purge_after_six_years() -> None:
    """Archived on the retention date; purged six years later."""
    retention = D(2028, 5, 17)
    assert purge_date(retention) == D(2034, 5, 17)
    live = Entry("live", retention)
    assert not is_archivable(live, D(2028, 5, 16))
    assert is_archivable(live, D(2028, 5, 17))
    assert is_archivable(live, D(2030, 1, 1))
    assert not is_purgeable(live, D(2040, 1, 1))  # only archived entries are purged
    archived = Entry("archived", retention)
    assert not is_archivable(archived, D(2030, 1, 1))
    assert not is_purgeable(archived, D(2034, 5, 16))
    assert is_purgeable(archived, D(2034, 5, 17))


def test_record_status_on_a_day() -> None:
    """Live before the retention date, archived on and after it."""
    assert record_status_on(D(2028, 5, 17), D(2028, 5, 16)) == "live"
    assert record_status_on(D(2028, 5, 17), D(2028, 5, 17)) == "archived"


def test_rules_apply_to_the_model() -> None:
    """The rules read an ORM Child as they read any record with the two attributes."""
    from adapter.models import Child

    child = Child(record_status="live", retention_date=D(2020, 1, 1))
    assert is_archivable(child, D(2020, 1, 1))
