"""The decommissioning (docs/architecture.md "Decommissioning"): plan and phases, purge
Tasks, reminders and escalation, eCAF re-keying, destruction and its certificate, dashboard.

- ``plan``: the timetable; ``phases``: the current phase (what it allows is the phase policy's,
  ``adapter.security.policy.phase``); ``gate``: applies that policy to requests and commands;
  ``transitions``: ``advance``; ``notices``: the decommission notice to subscribers;
- ``tasks``, ``acknowledge``, ``handlers``: purge Tasks, their answers, the FHIR handlers;
- ``contact``: telling a holder at its registered contact, and at once after switch-off;
- ``rekey``: the eCAF re-keying mapping; ``resources``: the FHIR resources;
- ``destruction``, ``storage``, ``certificate``, ``certify``: destruction (the operator's
  exports too, ``adapter.export.operator``) and its evidence;
  ``final_notice``: the destruction's own notice, delivered before subscriptions end;
- ``dashboard``: ``/admin/decommission``; ``routes``: the HTTP routes; ``cli``: the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the decommissioning's routes and its dashboard; hand the access layer the
    phase gate it runs before every route, and notifications what a new purge-instruction
    subscription sets off, and the CapabilityStatement its phase's description."""
    from adapter.decommission import contact, dashboard, gate, routes
    from adapter.fhir.capability import DESCRIBE_PHASE_KEY
    from adapter.notify.subscriptions import PURGE_SUBSCRIBED_KEY
    from adapter.security.access import PHASE_GATE_KEY

    app.extensions[PHASE_GATE_KEY] = gate.enforce_request
    app.extensions[PURGE_SUBSCRIBED_KEY] = contact.announce_open_task
    app.extensions[DESCRIBE_PHASE_KEY] = describe_phase
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
