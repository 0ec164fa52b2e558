"""Dispatchers that die: SIGKILL at random moments during a fan-out (50 times on PostgreSQL,
where several dispatchers may run; 10 on SQLite) loses nothing — every event is delivered at
least once and duplicates carry the same event number; several dispatchers on PostgreSQL
share the work without duplicates; SIGTERM stops the real CLI gracefully; SQLite refuses a
second dispatcher."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from adapter.db import Database
from adapter.models import Event, LedgerEntry, Notification
from adapter.notify.dispatcher import DispatcherBusy, sole_sqlite_dispatcher
from adapter.notify.outbox import emit_decommission_notice
from tests.api.conftest import bearer
from tests.conftest import REPO
from tests.notify.helpers import status_of, subscribe, subscription
from tests.notify.receivers import Receiver

SUBSCRIBERS = 20
KILLS = {"postgresql": 50, "sqlite": 10}
EVENTS_PER_ROUND = 2
BIN = Path(sys.executable).parent


def dispatcher_env(db: Database, tmp_path: Path) -> dict[str, str]:
    """Return the environment that points a dispatcher process at the test database (a
    PostgreSQL test schema through libpq's ``options``)."""
    url = make_url(db.url)
    if not db.is_sqlite:
        with db.engine.connect() as connection:
            schema = connection.exec_driver_sql("SHOW search_path").scalar()
        url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return {**os.environ, "GATEWAY_DATABASE_URL": url.render_as_string(hide_password=False),
            "GATEWAY_INSTANCE_PATH": str(tmp_path), "GATEWAY_NOTIFY_ALLOW_HTTP": "true",
            "GATEWAY_NOTIFY_ALLOW_PRIVATE": "true",
            "GATEWAY_NOTIFY_POLL_MS": "20", "GATEWAY_NOTIFY_BATCH": "20",
            "GATEWAY_NOTIFY_THREADS": "2", "GATEWAY_NOTIFY_BACKOFF_BASE_MS": "10",
            "GATEWAY_NOTIFY_BACKOFF_MAX": "1", "GATEWAY_LOG_LEVEL": "WARNING"}


class Zygote:
    """The dispatcher zygote process (tests/notify/zygote.py)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.notify.zygote"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: str) -> str:
        """Send one command and return its answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, f"the zygote exited ({self.process.wait(timeout=30)})"
        return answer

    def close(self) -> None:
        """Stop the zygote."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write("exit\n")
            self.process.stdin.close()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def zygote(db: Database, tmp_path: Path, app: Flask) -> Iterator[Zygote]:
    """A zygote on the test database (sharing the app's instance folder: its keys)."""
    started = Zygote(dispatcher_env(db, Path(app.config["INSTANCE_PATH"])))
    yield started
    started.close()


def fan_out_subscribers(app: Flask, client: FlaskClient, receiver: Receiver) -> None:
    """Register one client with ``SUBSCRIBERS`` subscriptions to the decommission notice."""
    headers = bearer(client, app, "crash-test", "E09000001")
    for n in range(SUBSCRIBERS):
        subscribe(client, headers, subscription("decommission-notice", receiver.url(f"/s{n}")))


def emit(db: Database, first: int, count: int) -> None:
    """Emit notices ``first`` .. ``first + count - 1`` (one transaction)."""
    with db.write_transaction() as session:
        for n in range(first, first + count):
            emit_decommission_notice(session, {"resourceType": "PlanDefinition",
                                               "id": f"notice-{n}", "status": "active",
                                               "title": "timetable"})


def undelivered(db: Database) -> int:
    """Return how much is still to do: events not fanned out and notifications queued."""
    with db.sessions() as session:
        events = session.scalar(select(func.count(Event.id)).where(Event.fanned_out.is_(False)))
        queued = session.scalar(select(func.count(Notification.id))
                                .where(Notification.state != "delivered"))
        return int(events or 0) + int(queued or 0)


def wait_until_done(db: Database, deadline: float = 120) -> None:
    """Wait until everything has been delivered."""
    end = time.monotonic() + deadline
    while undelivered(db) and time.monotonic() < end:
        time.sleep(0.05)
    assert undelivered(db) == 0


def received_numbers(receiver: Receiver) -> dict[str, dict[int, set[str]]]:
    """Return, per subscriber path, event number -> the focus references received with it."""
    found: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for item in receiver.bodies():
        for event in status_of(orjson.loads(item.body))["notification-event"]:
            found[item.path][int(event["event-number"])].add(event["focus"]["reference"])
    return found


def check_every_event(receiver: Receiver, events: int) -> None:
    """Every subscriber got events 1..``events``, each number always with the same notice
    (the n-th notice emitted is event n for every subscriber)."""
    found = received_numbers(receiver)
    assert set(found) == {f"/s{n}" for n in range(SUBSCRIBERS)}
    for numbers in found.values():
        assert sorted(numbers) == list(range(1, events + 1))
        for number, focus in numbers.items():
            assert [ref.rsplit("/", 2)[1:] for ref in focus] == [["PlanDefinition",
                                                                  f"notice-{number}"]]


def test_sigkill_at_random_moments_loses_nothing(app: Flask, client: FlaskClient,
                                                 receiver: Receiver, db: Database,
                                                 backend: str, zygote: Zygote) -> None:
    """Kill the dispatcher (SIGKILL) at random moments while notices are emitted and fanned
    out to 20 subscribers; after a last run everything has arrived at least once."""
    fan_out_subscribers(app, client, receiver)
    rng = random.Random(6)  # noqa: S311
    kills = KILLS[backend]
    for round_ in range(kills):
        emit(db, round_ * EVENTS_PER_ROUND + 1, EVENTS_PER_ROUND)
        pid = zygote.ask("fork")
        time.sleep(rng.uniform(0.01, 0.25))
        assert zygote.ask(f"kill {pid}") == "killed"
    pid = zygote.ask("fork")
    wait_until_done(db)
    assert zygote.ask(f"term {pid}") == "0"
    check_every_event(receiver, kills * EVENTS_PER_ROUND)
    with db.sessions() as session:  # notices carry no child's data: the ledger stays empty
        assert session.scalar(select(func.count(LedgerEntry.id))) == 0


def test_several_dispatchers_share_the_work(app: Flask, client: FlaskClient,
                                           receiver: Receiver, db: Database, backend: str,
                                           request: pytest.FixtureRequest) -> None:
    """Three dispatchers at once (PostgreSQL, FOR UPDATE SKIP LOCKED): each notification is
    delivered exactly once, each subscriber's in order. SQLite takes one dispatcher: a second
    is refused."""
    if backend == "sqlite":
        with sole_sqlite_dispatcher(db), pytest.raises(DispatcherBusy):
            with sole_sqlite_dispatcher(db):
                pass
        return
    zygote: Zygote = request.getfixturevalue("zygote")
    fan_out_subscribers(app, client, receiver)
    pids = [zygote.ask("fork") for _ in range(3)]
    emit(db, 1, 30)
    wait_until_done(db)
    assert [zygote.ask(f"term {pid}") for pid in pids] == ["0", "0", "0"]
    check_every_event(receiver, 30)
    for path in {item.path for item in receiver.bodies()}:
        numbers = [int(e["event-number"]) for item in receiver.bodies(path)
                   for e in status_of(orjson.loads(item.body))["notification-event"]]
        assert numbers == list(range(1, 31))


def test_sigterm_stops_the_cli_gracefully(app: Flask, client: FlaskClient,
                                          receiver: Receiver, db: Database) -> None:
    """``contactpoint-gateway dispatch`` delivers, and exits 0 on SIGTERM."""
    fan_out_subscribers(app, client, receiver)
    env: dict[str, Any] = dispatcher_env(db, Path(app.config["INSTANCE_PATH"]))
    process = subprocess.Popen([str(BIN / "contactpoint-gateway"), "dispatch"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        emit(db, 1, 3)
        wait_until_done(db)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped" in output
    check_every_event(receiver, 3)
