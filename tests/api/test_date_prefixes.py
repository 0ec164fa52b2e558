"""Every date prefix of FHIR search (search.html#prefix: eq, ne, lt, le, gt, ge, sa, eb, ap) on
``birthdate`` finds exactly the children whose stored birth date the prefix admits, the date
being a day, a month or a year (its range [start, end)); ``ap`` widens the range by 36 days on
each side (adapter/fhir/patient_search.py ``DATE_COMPARISONS``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import Child
from tests.api.conftest import Callers
from tests.api.test_family_walk import every_page

WIDEN = dt.timedelta(days=36)
ADMITS: dict[str, Callable[[dt.date, dt.date, dt.date], bool]] = {
    "eq": lambda d, start, end: start <= d < end,
    "ne": lambda d, start, end: not start <= d < end,
    "lt": lambda d, start, _end: d < start,
    "le": lambda d, _start, end: d < end,
    "gt": lambda d, _start, end: d >= end,
    "ge": lambda d, start, _end: d >= start,
    "sa": lambda d, _start, end: d >= end,
    "eb": lambda d, start, _end: d < start,
    "ap": lambda d, start, end: start - WIDEN <= d < end + WIDEN,
}


def ranges(born: dt.date) -> list[tuple[str, dt.date, dt.date]]:
    """Return the day, month and year of ``born`` as search values with their ranges."""
    month_end = (born.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return [(born.isoformat(), born, born + dt.timedelta(days=1)),
            (born.strftime("%Y-%m"), born.replace(day=1), month_end),
            (str(born.year), dt.date(born.year, 1, 1), dt.date(born.year + 1, 1, 1))]


@pytest.mark.parametrize("prefix", sorted(ADMITS))
def test_each_prefix_admits_what_it_says(demo: Database, client: FlaskClient, callers: Callers,
                                         prefix: str) -> None:
    """The search's matches are the live children the prefix admits, for a day, a month and a
    year."""
    with demo.sessions() as session:
        born = dict(session.execute(select(Child.resource_id, Child.birth_date)
                                    .where(Child.record_status == "live")).all())
    middle = sorted(born.values())[len(born) // 2]
    for value, start, end in ranges(middle):
        found = {p["id"] for p in every_page(client, callers.admin,
                                             f"birthdate={prefix}{value}&_count=50")}
        assert found == {rid for rid, d in born.items() if ADMITS[prefix](d, start, end)}, value
