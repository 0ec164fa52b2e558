"""The decommissioning phase as this process sees it: the plan read from the database and
cached. What each phase allows is decided by the phase policy
(``adapter.security.policy.phase``), which the access layer and the CLI ask.

The phase is read from the database at most once a second per process (one primary-key read of
a one-row table) so that a change made by the CLI in another process takes effect everywhere
within a second; a change made in this process takes effect at once.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Final

from sqlalchemy.exc import OperationalError, ProgrammingError

from adapter.db import Database, get_db
from adapter.decommission.plan import PlanView, load_plan, view

CACHE_SECONDS: Final = 1.0
_cache: weakref.WeakKeyDictionary[Database, tuple[float, PlanView | None]] = \
    weakref.WeakKeyDictionary()
_lock = threading.Lock()


def read_plan(db: Database) -> PlanView | None:
    """Return the plan from the database (None before one is made or migrated)."""
    try:
        with db.sessions() as session:
            plan = load_plan(session)
            return view(plan) if plan is not None else None
    except (OperationalError, ProgrammingError) as exc:
        if "decommission_plan" not in str(exc.orig):
            raise
        return None  # no decommission_plan table yet: a database not migrated this far


def current_plan(db: Database | None = None) -> PlanView | None:
    """Return the plan as this process last saw it (at most a second old)."""
    database = db or get_db()
    now = time.monotonic()
    with _lock:
        cached = _cache.get(database)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    plan = read_plan(database)
    with _lock:
        _cache[database] = (now, plan)
    return plan


def forget(db: Database | None = None) -> None:
    """Drop the cached plan (after this process changed it)."""
    with _lock:
        _cache.pop(db or get_db(), None)


def current_phase(db: Database | None = None) -> str:
    """Return the phase the service is in (``live`` without a plan)."""
    plan = current_plan(db)
    return plan.phase if plan is not None else "live"
