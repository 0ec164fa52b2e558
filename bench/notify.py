"""Notification benchmark (README "Benchmarks"), on PostgreSQL: fan-out of one decommission notice
to 1,000 rest-hook subscribers, and of 100,000 directory change events to 10 subscribers
(id-only, up to 100 events per Bundle: backport-max-count), delivered by 1 and by 4
``contactpoint-gateway dispatch`` processes to local receivers; next to the raw HTTP POST
rate of the same receivers (the same number of processes and threads posting bodies of the
same size with keep-alive), measured in the same run.

Run: ``.venv/bin/python -m bench.notify`` (or ``make bench``). Settings: ``BENCH_POSTGRES_URL``
(default ``GATEWAY_TEST_POSTGRES_URL``, else the local ``test`` database),
``BENCH_NOTIFY_SUBSCRIBERS`` (1000), ``BENCH_NOTIFY_EVENTS`` (100000),
``BENCH_NOTIFY_THREADS`` (threads per dispatcher, 4); ``BENCH_NOTIFY_EVENTS=0`` runs the notice
fan-out only. Each run uses a throw-away schema.

The notice fan-out has a goal: one notice to 1,000 subscribers delivered in under
``NOTICE_GOAL`` seconds; its line says the time, the time the raw POSTs alone take (the
baseline) and the ratio of the time to the goal (below 1 meets it).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import psycopg
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from adapter.db import Database
from adapter.models import Client, Event, Notification, Subscription, SubscriptionLane
from adapter.notify.outbox import emit_child_changes, emit_decommission_notice
from adapter.notify.signing import seal

BIN = Path(sys.executable).parent
POSTGRES = (os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("GATEWAY_TEST_POSTGRES_URL")
            or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SUBSCRIBERS = int(os.environ.get("BENCH_NOTIFY_SUBSCRIBERS", "1000"))
EVENTS = int(os.environ.get("BENCH_NOTIFY_EVENTS", "100000"))
THREADS = int(os.environ.get("BENCH_NOTIFY_THREADS", "4"))
CHANGE_SUBSCRIBERS = 10
MAX_COUNT = 100
RECEIVER_PROCESSES = 2
NOTICE_GOAL = 5.0  # seconds for one notice to 1,000 subscribers


# --- receivers and the raw POST baseline -------------------------------------------------------

class _Counting(BaseHTTPRequestHandler):
    """Reads a POST and answers 204 (keep-alive)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Accept one delivery."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""


def _serve(port: int) -> None:
    """Run one receiver process."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Counting)
    server.daemon_threads = True
    server.request_queue_size = 1024
    server.serve_forever()


@contextmanager
def receivers() -> Iterator[list[int]]:
    """Run the receiver processes; yield their ports."""
    ports = []
    for _ in range(RECEIVER_PROCESSES):
        with __import__("socket").socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_serve, args=(port,), daemon=True) for port in ports]
    for process in processes:
        process.start()
    time.sleep(0.5)
    try:
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.join()


def _post_many(urls: list[str], body: bytes, count: int) -> None:
    """POST ``body`` ``count`` times, cycling over ``urls`` (one keep-alive session)."""
    session = requests.Session()
    session.trust_env = False
    headers = {"Content-Type": "application/fhir+json"}
    for n in range(count):
        session.post(urls[n % len(urls)], data=body, headers=headers, timeout=10).close()
    session.close()


def _poster(urls: list[str], body: bytes, count: int, threads: int) -> None:
    """One poster process: ``threads`` threads sharing ``count`` POSTs."""
    workers = [threading.Thread(target=_post_many, args=(urls[t::threads] or urls, body,
                                                         count // threads))
               for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def raw_post_rate(urls: list[str], body: bytes, total: int, processes: int) -> float:
    """Return POSTs/s of ``processes`` x ``THREADS`` keep-alive posters sending ``total``."""
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    posters = [context.Process(target=_poster, args=(urls[p::processes] or urls, body,
                                                     total // processes, THREADS))
               for p in range(processes)]
    for poster in posters:
        poster.start()
    for poster in posters:
        poster.join()
    return (total // processes // THREADS * THREADS * processes) / (time.perf_counter() - started)


# --- the database, subscriptions and dispatchers ------------------------------------------------

@contextmanager
def scratch_database() -> Iterator[tuple[Database, str]]:
    """A migrated throw-away schema; yields the Database and a URL that selects the schema."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    parsed = make_url(POSTGRES)
    conninfo = (f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432} "
                f"user={parsed.username or 'postgres'} dbname={parsed.database or 'test'}")
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
    database = Database(url.render_as_string(hide_password=False))
    try:
        database.upgrade()
        yield database, url.render_as_string(hide_password=False)
    finally:
        database.dispose()
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def add_subscribers(db: Database, instance: str, topic: str, urls: list[str], content: str,
                    max_count: int | None) -> None:
    """Insert active subscriptions of one client, one per URL."""
    sealed = seal(instance, "bench-secret-" + "x" * 20)
    with db.write_transaction() as session:
        if session.scalar(select(Client.id)) is None:
            session.add(Client(client_id="bench", name="bench", organisation_code="E09000001",
                               scopes="system/*.cruds", rights=[], jwks={"keys": []}))
            session.flush()
        for url in urls:
            subscription = Subscription(
                resource_id=str(uuid.uuid4()), client_id="bench", topic=topic, status="active",
                channel="rest-hook", endpoint=url, payload="application/fhir+json",
                content=content, max_count=max_count, secret=sealed, filters={},
                filter_text=[], headers=[],
                start_event_id=session.scalar(select(func.max(Event.id))) or 0)
            session.add(subscription)
            session.flush()
            session.add(SubscriptionLane(subscription_id=subscription.id))


def remaining(db: Database) -> tuple[int, int]:
    """Return (events not fanned out, notifications not delivered)."""
    with db.sessions() as session:
        events = session.scalar(select(func.count(Event.id)).where(Event.fanned_out.is_(False)))
        queued = session.scalar(select(func.count(Notification.id))
                                .where(Notification.state != "delivered"))
    return int(events or 0), int(queued or 0)


@contextmanager
def dispatchers(url: str, instance: str, count: int) -> Iterator[None]:
    """Run ``count`` dispatcher processes (the real CLI) until the block ends (SIGTERM)."""
    env = {**os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_INSTANCE_PATH": instance,
           "GATEWAY_NOTIFY_ALLOW_HTTP": "true", "GATEWAY_NOTIFY_ALLOW_PRIVATE": "true",
           "GATEWAY_NOTIFY_THREADS": str(THREADS),
           "GATEWAY_NOTIFY_POLL_MS": "20", "GATEWAY_NOTIFY_BATCH": "200",
           "GATEWAY_LOG_LEVEL": "WARNING"}
    processes = [subprocess.Popen([str(BIN / "contactpoint-gateway"), "dispatch"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(count)]
    for process in processes:  # started: each says so once its app is built
        assert process.stdout is not None
        process.stdout.readline()
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=120)


def timed_delivery(db: Database) -> tuple[float, float]:
    """Wait until everything is delivered; return (seconds to fan out, seconds in all)."""
    started = time.perf_counter()
    fanned = 0.0
    while True:
        events, queued = remaining(db)
        if not events and not fanned:
            fanned = time.perf_counter() - started
        if not events and not queued:
            return fanned, time.perf_counter() - started
        time.sleep(0.02)


# --- scenarios -----------------------------------------------------------------------------------

def notice_body(size_events: int) -> bytes:
    """Return a notification-sized JSON body (for the raw POST baseline)."""
    event = {"name": "notification-event", "part": [
        {"name": "event-number", "valueString": "1"},
        {"name": "timestamp", "valueInstant": "2027-08-06T12:00:00.000Z"},
        {"name": "focus", "valueReference": {"reference": "http://127.0.0.1:8000/fhir/Patient/"
                                                          f"{uuid.uuid4()}"}}]}
    entry = {"fullUrl": f"http://127.0.0.1:8000/fhir/Patient/{uuid.uuid4()}",
             "request": {"method": "PUT", "url": f"Patient/{uuid.uuid4()}"},
             "response": {"status": "200"}}
    return orjson.dumps({"resourceType": "Bundle", "type": "history",
                         "entry": [{"resource": {"resourceType": "Parameters",
                                                 "parameter": [event] * size_events}}]
                         + [entry] * size_events})


def notice_fan_out(db: Database, url: str, instance: str, urls: list[str], count: int,
                   round_: int) -> tuple[float, float]:
    """Deliver one notice to every subscriber with ``count`` dispatchers; (fan-out s, total s)."""
    with dispatchers(url, instance, count):
        with db.write_transaction() as session:
            emit_decommission_notice(session, {"resourceType": "PlanDefinition",
                                               "id": f"plan-{round_}", "status": "active",
                                               "title": "decommission timetable"})
        return timed_delivery(db)


def change_fan_out(db: Database, url: str, instance: str, count: int) -> tuple[float, float]:
    """Deliver ``EVENTS`` change events to the change subscribers; (fan-out s, total s)."""
    with dispatchers(url, instance, count):
        with db.write_transaction() as session:
            emit_child_changes(session, ((str(uuid.uuid4()), None) for _ in range(EVENTS)))
        return timed_delivery(db)


def report(label: str, deliveries: int, posts: int, timing: tuple[float, float],
           baseline: float) -> None:
    """Print one line of figures."""
    fanned, total = timing
    print(f"{label:<44} {deliveries / total:>10,.0f} deliveries/s {posts / total:>9,.0f} "
          f"POSTs/s (fan-out {fanned:5.1f} s, all {total:6.1f} s)   raw POST {baseline:>8,.0f}/s",
          flush=True)


def report_goal(count: int, timing: tuple[float, float], baseline: float) -> None:
    """Print the notice fan-out's time next to the raw POSTs' and its ratio to the goal."""
    total = timing[1] * 1000 / SUBSCRIBERS  # scaled to 1,000 subscribers, the goal's size
    print(f"{'':<44} notice to 1,000: {total:5.2f} s, raw POSTs alone "
          f"{1000 / baseline:5.2f} s; goal < {NOTICE_GOAL:.0f} s, ratio {total / NOTICE_GOAL:.2f}"
          f" ({'met' if total < NOTICE_GOAL else 'NOT met'}, {count} dispatcher(s))",
          flush=True)


def main() -> None:
    """Run both scenarios with 1 and 4 dispatchers and print the figures."""
    print(f"PostgreSQL; {THREADS} threads per dispatcher; receivers: {RECEIVER_PROCESSES} "
          "processes on 127.0.0.1", flush=True)
    with receivers() as ports, scratch_database() as (db, url), \
            tempfile.TemporaryDirectory() as instance:
        urls = [f"http://127.0.0.1:{ports[n % len(ports)]}/r/{n}" for n in range(SUBSCRIBERS)]
        add_subscribers(db, instance, "decommission-notice", urls, "full-resource", None)
        for round_, count in enumerate((1, 4)):
            timing = notice_fan_out(db, url, instance, urls, count, round_)
            baseline = raw_post_rate(urls, notice_body(1), SUBSCRIBERS, count)
            report(f"1 notice -> {SUBSCRIBERS} subscribers, {count} dispatcher(s)",
                   SUBSCRIBERS, SUBSCRIBERS, timing, baseline)
            report_goal(count, timing, baseline)
        if not EVENTS:
            return
        add_subscribers(db, instance, "directory-entry-changed", urls[:CHANGE_SUBSCRIBERS],
                        "id-only", MAX_COUNT)
        deliveries = EVENTS * CHANGE_SUBSCRIBERS
        posts = deliveries // MAX_COUNT
        for count in (1, 4):
            timing = change_fan_out(db, url, instance, count)
            baseline = raw_post_rate(urls[:CHANGE_SUBSCRIBERS], notice_body(MAX_COUNT),
                                     min(posts, 2000), count)
            report(f"{EVENTS} changes -> {CHANGE_SUBSCRIBERS} subscribers, {count} dispatcher(s)",
                   deliveries, posts, timing, baseline)


if __name__ == "__main__":
    main()
