"""Every notification's ``events-since-subscription-start`` counts its own events (backport
IG, SubscriptionStatus eventsSinceSubscriptionStart: the events sent since the subscription
started, this notification's included), so it is never lower than the notification's highest
event number — also when a fan-out commits between a round's claim and its load, and when
two dispatchers on PostgreSQL (one on SQLite) fan out and deliver at once and are killed now
and then; nothing is lost, and what a kill makes the dispatchers send again stays within one
claimed batch per killed thread (adapter.notify.lanes)."""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from adapter.http import settings_of
from adapter.models.base import utcnow
from adapter.notify import fanout, lanes
from adapter.notify.dispatcher import ROUND_LANES, Dispatcher
from tests.api.conftest import bearer
from tests.notify.helpers import status_of, subscribe, subscription
from tests.notify.receivers import Receiver
from tests.notify.test_crash import Zygote, emit, wait_until_done, zygote  # noqa: F401

SUBSCRIBERS = 40
CHANGES = 200
KILL_EVERY = 25  # notices
DISPATCHERS = {"postgresql": 2, "sqlite": 1}
THREADS = 2  # GATEWAY_NOTIFY_THREADS of tests.notify.test_crash.dispatcher_env
BATCH = 20  # GATEWAY_NOTIFY_BATCH of the same


def run_dispatchers_while_emitting(forks: Zygote, db: Database, count: int) -> int:
    """Emit ``CHANGES`` notices one transaction each while ``count`` dispatchers fan them out
    and deliver them, SIGKILL-ing one (and starting another) every ``KILL_EVERY`` notices;
    return how many were killed once everything has been delivered."""
    rng = random.Random(18)  # noqa: S311
    pids = [forks.ask("fork") for _ in range(count)]
    kills = 0
    for n in range(1, CHANGES + 1):
        emit(db, n, 1)
        if n % KILL_EVERY == 0:
            victim = pids.pop(rng.randrange(len(pids)))
            assert forks.ask(f"kill {victim}") == "killed"
            kills += 1
            pids.append(forks.ask("fork"))
        time.sleep(rng.uniform(0, 0.002))
    wait_until_done(db)
    assert [forks.ask(f"term {pid}") for pid in pids] == ["0"] * count
    return kills


def test_events_since_includes_every_event_of_the_notification(
        app: Flask, client: FlaskClient, receiver: Receiver, db: Database, backend: str,
        zygote: Zygote) -> None:  # noqa: F811 (the zygote fixture)
    """Every delivered notification says at least as many events since the start as its
    highest event number; every subscriber got every notice; duplicates stay bounded."""
    headers = bearer(client, app, "since-test", "E09000001")
    for n in range(SUBSCRIBERS):
        subscribe(client, headers, subscription("decommission-notice", receiver.url(f"/s{n}"),
                                                max_count=5))
    kills = run_dispatchers_while_emitting(zygote, db, DISPATCHERS[backend])
    low, received = [], Counter[tuple[str, int]]()
    for item in receiver.bodies():
        status = status_of(orjson.loads(item.body))
        numbers = [int(e["event-number"]) for e in status["notification-event"]]
        received.update((item.path, number) for number in numbers)
        since = int(status["events-since-subscription-start"])
        if numbers and since < max(numbers):
            low.append((item.path, since, max(numbers)))
    assert low == []
    assert set(received) == {(f"/s{n}", number) for n in range(SUBSCRIBERS)
                             for number in range(1, CHANGES + 1)}
    duplicates = sum(times - 1 for times in received.values())
    assert duplicates <= kills * THREADS * min(ROUND_LANES, SUBSCRIBERS) * BATCH


def fan_out_now(db: Database) -> None:
    """Fan out what the outbox holds, in a transaction of its own (committed on return)."""
    with db.write_transaction() as session:
        assert fanout.fan_out(session, utcnow()) > 0


def test_a_fan_out_between_claim_and_load_is_counted(app: Flask, client: FlaskClient,
                                                     receiver: Receiver, db: Database,
                                                     backend: str) -> None:
    """A round claims the lane; another transaction then fans out three more events and
    commits; the round's load (PostgreSQL: a statement of its own, which sees that commit)
    finds them queued and says they are counted. (SQLite's read transaction keeps the
    snapshot of its first read: it sees the first event only, and counts it.)"""
    headers = bearer(client, app, "since-test", "E09000001")
    subscribe(client, headers, subscription("decommission-notice", receiver.url()))
    emit(db, 1, 1)
    fan_out_now(db)
    dispatcher, events = Dispatcher(settings_of(app), db), dict[int, lanes.EventData]()
    with db.transaction() as session:
        claimed = lanes.claim(session, utcnow(), set(), ROUND_LANES)
        emit(db, 2, 3)
        fan_out_now(db)
        [(lane, queue)] = lanes.load_batch(session, claimed, 100, events)
        work = lanes.load(session, lane, queue, dispatcher._settings(), events)
    statuses = [status_of(orjson.loads(group.body)) for group in work.groups]
    numbers = [[int(e["event-number"]) for e in s["notification-event"]] for s in statuses]
    since = {int(s["events-since-subscription-start"]) for s in statuses}
    assert [kind for s in statuses for kind in [s["type"]]] == \
        ["handshake"] + ["event-notification"] * len(numbers[1:])
    seen = [1, 2, 3, 4] if backend == "postgresql" else [1]
    assert sorted(n for group in numbers for n in group) == seen
    assert since == {seen[-1]}
