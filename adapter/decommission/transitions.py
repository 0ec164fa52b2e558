"""Moving the service from one phase to the next (``decommission advance``): each transition
in one transaction with its audit record and the decommission notice; switch-off also stops the
directory's change notifications and issues the purge Tasks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from adapter.db import Database
from adapter.decommission import phases
from adapter.decommission.codes import NEXT_PHASE
from adapter.decommission.notices import announce
from adapter.decommission.plan import aware, load_plan, view
from adapter.decommission.tasks import issue_purge_tasks
from adapter.errors import Conflict, NotFound
from adapter.models import DecommissionPlan, Subscription
from adapter.models.notify import DIRECTORY_TOPIC, ECAF_TOPIC
from adapter.security import audit
from adapter.settings import Settings


class NotDue(Conflict):
    """Nothing is due: the next phase's time has not come, or only destruction is left."""


@dataclass(frozen=True)
class Advanced:
    """The outcome of ``advance``: the phases before and after, and Tasks issued."""

    before: str
    after: str
    tasks: int


def due_at(plan: DecommissionPlan) -> dt.datetime | None:
    """Return when the next phase reachable by ``advance`` is due (None: none is)."""
    return {"live": plan.run_down_at, "run-down": plan.switch_off_at}.get(plan.phase)


def _stop_change_notifications(session: Session, now: dt.datetime) -> None:
    """Turn off the subscriptions to directory and eCAF changes: after switch-off no child's
    data leaves the service, not even in a notification (docs/architecture.md
    "Decommissioning": only purge traffic)."""
    session.execute(update(Subscription)
                    .where(Subscription.topic.in_((DIRECTORY_TOPIC, ECAF_TOPIC)),
                           Subscription.status != "off")
                    .values(status="off", last_updated=now, version=Subscription.version + 1,
                            error="The directory was switched off (decommissioning).")
                    .execution_options(synchronize_session=False))


def _enter(session: Session, plan: DecommissionPlan, phase: str, now: dt.datetime,
           settings: Settings) -> int:
    """Put ``plan`` in ``phase`` (with the phase's own work); return Tasks issued."""
    before, plan.phase = plan.phase, phase
    plan.version, plan.last_updated = plan.version + 1, now
    issued = 0
    if phase == "run-down":
        plan.run_down_started = now
    elif phase == "switched-off":
        plan.switched_off = now
        _stop_change_notifications(session, now)
        issued = len(issue_purge_tasks(session, view(plan), now, settings))
    session.flush()
    audit.record(session, "decommission-phase", resource_type="PlanDefinition",
                 resource_id="decommission-plan", detail=f"{before} -> {phase}")
    announce(session, plan, settings.canonical_base)
    return issued


def advance(db: Database, now: dt.datetime, settings: Settings,
            force: bool = False) -> Advanced:
    """Move to the next phase when its time has come (``force``: now, for drills); the
    switch-off's purge Tasks and the notices are made with ``settings``.

    :raises NotFound: there is no plan.
    :raises NotDue: the next phase is not due yet, or only destruction is left.
    """
    with db.write_transaction() as session:
        plan = load_plan(session, lock=True)
        if plan is None:
            raise NotFound("There is no decommissioning plan: run `decommission plan` first.")
        due, before = due_at(plan), plan.phase
        if due is None:
            raise NotDue(f"The service is {plan.phase}: "
                           + ("run `decommission destroy --yes` once destroy-by has come."
                              if plan.phase == "switched-off" else "nothing follows."))
        if not force and now < aware(due):
            raise NotDue(f"The {NEXT_PHASE[plan.phase]} phase is due at "
                           f"{aware(due).isoformat()}; use --now to advance earlier (drills).")
        tasks = _enter(session, plan, NEXT_PHASE[plan.phase], now, settings)
        after = plan.phase
    phases.forget(db)
    return Advanced(before, after, tasks)
