"""The one policy package: the only place that decides what a caller may see of a child
(``disclosure``), who may create or change which record (``authority``) and what each
decommissioning phase allows (``phase``). Services, routes, exports, notifications and CLI
commands ask it; nothing else re-implements its rules (docs/architecture.md)."""

from adapter.security.policy.disclosure import (
    SHIELDED_VISIBLE,
    Disclosure,
    copy_involvement,
    copy_local_identifier,
    disclose_child,
    may_see_involvement,
    may_see_local_identifier,
    organisation_code,
)
from adapter.security.policy.phase import (
    ALLOWED_KINDS,
    KINDS,
    PHASE_EXIT,
    CommandPhase,
    CommandRefused,
    PhaseRefused,
    allows,
    command_kind,
    command_refusal,
    declared_phase,
    enforce_request,
    request_kind,
    skipped,
)

__all__ = [
    "ALLOWED_KINDS",
    "KINDS",
    "PHASE_EXIT",
    "CommandPhase",
    "CommandRefused",
    "PhaseRefused",
    "allows",
    "command_kind",
    "command_refusal",
    "declared_phase",
    "enforce_request",
    "request_kind",
    "skipped",
    "SHIELDED_VISIBLE",
    "Disclosure",
    "copy_involvement",
    "copy_local_identifier",
    "disclose_child",
    "may_see_involvement",
    "may_see_local_identifier",
    "organisation_code",
]
