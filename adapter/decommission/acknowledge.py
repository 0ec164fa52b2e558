"""A purge Task's owner answers by updating it (FHIR R4 task.html "Task state machine"): the
gateway takes the owner's ``status``, ``statusReason`` and ``output`` and nothing else (the
instruction itself is the gateway's), checks the transition, and records the answer in the
audit trail. Only the system the Task is addressed to may answer it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from fhir.resources.R4B.task import Task as TaskModel
from pydantic import ValidationError

from adapter.decommission.codes import PURGE_COUNT_OUTPUT
from adapter.errors import Conflict, Invalid
from adapter.models import PurgeTask
from adapter.security import audit
from adapter.security.caller import Caller

# Transitions an owner may make (task.html#statemachine, restricted to a purge order):
# answered (accepted or rejected), worked on, finished (completed or failed). A rejection may
# be reconsidered; a completed Task is final.
TRANSITIONS: Final = {
    "requested": {"received", "accepted", "rejected"},
    "received": {"accepted", "rejected"},
    "accepted": {"in-progress", "completed", "failed", "rejected"},
    "in-progress": {"completed", "failed"},
    "rejected": {"accepted"},
    "failed": {"accepted", "in-progress"},
    "completed": set(),
}
NEEDS_REASON: Final = frozenset({"rejected", "failed"})


@dataclass(frozen=True)
class Answer:
    """What the owner says: the new status, its reason and the number of records destroyed."""

    status: str
    reason: str | None
    purged: int | None


def _validated(resource: dict[str, Any], resource_id: str) -> TaskModel:
    """Return the body as an R4 Task model.

    :raises Invalid: not a Task, another id, or not valid FHIR.
    """
    if resource.get("resourceType") != "Task":
        raise Invalid("A Task resource is needed.", expression="Task")
    if resource.get("id") not in (None, resource_id):
        raise Invalid("The Task's id must be the id in the URL.", expression="Task.id")
    try:
        return TaskModel.model_validate(resource)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"] if isinstance(p, str | int))
        raise Invalid(f"Task.{where}: {error['msg']}", expression=f"Task.{where}") from None


def _purge_count(resource: dict[str, Any], base_system: str) -> int | None:
    """Return the purge-count output of the body, if given.

    :raises Invalid: a purge-count that is not a whole number of zero or more.
    """
    for output in resource.get("output") or []:
        codings = (output.get("type") or {}).get("coding") or [] if isinstance(output, dict) \
            else []
        if any(c.get("system") == base_system and c.get("code") == PURGE_COUNT_OUTPUT
               for c in codings if isinstance(c, dict)):
            value = output.get("valueUnsignedInt", output.get("valueInteger"))
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise Invalid("The purge-count output is a whole number of zero or more.",
                              expression="Task.output.value")
            return value
    return None


def read_answer(resource: dict[str, Any], resource_id: str, base_system: str) -> Answer:
    """Return the owner's answer in an updated Task.

    :raises Invalid: not a valid Task, or a rejection without a reason, or a completion
        without its purge count.
    """
    model = _validated(resource, resource_id)
    reason = None
    if model.statusReason is not None:
        reason = model.statusReason.text or next(
            (c.display or c.code for c in model.statusReason.coding or [] if c.display or c.code),
            None)
    purged = _purge_count(resource, base_system)
    status = str(model.status)
    if status not in TRANSITIONS:
        raise Invalid(f"A purge Task's status is one of {', '.join(TRANSITIONS)} "
                      "(FHIR R4 task-status).", expression="Task.status")
    if status in NEEDS_REASON and not reason:
        raise Invalid(f"A {status} purge Task needs a statusReason saying why.",
                      expression="Task.statusReason")
    if status == "completed" and purged is None:
        raise Invalid(f"A completed purge Task needs an output of type {PURGE_COUNT_OUTPUT} "
                      f"({base_system}): how many records were destroyed.",
                      expression="Task.output")
    return Answer(status, reason[:500] if reason else None, purged)


def apply_answer(session: Any, task: PurgeTask, answer: Answer, caller: Caller,
                 now: dt.datetime) -> bool:
    """Apply the owner's answer to ``task`` and audit it; return False when nothing changed.

    :raises Conflict: a transition the purge Task does not allow.
    """
    purged = answer.purged if answer.status == "completed" else task.purged
    if (answer.status, answer.reason, purged) == (task.status, task.status_reason, task.purged):
        return False
    if answer.status != task.status and answer.status not in TRANSITIONS[task.status]:
        allowed = ", ".join(sorted(TRANSITIONS[task.status])) or "none: it is final"
        raise Conflict(f"A purge Task cannot go from {task.status} to {answer.status} "
                       f"(allowed: {allowed}).", expression="Task.status")
    task.status, task.status_reason, task.purged = answer.status, answer.reason, purged
    task.answered = task.answered or now
    task.completed = now if answer.status == "completed" else None
    task.version, task.last_updated = task.version + 1, now
    audit.record(session, "purge-ack", resource_type="Task", resource_id=task.resource_id,
                 detail=f"{task.client_id}: {answer.status}"
                        + (f", {answer.purged} records destroyed" if answer.purged is not None
                           else ""), caller=caller)
    return True
