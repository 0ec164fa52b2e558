"""The Host a request names never decides: the token audience, the token endpoint a client
assertion must name, the SMART configuration, the CapabilityStatement's oauth-uris and every
absolute URL the gateway writes (links, fullUrl, Location, export manifest) come from
``GATEWAY_PUBLIC_URL``, else ``http://127.0.0.1:<GATEWAY_PORT>``."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from tests.api.conftest import Callers
from tests.api.test_export import manifest_of
from tests.security.helpers import register

HOSTILE = "http://gateway.attacker.example"
SMART_PATHS = ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration")


def default_base(app: Flask) -> str:
    """Return the base URL with GATEWAY_PUBLIC_URL unset."""
    return f"http://127.0.0.1:{app.config['PORT']}"


def claims_of(token: str) -> dict[str, Any]:
    """Return the claims of a JWT (its signature is the server's concern, checked elsewhere)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


def mint_at(app: Flask, client: FlaskClient, base: str, name: str) -> str:
    """Return a token minted by the real endpoint of a gateway configured for ``base``."""
    saved = app.config["PUBLIC_URL"]
    app.config["PUBLIC_URL"] = base
    try:
        who = register(app, name)
        form = who.form("system/*.rs", aud=f"{base}/auth/token")
        response = client.post("/auth/token", data=form, base_url=base)
        assert response.status_code == 200, response.json
        return str(response.json["access_token"])
    finally:
        app.config["PUBLIC_URL"] = saved


@pytest.mark.parametrize("configured", ["", "https://gateway.example.org"])
def test_a_token_for_another_address_is_refused_even_with_that_host(
        app: Flask, client: FlaskClient, configured: str) -> None:
    """A token minted for another address is refused when that address is sent as Host (the
    defect: the audience was taken from Host); this server's token works whatever Host."""
    foreign = mint_at(app, client, HOSTILE, "foreign")
    app.config["PUBLIC_URL"] = configured
    for base in (HOSTILE, "http://localhost", default_base(app)):
        refused = client.get("/fhir/Patient?_count=1", base_url=base,
                             headers={"Authorization": f"Bearer {foreign}"})
        assert refused.status_code == 401, base
        assert "another server" in refused.json["issue"][0]["diagnostics"]
    own = mint_at(app, client, configured or default_base(app), "own")
    accepted = client.get("/fhir/Patient?_count=1", base_url=HOSTILE,
                          headers={"Authorization": f"Bearer {own}", "Host": "evil.example"})
    assert accepted.status_code == 200


def test_without_public_url_the_audience_is_make_runs_address(app: Flask,
                                                               client: FlaskClient) -> None:
    """Unset, the token endpoint expects assertions for http://127.0.0.1:<PORT>/auth/token and
    issues tokens for http://127.0.0.1:<PORT>/fhir only, whatever Host the request named."""
    app.config["PUBLIC_URL"] = ""
    who = register(app, "plain")
    hostile = client.post("/auth/token", base_url=HOSTILE,
                          data=who.form(aud=f"{HOSTILE}/auth/token"))
    assert hostile.status_code == 400 and hostile.json["error"] == "invalid_client"
    issued = client.post("/auth/token", base_url=HOSTILE,
                         data=who.form(aud=f"{default_base(app)}/auth/token"))
    assert issued.status_code == 200
    assert claims_of(issued.json["access_token"])["aud"] == f"{default_base(app)}/fhir"


@pytest.mark.parametrize("configured", ["", "https://gateway.example.org"])
def test_discovery_publishes_the_configured_url(app: Flask, client: FlaskClient,
                                                configured: str) -> None:
    """The SMART configuration (root and /fhir) and the CapabilityStatement's oauth-uris, in
    JSON and XML, name the configured URL even under a hostile Host."""
    app.config["PUBLIC_URL"] = configured
    base = configured or default_base(app)
    for path in SMART_PATHS:
        document = client.get(path, base_url=HOSTILE, headers={"Host": "evil.example"}).json
        assert (document["issuer"], document["token_endpoint"]) == (base, f"{base}/auth/token")
        assert "attacker" not in str(document) and "evil" not in str(document)
    for fmt in ("json", "xml"):
        metadata = client.get(f"/fhir/metadata?_format={fmt}", base_url=HOSTILE)
        assert metadata.status_code == 200
        text = metadata.get_data(as_text=True)
        assert f"{base}/auth/token" in text and "attacker" not in text


def _absolute_urls(value: Any) -> list[str]:
    """Return every absolute http(s) URL in a JSON value."""
    if isinstance(value, dict):
        return [u for v in value.values() for u in _absolute_urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _absolute_urls(v)]
    return [value] if isinstance(value, str) and value.startswith(("http://", "https://")) \
        else []


def test_links_and_locations_use_the_configured_url(app: Flask, client: FlaskClient,
                                                    callers: Callers, demo: Database) -> None:
    """Bundle links and fullUrls, a create's Location, the export's Content-Location and its
    manifest never name the Host a request sent."""
    app.config["EXPORT_INLINE"] = True
    base = app.config["PUBLIC_URL"]
    page = client.get("/fhir/Patient?_count=2", base_url=HOSTILE, headers=callers.la).json
    links = [link["url"] for link in page["link"]] + [e["fullUrl"] for e in page["entry"]]
    assert links and all(url.startswith(f"{base}/fhir/") for url in links)
    created = client.post("/fhir/Subscription", base_url=HOSTILE, headers={
        **callers.la, "Content-Type": "application/fhir+json"}, json={
        "resourceType": "Subscription", "status": "requested", "reason": "links",
        "criteria": f"{app.config['CANONICAL_BASE']}/SubscriptionTopic/decommission-notice",
        "channel": {"type": "rest-hook", "endpoint": "https://receiver.example.org/hook",
                    "payload": "application/fhir+json"}})
    assert created.status_code == 201, created.json
    assert created.headers["Location"].startswith(f"{base}/fhir/Subscription/")
    kicked = client.get("/fhir/$export?_type=Patient", base_url=HOSTILE,
                        headers={**callers.admin, "Prefer": "respond-async"})
    assert kicked.status_code == 202
    status_url = kicked.headers["Content-Location"]
    assert status_url.startswith(f"{base}/fhir/")
    manifest = manifest_of(client, status_url, callers.admin)
    urls = _absolute_urls(manifest)
    assert urls and all(url.startswith(f"{base}/fhir") for url in urls)
    assert "attacker" not in str(manifest)
