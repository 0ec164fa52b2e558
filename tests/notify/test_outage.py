"""A receiver that is down for a while — connection refused, 500, a timeout, 429 with
Retry-After — gets every event once it is back, in order; its subscription goes ``error`` and
back to ``active``; dead notifications stay listed and can be replayed. The dispatcher runs on
a clock the test moves, so no test waits for a backoff."""

from __future__ import annotations

import datetime as dt
from typing import Any

from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.cli import main
from adapter.db import Database
from adapter.models import DeliveryAttempt, Notification, SubscriptionLane
from adapter.notify.bundle import aware
from adapter.notify.channels import SUBSCRIBER_ERROR
from tests.api.conftest import Callers
from tests.notify.helpers import dispatch, event_numbers, status_of, subscribe, subscription
from tests.notify.receivers import Receiver
from tests.notify.test_delivery import Clock, children_of, touch


def invoke(app: Flask, *args: str) -> Result:
    """Run the CLI against ``app``."""
    return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


def subscription_status(client: FlaskClient, headers: dict[str, str], sid: str) -> str:
    """Return a subscription's status through the API."""
    return str(client.get(f"/fhir/Subscription/{sid}", headers=headers).json["status"])


def next_attempt(db: Database) -> dt.datetime:
    """Return when the (only) lane is tried next."""
    with db.sessions() as session:
        return aware(session.scalars(select(SubscriptionLane.next_attempt_at)).one())


def setup_three_events(app: Flask, client: FlaskClient, callers: Callers, receiver: Receiver,
                       demo: Database, clock: Clock, **options: Any) -> str:
    """Subscribe (handshake delivered), then make three changes; return the subscription."""
    sid, _secret = subscribe(client, callers.la, subscription(
        "directory-entry-changed", receiver.url(), **options))
    assert dispatch(app, clock=clock) == 1
    for patient_id in children_of(demo, callers.authority)[:3]:
        touch(client, callers.la, patient_id)
    return sid


def test_outage_then_recovery_in_order(app: Flask, client: FlaskClient, callers: Callers,
                                       receiver: Receiver, demo: Database) -> None:
    """Refused, 500 and a timeout spend the retry budget (3): dead, subscription error;
    429's Retry-After is honoured to the second; once the receiver answers, every event
    arrives in order and the subscription is active again."""
    clock = Clock()
    sid = setup_three_events(app, client, callers, receiver, demo, clock, timeout=1)
    receiver.stop()
    assert dispatch(app, clock=clock) == 0  # connection refused
    assert subscription_status(client, callers.la, sid) == "active"
    receiver.start()
    receiver.mode = "500"
    clock.now += dt.timedelta(seconds=10)
    assert dispatch(app, clock=clock) == 0
    receiver.mode, receiver.stall = "slow", 2.0
    clock.now += dt.timedelta(seconds=10)
    assert dispatch(app, clock=clock) == 0  # timeout: the budget of 3 is spent
    assert subscription_status(client, callers.la, sid) == "error"
    status = status_of(client.get(f"/fhir/Subscription/{sid}/$status", headers=callers.la).json)
    # The subscriber is told that delivery failed, never how (operators see "timeout").
    assert status["status"] == "error" and status["error"]["text"] == SUBSCRIBER_ERROR
    assert status["events-since-subscription-start"] == "3"
    receiver.mode = "429"
    clock.now += dt.timedelta(seconds=10)
    assert dispatch(app, clock=clock) == 0
    assert next_attempt(demo) == clock.now + dt.timedelta(seconds=receiver.retry_after)
    receiver.mode = "ok"
    clock.now += dt.timedelta(seconds=receiver.retry_after - 1)
    assert dispatch(app, clock=clock) == 0  # not before Retry-After
    clock.now += dt.timedelta(seconds=1)
    assert dispatch(app, clock=clock) == 3
    assert event_numbers([r.body for r in receiver.bodies()[1:]]) == [1, 2, 3]
    assert subscription_status(client, callers.la, sid) == "active"
    with demo.sessions() as session:
        attempts = list(session.scalars(select(DeliveryAttempt.detail)
                                        .order_by(DeliveryAttempt.id)))
    assert attempts[1:5] == ["connection failed", "HTTP 500", "timeout", "HTTP 429"]


def test_dead_notifications_are_listed_and_replayed(app: Flask, client: FlaskClient,
                                                   callers: Callers, receiver: Receiver,
                                                   demo: Database) -> None:
    """``events list --state dead`` shows them; ``events replay --dead`` queues them with a
    fresh budget, due now; delivered ones can be sent again by subscription and range."""
    clock = Clock()
    sid = setup_three_events(app, client, callers, receiver, demo, clock, max_count=3)
    receiver.mode = "500"
    for _attempt in range(3):
        dispatch(app, clock=clock)
        clock.now += dt.timedelta(seconds=10)
    listed = invoke(app, "events", "list", "--state", "dead")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 3 and all(f"{sid}\tla-one\tdirectory-entry-changed" in line
                                   and "HTTP 500" in line for line in lines)
    receiver.mode = "ok"
    replayed = invoke(app, "events", "replay", "--dead")
    assert replayed.exit_code == 0 and "replaying 3" in replayed.output
    with demo.sessions() as session:
        assert set(session.scalars(select(Notification.attempts)
                                   .where(Notification.kind == "event"))) == {0}
    assert dispatch(app) == 3
    again = invoke(app, "events", "replay", "--subscription", sid, "--from", "2", "--to", "3")
    assert "replaying 2" in again.output
    assert dispatch(app) == 2
    assert event_numbers([r.body for r in receiver.bodies()[1:]]) == [1, 2, 3, 2, 3]
    assert invoke(app, "events", "replay").exit_code != 0
