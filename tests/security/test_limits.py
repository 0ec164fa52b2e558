"""Abuse limits: the per-client rate limit (429 with Retry-After, counted in the database in
leases shared by processes) and the harvesting alert (log + audit, once an hour)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import AuditRecord, Child, Client
from adapter.models.security import RateWindow
from adapter.security import clients as registry
from adapter.security.caller import Caller
from adapter.security.limits import HarvestWatch, LimitState, RateLimiter, lease_size
from tests.api.conftest import Callers
from tests.security.helpers import get_token, invoke, make_key, register

MINUTE = 29_000_000  # a fixed minute since the epoch: the tests do not depend on the clock


def limited_client(app: Flask, client: FlaskClient, client_id: str,
                   **limits: int) -> dict[str, str]:
    """Register a client with ``limits`` and return its bearer header."""
    who = register(app, client_id)
    with app.extensions["db"].transaction() as session:
        registry.set_limits(session, client_id, **limits)
    return {"Authorization": f"Bearer {get_token(client, who)}"}


def state(app: Flask) -> LimitState:
    """Return the app's per-process limit state."""
    limits: LimitState = app.extensions["security_limits"]
    return limits


def test_over_the_rate_limit_is_429_with_retry_after(app: Flask, client: FlaskClient,
                                                     demo: Database) -> None:
    """The fourth request in a minute of a client limited to three is refused with 429, an
    OperationOutcome (throttled) and Retry-After until the next minute; then it may go on."""
    headers = limited_client(app, client, "limited", rate_limit_per_minute=3)
    state(app).rate.clock = lambda: MINUTE * 60 + 15.5
    for _ in range(3):
        assert client.get("/fhir/Patient?_count=1", headers=headers).status_code == 200
    refused = client.get("/fhir/Patient?_count=1", headers=headers)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "45"
    assert refused.json["issue"][0]["code"] == "throttled"
    assert client.get("/fhir/metadata").status_code == 200  # public routes are not counted
    state(app).rate.clock = lambda: (MINUTE + 1) * 60 + 1
    assert client.get("/fhir/Patient?_count=1", headers=headers).status_code == 200
    with demo.sessions() as session:
        minutes = list(session.scalars(select(RateWindow.minute).where(
            RateWindow.client_id == "limited")))
    assert minutes == [MINUTE + 1]  # the finished minute's counter is gone


def test_each_client_has_its_own_limit(app: Flask, client: FlaskClient,
                                       callers: Callers) -> None:
    """One client over its limit does not hold up another."""
    headers = limited_client(app, client, "tight", rate_limit_per_minute=1)
    state(app).rate.clock = lambda: MINUTE * 60.0
    assert client.get("/fhir/Patient?_count=1", headers=headers).status_code == 200
    assert client.get("/fhir/Patient?_count=1", headers=headers).status_code == 429
    assert client.get("/fhir/Patient?_count=1", headers=callers.la).status_code == 200


def test_processes_share_the_limit_through_the_database(app: Flask, db: Database) -> None:
    """Two processes' limiters (each with its own leases) admit together no more than the
    limit in a minute; leases keep most requests off the database."""
    clock = lambda: MINUTE * 60.0  # noqa: E731
    first, second = RateLimiter(clock), RateLimiter(clock)
    admitted = [limiter.admit(db, "shared", 4) is None
                for _ in range(3) for limiter in (first, second)]
    assert admitted.count(True) == 4
    assert first.admit(db, "shared", 4) == 60 and second.admit(db, "shared", 4) == 60
    big = RateLimiter(clock)
    assert lease_size(600) == 30
    assert all(big.admit(db, "busy", 600) is None for _ in range(45))
    with db.sessions() as session:
        granted = session.scalar(select(RateWindow.granted).where(
            RateWindow.client_id == "busy"))
    assert granted == 60  # two leases of 30 taken from the database for 45 requests


def test_harvesting_alert_is_logged_and_audited_once_an_hour(
        app: Flask, client: FlaskClient, demo: Database,
        caplog: pytest.LogCaptureFixture) -> None:
    """A client reading more distinct children in an hour than its ceiling is reported once:
    a warning naming the client only, and an ``alert`` audit record."""
    headers = limited_client(app, client, "harvester", harvest_ceiling_per_hour=3)
    state(app).harvest.interval = 0  # check at every request (the default: once a minute)
    bundle = client.get("/fhir/Patient?_count=5", headers=headers).json
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    with caplog.at_level(logging.WARNING, logger="adapter.security.limits"):
        for _ in range(3):
            assert client.get(f"/fhir/Patient/{ids[0]}", headers=headers).status_code == 200
    with demo.sessions() as session:
        alerts = list(session.scalars(select(AuditRecord).where(
            AuditRecord.action == "alert", AuditRecord.client_id == "harvester")))
        alerted_at = session.scalar(select(Client.harvest_alerted_at).where(
            Client.client_id == "harvester"))
    assert len(alerts) == 1 and alerted_at is not None
    assert alerts[0].child_ref is None and "5 distinct children" in (alerts[0].detail or "")
    warnings = [r.getMessage() for r in caplog.records
                if "harvesting pattern" in r.getMessage()]
    assert len(warnings) == 1 and "harvester" in warnings[0]
    assert not any(child_id in warnings[0] for child_id in ids)


def test_harvest_check_runs_at_most_once_a_minute_per_client(app: Flask) -> None:
    """The check is due on a client's first request, then not again within the interval."""
    watch = state(app).harvest
    moments = iter([100.0, 130.0, 161.0, 161.0])
    watch.clock = lambda: next(moments)
    assert [watch.due("a"), watch.due("a"), watch.due("a"), watch.due("b")] == \
        [True, False, True, True]


def test_reads_under_the_ceiling_raise_no_alert(app: Flask, client: FlaskClient,
                                                demo: Database) -> None:
    """Reading the same child again and again is not harvesting."""
    headers = limited_client(app, client, "rereader", harvest_ceiling_per_hour=1)
    state(app).harvest.interval = 0
    patient = client.get("/fhir/Patient?_count=1", headers=headers).json["entry"][0]["resource"]
    for _ in range(3):
        client.get(f"/fhir/Patient/{patient['id']}", headers=headers)
    with demo.sessions() as session:
        assert session.scalar(select(AuditRecord.id).where(AuditRecord.action == "alert")) \
            is None


def test_clients_add_and_set_limits_commands(app: Flask, db: Database, tmp_path: Path) -> None:
    """``clients add --rate-limit --harvest-ceiling`` and ``clients set-limits`` store them."""
    jwks = tmp_path / "client.jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [make_key("ES384").as_dict(private=False)]}))
    result = invoke(app, "clients", "add", "la-case", "--name", "Case system",
                    "--organisation", "E09000001", "--scopes", "system/*.rs",
                    "--jwks", str(jwks), "--rate-limit", "120", "--harvest-ceiling", "40")
    assert result.exit_code == 0, result.output
    assert invoke(app, "clients", "set-limits", "la-case", "--rate-limit", "240").exit_code == 0
    with db.sessions() as session:
        row = session.scalar(select(Client).where(Client.client_id == "la-case"))
        assert row is not None
        assert (row.rate_limit_per_minute, row.harvest_ceiling_per_hour) == (240, 40)
    assert "240/min" in invoke(app, "clients", "list").output
    assert invoke(app, "clients", "add", "x2", "--name", "x", "--organisation", "E09000001",
                  "--scopes", "system/*.rs", "--jwks", str(jwks),
                  "--rate-limit", "0").exit_code == 2
    assert invoke(app, "clients", "set-limits", "nobody", "--rate-limit", "5").exit_code == 1


def test_a_burst_then_silence_is_alerted_without_another_request(
        app: Flask, client: FlaskClient, demo: Database) -> None:
    """A client reads every child of the directory (12) in a burst, over its ceiling (8), and
    never calls again: the per-process sweep raises the alert on its own, once; no request of
    that client follows."""
    headers = limited_client(app, client, "burst", harvest_ceiling_per_hour=8)
    with demo.sessions() as session:
        ids = list(session.scalars(select(Child.resource_id)))
    assert len(ids) == 12
    for resource_id in ids:  # the first request checked (0 read); the next check is a minute off
        assert client.get(f"/fhir/Patient/{resource_id}", headers=headers).status_code == 200
    # Sweeps become due only now: a sweep during a slow burst would count part of it.
    state(app).harvest.sweep_interval = 0.3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not alerts_of(demo, "burst"):
        time.sleep(0.1)
    time.sleep(1.0)  # later sweeps must not alert again within the hour
    found = alerts_of(demo, "burst")
    assert len(found) == 1 and "12 distinct children" in (found[0].detail or "")


def alerts_of(db: Database, client_id: str) -> list[AuditRecord]:
    """Return the ``alert`` audit records of ``client_id``."""
    with db.sessions() as session:
        return list(session.scalars(select(AuditRecord).where(
            AuditRecord.action == "alert", AuditRecord.client_id == client_id)))


def test_sweep_checks_only_recently_active_clients(app: Flask) -> None:
    """A client is swept while it made requests in the last two sweep intervals, then
    forgotten; a sweep is not due before its interval."""
    now = [1000.0]
    watch = HarvestWatch(lambda: now[0])  # no sweeper thread: swept by hand
    watch.sweep_interval = 30
    db = app.extensions["db"]
    watch.note(db, Caller("quiet", "E06000001", [], frozenset()), 10_000)
    assert watch.sweep() == 0  # not due yet
    now[0] += 30
    assert watch.sweep() == 1
    now[0] += 30
    assert watch.sweep() == 1  # seen within the last two intervals: checked again
    now[0] += 30
    assert watch.sweep() == 0
