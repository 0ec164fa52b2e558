"""The decommissioning's vocabulary: phases and the codes of its CodeSystem
(``schemas/fhir/CodeSystem-decommission.json``, served at /fhir/CodeSystem). What each phase
lets through is the phase policy's (``adapter.security.policy.phase``)."""

from __future__ import annotations

from typing import Final

from adapter.models.decommission import PHASES
from adapter.systems import OwnSystems

CODE_SYSTEM: Final = "decommission"
PLAN_ID: Final = "decommission-plan"
PHASE_TITLES: Final = {"live": "Live", "run-down": "Run-down (read only)",
                       "switched-off": "Switched off (purge traffic only)",
                       "destroyed": "Destroyed"}
NEXT_PHASE: Final = dict(zip(PHASES, PHASES[1:], strict=False))
# Concepts of the CodeSystem: phases, the Task code, Task input and output types.
PURGE: Final = "purge"
CHILD_INPUT: Final = "child"
CHILD_COUNT_INPUT: Final = "child-count"
PURGE_LIST_INPUT: Final = "purge-list"
PURGE_COUNT_OUTPUT: Final = "purge-count"
# Dashboard statuses of a purge Task (adapter.decommission.tasks.shown_status), and their
# words.
DISPLAY_STATUSES: Final = ("never-sent", "instructed", "accepted", "completed", "rejected",
                           "silent")
STATUS_WORDS: Final = {"never-sent": "never sent", "instructed": "instructed",
                       "accepted": "accepted", "completed": "completed", "rejected": "rejected",
                       "silent": "silent"}


def code_system(base: str) -> str:
    """Return the URL of the decommissioning CodeSystem under the canonical base."""
    return OwnSystems(base).code_system(CODE_SYSTEM)


def coding(base: str, code: str, display: str | None = None) -> dict[str, str]:
    """Return a Coding of the decommissioning CodeSystem."""
    item = {"system": code_system(base), "code": code}
    if display:
        item["display"] = display
    return item
