"""Notifications: subscriptions, the transactional outbox of events, the
per-subscription notification queue with its delivery attempts, and the delivery ledger of
which client received which child's data (docs/architecture.md "State changes and their events
commit together").

A change of a child's directory entry or of an eCAF assessment reference writes its ``Event``
in the same transaction (``emit_changes`` below, a ``before_flush`` listener installed after
the versioning one, so it sees every owner stamped in the transaction exactly once).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from adapter.models.assessment import Assessment
from adapter.models.base import Base, utcnow
from adapter.models.directory import Child

# Topic keys (adapter.notify.topics gives each its canonical URL and definition).
DIRECTORY_TOPIC: Final = "directory-entry-changed"
ECAF_TOPIC: Final = "ecaf-assessment-changed"
NOTICE_TOPIC: Final = "decommission-notice"
PURGE_TOPIC: Final = "purge-instruction"
TOPICS: Final = (DIRECTORY_TOPIC, ECAF_TOPIC, NOTICE_TOPIC, PURGE_TOPIC)
# Subscription.status (R4 subscription-status value set).
SUBSCRIPTION_STATUSES: Final = ("requested", "active", "error", "off")
CONTENTS: Final = ("empty", "id-only", "full-resource")
CHANNELS: Final = ("rest-hook", "mesh")
NOTIFICATION_KINDS: Final = ("handshake", "heartbeat", "event")
NOTIFICATION_STATES: Final = ("pending", "delivered", "dead")
# Big integer ids on the high-volume tables, plain INTEGER on SQLite (its rowid alias).
BIG_ID: Final = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    """Return a CHECK expression ``column IN (...)``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Subscription(Base):
    """A client's topic-based subscription (Subscriptions R5 Backport IG for R4).

    ``events_since_start`` is the last event number given to this subscription; only the
    fan-out changes it. ``secret`` is the HMAC signing secret, encrypted with the instance key.
    """

    __tablename__ = "subscription"
    __table_args__ = (
        CheckConstraint(_in("status", SUBSCRIPTION_STATUSES), name="status"),
        CheckConstraint(_in("topic", TOPICS), name="topic"),
        CheckConstraint(_in("channel", CHANNELS), name="channel"),
        CheckConstraint(_in("content", CONTENTS), name="content"),
        Index("ix_subscription_topic_status", "topic", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("client.client_id"), index=True)
    topic: Mapped[str] = mapped_column(String(40))
    # Parsed filter criteria: parameter -> accepted values (AND over parameters, OR within).
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The filter strings as the client sent them (returned on reads).
    filter_text: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(10), default="requested")
    channel: Mapped[str] = mapped_column(String(10))
    endpoint: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(String(40), default="application/fhir+json")
    content: Mapped[str] = mapped_column(String(20), default="id-only")
    headers: Mapped[list[str]] = mapped_column(JSON, default=list)
    heartbeat_period: Mapped[int | None] = mapped_column(Integer)
    timeout: Mapped[int | None] = mapped_column(Integer)
    max_count: Mapped[int | None] = mapped_column(Integer)
    end: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(Text)
    # Events with an id up to this one were written before the subscription existed.
    start_event_id: Mapped[int] = mapped_column(BIG_ID, default=0)
    events_since_start: Mapped[int] = mapped_column(BIG_ID, default=0)
    # The last delivery error in words (never personal data), for $status and Subscription.error.
    error: Mapped[str | None] = mapped_column(String(500))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SubscriptionLane(Base):
    """A subscription's delivery lane: the row a dispatcher locks (``FOR UPDATE SKIP LOCKED``)
    while it delivers that subscription's notifications in order, and when to try next."""

    __tablename__ = "subscription_lane"

    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id"),
                                                 primary_key=True)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                         index=True)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """One event of a topic, written in the transaction of the change it reports (the outbox).

    ``payload`` holds the resource of a decommission notice or purge instruction (no child's
    data); directory and eCAF events carry only references, rendered at delivery.
    """

    __tablename__ = "event"
    __table_args__ = (
        CheckConstraint(_in("topic", TOPICS), name="topic"),
        Index("ix_event_fanned_out_id", "fanned_out", "id"),
        # Purge instructions by Task, to tell whether a Task reached its holder
        # (adapter.decommission.tasks.reached); partial: other events carry no entry.
        Index("ix_event_purge_focus", "focus_id",
              postgresql_where=text("topic = 'purge-instruction'"),
              sqlite_where=text("topic = 'purge-instruction'")),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(10), default="update")
    focus_type: Mapped[str] = mapped_column(String(40))
    focus_id: Mapped[str] = mapped_column(String(64))
    # The child the event is about (FHIR id of its Patient), for filters and the ledger.
    child_ref: Mapped[str | None] = mapped_column(String(64))
    # FHIR id of the child's managing authority (Organization), for filters.
    authority_ref: Mapped[str | None] = mapped_column(String(64))
    # A purge instruction goes only to the client it is addressed to.
    addressee: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Notification(Base):
    """One notification queued for one subscription: a handshake, a heartbeat or an event
    with its event number (gap-free per subscription, given by the fan-out)."""

    __tablename__ = "notification"
    __table_args__ = (
        CheckConstraint(_in("kind", NOTIFICATION_KINDS), name="kind"),
        CheckConstraint(_in("state", NOTIFICATION_STATES), name="state"),
        CheckConstraint("kind <> 'event' OR (event_number IS NOT NULL AND event_id IS NOT NULL)",
                        name="event_numbered"),
        UniqueConstraint("subscription_id", "event_number"),
        # What a dispatcher looks for: the queue of each subscription, small however many
        # notifications were delivered (a partial index; adapter.notify.lanes.QUEUED_CONDITION).
        Index("ix_notification_queued", "subscription_id", "id",
              postgresql_where=text("state IN ('pending', 'dead')"),
              sqlite_where=text("state IN ('pending', 'dead')")),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("event.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="event")
    event_number: Mapped[int | None] = mapped_column(BIG_ID)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Full-resource entries as rendered at the first attempt, so that retries and duplicates
    # carry the same content; removed by destruction.
    content: Mapped[list[Any] | None] = mapped_column(JSON)
    # FHIR ids of the children whose data ``content`` discloses (for the ledger on delivery).
    discloses: Mapped[list[str] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DeliveryAttempt(Base):
    """One attempt to deliver notifications of a subscription (one POST or MESH message)."""

    __tablename__ = "delivery_attempt"
    __table_args__ = (
        Index("ix_delivery_attempt_subscription_at", "subscription_id", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscription.id"))
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))  # handshake, heartbeat, event-notification
    first_event_number: Mapped[int | None] = mapped_column(BIG_ID)
    last_event_number: Mapped[int | None] = mapped_column(BIG_ID)
    delivered: Mapped[bool] = mapped_column(Boolean)
    http_status: Mapped[int | None] = mapped_column(Integer)
    # Words only: connection refused, timeout, HTTP 500, MESH message id (never personal data).
    detail: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class LedgerEntry(Base):
    """The delivery ledger: client ``client_id`` received data of the child ``child_ref``
    (read, search hit, export, full-resource notification) first and last at these times;
    it scopes the purge instructions (docs/architecture.md "Decommissioning")."""

    __tablename__ = "delivery_ledger"
    __table_args__ = (UniqueConstraint("client_id", "child_ref"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(100))
    child_ref: Mapped[str] = mapped_column(String(64), index=True)
    first_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_via: Mapped[str] = mapped_column(String(20))
    deliveries: Mapped[int] = mapped_column(BIG_ID, default=1)


def _change_event(session: Session, owner: Child | Assessment) -> Event | None:
    """Return the outbox event for a stamped child or assessment."""
    action = "create" if owner in session.new else "update"
    if isinstance(owner, Child):
        authority = owner.managing_organisation
        return Event(topic=DIRECTORY_TOPIC, action=action, focus_type="Patient",
                     focus_id=owner.resource_id, child_ref=owner.resource_id,
                     authority_ref=authority.resource_id if authority is not None else None)
    child = owner.child if owner.child is not None else session.get(Child, owner.child_id)
    if child is None:
        return None
    authority = child.managing_organisation
    return Event(topic=ECAF_TOPIC, action=action, focus_type="CareTeam",
                 focus_id=owner.resource_id, child_ref=child.resource_id,
                 authority_ref=authority.resource_id if authority is not None else None)


def emit_changes(session: Session, _context: Any, _instances: Any) -> None:
    """Before a flush, add one outbox event per child or assessment stamped as changed in this
    transaction (``adapter.models.versioning``), so the event commits with the change."""
    stamped: set[Child | Assessment] = session.info.get("versioned") or set()
    emitted: set[Child | Assessment] = session.info.setdefault("outbox_emitted", set())
    with session.no_autoflush:
        for owner in [o for o in stamped if o not in emitted]:
            emitted.add(owner)
            change = _change_event(session, owner)
            if change is not None:
                session.add(change)


def forget_emitted(session: Session, transaction: Any) -> None:
    """Start afresh when the outermost transaction ends (each flush runs in a
    subtransaction of its own, which is not the end of the transaction)."""
    if transaction.parent is None:
        session.info.pop("outbox_emitted", None)


def install_outbox() -> None:
    """Register the outbox listener once for every Session (after the versioning listener)."""
    if not event.contains(Session, "before_flush", emit_changes):
        event.listen(Session, "before_flush", emit_changes)
        event.listen(Session, "after_transaction_end", forget_emitted)
