"""Security headers on every response: every route of the URL map (answered or refused), 404s
and 405s; ``no-store`` where a child's data can be; a stricter policy than HTML pages need."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from adapter.security.headers import ADMIN_POLICY, API_POLICY, carries_child_data
from tests.api.conftest import Callers
from tests.security.routes import body_for, declared_routes

FIXED = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
         "X-Frame-Options": "DENY"}


def assert_secure(response: object, path: str) -> None:
    """Assert the headers every response carries."""
    headers = response.headers  # type: ignore[attr-defined]
    for name, value in FIXED.items():
        assert headers.get(name) == value, (path, name)
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    expected = ADMIN_POLICY if path.startswith("/admin") else API_POLICY
    assert headers["Content-Security-Policy"] == expected, path
    assert "Server" not in headers and "X-Powered-By" not in headers
    if carries_child_data(path):
        assert headers["Cache-Control"] == "no-store", path


def test_every_route_answers_with_the_security_headers(app: Flask, client: FlaskClient) -> None:
    """Each method of each route, called without a token (most are refused): the headers are
    on answers and refusals alike."""
    for route in declared_routes(app):
        path = route.url(resource_id="x", version="1")
        with client.open(path, method=route.method, **body_for(route)) as response:
            assert_secure(response, route.rule)


def test_child_data_is_never_cached_but_conformance_may_be(client: FlaskClient,
                                                           callers: Callers) -> None:
    """Searches and reads of children say no-store; the CapabilityStatement does not."""
    response = client.get("/fhir/Patient?_count=1", headers=callers.la)
    assert response.status_code == 200
    assert_secure(response, "/fhir/Patient")
    assert response.headers["Cache-Control"] == "no-store"
    for path in ("/fhir/metadata", "/.well-known/smart-configuration", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200
        assert "no-store" not in response.headers.get("Cache-Control", "")
    assert carries_child_data("/directory/entries/CP003NQK8NU")
    assert carries_child_data("/fhir") and carries_child_data("/fhir/$export")
    assert not carries_child_data("/fhir/StructureDefinition/x")


def test_errors_and_unknown_routes_carry_them_too(client: FlaskClient) -> None:
    """404 (no route), 405 (wrong method) and the admin area's stricter-but-styled policy."""
    for path, method, status in (("/no/such/route", "GET", 404), ("/fhir/metadata", "DELETE", 405),
                                 ("/fhir/Patient/x", "PATCH", 405), ("/admin/nothing", "GET", 404)):
        response = client.open(path, method=method)
        assert response.status_code == status
        assert response.json["resourceType"] == "OperationOutcome"
        assert_secure(response, path)
