"""The authenticated caller of a request."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Final

from adapter.security.scopes import Scope, scopes_grant


@dataclass(frozen=True)
class Caller:
    """A registered client system acting through a valid access token."""

    client_id: str
    organisation_code: str
    scopes: list[Scope]
    rights: frozenset[str]
    purpose_of_use: str | None = None
    request_id: str | None = field(default=None, compare=False)

    def has_right(self, right: str) -> bool:
        """Return True when the client holds ``right`` (shielded, sensitive, audit, admin)."""
        return right in self.rights

    def may(self, resource_type: str, interaction: str) -> bool:
        """Return True when the caller's scopes allow ``interaction`` on ``resource_type``."""
        return scopes_grant(self.scopes, resource_type, interaction)


# The caller of a request that named no valid client: a public route's (conformance
# resources, metadata) or a refused one's, as the audit trail names it.
UNAUTHENTICATED: Final = "unauthenticated"


def anonymous(request_id: str | None = None) -> Caller:
    """Return the caller of a request without a valid token: no scope, no right."""
    return Caller(UNAUTHENTICATED, "-", [], frozenset(), None, request_id)


def current_caller() -> Caller | None:
    """Return the caller of the current request, if authenticated (None outside a request;
    without the web layer loaded there is none: the dispatcher runs without Flask)."""
    if sys.modules.get("flask") is None:
        return None
    from flask import g, has_request_context

    if not has_request_context():
        return None
    caller: Caller | None = g.get("caller")
    return caller
