"""The dashboard's forms and session: every form that changes state carries a CSRF token the
server checks (a page of another site cannot sign an admin in or out), the cookies are
``Secure`` when the public URL is https (and always ``HttpOnly``, ``SameSite=Strict``, scoped to
``/admin``), and the dashboard session opens the admin pages only, never the FHIR API."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from adapter.db import Database
from adapter.models.security import AuditRecord
from adapter.security.admin_session import COOKIE, CSRF_COOKIE, CSRF_FIELD
from tests.api.conftest import bearer
from tests.security.helpers import form_csrf_token, register
from tests.security.routes import declared_routes, protected_routes, table_counts
from tests.security.test_access_matrix import call

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def admin_token(app: Flask, client: FlaskClient, name: str = "boss") -> str:
    """Return an access token of a new admin client."""
    return bearer(client, app, name, "E09000001", ["admin"])["Authorization"].split()[1]


def set_cookies(response: Any, name: str) -> list[str]:
    """Return the Set-Cookie headers of ``response`` for cookie ``name``."""
    return [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")]


def token_in(page: Any) -> str:
    """Return the CSRF token of the form on a served page."""
    return str(page.get_data(as_text=True).split(f'name="{CSRF_FIELD}" value="')[1][:64])


def sign_in(client: FlaskClient, token: str) -> Any:
    """Sign in through the form as a browser would (reading the form's CSRF token)."""
    csrf = form_csrf_token(client)
    return client.post("/admin/login", data={"token": token, CSRF_FIELD: csrf})


def logins(db: Database) -> int:
    """Return how many dashboard sign-ins were audited."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count(AuditRecord.id)).where(
            AuditRecord.action == "admin-login")) or 0)


# What a browser sends when it submits a form: it takes the refusal as a page.
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_every_admin_form_refuses_a_request_without_its_token(app: Flask, client: FlaskClient,
                                                              db: Database) -> None:
    """Every state-changing route under /admin (from the URL map): no token, a made-up one,
    and another browser's token are each refused with 403 — the form again for a browser, an
    OperationOutcome for a script — and nothing
    happens (no session, no sign-in audited, the session of a signed-in admin kept); the form
    the refusal shows works."""
    token = admin_token(app, client)
    forms = [r for r in declared_routes(app)
             if r.rule.startswith("/admin/") and r.method in UNSAFE]
    assert {"/admin/login", "/admin/logout"} <= {r.rule for r in forms}
    other_browser = app.test_client()
    foreign = form_csrf_token(other_browser)
    assert sign_in(client, token).status_code == 303
    before = logins(db)
    for route in forms:
        for sent in ({}, {CSRF_FIELD: "0" * 64}, {CSRF_FIELD: foreign}):
            scripted = client.open(route.url(), method=route.method,
                                   data={"token": token, **sent})
            assert scripted.status_code == 403, (str(route), sent)
            assert scripted.json["resourceType"] == "OperationOutcome"  # type: ignore[index]
            response = client.open(route.url(), method=route.method, headers=BROWSER,
                                   data={"token": token, **sent})
            assert response.status_code == 403, (str(route), sent)
            assert "was not sent from this gateway" in response.get_data(as_text=True)
            assert set_cookies(response, COOKIE) == [], str(route)
            assert client.get("/admin/decommission").status_code == 200  # still signed in
    assert logins(db) == before
    again = client.post("/admin/login", data={"token": token, CSRF_FIELD: token_in(response)})
    assert again.status_code == 303 and logins(db) == before + 1  # the refusal's form works


def test_sign_in_and_out_with_the_forms_token(app: Flask, client: FlaskClient,
                                              db: Database) -> None:
    """The form's token signs in (a new CSRF value comes with the session) and, read from the
    dashboard, signs out."""
    token = admin_token(app, client)
    first = client.get_cookie(CSRF_COOKIE, path="/admin")
    assert first is None
    opened = sign_in(client, token)
    assert opened.status_code == 303 and set_cookies(opened, COOKIE)
    renewed = client.get_cookie(CSRF_COOKIE, path="/admin")
    assert renewed is not None and set_cookies(opened, CSRF_COOKIE)
    assert logins(db) == 1
    csrf = form_csrf_token(client, "/admin/decommission")
    closed = client.post("/admin/logout", data={CSRF_FIELD: csrf})
    assert closed.status_code == 303
    assert client.get("/admin/decommission").status_code == 303  # back to the login form


def test_cookies_are_secure_under_an_https_public_url(app: Flask, client: FlaskClient) -> None:
    """With an https public URL every dashboard cookie is Secure; with http it cannot be (the
    browser would drop it); all are HttpOnly, SameSite=Strict and scoped to /admin."""
    for public, secure in (("https://gateway.example.org", True), ("http://localhost", False)):
        app.config["PUBLIC_URL"] = public
        who = register(app, f"boss-{secure}", rights=["admin"])
        token = client.post("/auth/token", base_url=public, data=who.form(
            "system/*.rs", aud=f"{public}/auth/token")).json["access_token"]
        browser = app.test_client()
        page = browser.get("/admin/login", base_url=public)
        opened = browser.post("/admin/login", base_url=public,
                              data={"token": token, CSRF_FIELD: token_in(page)})
        assert opened.status_code == 303, opened.get_data(as_text=True)
        board = browser.get("/admin/decommission", base_url=public)
        closed = browser.post("/admin/logout", base_url=public,
                              data={CSRF_FIELD: token_in(board)})
        assert closed.status_code == 303
        cookies = (set_cookies(page, CSRF_COOKIE) + set_cookies(opened, COOKIE)
                   + set_cookies(opened, CSRF_COOKIE) + set_cookies(closed, COOKIE))
        assert len(cookies) == 4, cookies
        for cookie in cookies:
            flags = {part.strip().split("=")[0] for part in cookie.split(";")}
            assert ("Secure" in flags) is secure, cookie
            assert {"HttpOnly", "SameSite", "Path"} <= flags and "Path=/admin" in cookie
            assert "SameSite=Strict" in cookie


def test_the_dashboard_session_does_not_open_the_fhir_api(app: Flask, client: FlaskClient,
                                                          db: Database) -> None:
    """A dashboard session sent to any protected route outside /admin ($holders included,
    from the URL map) is not a credential there: 401, nothing written."""
    assert sign_in(client, admin_token(app, client)).status_code == 303
    session = client.get_cookie(COOKIE, path="/admin")
    assert session is not None
    client.set_cookie(COOKIE, session.value, path="/")  # as a hostile script would send it
    routes = [r for r in protected_routes(app) if not r.rule.startswith("/admin")]
    assert "/fhir/Patient/<resource_id>/$holders" in {r.rule for r in routes}
    for route in routes:
        before = table_counts(db)
        response = call(client, route, {}, resource_id="x", version="1", group_id="x")
        assert response.status_code == 401, (str(route), response.status_code)
        assert response.json["resourceType"] == "OperationOutcome"
        assert table_counts(db) == before, str(route)
    assert client.get("/admin/decommission").status_code == 200  # where it does count
