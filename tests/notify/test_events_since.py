"""Fan-out and delivery at the same time, by two dispatchers on PostgreSQL (one on SQLite),
killed now and then: every notification's ``events-since-subscription-start`` counts its own
events (backport IG, SubscriptionStatus eventsSinceSubscriptionStart: the events sent since
the subscription started, this notification's included), so it is never lower than the
notification's highest event number; nothing is lost, and what a kill makes the dispatchers
send again stays within one claimed batch per killed thread (adapter.notify.lanes)."""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from adapter.notify.dispatcher import ROUND_LANES
from tests.api.conftest import bearer
from tests.notify.helpers import status_of, subscribe, subscription
from tests.notify.receivers import Receiver
from tests.notify.test_crash import Zygote, emit, wait_until_done, zygote  # noqa: F401

SUBSCRIBERS = 10
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
        time.sleep(rng.uniform(0, 0.01))
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
