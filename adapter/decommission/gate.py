"""The phase gate: applies the phase policy (``adapter.security.policy.phase``) to the current
decommissioning plan (docs/domain.md "The decommissioning timetable").

- every HTTP route, through the access layer: ``adapter.security.access.enforce_access`` calls
  ``enforce_request`` (handed to it by ``adapter.decommission.init_app``) with the route's
  declared kind; ``request_kind`` is the one exception: a Subscription write to a purge topic
  is purge traffic;
- every CLI command, through the command group (``adapter.cli``), which runs each command's
  declaration through ``command_refusal`` before the command does anything.

Refusals give the timetable: an OperationOutcome (FHIR R4 operationoutcome.html, issue type
``business-rule``) over HTTP, a message on stderr and exit code ``PHASE_EXIT`` on the CLI.
"""

from __future__ import annotations

from typing import Any, Final

from flask import current_app

from adapter.decommission.codes import coding
from adapter.decommission.phases import current_plan
from adapter.decommission.plan import PlanView
from adapter.decommission.resources import timetable_text
from adapter.errors import GatewayError, issue, operation_outcome
from adapter.security.policy.phase import ALWAYS, CommandPhase, allows

_STATE: Final = {"run-down": "is in run-down (reads only)",
                 "switched-off": "is switched off (only purge traffic)",
                 "destroyed": "was destroyed (nothing that could bring personal data back)"}
_DOES: Final = {"read": "reads children's data", "write": "writes children's data",
                "purge": "is purge traffic"}


# --- HTTP --------------------------------------------------------------------------------------

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


def request_kind(kind: str, resource_type: str | None) -> str:
    """Return the kind of this request: the route's declared kind, except that a Subscription
    write to the purge-instruction or decommission-notice topic is purge traffic
    (``adapter.notify.subscriptions.purge_subscription_write``) — or a system could not
    subscribe for its purge Task. Looked at only when the declared kind is refused, so a live
    service never parses a body here."""
    if kind == "write" and resource_type == "Subscription":
        from adapter.notify.subscriptions import purge_subscription_write

        if purge_subscription_write():
            return "purge"
    return kind


def enforce_request(kind: str, resource_type: str | None = None) -> None:
    """Refuse a request whose kind (``request_kind``) the current phase does not allow.

    :raises PhaseRefused: 409 for a write in run-down; 410 for anything but purge traffic and
        metadata after switch-off, and anything but metadata after destruction.
    """
    if kind in ALWAYS:
        return  # allowed in every phase: no need to look
    plan = current_plan()
    if plan is None or allows(plan.phase, kind) \
            or allows(plan.phase, request_kind(kind, resource_type)):
        return
    raise _http_refusal(plan)


def _http_refusal(plan: PlanView) -> PhaseRefused:
    """Return the refusal of a request in ``plan``'s phase."""
    base = str(current_app.config["CANONICAL_BASE"])
    if plan.phase == "run-down":
        return PhaseRefused("The directory is in run-down: writes are refused. "
                            + timetable_text(plan), 409, plan.phase, base)
    served = "purge instructions, Subscription status and metadata are" \
        if plan.phase == "switched-off" else "metadata and the destruction certificate are"
    return PhaseRefused(f"The directory is {plan.phase.replace('-', ' ')}: only {served} "
                        "served. " + timetable_text(plan), 410, plan.phase, base)


# --- CLI ---------------------------------------------------------------------------------------

def command_refusal(name: str, declared: CommandPhase, plan: PlanView | None) -> str | None:
    """Return why ``name`` may not run in ``plan``'s phase (None: it may)."""
    if plan is None or allows(plan.phase, declared.kind):
        return None
    return (f"The directory {_STATE[plan.phase]}: `{name}` {_DOES[declared.kind]} and is "
            f"refused; nothing was changed. {timetable_text(plan)}")


def skipped(name: str, flag: str, plan: PlanView) -> str:
    """Return the message of a command whose skip flag turned a refusal into nothing to do."""
    option = "--" + flag.replace("_", "-")
    return (f"The directory {_STATE[plan.phase]}: `{name} {option}` has nothing to do; "
            "nothing was written.")
