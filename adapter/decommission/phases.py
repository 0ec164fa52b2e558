"""The phase rules, applied to every route by the access layer (``enforce_access`` calls
``enforce_phase`` with the kind each route declares): live lets everything through; run-down
refuses writes (409, issue 7 "writes refused with 409/423"); switched-off lets only purge traffic
and metadata through; destroyed only metadata. Refusals are OperationOutcomes that give the
timetable (FHIR R4 operationoutcome.html, issue type ``business-rule``).

The phase is read from the database at most once a second per process (one primary-key read of
a one-row table) so that a change made by the CLI in another process takes effect everywhere
within a second; a change made in this process takes effect at once.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Final

from sqlalchemy.exc import OperationalError, ProgrammingError

from adapter.db import Database, get_db
from adapter.decommission.codes import ALLOWED_KINDS, coding
from adapter.decommission.plan import PlanView, load_plan, view
from adapter.errors import GatewayError, issue, operation_outcome

CACHE_SECONDS: Final = 1.0
_cache: weakref.WeakKeyDictionary[Database, tuple[float, PlanView | None]] = \
    weakref.WeakKeyDictionary()
_lock = threading.Lock()


class PhaseRefused(GatewayError):
    """The decommissioning phase does not allow this kind of request."""

    issue_code = "business-rule"

    def __init__(self, message: str, status: int, phase: str, base: str) -> None:
        super().__init__(message)
        self.status = status
        self.phase = phase
        self.base = base

    def to_outcome(self) -> dict[str, Any]:
        """Return the refusal with the phase as a coded detail."""
        item = issue("error", self.issue_code, self.message)
        item["details"] = {"coding": [coding(self.base, self.phase)],
                           "text": f"Decommissioning phase: {self.phase}"}
        return operation_outcome([item])


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


def request_kind(kind: str, resource_type: str | None) -> str:
    """Return the kind of this request for the phase rules: the route's declared kind, except
    that a Subscription write to the purge-instruction or decommission-notice topic is purge
    traffic (``adapter.notify.subscriptions.purge_subscription_write``). Looked at only when
    the declared kind is refused, so a live service never parses a body here."""
    if kind == "write" and resource_type == "Subscription":
        from adapter.notify.subscriptions import purge_subscription_write

        if purge_subscription_write():
            return "purge"
    return kind


def enforce_phase(kind: str, resource_type: str | None = None) -> None:
    """Refuse a request whose kind (``request_kind``: the route's declared kind, for the
    resource type it acts on) the current phase does not allow.

    :raises PhaseRefused: 409 for a write in run-down; 410 for anything but purge traffic and
        metadata after switch-off.
    """
    if kind in ALLOWED_KINDS["destroyed"]:
        return  # allowed in every phase: no need to look
    plan = current_plan()
    if plan is None or kind in ALLOWED_KINDS[plan.phase] \
            or request_kind(kind, resource_type) in ALLOWED_KINDS[plan.phase]:
        return
    from flask import current_app

    from adapter.decommission.resources import timetable_text

    base = str(current_app.config["CANONICAL_BASE"])
    if plan.phase == "run-down":
        raise PhaseRefused("The directory is in run-down: writes are refused. "
                           + timetable_text(plan), 409, plan.phase, base)
    served = "purge instructions, Subscription status and metadata are" \
        if plan.phase == "switched-off" else "metadata and the destruction certificate are"
    raise PhaseRefused(f"The directory is {plan.phase.replace('-', ' ')}: only {served} "
                       "served. " + timetable_text(plan), 410, plan.phase, base)
