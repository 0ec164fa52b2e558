"""One round of the purge agent: every open purge Task of the client, each taken as far as it
goes (``adapter.holder.agent`` explains the steps and why a crash loses nothing)."""

from __future__ import annotations

import logging
from typing import Any

from adapter.holder.agent import PURGE_COUNT, AgentError, Gateway, Outcome, Settings, State
from adapter.holder.agent import children_of as named_children
from adapter.holder.local import Purged, call_hook, run_command

log = logging.getLogger(__name__)


def _purge_count_output(task: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Return ``Task.output`` with the records destroyed, coded as the Task's own code is
    (the gateway's decommissioning CodeSystem)."""
    system = task["code"]["coding"][0]["system"]
    return [{"type": {"coding": [{"system": system, "code": PURGE_COUNT,
                                  "display": "Records destroyed"}]},
             "valueUnsignedInt": count}]


def _purge_locally(settings: Settings, task_id: str, children: list[dict[str, str]]) -> Purged:
    """Hand the children to the local system (command or hook)."""
    if settings.purge_command:
        return run_command(settings.purge_command, task_id, children)
    if settings.purge_url:
        return call_hook(settings.purge_url, task_id, children, settings.timeout)
    raise AgentError("give the local system's purge command or hook")


def _accept(gateway: Gateway, task: dict[str, Any]) -> dict[str, Any]:
    """Accept a Task not yet accepted (an accepted one is left as it is)."""
    if task["status"] in ("requested", "received"):
        return gateway.update({**task, "status": "accepted"})
    return task


def handle(gateway: Gateway, state: State, task: dict[str, Any]) -> Outcome:
    """Take one Task as far as it goes: accept, purge, answer.

    :raises AgentError: the gateway or the local system cannot be reached now.
    """
    task_id = str(task["id"])
    task = _accept(gateway, gateway.read(task_id))
    known = state.step(task_id)
    if known["step"] not in ("purged", "rejecting"):
        state.save(task_id, step="purging")
        result = _purge_locally(gateway.settings, task_id, named_children(gateway, task))
        if not result.ok:
            state.save(task_id, step="rejecting", reason=result.reason)
        else:  # counts of earlier, interrupted runs add up
            state.save(task_id, step="purged", purged=int(known.get("purged", 0)) + result.purged)
    known = state.step(task_id)
    if known["step"] == "rejecting":
        gateway.update({**task, "status": "rejected",
                        "statusReason": {"text": known["reason"]}})
        state.save(task_id, step="rejected")
        return Outcome(task_id, "rejected", reason=known["reason"])
    gateway.update({**task, "status": "completed",
                    "output": _purge_count_output(task, int(known["purged"]))})
    state.save(task_id, step="completed")
    return Outcome(task_id, "completed", purged=int(known["purged"]))


def run_round(settings: Settings) -> list[Outcome]:
    """Handle every open purge Task of the client; return what was done.

    :raises AgentError: the gateway or the local system cannot be reached now.
    """
    gateway, state = Gateway(settings), State.load(settings.state_file)
    outcomes = []
    try:
        for task in gateway.open_tasks():
            outcome = handle(gateway, state, task)
            log.info("purge Task %s: %s", outcome.task, outcome.status)
            outcomes.append(outcome)
    finally:
        gateway.session.close()
    return outcomes
