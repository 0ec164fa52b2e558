"""Abuse limits: a per-client request rate limit, and the alert when a client
reads more distinct children in an hour than its ceiling — the harvesting pattern that made a
national directory dangerous.

Rate limit: why leases from a database counter. The gateway runs as several gunicorn workers
and, in production, several processes on several hosts against one PostgreSQL: a counter held
in one process sees only its share of the traffic, and a per-process bucket sized
limit / processes needs the number of processes (which changes with scaling) and is wrong
whenever the load balancer spreads a client's calls unevenly. So the count lives in the
database: one ``rate_window`` row per client and minute, raised by one atomic upsert
(``INSERT ... ON CONFLICT DO UPDATE ... WHERE granted < limit RETURNING granted``, the same
statement on SQLite and PostgreSQL). To keep that write off most requests — on SQLite every
write takes the database's one write lock — a process takes a *lease* of several requests at
once (1/20 of the limit) and serves them from memory; it goes back to the database only when
its lease is spent. The sum of all leases never exceeds the limit, so a client never gets
more than its limit in a minute; it may get a little less when its calls are spread over
processes that each hold an unspent lease. Windows are fixed calendar minutes: a burst
across a boundary can reach twice the limit, which is acceptable for an abuse ceiling (it is
not a quality-of-service contract). Requests without a valid token are never counted here:
they name no client (rate limiting by address belongs to the load balancer).

Harvesting alert: computed from the audit trail — distinct ``child_ref`` values a client read
in the last hour (an index on the client's activity answers it alone); the alert (a log
warning naming the client id only, and an audit record with action ``alert``) fires once an
hour per client, claimed by one atomic update of ``Client.harvest_alerted_at`` so that several
processes agree.

When the check runs: a client that reads 2,000 children in seven seconds and then stops must
be alerted without waiting for its next call. Counting in the request that crosses the
ceiling would need the global count on every read (a query per request) or per-process
counts, which miss a client spread over several processes (four processes at 15 children
each never see 60). So the check runs in two places, both at most once per interval and
client: at the start of a client's request (the next call after a minute alerts at once),
and in a sweep that one daemon thread per serving process runs every
``HARVEST_SWEEP_SECONDS`` (30 s) over the clients that made requests in this process in the
last two sweep intervals — two, so that a request still in flight at one sweep (its audit
records not yet committed) is counted by the next. The sweep costs one index-only query per
recently active client every 30 s, nothing on the request path, and alerts within a minute
of the crossing even when the client never calls again. The thread is started by the first
authenticated request in a process (after gunicorn's fork: threads do not survive one) and
holds its apps' watches weakly, so a test's discarded app costs nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from flask import Flask, current_app, request
from sqlalchemy import delete, distinct, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from adapter.db import Database, get_db
from adapter.errors import GatewayError
from adapter.models import AuditRecord, Client
from adapter.models.security import RateWindow
from adapter.security import audit
from adapter.security.caller import Caller

log = logging.getLogger(__name__)

WINDOW_SECONDS: Final = 60
LEASE_FRACTION: Final = 20
HARVEST_WINDOW: Final = dt.timedelta(hours=1)
HARVEST_CHECK_SECONDS: Final = 60.0
HARVEST_SWEEP_SECONDS: Final = 30.0
SWEEP_TICK_SECONDS: Final = 1.0
# Audit actions that disclose a child's data to the client (writes are not harvesting; nor
# are reads that delivered nothing: ``read-head``, ``read-not-modified``, ``read-refused``, ...,
# adapter/security/audit.py).
READ_ACTIONS: Final = ("read", "vread", "history", "search", "export")


class Throttled(GatewayError):
    """The client went over its rate limit (RFC 6585 section 4: 429 with Retry-After)."""

    status, issue_code = 429, "throttled"


@dataclass(frozen=True)
class ClientLimits:
    """A client's configured limits, read with its registration (``access.ClientCache``)."""

    rate_per_minute: int
    harvest_ceiling: int


@dataclass
class _Lease:
    """Requests this process may still admit for a client in one minute."""

    minute: int
    remaining: int
    spent: bool = False


def lease_size(limit: int) -> int:
    """Return how many requests a process takes from the database counter at once."""
    return max(1, limit // LEASE_FRACTION)


def take_lease(session: Session, client_id: str, minute: int, size: int, limit: int) -> int:
    """Take up to ``size`` requests of ``client_id``'s ``minute`` from the database counter;
    return how many were granted (0 when the limit is reached)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" \
        else sqlite.insert
    upsert = insert(RateWindow).values(client_id=client_id, minute=minute, granted=size)
    statement = upsert.on_conflict_do_update(
        index_elements=[RateWindow.client_id, RateWindow.minute],
        set_={"granted": RateWindow.granted + size},
        where=RateWindow.granted < limit).returning(RateWindow.granted)
    granted = session.execute(statement).scalar()
    if granted is None:
        return 0
    if granted == size:  # the row was created: this client's older minutes are done with
        session.execute(delete(RateWindow).where(RateWindow.client_id == client_id,
                                                 RateWindow.minute < minute))
    # Before this statement the counter stood at granted - size (< limit).
    return size - max(0, int(granted) - limit)


class RateLimiter:
    """The per-process side of the rate limit: leases per client, shared by threads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def admit(self, db: Database, client_id: str, limit: int) -> int | None:
        """Admit one request of ``client_id``; return None, or the seconds to wait when the
        client is over its limit for this minute."""
        now = self.clock()
        minute = int(now // WINDOW_SECONDS)
        wait = WINDOW_SECONDS - int(now % WINDOW_SECONDS)
        with self._lock:
            lease = self._leases.get(client_id)
            if lease is not None and lease.minute == minute:
                if lease.remaining > 0:
                    lease.remaining -= 1
                    return None
                if lease.spent:
                    return wait
        with db.write_transaction() as session:
            taken = take_lease(session, client_id, minute, lease_size(limit), limit)
        return self._credit(client_id, minute, taken, wait)

    def _credit(self, client_id: str, minute: int, taken: int, wait: int) -> int | None:
        """Add a lease taken from the database and admit the request from it."""
        with self._lock:
            lease = self._leases.get(client_id)
            if lease is None or lease.minute != minute:
                lease = self._leases[client_id] = _Lease(minute, 0)
            lease.remaining += taken
            if lease.remaining == 0:
                lease.spent = True  # no more this minute: refuse without asking again
                return wait
            lease.remaining -= 1
            return None


@dataclass(frozen=True)
class _Activity:
    """A client seen in this process: who it was (for the alert's audit record), its ceiling
    and when it last made a request."""

    caller: Caller
    ceiling: int
    seen: float


class HarvestWatch:
    """The per-process side of the harvesting alert: when each client was last checked, and
    which clients made requests recently (for the sweep)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sweeper: Sweeper | None = None) -> None:
        self.clock = clock
        self.sweeper = sweeper  # None: swept only when ``sweep`` is called
        self.interval = HARVEST_CHECK_SECONDS
        self.sweep_interval = HARVEST_SWEEP_SECONDS
        self._checked: dict[str, float] = {}
        self._active: dict[str, _Activity] = {}
        self._swept = clock()
        self._db: Database | None = None
        self._lock = threading.Lock()

    def due(self, client_id: str) -> bool:
        """Return True (and note the check) when ``client_id`` was not checked recently."""
        now = self.clock()
        with self._lock:
            last = self._checked.get(client_id)
            if last is not None and now - last < self.interval:
                return False
            self._checked[client_id] = now
            return True

    def note(self, db: Database, caller: Caller, ceiling: int) -> None:
        """Remember that ``caller`` made a request, for the next sweeps."""
        with self._lock:
            self._db = db
            self._active[caller.client_id] = _Activity(caller, ceiling, self.clock())
        if self.sweeper is not None:
            self.sweeper.watch(self)

    def sweep(self) -> int:
        """Check the clients active in the last two sweep intervals, when a sweep is due;
        return how many were checked."""
        now = self.clock()
        with self._lock:
            if now - self._swept < self.sweep_interval or self._db is None or self._db.closed:
                return 0
            horizon = self._swept - self.sweep_interval
            self._swept = now
            self._active = {k: a for k, a in self._active.items() if a.seen >= horizon}
            due, db = list(self._active.values()), self._db
        try:
            for activity in due:
                check_harvesting(db, activity.caller, activity.ceiling)
        except Exception:
            self.forget()  # the next requests bring the clients back
            raise
        return len(due)

    def forget(self) -> None:
        """Forget the recently active clients (after a sweep failed: no retry storm)."""
        with self._lock:
            self._active.clear()


class Sweeper:
    """One daemon thread per process that sweeps every registered watch each tick."""

    def __init__(self, tick: float = SWEEP_TICK_SECONDS) -> None:
        self.tick = tick
        self._watches: weakref.WeakSet[HarvestWatch] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, watch: HarvestWatch) -> None:
        """Register ``watch`` and make sure the thread runs (it does not survive a fork)."""
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="harvest-sweep",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Sweep every watch, once a tick, for the life of the process."""
        while True:
            time.sleep(self.tick)
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                try:
                    watch.sweep()
                except Exception as exc:  # a database outage must not end the thread
                    log.warning("harvesting sweep failed: %s", type(exc).__name__)


SWEEPER: Final = Sweeper()


def distinct_children_read(session: Session, client_id: str, since: dt.datetime) -> int:
    """Return how many distinct children ``client_id`` read since ``since``."""
    query = select(func.count(distinct(AuditRecord.child_ref))).where(
        AuditRecord.client_id == client_id, AuditRecord.recorded >= since,
        AuditRecord.child_ref.is_not(None), AuditRecord.action.in_(READ_ACTIONS))
    return int(session.scalar(query) or 0)


def check_harvesting(db: Database, caller: Caller, ceiling: int) -> bool:
    """Alert (log + audit record) when ``caller`` read more distinct children in the last hour
    than ``ceiling``, at most once an hour per client; return True when it alerted."""
    now = dt.datetime.now(dt.UTC)
    since = now - HARVEST_WINDOW
    with db.transaction() as session:
        read = distinct_children_read(session, caller.client_id, since)
    if read <= ceiling:
        return False
    with db.write_transaction() as session:
        claimed = session.execute(update(Client).where(
            Client.client_id == caller.client_id,
            or_(Client.harvest_alerted_at.is_(None), Client.harvest_alerted_at < since),
        ).values(harvest_alerted_at=now, updated=Client.updated))
        if not _rowcount(claimed):
            return False  # another process alerted this hour
        audit.record(session, "alert", outcome="0", caller=caller, detail=(
            f"harvesting pattern: {read} distinct children read in the last hour, "
            f"over the ceiling of {ceiling}"))
    log.warning("harvesting pattern: client %s read %d distinct children in the last hour "
                "(ceiling %d)", caller.client_id, read, ceiling)
    return True


def _rowcount(result: Any) -> int:
    """Return the rows an UPDATE matched."""
    return int(result.rowcount)


def enforce_limits(caller: Caller, limits: ClientLimits) -> None:
    """Apply the rate limit and, when due, the harvesting check to an authenticated request.

    :raises Throttled: the client is over its rate limit for this minute.
    """
    db = get_db()
    state: LimitState = current_app.extensions["security_limits"]
    wait = state.rate.admit(db, caller.client_id, limits.rate_per_minute)
    if wait is not None:
        raise Throttled(f"Rate limit of {limits.rate_per_minute} requests a minute reached: "
                        f"retry after {wait} seconds.", headers={"Retry-After": str(wait)})
    state.harvest.note(db, caller, limits.harvest_ceiling)
    if state.harvest.due(caller.client_id):
        check_harvesting(db, caller, limits.harvest_ceiling)


@dataclass
class LimitState:
    """The per-process state of the limits of one app."""

    rate: RateLimiter
    harvest: HarvestWatch


def limit_request_body() -> None:
    """Bound every request body, forms included, before any view reads it (before_request):
    werkzeug answers 413 past ``request.max_content_length`` whether the length is declared or
    not; url-encoded forms (``_search``, the token endpoint) have no other limit. Directory
    batches are streamed and have their own, larger one."""
    setting = "MAX_IMPORT_BYTES" if request.path.startswith("/directory/") else "MAX_BODY_BYTES"
    request.max_content_length = current_app.config[setting]


def init_app(app: Flask) -> None:
    """Give the app its per-process limit state (one per app: tests create many apps) and the
    body size limit."""
    app.extensions["security_limits"] = LimitState(RateLimiter(), HarvestWatch(sweeper=SWEEPER))
    app.before_request(limit_request_body)
