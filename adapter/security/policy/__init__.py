"""The one policy package: the only place that decides what a caller may see of a child
(``disclosure``), who may create or change which record (``authority``) and what each
decommissioning phase allows (``phase``). Services, routes, exports, notifications and CLI
commands ask it; nothing else re-implements its rules (docs/architecture.md)."""

from adapter.security.policy.authority import (
    Described,
    StoredShared,
    acts_for,
    codes_of,
    is_administrator,
    may_change_organisation,
    may_change_practitioner,
    may_write_assessment,
    may_write_child,
    may_write_involvement,
    require_child_writer,
    require_organisation_writer,
    require_practitioner_writer,
    require_shared_unchanged,
    shared_refusal,
)
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

__all__ = [
    "SHIELDED_VISIBLE",
    "Described",
    "Disclosure",
    "StoredShared",
    "acts_for",
    "codes_of",
    "copy_involvement",
    "copy_local_identifier",
    "disclose_child",
    "is_administrator",
    "may_change_organisation",
    "may_change_practitioner",
    "may_see_involvement",
    "may_see_local_identifier",
    "may_write_assessment",
    "may_write_child",
    "may_write_involvement",
    "organisation_code",
    "require_child_writer",
    "require_organisation_writer",
    "require_practitioner_writer",
    "require_shared_unchanged",
    "shared_refusal",
]
