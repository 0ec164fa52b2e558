"""The Subscription resource, topic discovery, ``$status`` and the CapabilityStatement
(Subscriptions R5 Backport IG for R4)."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.subscription import Subscription as SubscriptionModel
from fhir.resources.R4B.subscriptiontopic import SubscriptionTopic
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.models import Notification, Subscription
from adapter.notify.signing import unseal
from tests.api.conftest import Callers
from tests.notify.helpers import BASE, SECRET_EXT, subscribe, subscription, topic

JSON = {"Content-Type": "application/fhir+json"}
TOPIC_KEYS = ("directory-entry-changed", "ecaf-assessment-changed", "decommission-notice",
              "purge-instruction")


def _post(client: FlaskClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """POST a Subscription."""
    return client.post("/fhir/Subscription", json=body, headers={**headers, **JSON})


def test_create_returns_the_secret_once_and_stores_it_sealed(
        app: Flask, client: FlaskClient, callers: Callers) -> None:
    """Created as ``requested`` with a handshake queued; the secret is in the create response
    only, and the database holds it encrypted."""
    sid, secret = subscribe(client, callers.la, subscription(
        "directory-entry-changed", "https://receiver.example.org/hook",
        filters=("Patient?organization=Organization/abc",), max_count=500, timeout=90))
    read = client.get(f"/fhir/Subscription/{sid}", headers=callers.la)
    assert read.status_code == 200
    body = read.json
    SubscriptionModel.model_validate(body)
    assert body["status"] == "requested"
    assert body["criteria"] == topic("directory-entry-changed")
    assert SECRET_EXT not in str(body)
    channel = {e["url"].rsplit("/", 1)[-1]: e for e in body["channel"]["extension"]}
    assert channel["backport-max-count"]["valuePositiveInt"] == 100  # accepted, capped
    assert channel["backport-timeout"]["valueUnsignedInt"] == 60
    with app.extensions["db"].sessions() as session:
        stored = session.scalars(select(Subscription)).one()
        kinds = list(session.scalars(select(Notification.kind)))
        assert secret not in stored.secret
        assert unseal(app.config["INSTANCE_PATH"], stored.secret) == secret
        assert stored.filters == {"organization": ["abc"]}
    assert kinds == ["handshake"]


@pytest.mark.parametrize(("change", "expression"), [
    ({"criteria": f"{BASE}/SubscriptionTopic/nothing"}, "Subscription.criteria"),
    ({"channel": {"type": "email", "endpoint": "mailto:a@example.org",
                  "payload": "application/fhir+json"}}, "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook", "endpoint": "ftp://example.org/",
                  "payload": "application/fhir+json"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "https://example.org/",
                  "payload": "text/plain"}}, "Subscription.channel.payload"),
    ({"channel": {"type": "rest-hook", "endpoint": "https://example.org/",
                  "payload": "application/fhir+json", "header": ["Host: evil"]}},
     "Subscription.channel.header"),
    ({"channel": {"type": "rest-hook", "endpoint": "https://example.org/",
                  "payload": "application/fhir+json", "header": ["X-Cost: 5\u20ac"]}},
     "Subscription.channel.header"),
    ({"_criteria": {"extension": [{
        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
               "backport-filter-criteria", "valueString": "Patient?birthdate=2010"}]}},
     "Subscription.criteria.extension"),
    ({"reason": None}, "Subscription.reason"),
])
def test_invalid_subscriptions_are_refused(client: FlaskClient, callers: Callers,
                                           change: dict[str, Any], expression: str) -> None:
    """Unknown topics, other channel types, endpoints, payloads, reserved headers, filters the
    topic does not offer and invalid R4 are refused with 422 naming the element."""
    body = {**subscription("directory-entry-changed", "https://example.org/hook"), **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = _post(client, callers.la, body)
    assert response.status_code == 422, response.json
    assert response.json["issue"][0]["expression"] == [expression]


def test_plain_http_endpoints_need_the_setting(app: Flask, client: FlaskClient,
                                               callers: Callers) -> None:
    """Without GATEWAY_NOTIFY_ALLOW_HTTP only https:// rest-hook endpoints are accepted."""
    app.config["NOTIFY_ALLOW_HTTP"] = False
    response = _post(client, callers.la, subscription("decommission-notice",
                                                      "http://127.0.0.1:9/hook"))
    assert response.status_code == 422


def test_topics_about_children_need_a_read_scope(app: Flask, client: FlaskClient,
                                                 demo: Any) -> None:
    """A client that may not read Patients cannot subscribe to directory changes; anyone may
    subscribe to the decommission notice."""
    from tests.api.conftest import bearer

    headers = bearer(client, app, "subs-only", "E09000001", scopes="system/Subscription.cruds")
    refused = _post(client, headers, subscription("directory-entry-changed",
                                                  "https://example.org/hook"))
    assert refused.status_code == 422
    assert _post(client, headers, subscription("decommission-notice",
                                               "https://example.org/hook")).status_code == 201


def test_subscriptions_belong_to_their_client(client: FlaskClient, callers: Callers) -> None:
    """Another client neither reads, finds, updates nor deletes them; an admin may read."""
    sid, _secret = subscribe(client, callers.la, subscription("purge-instruction",
                                                              "https://example.org/hook"))
    assert client.get(f"/fhir/Subscription/{sid}", headers=callers.other_la).status_code == 404
    found = client.get("/fhir/Subscription", headers=callers.other_la).json
    assert found.get("entry") is None
    body = subscription("purge-instruction", "https://example.org/other") | {"id": sid}
    assert client.put(f"/fhir/Subscription/{sid}", json=body,
                      headers={**callers.other_la, **JSON}).status_code == 404
    assert client.delete(f"/fhir/Subscription/{sid}",
                         headers=callers.other_la).status_code == 404
    assert client.get(f"/fhir/Subscription/{sid}", headers=callers.admin).status_code == 200


def test_search_update_pause_and_delete(client: FlaskClient, callers: Callers) -> None:
    """Search by status and url; ``off`` pauses; a new endpoint queues a handshake
    (requested); If-Match guards the update; delete answers 204 and then 410."""
    sid, _secret = subscribe(client, callers.la, subscription("decommission-notice",
                                                              "https://example.org/a"))
    found = client.get("/fhir/Subscription?status=requested&url=https://example.org/a",
                       headers=callers.la).json
    assert [e["resource"]["id"] for e in found["entry"]] == [sid]
    off = subscription("decommission-notice", "https://example.org/a", status="off")
    paused = client.put(f"/fhir/Subscription/{sid}", json=off | {"id": sid},
                        headers={**callers.la, **JSON, "If-Match": 'W/"1"'})
    assert paused.status_code == 200 and paused.json["status"] == "off"
    stale = client.put(f"/fhir/Subscription/{sid}", json=off | {"id": sid},
                       headers={**callers.la, **JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    moved = subscription("decommission-notice", "https://example.org/b", status="active")
    again = client.put(f"/fhir/Subscription/{sid}", json=moved | {"id": sid},
                       headers={**callers.la, **JSON})
    assert again.json["status"] == "requested"
    other_topic = subscription("purge-instruction", "https://example.org/b") | {"id": sid}
    assert client.put(f"/fhir/Subscription/{sid}", json=other_topic,
                      headers={**callers.la, **JSON}).status_code == 422
    assert client.delete(f"/fhir/Subscription/{sid}", headers=callers.la).status_code == 204
    assert client.get(f"/fhir/Subscription/{sid}", headers=callers.la).status_code == 410


def test_status_operation(client: FlaskClient, callers: Callers) -> None:
    """``$status`` at type and instance level: a searchset of status Parameters."""
    one, _s = subscribe(client, callers.la, subscription("decommission-notice",
                                                         "https://example.org/a"))
    two, _s = subscribe(client, callers.la, subscription("purge-instruction",
                                                         "https://example.org/b"))
    every = client.get("/fhir/Subscription/$status", headers=callers.la).json
    Bundle.model_validate(every)
    assert every["type"] == "searchset" and every["total"] == 2
    chosen = client.get(f"/fhir/Subscription/$status?id={two}", headers=callers.la).json
    params = {p["name"]: p for p in chosen["entry"][0]["resource"]["parameter"]}
    assert params["subscription"]["valueReference"]["reference"].endswith(f"/Subscription/{two}")
    assert params["type"]["valueCode"] == "query-status"
    assert params["events-since-subscription-start"]["valueString"] == "0"
    single = client.get(f"/fhir/Subscription/{one}/$status", headers=callers.la).json
    assert single["total"] == 1
    assert client.get(f"/fhir/Subscription/{one}/$status",
                      headers=callers.other_la).status_code == 404


def test_topics_are_served_as_r4b_json_only(client: FlaskClient, callers: Callers) -> None:
    """``/fhir/SubscriptionTopic``: every topic, valid R4B SubscriptionTopic JSON; XML is
    refused with 406 (FHIR 4.0.1 has no SubscriptionTopic)."""
    found = client.get("/fhir/SubscriptionTopic", headers=callers.la)
    assert found.status_code == 200
    topics = [e["resource"] for e in found.json["entry"]]
    for resource in topics:
        SubscriptionTopic.model_validate(resource)
    assert [t["url"] for t in topics] == [topic(k) for k in TOPIC_KEYS]
    one = client.get("/fhir/SubscriptionTopic/purge-instruction", headers=callers.la).json
    assert one["resourceTrigger"][0]["resource"] == "Task"
    by_url = client.get(f"/fhir/SubscriptionTopic?url={topic('decommission-notice')}",
                        headers=callers.la).json
    assert len(by_url["entry"]) == 1
    xml = client.get("/fhir/SubscriptionTopic?_format=xml", headers=callers.la)
    assert xml.status_code == 406
    assert xml.mimetype == "application/fhir+xml"
    assert client.get("/fhir/SubscriptionTopic/nothing", headers=callers.la).status_code == 404
    assert client.get("/fhir/SubscriptionTopic").status_code == 200  # public, as conformance


def test_capability_statement_declares_subscriptions(client: FlaskClient) -> None:
    """Subscription with its interactions, the backport profile, $status, $events and every
    topic's canonical URL; no SubscriptionTopic resource (not an R4 type)."""
    statement = client.get("/fhir/metadata").json
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert "SubscriptionTopic" not in resources
    entry = resources["Subscription"]
    assert {"read", "search-type", "create", "update", "delete"} <= \
        {i["code"] for i in entry["interaction"]}
    assert {o["name"] for o in entry["operation"]} >= {"status", "events", "validate"}
    assert [e["valueCanonical"] for e in entry["extension"]] == [topic(k) for k in TOPIC_KEYS]
    xml = client.get("/fhir/metadata?_format=xml")
    assert xml.status_code == 200


def test_holders_is_for_admins(client: FlaskClient, callers: Callers) -> None:
    """``$holders`` needs the admin right; an unknown child is 404; a read makes a holder."""
    patient = client.get("/fhir/Patient?_count=1", headers=callers.la).json["entry"][0]
    pid = patient["resource"]["id"]
    assert client.get(f"/fhir/Patient/{pid}/$holders", headers=callers.la).status_code == 403
    assert client.get("/fhir/Patient/nobody/$holders", headers=callers.admin).status_code == 404
    result = client.get(f"/fhir/Patient/{pid}/$holders?_format=xml", headers=callers.admin)
    assert result.status_code == 200 and result.mimetype == "application/fhir+xml"
    found = client.get(f"/fhir/Patient/{pid}/$holders", headers=callers.admin).json
    parts = {p["name"]: p for p in found["parameter"][0]["part"]}
    assert parts["client"]["valueString"] == "la-one" and parts["via"]["valueCode"] == "search"
