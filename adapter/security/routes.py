"""``POST /auth/token`` and the SMART configuration document (SMART App Launch 2.0,
"Backend Services" and "Conformance")."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from adapter.db import get_db
from adapter.http import json_response, public_base
from adapter.security.access import public, token_audience
from adapter.security.tokens import ASSERTION_ALGS, TokenError, exchange_assertion

blueprint = Blueprint("auth", __name__)


def token_url() -> str:
    """Return the absolute URL of the token endpoint."""
    return f"{public_base()}/auth/token"


def smart_configuration() -> dict[str, Any]:
    """Return the ``.well-known/smart-configuration`` document."""
    return {
        "issuer": public_base(),
        "token_endpoint": token_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


@blueprint.post("/auth/token")
@public("meta")
def token() -> Response:
    """Exchange a signed client assertion for an access token.

    Errors follow OAuth 2.0 (RFC 6749 section 5.2: ``{"error": ...}``), not OperationOutcome:
    this is the authorisation server that SMART clients parse, not a FHIR endpoint.
    """
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if request.mimetype != "application/x-www-form-urlencoded":
        return json_response({"error": "invalid_request", "error_description":
                              "send application/x-www-form-urlencoded"}, 400, headers=headers)
    try:
        with get_db().transaction() as session:
            issued = exchange_assertion(
                session, request.form.to_dict(), {token_url()},
                current_app.config["INSTANCE_PATH"], current_app.config["TOKEN_LIFETIME"],
                token_audience())
    except TokenError as exc:
        return json_response({"error": exc.error, "error_description": exc.description},
                             exc.status, headers=headers)
    return json_response(issued.as_response(), headers=headers)


@blueprint.get("/.well-known/smart-configuration")
@blueprint.get("/fhir/.well-known/smart-configuration")
@public("meta")
def well_known() -> Response:
    """Publish the SMART configuration at the server root and under the FHIR base."""
    return json_response(smart_configuration())
