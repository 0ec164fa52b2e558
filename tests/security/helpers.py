"""Test helpers: client key pairs, signed assertions, tokens through the real endpoint."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from adapter.cli import main
from adapter.http import configured_base
from adapter.security import clients as registry
from adapter.security.tokens import ASSERTION_TYPE

TOKEN_URL = "http://localhost/auth/token"


@dataclass
class TestClient:
    """A registered client and its private key."""

    client_id: str
    key: ECKey | RSAKey
    alg: str

    def assertion(self, **overrides: Any) -> str:
        """Return a signed client assertion, with claims overridden as given."""
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": TOKEN_URL,
                  "exp": now + 240, "jti": secrets.token_hex(12)}
        claims.update(overrides)
        return jwt.encode({"alg": self.alg, "kid": self.key.kid or ""}, claims, self.key,
                          algorithms=[self.alg])

    def form(self, scope: str = "system/*.rs", **claims: Any) -> dict[str, str]:
        """Return a token request form."""
        return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(**claims), "scope": scope}


def make_key(alg: str) -> ECKey | RSAKey:
    """Return a new private key for ``alg`` (ES384 or RS384) with a kid."""
    key: ECKey | RSAKey
    if alg == "ES384":
        key = ECKey.generate_key("P-384", parameters={"alg": alg})
    else:
        key = RSAKey.generate_key(2048, parameters={"alg": alg})
    key.ensure_kid()
    return key


def register(app: Flask, client_id: str, organisation: str = "E09000001",
             scopes: str = "system/*.cruds", rights: list[str] | None = None,
             alg: str = "ES384") -> TestClient:
    """Register a client with a fresh key pair."""
    key = make_key(alg)
    public = {"keys": [key.as_dict(private=False)]}
    with app.extensions["db"].transaction() as session:
        registry.add_client(session, client_id, client_id, organisation, scopes,
                            rights or [], public)
    return TestClient(client_id, key, alg)


def get_token(client: FlaskClient, who: TestClient, scope: str = "system/*.cruds") -> str:
    """Return an access token for ``who`` from the real token endpoint."""
    # The assertion names the token URL of the app's configured public URL (which a test
    # serving the app on a real port may have set to that address).
    audience = configured_base(client.application.config) + "/auth/token"
    response = client.post("/auth/token", data=who.form(scope, aud=audience))
    assert response.status_code == 200, response.json
    token: str = response.json["access_token"]  # type: ignore[index]
    return token


def invoke(app: Flask, *args: str) -> Result:
    """Run the ``contactpoint-gateway`` CLI against ``app`` (its test database)."""
    return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


def form_csrf_token(client: FlaskClient, page: str = "/admin/login") -> str:
    """Return the CSRF token of the POST form on an admin ``page`` (the browser's CSRF cookie
    stays in ``client``), read from the page as a browser would."""
    html = client.get(page).get_data(as_text=True)
    marker = 'name="csrf_token" value="'
    assert marker in html, page
    return html.split(marker, 1)[1].split('"', 1)[0]
