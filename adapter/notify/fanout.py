"""The fan-out: each new outbox event becomes one queued notification per matching
subscription, numbered gap-free per subscription (the backport's event numbers and
``events-since-subscription-start``), all in one transaction with marking the event done —
so a crash re-runs the whole step and numbers are never given twice. One fan-out runs at a
time (PostgreSQL: a transaction-level advisory lock; SQLite has one dispatcher); heartbeats
are queued by the same step."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final, cast

import psycopg
from sqlalchemy import exists, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from adapter.models.base import Base
from adapter.models.notify import Event, Notification, Subscription, SubscriptionLane
from adapter.notify.bundle import aware
from adapter.notify.lanes import QUEUED_CONDITION, Phase
from adapter.notify.topics import matches

FANOUT_BATCH: Final = 2000
COPY_COLUMNS: Final = ("subscription_id", "event_id", "kind", "event_number", "state",
                       "attempts", "created")
LIVE: Final = ("requested", "active", "error")
# First key of the PostgreSQL advisory lock serialising fan-outs ("CPGW" in ASCII).
FANOUT_LOCK: Final = 0x43504757


@dataclass
class Target:
    """A subscription that may receive events, with its running event counter."""

    id: int
    topic: str
    filters: dict[str, list[str]]
    client_id: str
    start_event_id: int
    counter: int


def try_lock(session: Session) -> bool:
    """Take the fan-out lock for this transaction (PostgreSQL); True when taken."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    # Advisory locks are database-wide: the schema's name keeps gateways in different
    # schemas of one database (tests, benchmarks) from serialising each other.
    return bool(session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"),
        {"key": FANOUT_LOCK}))


def _targets(session: Session, topics: set[str], now: dt.datetime) -> dict[str, list[Target]]:
    """Return the live subscriptions of ``topics`` by topic."""
    rows = session.execute(
        select(Subscription.id, Subscription.topic, Subscription.filters, Subscription.client_id,
               Subscription.start_event_id, Subscription.events_since_start)
        .where(Subscription.topic.in_(topics), Subscription.status.in_(LIVE),
               Subscription.deleted.is_(False),
               or_(Subscription.end.is_(None), Subscription.end > now))
        .order_by(Subscription.id))
    found: dict[str, list[Target]] = defaultdict(list)
    for sid, topic, filters, client_id, start, counter in rows:
        found[topic].append(Target(sid, topic, filters or {}, client_id, int(start), int(counter)))
    return found


def _wants(target: Target, event: Any) -> bool:
    """Return True when ``target`` receives ``event``."""
    if event.id <= target.start_event_id:
        return False
    if event.addressee is not None and event.addressee != target.client_id:
        return False
    return matches(target.filters, {"child_ref": event.child_ref,
                                    "authority_ref": event.authority_ref})


def _number(events: list[Any], targets: dict[str, list[Target]],
            now: dt.datetime) -> list[dict[str, Any]]:
    """Return the notification rows of ``events``, numbering each target's in event order."""
    rows = []
    for event in events:
        for target in targets.get(event.topic, []):
            if _wants(target, event):
                target.counter += 1
                rows.append({"subscription_id": target.id, "event_id": event.id, "kind": "event",
                             "event_number": target.counter, "state": "pending",
                             "attempts": 0, "created": now})
    return rows


def insert_notifications(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert notification rows: PostgreSQL COPY (about twice as fast as a pipelined
    executemany, PostgreSQL docs "Populating a Database"), else Core executemany."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(Base.metadata.tables["notification"]), rows)
        return
    raw = cast(psycopg.Connection[Any], session.connection().connection.dbapi_connection)
    statement = f"COPY notification ({', '.join(COPY_COLUMNS)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(tuple(row[c] for c in COPY_COLUMNS))


def fan_out(session: Session, now: dt.datetime, limit: int = FANOUT_BATCH,
            phase: Phase | None = None) -> int:
    """Fan out up to ``limit`` events (oldest first); return how many were handled. The
    counters are written last and by ascending subscription id, the order a delivery round
    writes subscription statuses in (the lock order of ``adapter.notify.lanes``)."""
    phase = phase or Phase()
    events = list(session.execute(
        select(Event.id, Event.topic, Event.child_ref, Event.authority_ref, Event.addressee)
        .where(Event.fanned_out.is_(False)).order_by(Event.id).limit(limit)))
    if not events:
        return 0
    targets = _targets(session, {e.topic for e in events}, now)
    before = {t.id: t.counter for group in targets.values() for t in group}
    rows = _number(events, targets, now)
    phase.enter("fan-out: queue notifications", sorted({r["subscription_id"] for r in rows}))
    insert_notifications(session, rows)
    phase.enter("fan-out: mark events")
    session.execute(update(Event).where(Event.id.in_([e.id for e in events]))
                    .values(fanned_out=True).execution_options(synchronize_session=False))
    counters = sorted(({"id": t.id, "events_since_start": t.counter}
                       for group in targets.values() for t in group
                       if t.counter != before[t.id]), key=lambda c: c["id"])
    if counters:
        phase.enter("fan-out: counters")
        session.execute(update(Subscription), counters)
    return len(events)


def queue_heartbeats(session: Session, now: dt.datetime) -> int:
    """Queue a heartbeat for each active subscription with a heartbeat period that has sent
    nothing for that long and has nothing queued (backport-heartbeat-period)."""
    idle = ~exists().where(Notification.subscription_id == Subscription.id,
                           QUEUED_CONDITION)
    rows = session.execute(
        select(Subscription.id, Subscription.heartbeat_period,
               func.coalesce(SubscriptionLane.last_success_at, Subscription.created))
        .join(SubscriptionLane, SubscriptionLane.subscription_id == Subscription.id)
        .where(Subscription.status == "active", Subscription.deleted.is_(False),
               Subscription.heartbeat_period.is_not(None), idle))
    due = [{"subscription_id": sid, "kind": "heartbeat", "state": "pending", "attempts": 0,
            "created": now}
           for sid, period, last in rows if aware(last) + dt.timedelta(seconds=period or 0) <= now]
    if due:
        session.execute(insert(Notification), due)
    return len(due)
