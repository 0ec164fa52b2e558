"""A subscription's delivery lane, on the database side: claiming it (PostgreSQL: ``FOR UPDATE
SKIP LOCKED``, so several dispatchers share the work and one subscription is only ever
delivered by one of them, in order), loading what it has queued as notification Bundles to
send, and recording what happened — deliveries, attempts, retries with backoff, dead
notifications, the subscription's status and the ledger.

A round claims a batch of lanes in one statement and loads all their queued notifications in
one more (``claim``, ``load_batch``); everything it sends is recorded when its transaction
commits, so a dispatcher killed mid-round sends again at most what that one claimed batch
held: up to ``limit`` lanes times ``Policy.batch`` notifications per dispatcher thread.

Lock order (PostgreSQL). Every transaction that takes more than one of these row locks takes
them in this order, so none waits for another in a cycle (PostgreSQL docs, "Explicit
Locking", Deadlocks: acquire locks on multiple objects in a consistent order):

1. ``subscription_lane`` — a round claims its lanes first, ``FOR UPDATE SKIP LOCKED`` (it
   never waits for one); the API locks a subscription's lane before the subscription
   (``adapter.notify.subscriptions.owned``), replay before its notifications
   (``adapter.notify.cli``);
2. ``notification`` rows of those lanes (content kept, attempts, delivered);
3. ``delivery_ledger`` rows, sorted by child (``adapter.notify.ledger.record_deliveries``);
4. ``subscription`` rows by ascending id, at the very end: a round's status changes
   (``Writes.apply``) and the fan-out's event counters (``adapter.notify.fanout.fan_out``).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import bindparam, case, exists, func, insert, select, text, true, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from adapter.models import Base, Client
from adapter.models.notify import (
    DeliveryAttempt,
    Notification,
    Subscription,
    SubscriptionLane,
)
from adapter.notify.bundle import EventItem, StatusInfo, notification_bundle, serialise
from adapter.notify.channels import SUBSCRIBER_ERROR, Outcome, Parcel
from adapter.notify.content import (
    EventData,
    focus_of,
    load_events,
    may_resend,
    render_event,
    subscriber,
)
from adapter.notify.signing import unseal
from adapter.notify.topics import topic_url
from adapter.security.caller import Caller
from adapter.security.ledger import record_deliveries

LIVE: Final = ("requested", "active", "error")
# The queued notifications, as the partial index ix_notification_queued states it (a literal,
# so that PostgreSQL can prove the index applies).
QUEUED_CONDITION: Final = text("notification.state IN ('pending', 'dead')")
# SQLSTATEs of a transaction PostgreSQL gave up on because of another one: deadlock_detected
# and serialization_failure (PostgreSQL docs, Appendix A "Error Codes"); trying again is the
# remedy (docs "Serialization Failure Handling").
CONFLICTS: Final = frozenset({"40P01", "40001"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """Delivery settings (``GATEWAY_NOTIFY_*``)."""

    batch: int = 100
    timeout: float = 10.0
    budget: int = 8
    backoff_base: float = 2.0
    backoff_max: float = 600.0
    poll: float = 0.5

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        """Return the policy of the app configuration."""
        return cls(int(config["NOTIFY_BATCH"]), float(config["NOTIFY_TIMEOUT"]),
                   int(config["NOTIFY_RETRY_BUDGET"]),
                   int(config["NOTIFY_BACKOFF_BASE_MS"]) / 1000.0,
                   float(config["NOTIFY_BACKOFF_MAX"]), int(config["NOTIFY_POLL_MS"]) / 1000.0)

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Return the delay after ``attempts`` failed attempts: exponential, capped, with
        "equal jitter" (half fixed, half random) so that retries of many subscriptions spread
        out (AWS Architecture Blog, "Exponential Backoff and Jitter", 2015)."""
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(attempts - 1, 0))
        return float(delay / 2 + rng.uniform(0, delay / 2))


@dataclass(frozen=True)
class Claimed:
    """A claimed lane with its subscription and the subscription's client."""

    lane: SubscriptionLane
    subscription: Subscription
    client: Client


@dataclass(frozen=True)
class LoadSettings:
    """What loading a lane needs besides the database."""

    policy: Policy
    base: str  # absolute FHIR base of references in notifications
    canonical: str  # canonical base of topics and of the resources' own systems
    instance_path: str  # where the key of the sealed secrets is
    now: dt.datetime


@dataclass(frozen=True)
class StatusChange:
    """A subscription's new status (and last error) after a round."""

    subscription_id: int
    was: str
    status: str
    error: str | None

    def apply(self, session: Session, now: dt.datetime) -> None:
        """Write it unless the client changed the status meanwhile (the update only applies
        to the status the round started from)."""
        values: dict[str, Any] = {"status": self.status}
        if self.error is not None or self.status == "active":
            values["error"] = self.error  # latest error note (R4 Subscription.error)
        if self.status != self.was:
            values |= {"version": Subscription.version + 1, "last_updated": now}
        session.execute(update(Subscription)
                        .where(Subscription.id == self.subscription_id,
                               Subscription.status == self.was)
                        .values(**values).execution_options(synchronize_session=False))


@dataclass
class Writes:
    """A round's bookkeeping, written with one statement per kind at its end."""

    delivered: list[int] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, set[str]] = field(default_factory=dict)
    lanes_done: list[dict[str, Any]] = field(default_factory=list)
    lanes_waiting: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)

    def apply(self, session: Session, now: dt.datetime) -> None:
        """Write it all: notifications delivered, attempts, ledger, lanes, and last the
        subscriptions' status changes by ascending id (the lock order above)."""
        for start in range(0, len(self.delivered), 5000):
            session.execute(update(Notification)
                            .where(Notification.id.in_(self.delivered[start:start + 5000]))
                            .values(state="delivered", delivered_at=now,
                                    attempts=Notification.attempts + 1)
                            .execution_options(synchronize_session=False))
        if self.attempts:
            session.execute(insert(DeliveryAttempt), self.attempts)
        for client_id, refs in self.ledger.items():
            record_deliveries(session, client_id, refs, "notification", now)
        for keys, rows in _same_keys(self.lanes_done + self.lanes_waiting).items():
            table = Base.metadata.tables["subscription_lane"]
            statement = (update(table).where(table.c.subscription_id == bindparam("lane"))
                         .values({k: bindparam(k) for k in keys if k != "subscription_id"}))
            session.execute(statement, [row | {"lane": row["subscription_id"]} for row in rows])
        for change in sorted(self.statuses, key=lambda c: c.subscription_id):
            change.apply(session, now)


def _same_keys(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Group rows by their keys (an executemany UPDATE takes one shape)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    return shapes


@dataclass
class Group:
    """Notifications sent together as one Bundle (one POST or MESH message)."""

    kind: str  # handshake, heartbeat, event-notification
    rows: list[Queued]
    body: bytes = b""


@dataclass
class Work:
    """One claimed lane: its subscription as loaded, and the groups to send in order."""

    subscription_id: int
    resource_id: str
    client_id: str
    status: str
    channel: str
    groups: list[Group]
    parcel: Parcel


@dataclass
class Result:
    """What happened to the groups of a Work, in order (the first failure ends it)."""

    outcomes: list[tuple[Group, Outcome, int]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Return True when an attempt of this round failed."""
        return any(not outcome.delivered for _group, outcome, _ms in self.outcomes)


def claim(session: Session, now: dt.datetime, exclude: set[int],
          limit: int = 1) -> list[Claimed]:
    """Return up to ``limit`` lanes that are due and have something queued, oldest due first,
    with their subscription and client, in one statement: the lanes locked for this
    transaction on PostgreSQL (skipping lanes other dispatchers hold; ``FOR UPDATE OF`` the
    lane only: subscription rows come last in the lock order above). Written so that the
    lane index drives it: the first due lanes are checked, not every lane."""
    lane = SubscriptionLane.subscription_id
    queued = exists().where(Notification.subscription_id == lane, QUEUED_CONDITION)
    query = (select(SubscriptionLane, Subscription, Client)
             .join(Subscription, Subscription.id == lane)
             .join(Client, Client.client_id == Subscription.client_id)
             .where(SubscriptionLane.next_attempt_at <= now, queued,
                    Subscription.deleted.is_(False), Subscription.status.in_(LIVE),
                    Client.status == "active")
             .order_by(SubscriptionLane.next_attempt_at).limit(limit))
    if exclude:
        query = query.where(lane.not_in(exclude))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=SubscriptionLane)
    return [Claimed(*row) for row in session.execute(query)]


def claimed_again(session: Session, ids: list[int]) -> list[Claimed]:
    """Return lanes claimed earlier (SQLite: in-process) with their subscription and client,
    in the order of ``ids``."""
    lanes = {lane.subscription_id: lane for lane in session.scalars(
        select(SubscriptionLane).where(SubscriptionLane.subscription_id.in_(ids)))}
    rows = {s.id: (s, c) for s, c in session.execute(
        select(Subscription, Client).join(Client, Client.client_id == Subscription.client_id)
        .where(Subscription.id.in_(ids)))}
    return [Claimed(lanes[i], *rows[i]) for i in ids if i in lanes and i in rows]


@dataclass
class Queued:
    """A queued notification as a lane sends it (read without the ORM)."""

    id: int
    kind: str
    event_id: int | None
    event_number: int | None
    attempts: int
    content: list[Any] | None
    discloses: list[str] | None


@dataclass
class Queue:
    """A lane's queued notifications in sending order, and its subscription's
    ``events_since_start`` read by the same statement: PostgreSQL gives each statement of a
    READ COMMITTED transaction its own snapshot, and the fan-out commits notifications and
    counter together, so only a count read with the rows is sure to include every one of
    them (backport IG: events-since-subscription-start counts the events of the
    notification too)."""

    events_since: int
    rows: list[Queued] = field(default_factory=list)


QUEUED_COLUMNS: Final = (Notification.id, Notification.kind, Notification.event_id,
                         Notification.event_number, Notification.attempts,
                         Notification.content, Notification.discloses)


def _queued_statement(session: Session, ids: list[int], limit: int) -> Any:
    """Return the statement reading up to ``limit`` queued notifications of each subscription
    in ``ids`` (a handshake first, then by id) with its ``events_since_start``; subscriptions
    with nothing queued give one row of NULLs. PostgreSQL: a LATERAL subquery per lane (the
    partial index ix_notification_queued, however long the queues); SQLite (no LATERAL):
    ``row_number()`` over each lane's queue."""
    owner = (select(Subscription.id, Subscription.events_since_start)
             .where(Subscription.id.in_(ids)).subquery("owner"))
    handshake_first = case((Notification.kind == "handshake", 0), else_=1)
    queue: Any
    if session.get_bind().dialect.name == "postgresql":
        queue = (select(*QUEUED_COLUMNS, handshake_first.label("rank"))
                 .where(Notification.subscription_id == owner.c.id, QUEUED_CONDITION)
                 .order_by(handshake_first, Notification.id).limit(limit).lateral("queue"))
        joined = owner.outerjoin(queue, true())
    else:
        ranked = (select(*QUEUED_COLUMNS, Notification.subscription_id, func.row_number().over(
                      partition_by=Notification.subscription_id,
                      order_by=(handshake_first, Notification.id)).label("rank"))
                  .where(Notification.subscription_id.in_(ids), QUEUED_CONDITION)
                  .subquery("ranked"))
        queue = select(ranked).where(ranked.c.rank <= limit).subquery("queue")
        joined = owner.outerjoin(queue, queue.c.subscription_id == owner.c.id)
    columns = [queue.c[c.key] for c in QUEUED_COLUMNS]
    return (select(owner.c.id.label("owner"), owner.c.events_since_start, *columns)
            .select_from(joined).order_by(owner.c.id, queue.c.rank, queue.c.id))


def load_batch(session: Session, claimed: list[Claimed], limit: int,
               events: dict[int, EventData]) -> list[tuple[Claimed, Queue]]:
    """Return each claimed lane with its queue (up to ``limit`` notifications), read in one
    statement, and add the events they carry to ``events`` (one more)."""
    queues: dict[int, Queue] = {}
    for row in session.execute(_queued_statement(
            session, [c.subscription.id for c in claimed], limit)):
        queue = queues.setdefault(row.owner, Queue(int(row.events_since_start)))
        if row.id is not None:
            queue.rows.append(Queued(*row[2:]))
    wanted = {r.event_id for q in queues.values() for r in q.rows if r.event_id is not None}
    events.update(load_events(session, wanted - set(events)))
    return [(c, queues.get(c.subscription.id, Queue(int(c.subscription.events_since_start))))
            for c in claimed]


def _groups(rows: list[Queued], max_count: int) -> list[Group]:
    """Return ``rows`` as send groups: handshakes and heartbeats alone, events up to
    ``max_count`` per Bundle (backport-max-count)."""
    groups: list[Group] = []
    for row in rows:
        last = groups[-1] if groups else None
        if row.kind == "event" and last is not None and last.kind == "event-notification" \
                and len(last.rows) < max_count:
            last.rows.append(row)
        else:
            groups.append(Group("event-notification" if row.kind == "event" else row.kind,
                                [row]))
    return groups


def _items(session: Session, subscription: Subscription, group: Group, settings: LoadSettings,
           caller: Caller, events: dict[int, EventData]) -> list[EventItem]:
    """Return the events of a group with their entries, rendering full-resource content at
    the first attempt and keeping it (``_keep_content``), so that every attempt sends the same
    content — unless a child it discloses has been shielded or archived since
    (``content.may_resend``): then it is rendered again, as a read now would show it."""
    items, base = [], settings.base
    for row in group.rows:
        event = events.get(row.event_id) if row.event_id else None
        if event is None:
            continue
        if subscription.content == "full-resource" and event.payload is None and (
                row.content is None or not may_resend(session, row.discloses, caller)):
            rendered = render_event(session, event, "full-resource", caller, base,
                                    settings.canonical)
            row.content, row.discloses = rendered.entries, rendered.discloses
            _keep_content(session, row)
        stored = row.content if subscription.content == "full-resource" else None
        entries = stored if stored is not None else \
            render_event(session, event, subscription.content, caller, base,
                         settings.canonical).entries
        items.append(EventItem(int(row.event_number or 0), event.created,
                               f"{base}/{focus_of(event)}", list(entries or [])))
    return items


def _keep_content(session: Session, row: Queued) -> None:
    """Store a notification's rendered content and the children it discloses."""
    session.execute(update(Notification).where(Notification.id == row.id)
                    .values(content=row.content, discloses=row.discloses)
                    .execution_options(synchronize_session=False))


def load(session: Session, claimed: Claimed, queue: Queue, settings: LoadSettings,
         events: dict[int, EventData]) -> Work:
    """Return the work of a claimed lane: each group's Bundle serialised and ready to send
    (``events`` holds the events of the batch, from ``load_batch``)."""
    subscription, policy = claimed.subscription, settings.policy
    groups = _groups(queue.rows, subscription.max_count or 1)
    info = StatusInfo(settings.base, subscription.resource_id,
                      topic_url(settings.canonical, subscription.topic), subscription.status,
                      queue.events_since, subscription.content, subscription.error)
    caller = subscriber(claimed.client)
    for group in groups:
        items = _items(session, subscription, group, settings, caller, events)
        bundle = notification_bundle(info, group.kind, items, now=settings.now)
        group.body = serialise(bundle, subscription.payload)
    parcel = Parcel(subscription.endpoint, b"", subscription.payload,
                    tuple(subscription.headers),
                    unseal(settings.instance_path, subscription.secret),
                    float(subscription.timeout or policy.timeout), subscription.resource_id)
    session.flush()
    return Work(subscription.id, subscription.resource_id, subscription.client_id,
                subscription.status, subscription.channel, groups, parcel)


def _attempt_row(work: Work, group: Group, outcome: Outcome, duration_ms: int,
                 now: dt.datetime) -> dict[str, Any]:
    """Return the delivery_attempt row of one send."""
    numbers = [int(r.event_number) for r in group.rows if r.event_number is not None]
    return {"subscription_id": work.subscription_id, "attempted_at": now, "kind": group.kind,
            "first_event_number": min(numbers) if numbers else None,
            "last_event_number": max(numbers) if numbers else None,
            "delivered": outcome.delivered, "http_status": outcome.http_status,
            "detail": outcome.detail, "duration_ms": duration_ms}


def _mark_failed(session: Session, group: Group, outcome: Outcome, budget: int) -> bool:
    """Count a failed attempt on the group's notifications; return True when the retry budget
    is spent (they are then ``dead``: kept in order, retried at the slowest backoff)."""
    attempts = max(r.attempts for r in group.rows) + 1
    spent = attempts >= budget
    session.execute(update(Notification)
                    .where(Notification.id.in_([r.id for r in group.rows]))
                    .values(attempts=Notification.attempts + 1, last_error=outcome.detail,
                            state="dead" if spent else Notification.state)
                    .execution_options(synchronize_session=False))
    return spent


def _new_status(work: Work, delivered: bool, failed: Group | None, spent: bool) -> str:
    """Return the subscription's status after this round: active once a delivery succeeds;
    error after a failed handshake (backport "REST-Hook": errors in the handshake) or a spent
    retry budget."""
    status = work.status
    if delivered and status in ("requested", "error"):
        status = "active"
    if failed is not None and (failed.kind == "handshake" or spent):
        status = "error"
    return status


def record(session: Session, work: Work, result: Result, policy: Policy, now: dt.datetime,
           rng: random.Random, writes: Writes) -> int:
    """Record one lane's deliveries (into ``writes``, applied at the end of the round;
    failed attempts on the notifications at once); return how many got through."""
    done = [g for g, o, _ in result.outcomes if o.delivered]
    failed = next(((g, o) for g, o, _ in result.outcomes if not o.delivered), None)
    writes.delivered += [r.id for g in done for r in g.rows]
    writes.ledger.setdefault(work.client_id, set()).update(
        ref for g in done for r in g.rows for ref in r.discloses or [])
    writes.attempts += [_attempt_row(work, g, o, ms, now) for g, o, ms in result.outcomes]
    spent = _mark_failed(session, failed[0], failed[1], policy.budget) if failed else False
    lane = {"subscription_id": work.subscription_id, "last_attempt_at": now}
    if failed:
        attempts = max(r.attempts for r in failed[0].rows) + 1
        delay = failed[1].retry_after if failed[1].retry_after is not None else \
            policy.backoff_max if spent else policy.backoff(attempts, rng)
        writes.lanes_waiting.append(lane | {"next_attempt_at": now + dt.timedelta(seconds=delay)})
    if done:
        writes.lanes_done.append(lane | {"last_success_at": now} | (
            {} if failed else {"next_attempt_at": now}))
    elif not failed:
        writes.lanes_waiting.append(lane | {"next_attempt_at": now})
    change = _status_change(work, _new_status(work, bool(done), failed[0] if failed else None,
                                              spent), SUBSCRIBER_ERROR if failed else None)
    if change is not None:
        writes.statuses.append(change)
    return sum(len(g.rows) for g in done)


def _status_change(work: Work, status: str, error: str | None) -> StatusChange | None:
    """Return the subscription's status change, None when nothing changes."""
    if status == work.status and error is None:
        return None
    return StatusChange(work.subscription_id, work.status, status, error)


def is_conflict(exc: BaseException) -> bool:
    """Return True for a deadlock or serialization failure (PostgreSQL ``CONFLICTS``)."""
    return isinstance(exc, DBAPIError) and \
        getattr(exc.orig, "sqlstate", None) in CONFLICTS


@dataclass
class Phase:
    """Where a dispatcher transaction is, for the log when PostgreSQL aborts it: the phase
    (claim, load, record, apply, fan-out, ...) and the subscriptions it was working on."""

    name: str = "start"
    subscriptions: list[int] = field(default_factory=list)

    def enter(self, name: str, subscriptions: list[int] | None = None) -> None:
        """Move to phase ``name`` (keeping the subscriptions unless new ones are given)."""
        self.name = name
        if subscriptions is not None:
            self.subscriptions = subscriptions

    def log_failure(self, exc: BaseException, retrying: bool) -> None:
        """Log a database error of this phase: SQLSTATE, PostgreSQL's words (a deadlock's
        detail names processes, transactions and tables, never values) and the subscription
        ids — nothing of the statement's parameters, which may carry a child's data."""
        original = getattr(exc, "orig", None)
        diag = getattr(original, "diag", None)
        detail = " ".join(str(part).replace("\n", " ") for part in (
            getattr(diag, "message_primary", None), getattr(diag, "message_detail", None),
            getattr(diag, "context", None)) if part) if is_conflict(exc) else ""
        log.warning("notification %s failed: %s SQLSTATE %s (subscriptions %s)%s%s",
                    self.name, type(exc).__name__, getattr(original, "sqlstate", None),
                    ",".join(str(i) for i in self.subscriptions[:50]) or "none",
                    f": {detail}" if detail else "", "; trying again" if retrying else "")
