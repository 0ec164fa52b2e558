"""When the database gives up on a dispatcher transaction, the log says enough to diagnose it:
the phase, the SQLSTATE, PostgreSQL's words and the subscription ids — and only a deadlock
or serialization failure counts as a conflict worth trying again (adapter.notify.lanes)."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from adapter.db import Database
from adapter.notify import lanes
from tests.api.conftest import bearer
from tests.notify.helpers import subscribe, subscription
from tests.notify.receivers import Receiver

UPDATE = "UPDATE subscription SET version = version WHERE id = :id"


def postgres_deadlock(db: Database, first: int, second: int) -> DBAPIError:
    """Lock subscriptions ``first`` then ``second`` in one transaction and the other way
    round in another, at the same time; return the error of the one PostgreSQL aborts."""
    errors: list[DBAPIError] = []
    both_hold_one = threading.Barrier(2)

    def lock(one: int, other: int) -> None:
        try:
            with db.engine.connect() as connection, connection.begin():
                connection.execute(text(UPDATE), {"id": one})
                both_hold_one.wait(timeout=30)
                connection.execute(text(UPDATE), {"id": other})
        except DBAPIError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lock, args=pair) for pair in ((first, second),
                                                                      (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(errors) == 1
    return errors[0]


def sqlite_busy(db: Database) -> DBAPIError:
    """Return the error of a second SQLite writer that may not wait (database is locked)."""
    holder = sqlite3.connect(str(db.engine.url.database), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with db.engine.connect() as other:
            other.exec_driver_sql("PRAGMA busy_timeout=0")
            with pytest.raises(DBAPIError) as caught:
                other.execute(text(UPDATE), {"id": 1})
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    return caught.value


def test_a_deadlock_is_logged_with_phase_and_subscriptions(
        app: Flask, client: FlaskClient, receiver: Receiver, db: Database, backend: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL: a real deadlock on two subscription rows is a conflict, logged with the
    phase, 40P01, PostgreSQL's detail and the ids. SQLite: a locked database is no conflict
    (it is not tried again), logged with the phase and ids."""
    headers = bearer(client, app, "conflict-test", "E09000001")
    for n in range(2):
        subscribe(client, headers, subscription("decommission-notice", receiver.url(f"/{n}")))
    error = postgres_deadlock(db, 1, 2) if backend == "postgresql" else sqlite_busy(db)
    phase = lanes.Phase("apply", [1, 2])
    with caplog.at_level(logging.WARNING, logger="adapter.notify.lanes"):
        phase.log_failure(error, lanes.is_conflict(error))
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("notification apply failed: OperationalError")
    assert "(subscriptions 1,2)" in message
    if backend == "postgresql":
        assert lanes.is_conflict(error)
        assert "SQLSTATE 40P01" in message and "deadlock detected" in message
        assert 'relation "subscription"' in message and message.endswith("; trying again")
    else:
        assert not lanes.is_conflict(error)
        assert "trying again" not in message
