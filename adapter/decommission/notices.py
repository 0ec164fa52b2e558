"""The decommission notice: the plan's PlanDefinition, sent to every subscriber of the
decommission-notice topic whenever the timetable or the phase changes, through
the notifications outbox in the transaction of the change."""

from __future__ import annotations

from sqlalchemy.orm import Session

from adapter.decommission.plan import view
from adapter.decommission.resources import plan_definition
from adapter.models import DecommissionPlan
from adapter.models.notify import Event
from adapter.notify.outbox import emit_decommission_notice


def announce(session: Session, plan: DecommissionPlan, base: str,
             action: str = "update") -> Event:
    """Queue the decommission notice carrying the current plan (no personal data; its codes
    under the canonical ``base``); return its outbox event."""
    return emit_decommission_notice(session, plan_definition(view(plan), base), action)
