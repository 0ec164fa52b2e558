"""SMART Backend Services token exchange at POST /auth/token."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapter.security import clients as registry
from tests.security.helpers import TOKEN_URL, get_token, register


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_signed_assertion_gets_a_token(app: Flask, client: FlaskClient, alg: str) -> None:
    """A valid assertion signed with RS384 or ES384 gets a bearer token with granted scopes."""
    who = register(app, "la-system", scopes="system/Patient.rs system/CareTeam.rs", alg=alg)
    response = client.post("/auth/token", data=who.form("system/Patient.rs system/Task.rs"))
    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "bearer"
    assert body["scope"] == "system/Patient.rs"  # requested ∩ allowed
    assert 0 < body["expires_in"] <= 300
    assert response.headers["Cache-Control"] == "no-store"


def test_replayed_jti_is_refused(app: Flask, client: FlaskClient) -> None:
    """The same jti cannot be used twice."""
    who = register(app, "replayer")
    form = who.form()
    assert client.post("/auth/token", data=form).status_code == 200
    response = client.post("/auth/token", data=form)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_client"
    assert "jti" in response.json["error_description"]


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": "https://elsewhere.example/token"}, "aud"),
    ({"exp": int(time.time()) - 600}, "expired"),
    ({"exp": int(time.time()) + 3600}, "5 minutes"),
    ({"sub": "someone-else"}, "sub"),
])
def test_bad_claims_are_refused(app: Flask, client: FlaskClient, claims: dict[str, object],
                                reason: str) -> None:
    """Wrong audience, expired, too long-lived or mismatched sub: invalid_client."""
    who = register(app, "claims-client")
    response = client.post("/auth/token", data=who.form(**claims))
    assert response.status_code == 400
    assert reason in response.json["error_description"]


def test_signature_by_another_key_is_refused(app: Flask, client: FlaskClient) -> None:
    """An assertion signed by a key the client did not register fails."""
    who = register(app, "honest")
    impostor = register(app, "impostor")
    impostor.client_id = "honest"
    response = client.post("/auth/token", data=impostor.form())
    assert response.status_code == 400
    assert "signature" in response.json["error_description"]


def test_disabled_client_gets_no_token_and_its_tokens_stop(app: Flask,
                                                           client: FlaskClient) -> None:
    """Disabling a client refuses new tokens at once."""
    who = register(app, "to-disable")
    assert get_token(client, who)
    with app.extensions["db"].transaction() as session:
        registry.disable_client(session, "to-disable")
    response = client.post("/auth/token", data=who.form())
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"


def test_wrong_grant_and_content_type(app: Flask, client: FlaskClient) -> None:
    """Only client_credentials, form-encoded."""
    who = register(app, "grants")
    form = who.form()
    form["grant_type"] = "password"
    assert client.post("/auth/token", data=form).json["error"] == "unsupported_grant_type"
    response = client.post("/auth/token", json=who.form())
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_smart_configuration_at_root_and_fhir_base(client: FlaskClient) -> None:
    """The discovery document is public at both places and names the token URL."""
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json["token_endpoint"] == TOKEN_URL
        assert "private_key_jwt" in response.json["token_endpoint_auth_methods_supported"]


def test_private_keys_are_never_registered(app: Flask) -> None:
    """Registering a JWKS with private members is refused."""
    from adapter.errors import Invalid
    from tests.security.helpers import make_key

    key = make_key("ES384")
    with pytest.raises(Invalid, match="only public keys"), \
            app.extensions["db"].transaction() as session:
        registry.add_client(session, "leaky", "leaky", "E09000001", "system/*.rs", [],
                            {"keys": [key.as_dict(private=True)]})
