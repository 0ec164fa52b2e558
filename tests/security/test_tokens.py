"""SMART Backend Services token exchange at POST /auth/token."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import update

from adapter.db import Database
from adapter.models import Client
from adapter.security import clients as registry
from adapter.security.tokens import TokenError, read_access_token
from tests.security.helpers import TOKEN_URL, get_token, invoke, register


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
    register(app, "honest")
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


def test_access_tokens_are_bound_to_this_servers_fhir_base(app: Flask,
                                                           client: FlaskClient) -> None:
    """The access token's aud is the configured FHIR base; another audience fails; the Host a
    request names changes neither (tests/security/test_audience.py)."""
    token = get_token(client, register(app, "bound"))
    claims = read_access_token(token, app.config["INSTANCE_PATH"], "http://localhost/fhir")
    assert claims["aud"] == "http://localhost/fhir"
    with pytest.raises(TokenError, match="another server"):
        read_access_token(token, app.config["INSTANCE_PATH"], "https://elsewhere.example/fhir")
    response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"},
                          base_url="https://elsewhere.example")
    assert response.status_code == 200


def test_public_url_fixes_the_audience(app: Flask, client: FlaskClient) -> None:
    """With GATEWAY_PUBLIC_URL set, tokens name it whatever Host the request carried."""
    app.config["PUBLIC_URL"] = "https://gateway.example.org"
    who = register(app, "public-url")
    form = who.form(aud="https://gateway.example.org/auth/token")
    token = client.post("/auth/token", data=form).json["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/fhir/Patient?_count=1", headers=headers).status_code == 200


def test_cli_token_works_where_make_run_serves(app: Flask, client: FlaskClient,
                                               db: Database) -> None:
    """``token --client demo-la`` (after ``clients ensure-demo``) gives a token that the
    server accepts at http://127.0.0.1:<GATEWAY_PORT>, as the curl ``make run`` prints."""
    app.config["PUBLIC_URL"] = ""  # the default
    assert invoke(app, "clients", "ensure-demo").exit_code == 0
    result = invoke(app, "token", "--client", "demo-la")
    assert result.exit_code == 0, result.output
    headers = {"Authorization": f"Bearer {result.output.strip()}"}
    served_at = f"http://127.0.0.1:{app.config['PORT']}"
    response = client.get("/fhir/Patient?_count=1", headers=headers, base_url=served_at)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("alg", ["none", "HS384"])
def test_assertions_with_other_algorithms_are_refused(app: Flask, client: FlaskClient,
                                                      alg: str) -> None:
    """Unsigned assertions and HMAC assertions (keyed with the public key) are refused:
    only RS384 and ES384 are accepted (SMART Backend Services)."""
    who = register(app, "alg-confusion")
    now = int(time.time())
    claims = {"iss": who.client_id, "sub": who.client_id, "aud": TOKEN_URL, "exp": now + 200,
              "jti": f"jti-{alg}"}
    if alg == "none":  # built by hand: the JOSE library rightly will not make one
        assertion = ".".join(base64.urlsafe_b64encode(orjson.dumps(part)).decode().rstrip("=")
                             for part in ({"alg": "none"}, claims)) + "."
    else:
        secret = OctKey.import_key(orjson.dumps(who.key.as_dict(private=False)))
        assertion = jwt.encode({"alg": alg}, claims, secret, algorithms=[alg])
    form = {**who.form(), "client_assertion": assertion}
    response = client.post("/auth/token", data=form)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_client"


def test_assertion_without_jti_is_refused(app: Flask, client: FlaskClient) -> None:
    """Replay protection needs a jti: an assertion without one is refused."""
    who = register(app, "no-jti")
    response = client.post("/auth/token", data=who.form(jti=""))
    assert response.status_code == 400
    assert "jti" in response.json["error_description"]


def test_client_registrations_are_cached_briefly(app: Flask, client: FlaskClient) -> None:
    """A client's registration is reused for GATEWAY_CLIENT_CACHE_SECONDS: a change made in
    this process applies at once whatever the interval; one made elsewhere (here a plain
    UPDATE, which no ORM hook sees) once the interval is over."""
    who = register(app, "cached-client")
    headers = {"Authorization": f"Bearer {get_token(client, who)}"}
    url = "/fhir/Patient?_count=1"
    db: Database = app.extensions["db"]
    assert client.get(url, headers=headers).status_code == 200
    with db.transaction() as session:  # as another process would
        session.execute(update(Client).where(Client.client_id == "cached-client")
                        .values(status="disabled"))
    app.config["CLIENT_CACHE_SECONDS"] = 0
    assert client.get(url, headers=headers).status_code == 401
    app.config["CLIENT_CACHE_SECONDS"] = 3600
    with db.transaction() as session:
        registry.get_client(session, "cached-client").status = "active"
    assert client.get(url, headers=headers).status_code == 200
    with db.transaction() as session:
        registry.disable_client(session, "cached-client")
    assert client.get(url, headers=headers).status_code == 401
