"""SMART scopes for backend services (SMART App Launch 2.0 "Scopes for requesting clinical
data"): v2 ``system/Patient.rs`` / ``system/*.cruds`` and v1 ``system/Patient.read`` / ``.write``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Interactions and the v2 permission letter that grants each.
PERMISSION_OF: Final = {
    "create": "c", "read": "r", "vread": "r", "history": "r", "update": "u", "patch": "u",
    "delete": "d", "search": "s", "operation": "r", "export": "r",
}
V1_PERMISSIONS: Final = {"read": "rs", "write": "cud", "*": "cruds"}
SCOPE_RE: Final = re.compile(r"system/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|[cruds]+)(\?.*)?")


class InvalidScope(ValueError):
    """A scope string is not a SMART system scope."""


@dataclass(frozen=True)
class Scope:
    """One system scope: a resource type (or ``*``) and the permissions it grants."""

    resource: str
    permissions: frozenset[str]

    def grants(self, resource_type: str, interaction: str) -> bool:
        """Return True when this scope allows ``interaction`` on ``resource_type``."""
        letter = PERMISSION_OF.get(interaction, interaction)
        return self.resource in ("*", resource_type) and letter in self.permissions


def parse_scope(text: str) -> Scope:
    """Parse one SMART system scope; v1 ``read``/``write``/``*`` become v2 letters.

    :raises InvalidScope: not a SMART system scope, or v2 letters out of ``cruds`` order.
    """
    match = SCOPE_RE.fullmatch(text)
    if not match:
        raise InvalidScope(f"{text!r} is not a SMART system scope (e.g. system/Patient.rs)")
    resource, permission = match.group(1), match.group(2)
    letters = V1_PERMISSIONS.get(permission, permission)
    if permission not in V1_PERMISSIONS and "".join(c for c in "cruds" if c in letters) != letters:
        raise InvalidScope(f"{text!r}: v2 permissions must be in the order c, r, u, d, s")
    return Scope(resource, frozenset(letters))


def parse_scopes(text: str) -> list[Scope]:
    """Parse a space-separated scope string.

    :raises InvalidScope: one of them is not a SMART system scope.
    """
    return [parse_scope(item) for item in text.split()]


def granted_scopes(requested: str, allowed: str) -> str:
    """Return the requested scopes that the allowed ones cover (requested ∩ allowed).

    A requested scope is granted when every permission it asks for is granted by one allowed
    scope on the same or a wildcard resource; it is granted as requested.

    :raises InvalidScope: a requested scope is malformed.
    """
    allowed_scopes = parse_scopes(allowed)
    granted = []
    for item in requested.split():
        wanted = parse_scope(item)
        if any(a.resource in ("*", wanted.resource) and wanted.permissions <= a.permissions
               for a in allowed_scopes):
            granted.append(item)
    return " ".join(granted)


def scopes_grant(scopes: list[Scope], resource_type: str, interaction: str) -> bool:
    """Return True when any scope allows ``interaction`` on ``resource_type``."""
    return any(scope.grants(resource_type, interaction) for scope in scopes)
