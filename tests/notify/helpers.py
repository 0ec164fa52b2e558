"""Helpers for notification tests: Subscription bodies, subscribing through the API, reading
notification Bundles."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient

from adapter.http import settings_of
from adapter.notify.dispatcher import Dispatcher
from adapter.notify.spec import (
    CHANNEL_TYPE_EXT,
    CONTENT_EXT,
    FILTER_EXT,
    HEARTBEAT_EXT,
    MAX_COUNT_EXT,
    TIMEOUT_EXT,
)

BASE = "https://fhir.contactpoint-gateway.example.org"
SECRET_EXT = f"{BASE}/StructureDefinition/Extension-ContactPointGateway-SubscriptionSecret"


def topic(key: str) -> str:
    """Return a topic's canonical URL."""
    return f"{BASE}/SubscriptionTopic/{key}"


def subscription(key: str, endpoint: str, *, content: str = "id-only",
                 payload: str = "application/fhir+json", filters: tuple[str, ...] = (),
                 mesh: bool = False, max_count: int | None = None,
                 timeout: int | None = None, heartbeat: int | None = None,
                 headers: tuple[str, ...] = (), status: str = "requested") -> dict[str, Any]:
    """Return a backport Subscription resource."""
    channel: dict[str, Any] = {"type": "message" if mesh else "rest-hook",
                               "endpoint": endpoint, "payload": payload,
                               "_payload": {"extension": [{"url": CONTENT_EXT,
                                                           "valueCode": content}]}}
    extensions = [{"url": url, kind: value} for url, kind, value in (
        (MAX_COUNT_EXT, "valuePositiveInt", max_count),
        (TIMEOUT_EXT, "valueUnsignedInt", timeout),
        (HEARTBEAT_EXT, "valueUnsignedInt", heartbeat)) if value]
    if extensions:
        channel["extension"] = extensions
    if mesh:
        channel["_type"] = {"extension": [{"url": CHANNEL_TYPE_EXT, "valueCoding": {
            "system": f"{BASE}/CodeSystem/subscription-channel-type", "code": "mesh"}}]}
    if headers:
        channel["header"] = list(headers)
    resource: dict[str, Any] = {"resourceType": "Subscription", "status": status,
                                "reason": "test", "criteria": topic(key), "channel": channel}
    if filters:
        resource["_criteria"] = {"extension": [{"url": FILTER_EXT, "valueString": f}
                                               for f in filters]}
    return resource


def subscribe(client: FlaskClient, headers: dict[str, str],
              resource: dict[str, Any]) -> tuple[str, str]:
    """Create a subscription; return its id and its signing secret."""
    response = client.post("/fhir/Subscription", json=resource,
                           headers={**headers, "Content-Type": "application/fhir+json"})
    assert response.status_code == 201, response.json
    body = response.json
    assert body is not None
    secret = next(e["valueString"] for e in body["channel"]["extension"]
                  if e["url"] == SECRET_EXT)
    return str(body["id"]), str(secret)


def dispatch(app: Flask, **kwargs: Any) -> int:
    """Fan out and deliver what is due; return how many notifications got through."""
    return Dispatcher(settings_of(app), app.extensions["db"], **kwargs).run_once()


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """Return a notification Bundle's status parameters by name (notification-event: list)."""
    params = bundle["entry"][0]["resource"]["parameter"]
    out: dict[str, Any] = {"notification-event": []}
    for p in params:
        if p["name"] == "notification-event":
            out["notification-event"].append({part["name"]: next(
                v for k, v in part.items() if k.startswith("value")) for part in p["part"]})
        else:
            out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return out


def event_numbers(bodies: list[bytes]) -> list[int]:
    """Return the event numbers of JSON notification bodies, in the order received."""
    numbers = []
    for body in bodies:
        status = status_of(orjson.loads(body))
        numbers += [int(e["event-number"]) for e in status["notification-event"]]
    return numbers
