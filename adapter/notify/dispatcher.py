"""The dispatcher (``contactpoint-gateway dispatch``): fans out outbox events and delivers
each subscription's notifications in order, with retries, from as many threads (and, on
PostgreSQL, processes) as configured.

On PostgreSQL a lane is claimed with ``FOR UPDATE SKIP LOCKED`` and delivered inside that
transaction: if the dispatcher dies, the lock goes with its connection and the round is
rolled back, so what it sent is sent again — at least once, with the same event numbers. On
SQLite (one dispatcher, enforced with a lock file) the claim is in-process and the round is
recorded in a second short transaction after sending, with the same effect on a crash.

It is built from the gateway's ``Settings`` and a ``Database`` (``adapter.settings``,
``adapter.db``), never from the web app: ``contactpoint-gateway dispatch`` runs without one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from adapter.db import Database
from adapter.models.base import utcnow
from adapter.models.notify import Event
from adapter.notify import fanout, lanes
from adapter.notify.channels import Channel, Mesh, MeshSettings, RestHook
from adapter.settings import Settings

log = logging.getLogger(__name__)
HEARTBEAT_SCAN = 1.0  # seconds between scans for heartbeats that are due
# A round claims up to this many lanes in one statement (its claimed batch) and delivers them
# one after the other; it starts no further lane after ROUND_SECONDS: its commit then frees
# the rest (a slow endpoint holds up only the other lanes of its batch). What a dispatcher
# killed mid-round sends again is at most one claimed batch per thread (adapter.notify.lanes).
ROUND_LANES = 16
ROUND_SECONDS = 1.0
# Tries of a transaction PostgreSQL aborted for a deadlock or serialization failure
# (lanes.CONFLICTS) where trying again is safe: the fan-out (nothing was sent yet) and a
# round's closing writes (in a savepoint, the lanes still held).
CONFLICT_TRIES = 3


@dataclasses.dataclass
class Round:
    """One round of lanes: how many notifications got through, and the subscriptions whose
    attempt failed (their lanes wait for their retry time)."""

    delivered: int = 0
    failed: set[int] = dataclasses.field(default_factory=set)
    processed: int = 0

    def add(self, work: lanes.Work, delivered: int, failed: bool) -> None:
        """Count one lane's outcome."""
        self.processed += 1
        self.delivered += delivered
        if failed:
            self.failed.add(work.subscription_id)


class DispatcherBusy(RuntimeError):
    """Another dispatcher already runs on this SQLite database."""


@contextlib.contextmanager
def sole_sqlite_dispatcher(db: Database) -> Iterator[None]:
    """Hold an exclusive lock file beside a SQLite database while dispatching.

    :raises DispatcherBusy: another dispatcher holds it.
    """
    if not db.is_sqlite:
        yield
        return
    path = Path(make_url(db.url).database or "gateway.db").with_suffix(".dispatch-lock")
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DispatcherBusy("another dispatcher runs on this SQLite database; SQLite "
                                 "takes one (use PostgreSQL for several)") from exc
        yield


class Dispatcher:
    """Delivers the notifications queued in ``db`` as ``settings`` say."""

    def __init__(self, settings: Settings, db: Database, *,
                 clock: Callable[[], dt.datetime] = utcnow,
                 channels: dict[str, Channel] | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        config = settings.as_config()
        self.policy = lanes.Policy.from_config(config)
        self.channels: dict[str, Channel] = {
            "rest-hook": RestHook(allow_private=settings.notify_allow_private),
            "mesh": Mesh(MeshSettings.from_config(config)),
            **(channels or {})}
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.base = settings.public_fhir_base
        self._inflight: set[int] = set()
        self._claim_lock = threading.Lock()
        self._maintain_lock = threading.Lock()
        self._last_heartbeat_scan = 0.0
        self.stop = threading.Event()

    # --- fan-out and heartbeats ----------------------------------------------------------

    def _events_waiting(self) -> bool:
        """Return True when the outbox holds events not yet fanned out (a cheap read)."""
        with self.db.transaction() as session:
            return session.scalar(select(Event.id).where(Event.fanned_out.is_(False))
                                  .limit(1)) is not None

    def maintain(self) -> int:
        """Fan out one batch of events and queue due heartbeats; return events handled."""
        heartbeats_due = time.monotonic() - self._last_heartbeat_scan >= HEARTBEAT_SCAN
        if not (heartbeats_due or self._events_waiting()):
            return 0
        if not self._maintain_lock.acquire(blocking=False):
            return 0
        try:
            for attempt in range(1, CONFLICT_TRIES + 1):
                phase = lanes.Phase("fan-out")
                try:
                    return self._fan_out(heartbeats_due, phase)
                except DBAPIError as exc:
                    retrying = lanes.is_conflict(exc) and attempt < CONFLICT_TRIES
                    phase.log_failure(exc, retrying)
                    if not retrying:
                        raise
            return 0
        finally:
            self._maintain_lock.release()

    def _fan_out(self, heartbeats_due: bool, phase: lanes.Phase) -> int:
        """Fan out one batch of events and queue heartbeats in one transaction."""
        with self.db.write_transaction() as session:
            if not fanout.try_lock(session):
                return 0
            handled = fanout.fan_out(session, self.clock(), phase=phase)
            if heartbeats_due:
                phase.enter("heartbeats", [])
                self._last_heartbeat_scan = time.monotonic()
                fanout.queue_heartbeats(session, self.clock())
            phase.enter("fan-out commit")
        return handled

    # --- lanes -----------------------------------------------------------------------------

    def _settings(self) -> lanes.LoadSettings:
        """Return what loading lanes needs now."""
        return lanes.LoadSettings(self.policy, self.base, self.settings.canonical_base,
                                  self.settings.instance_path, self.clock())

    def deliver(self, work: lanes.Work) -> lanes.Result:
        """Send the work's groups in order, stopping at the first failure (or when asked to
        stop: the rest stays queued)."""
        result = lanes.Result()
        channel = self.channels[work.channel]
        for group in work.groups:
            if self.stop.is_set():
                break
            parcel = dataclasses.replace(work.parcel, body=group.body,
                                         reference=f"{work.resource_id}-{group.rows[0].id}")
            started = time.monotonic()
            outcome = channel.send(parcel)
            result.outcomes.append((group, outcome, int((time.monotonic() - started) * 1000)))
            if not outcome.delivered:
                log.info("delivery to subscription %s failed: %s", work.resource_id,
                         outcome.detail)
                break
        return result

    def process_lanes(self, exclude: set[int] | None = None) -> Round | None:
        """Deliver one claimed batch of due lanes (``ROUND_LANES``) in one transaction, until
        ``ROUND_SECONDS`` have passed; None when none is due."""
        if self.db.is_sqlite:
            return self._process_sqlite(exclude or set())
        phase = lanes.Phase("claim")
        try:
            return self._round(exclude or set(), phase)
        except DBAPIError as exc:
            phase.log_failure(exc, False)
            raise

    def _round(self, exclude: set[int], phase: lanes.Phase) -> Round | None:
        """PostgreSQL: claim a batch of lanes, deliver them, record it all, commit."""
        done, writes, events = Round(), lanes.Writes(), dict[int, Any]()
        with self.db.transaction() as session:
            # A lost commit here only means sending again (at least once, same event numbers):
            # no need to wait for the WAL flush (PostgreSQL "Asynchronous Commit").
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            claimed = lanes.claim(session, self.clock(), exclude, ROUND_LANES)
            if not claimed:
                return None
            phase.enter("load", [c.subscription.id for c in claimed])
            batch = lanes.load_batch(session, claimed, self.policy.batch, events)
            started = time.monotonic()
            for lane, queue in batch:
                if done.processed and (self.stop.is_set()
                                       or time.monotonic() - started >= ROUND_SECONDS):
                    break  # the lanes not started go back to the queue at commit
                phase.enter("load", [lane.subscription.id])
                work = lanes.load(session, lane, queue, self._settings(), events)
                result = self.deliver(work)
                phase.enter("record")
                done.add(work, lanes.record(session, work, result, self.policy, self.clock(),
                                            self.rng, writes), result.failed)
            phase.enter("apply", sorted(c.subscription.id for c, _ in batch))
            self._apply(session, writes, phase)
            phase.enter("commit")
        return done

    def _apply(self, session: Session, writes: lanes.Writes, phase: lanes.Phase) -> None:
        """Write a round's bookkeeping in a savepoint, tried again when PostgreSQL aborts it
        for a deadlock: the lanes stay claimed, so what was sent is recorded once."""
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                with session.begin_nested():
                    writes.apply(session, self.clock())
                return
            except DBAPIError as exc:
                retrying = lanes.is_conflict(exc) and attempt < CONFLICT_TRIES
                if not retrying:
                    raise
                phase.log_failure(exc, retrying)

    def _process_sqlite(self, exclude: set[int]) -> Round | None:
        """SQLite: claim a batch of lanes in-process, load them, send outside a transaction,
        record them in one more."""
        with self._claim_lock:
            with self.db.transaction() as session:
                ids = [c.subscription.id for c in lanes.claim(
                    session, self.clock(), exclude | self._inflight, ROUND_LANES)]
            if not ids:
                return None
            self._inflight.update(ids)
        try:
            events: dict[int, Any] = {}
            with self.db.write_transaction() as session:
                batch = lanes.load_batch(session, lanes.claimed_again(session, ids),
                                         self.policy.batch, events)
                works = [lanes.load(session, lane, queue, self._settings(), events)
                         for lane, queue in batch]
            sent = self._send_all(works)
            done, writes = Round(), lanes.Writes()
            with self.db.write_transaction() as session:
                for work, result in sent:
                    done.add(work, lanes.record(session, work, result, self.policy,
                                                self.clock(), self.rng, writes), result.failed)
                writes.apply(session, self.clock())
            return done
        finally:
            self._inflight.difference_update(ids)

    def _send_all(self, works: list[lanes.Work]) -> list[tuple[lanes.Work, lanes.Result]]:
        """Deliver works one after the other, starting none after ``ROUND_SECONDS``."""
        started, sent = time.monotonic(), list[tuple[lanes.Work, lanes.Result]]()
        for work in works:
            if sent and (self.stop.is_set() or time.monotonic() - started >= ROUND_SECONDS):
                break
            sent.append((work, self.deliver(work)))
        return sent

    # --- running ---------------------------------------------------------------------------

    def run_once(self) -> int:
        """Fan out everything, then deliver every lane that is due until none is (a lane that
        fails is not tried again in this run); return how many notifications got through."""
        failed: set[int] = set()
        delivered = 0
        with self._closing():
            while self.maintain():
                pass
            while (done := self.process_lanes(failed)) is not None:
                delivered += done.delivered
                failed |= done.failed
        return delivered

    @contextlib.contextmanager
    def _closing(self) -> Iterator[None]:
        """Close the channels' connections when a run ends."""
        try:
            yield
        finally:
            for channel in self.channels.values():
                channel.close()

    def _loop(self) -> None:
        """One worker thread: maintain, deliver, and wait when there is nothing to do."""
        while not self.stop.is_set():
            try:
                busy = self.maintain() > 0
                busy = self.process_lanes() is not None or busy
            except SQLAlchemyError as exc:
                log.warning("dispatcher round failed (%s); retrying", type(exc).__name__)
                busy = False
            except Exception:  # a bug must not silently stop a worker: log, go on
                log.exception("dispatcher round failed")
                busy = False
            if not busy:
                self.stop.wait(self.policy.poll)

    def run(self, threads: int | None = None) -> None:
        """Run worker threads until ``stop`` is set (SIGTERM), then let them finish their
        current round."""
        count = threads or self.settings.notify_threads
        workers = [threading.Thread(target=self._loop, name=f"dispatch-{n}")
                   for n in range(max(count, 1))]
        with self._closing():
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
