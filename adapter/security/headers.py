"""Security headers on every response, set in one ``after_request`` hook so that
error responses, 404s and 405s carry them too (OWASP "HTTP Headers Cheat Sheet", "REST
Security Cheat Sheet" section "Security headers").

The gateway answers JSON, XML and NDJSON to systems, not pages to browsers: the Content
Security Policy allows nothing to load or frame (``default-src 'none'; frame-ancestors
'none'``). The admin pages under ``/admin/`` are HTML styled by the gateway's own stylesheet,
so they get ``style-src 'self'`` and nothing more. Responses that can carry a child's data
must not be kept by any cache (RFC 9111 section 5.2.2.5, ``no-store``): every ``/fhir`` and
``/directory`` response except the conformance resources, which are public and the same for
everyone.
"""

from __future__ import annotations

from typing import Final

from flask import Flask, Response, request

API_POLICY: Final = "default-src 'none'; frame-ancestors 'none'"
ADMIN_POLICY: Final = "default-src 'none'; style-src 'self'; frame-ancestors 'none'"
# RFC 6797: browsers ignore HSTS on plain http, so it is harmless behind a TLS terminator.
HSTS: Final = "max-age=31536000; includeSubDomains"
# Conformance resources and discovery under /fhir: public, the same for every caller.
CONFORMANCE: Final = frozenset({"metadata", ".well-known", "StructureDefinition", "ConceptMap",
                                "CodeSystem", "ValueSet", "SearchParameter",
                                "OperationDefinition", "SubscriptionTopic"})
FIXED: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": HSTS,
}


def carries_child_data(path: str) -> bool:
    """Return True when a response to ``path`` can carry a child's data."""
    if path == "/fhir" or path.startswith("/fhir/"):
        first = path.removeprefix("/fhir").strip("/").split("/", 1)[0]
        return first not in CONFORMANCE
    return path == "/directory" or path.startswith("/directory/")


def add_security_headers(response: Response) -> Response:
    """Set the security headers on ``response`` (after_request)."""
    for name, value in FIXED.items():
        response.headers[name] = value
    admin = request.path == "/admin" or request.path.startswith("/admin/")
    response.headers["Content-Security-Policy"] = ADMIN_POLICY if admin else API_POLICY
    if carries_child_data(request.path):
        response.headers["Cache-Control"] = "no-store"
    # The WSGI server names itself ("gunicorn", without a version); the app adds nothing.
    response.headers.pop("Server", None)
    response.headers.pop("X-Powered-By", None)
    return response


def init_app(app: Flask) -> None:
    """Install the headers hook."""
    app.after_request(add_security_headers)
