"""Rest-hook endpoints go to public internet addresses only: a Subscription naming a loopback,
private, link-local, multicast, unspecified or reserved address (or a name resolving to one,
or an IPv6 form carrying such an IPv4 address) is refused when written and again at each
delivery, which connects to the addresses it checked; what the subscriber is told of a failed
delivery is the same whatever happened (no port scanning through ``Subscription.error``)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from adapter.db import Database
from adapter.models import DeliveryAttempt, Subscription
from adapter.notify.addresses import REFUSED
from adapter.notify.channels import SUBSCRIBER_ERROR, Parcel, RestHook
from tests.api.conftest import Callers
from tests.notify.helpers import dispatch, subscribe, subscription
from tests.notify.receivers import Receiver

JSON = {"Content-Type": "application/fhir+json"}
TOPIC = "decommission-notice"
NOT_PUBLIC = (
    "http://127.0.0.1:9/hook", "https://127.8.9.10/hook", "https://[::1]/hook",
    "https://localhost/hook", "https://10.1.2.3/hook", "https://172.16.0.1/hook",
    "https://192.168.1.1/hook", "https://[fd12:3456::1]/hook", "https://[fe80::1]/hook",
    "https://169.254.169.254/latest/meta-data", "https://224.0.0.1/hook",
    "https://[ff02::1]/hook", "https://0.0.0.0/hook", "https://[::]/hook",
    "https://100.64.0.1/hook", "https://240.0.0.1/hook", "https://255.255.255.255/hook",
    "https://192.0.2.10/hook", "https://198.18.0.1/hook", "https://[2001:db8::1]/hook",
    "https://[fec0::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://[::ffff:10.0.0.1]/hook",
    "https://[2002:7f00:1::1]/hook", "https://[64:ff9b::a9fe:a9fe]/hook",
    "https://2130706433/hook", "https://127.1/hook",
    "https://no-such-host.invalid/hook")
PUBLIC = "https://93.184.215.14/hook"  # a literal public address (never connected to here)


@pytest.fixture
def strict(app: Flask) -> Flask:
    """The app with the production default: only public rest-hook addresses."""
    app.config["NOTIFY_ALLOW_PRIVATE"] = False
    return app


def _post(client: FlaskClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """POST a Subscription."""
    return client.post("/fhir/Subscription", json=body, headers={**headers, **JSON})


def _count(db: Database) -> int:
    """Return how many subscriptions are stored."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count(Subscription.id))) or 0)


def test_non_public_endpoints_are_refused_with_one_text(strict: Flask, client: FlaskClient,
                                                        callers: Callers,
                                                        demo: Database) -> None:
    """Each non-public endpoint is refused at create and at $validate with the same text, and
    nothing is stored; a public address is accepted."""
    before = _count(demo)
    for endpoint in NOT_PUBLIC:
        response = _post(client, callers.la, subscription(TOPIC, endpoint))
        assert response.status_code == 422, endpoint
        issue = response.json["issue"][0]
        assert (issue["diagnostics"], issue["expression"]) == (
            REFUSED, ["Subscription.channel.endpoint"]), endpoint
        checked = client.post("/fhir/Subscription/$validate", json=subscription(
            TOPIC, endpoint), headers={**callers.la, **JSON})
        assert REFUSED in str(checked.json), endpoint
    assert _count(demo) == before
    assert _post(client, callers.la, subscription(TOPIC, PUBLIC)).status_code == 201


def test_an_update_to_a_non_public_endpoint_is_refused(strict: Flask, client: FlaskClient,
                                                       callers: Callers,
                                                       demo: Database) -> None:
    """Moving an accepted subscription to a private address is refused and changes nothing."""
    sid, _secret = subscribe(client, callers.la, subscription(TOPIC, PUBLIC))
    for endpoint in ("https://127.0.0.1/hook", "https://[::ffff:192.168.0.1]/x"):
        moved = client.put(f"/fhir/Subscription/{sid}", json={
            **subscription(TOPIC, endpoint), "id": sid}, headers={**callers.la, **JSON})
        assert moved.status_code == 422 and moved.json["issue"][0]["diagnostics"] == REFUSED
    stored = client.get(f"/fhir/Subscription/{sid}", headers=callers.la).json
    assert stored["channel"]["endpoint"] == PUBLIC and stored["meta"]["versionId"] == "1"


def test_delivery_checks_the_address_again(app: Flask, client: FlaskClient, callers: Callers,
                                           receiver: Receiver, demo: Database,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A subscription accepted while private addresses were allowed (or whose name now
    resolves to one) is not delivered once they are not: nothing reaches the receiver, the
    subscriber reads the one generic error, the operator's log names the host; the subscriber
    may still pause it without moving it."""
    sid, _secret = subscribe(client, callers.la, subscription(
        TOPIC, f"http://localhost:{receiver.port}/hook"))
    app.config["NOTIFY_ALLOW_PRIVATE"] = False
    with caplog.at_level(logging.INFO, logger="adapter.notify"):
        assert dispatch(app) == 0
    assert receiver.bodies() == []
    read = client.get(f"/fhir/Subscription/{sid}", headers=callers.la).json
    assert (read["status"], read["error"]) == ("error", SUBSCRIBER_ERROR)
    with demo.sessions() as session:
        details = list(session.scalars(select(DeliveryAttempt.detail)))
    assert details == ["address not allowed"]
    assert any("host localhost" in r.getMessage() and "127.0.0.1" in r.getMessage()
               for r in caplog.records)
    paused = client.put(f"/fhir/Subscription/{sid}", json={  # its own endpoint: may pause
        **subscription(TOPIC, f"http://localhost:{receiver.port}/hook", status="off"),
        "id": sid}, headers={**callers.la, **JSON})
    assert paused.status_code == 200 and paused.json["status"] == "off"
    app.config["NOTIFY_ALLOW_PRIVATE"] = True  # a local receiver, allowed: delivered
    assert client.put(f"/fhir/Subscription/{sid}", json={
        **subscription(TOPIC, f"http://localhost:{receiver.port}/hook"), "id": sid},
        headers={**callers.la, **JSON}).status_code == 200
    dispatch(app)
    assert len(receiver.bodies()) == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a TLS handshake there times out)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_subscribers_cannot_tell_network_conditions_apart(
        app: Flask, client: FlaskClient, callers: Callers, receiver: Receiver,
        silent_port: int, demo: Database) -> None:
    """An address not allowed, a closed port, no answer, TLS spoken to a plain HTTP server and
    an HTTP error: one error text for the subscriber; the delivery records tell them apart."""
    not_allowed, _secret = subscribe(client, callers.la, subscription(
        TOPIC, f"http://localhost:{receiver.port}/hook", timeout=1))
    app.config["NOTIFY_ALLOW_PRIVATE"] = False
    dispatch(app)
    app.config["NOTIFY_ALLOW_PRIVATE"] = True  # the receivers below listen on 127.0.0.1
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = int(closed.getsockname()[1])
    closed.close()
    receiver.mode = "500"
    endpoints = {"refused": f"http://127.0.0.1:{closed_port}/hook",
                 "timeout": f"http://127.0.0.1:{silent_port}/hook",
                 "tls": f"https://127.0.0.1:{receiver.port}/hook",
                 "http-error": receiver.url()}
    ids = {name: subscribe(client, callers.la, subscription(TOPIC, url, timeout=1))[0]
           for name, url in endpoints.items()} | {"not-allowed": not_allowed}
    dispatch(app)
    read = {name: client.get(f"/fhir/Subscription/{sid}", headers=callers.la).json
            for name, sid in ids.items()}
    assert {name: (r["status"], r["error"]) for name, r in read.items()} == {
        name: ("error", SUBSCRIBER_ERROR) for name in ids}
    status = client.get(f"/fhir/Subscription/{ids['tls']}/$status", headers=callers.la).json
    assert SUBSCRIBER_ERROR in str(status) and "ssl" not in str(status).lower()
    with demo.sessions() as session:
        details = set(session.scalars(select(DeliveryAttempt.detail)))
    assert {"address not allowed", "connection failed", "timeout", "HTTP 500"} <= details


class _Rebinding:
    """A resolver for one name that answers a public address first and loopback after: the
    DNS rebinding a check-then-connect client falls for."""

    def __init__(self, name: str, first: str, then: str) -> None:
        self.name, self.first, self.then = name, first, then
        self.asked = 0
        self.real = socket.getaddrinfo
        self.lock = threading.Lock()

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        with self.lock:
            self.asked += 1
            address = self.first if self.asked == 1 else self.then
        return self.real(address, port, *args, **kwargs)


def _parcel(url: str) -> Parcel:
    """Return a small parcel for ``url``."""
    return Parcel(url, b"{}", "application/fhir+json", (), "secret", 1.0, "ref")


def test_a_rebinding_name_cannot_reach_loopback(receiver: Receiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery resolves once and connects to the address it checked: a name that
    answers a public address to the check and 127.0.0.1 afterwards never reaches the
    receiver on 127.0.0.1; a name that answers loopback first is refused unconnected."""
    rebinding = _Rebinding("rebind.test", "93.184.215.14", "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    channel = RestHook()
    try:
        outcome = channel.send(_parcel(f"http://rebind.test:{receiver.port}/hook"))
        assert not outcome.delivered and rebinding.asked == 1
        outcome = channel.send(_parcel(f"http://rebind.test:{receiver.port}/hook"))
        assert (outcome.delivered, outcome.detail) == (False, "address not allowed")
    finally:
        channel.close()
    assert receiver.bodies() == []
