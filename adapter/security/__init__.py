"""Clients, tokens, scopes, the access layer, the disclosure policy, the audit trail and the
delivery ledger (who holds which child)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Install the access layer, the abuse limits, the audit of refused reads, the security
    headers and the auth routes."""
    from adapter.security import access, audit, headers, limits, routes

    limits.init_app(app)
    audit.init_app(app)
    access.init_app(app)
    headers.init_app(app)
    app.register_blueprint(routes.blueprint)
