"""The decommissioning (docs/architecture.md "Decommissioning"): plan and phases, purge
Tasks, reminders and escalation, eCAF re-keying, destruction and its certificate, dashboard.

- ``plan``: the timetable; ``phases``: the current phase (what it allows is the phase policy's,
  ``adapter.security.policy.phase``);
  ``transitions``: ``advance``; ``notices``: the decommission notice to subscribers;
- ``tasks``, ``acknowledge``, ``handlers``: purge Tasks, their answers, the FHIR handlers;
- ``contact``: telling a holder at its registered contact, and at once after switch-off;
- ``rekey``: the eCAF re-keying mapping; ``resources``: the FHIR resources;
- ``destruction``, ``storage``, ``certificate``, ``certify``: destruction and its evidence;
  ``final_notice``: the destruction's own notice, delivered before subscriptions end;
  ``exports``: the operator's exports, removed by destruction;
- ``dashboard``: ``/admin/decommission``; ``routes``: the HTTP routes; ``cli``: the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the decommissioning's routes and its dashboard."""
    from adapter.decommission import dashboard, routes

    routes.init_app(app)
    app.register_blueprint(dashboard.blueprint)


def describe_phase(statement: dict[str, Any]) -> None:
    """Add the phase to a CapabilityStatement (its description; ``status`` retired once the
    data is destroyed). Task and PlanDefinition are declared in every phase, as their routes
    answer in every phase (``adapter.fhir.capability``)."""
    from adapter.decommission.phases import current_plan
    from adapter.decommission.resources import timetable_text

    plan = current_plan()
    phase = plan.phase if plan is not None else "live"
    statement["description"] += f". Decommissioning phase: {phase}" + (
        f". {timetable_text(plan)} Plan: PlanDefinition/decommission-plan." if plan else ".")
    if plan is not None and phase == "destroyed":
        statement["status"] = "retired"
