"""The phase policy: the only place that decides what each decommissioning phase lets through
(docs/domain.md "The decommissioning timetable"): live lets everything through; run-down allows
reads only (no write of children's data); after switch-off only purge traffic; after
destruction nothing that could bring personal data back — while metadata, the certificate,
``/healthz`` and the operator's administration (dashboard, clients, the plan) keep working.

Two kinds of caller are judged, each by the kind it declares once (``KINDS``): every HTTP
route (``adapter.security.access``) and every CLI command (``command_kind``). The decision is
``allows``; applying it to the current plan, with the refusal that gives the timetable, is the
phase gate's (``adapter.decommission.gate``), which reads the plan: the access layer calls the
gate the decommissioning hands it at start-up, and the command group (``adapter.cli``) calls
it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import click

# What a route or command does: ``meta`` (no child's data: metadata, discovery, health,
# certificate, tokens), ``read`` (discloses children's data), ``write`` (creates or changes
# it), ``purge`` (purge instructions and their answers, deliveries of them), ``admin`` (the
# operator's administration: dashboard, clients, the plan, the schema; no child's data).
KINDS: Final = ("meta", "read", "write", "purge", "admin")
ALLOWED_KINDS: Final = {
    "live": frozenset(KINDS),
    "run-down": frozenset({"meta", "read", "purge", "admin"}),
    "switched-off": frozenset({"meta", "purge", "admin"}),
    "destroyed": frozenset({"meta", "admin"}),
}
ALWAYS: Final = ALLOWED_KINDS["destroyed"]
PHASE_EXIT: Final = 3  # the CLI's exit code for a command the phase refuses
C = TypeVar("C", bound=click.Command)


def allows(phase: str, kind: str) -> bool:
    """Return whether ``phase`` lets a route or command of ``kind`` through."""
    return kind in ALLOWED_KINDS[phase]


# --- CLI ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CommandPhase:
    """What a CLI command declares: its kind, and optionally a flag (``--if-empty``) that
    makes a refusal mean "nothing to do" (a message, exit code 0) instead of an error."""

    kind: str
    skip_flag: str | None = None


class CommandRefused(click.ClickException):
    """A CLI command the phase refuses (stderr message, exit code ``PHASE_EXIT``)."""

    exit_code = PHASE_EXIT


def command_kind(kind: str, *, skip_flag: str | None = None) -> Callable[[C], C]:
    """Declare what a CLI command does (put it above ``@click.command``), as a route declares
    its kind to the access layer; the command group refuses an undeclared command."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")

    def declare(command: C) -> C:
        command.phase = CommandPhase(kind, skip_flag)  # type: ignore[attr-defined]
        return command
    return declare


def declared_phase(command: click.Command) -> CommandPhase | None:
    """Return the declaration of ``command`` (None: undeclared)."""
    declared: CommandPhase | None = getattr(command, "phase", None)
    return declared
