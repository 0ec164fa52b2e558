"""The last word (README "Decommissioning"): every phase change is announced to the subscribers
of the decommission-notice topic, destruction included — so destruction queues its notice (the
plan, now retired) after deleting the personal data and before any subscription ends, delivers
it at once (one attempt per subscription: the gateway's other processes, the dispatcher among
them, are stopped during destruction), records each delivery for the certificate, and only then
turns every subscription off."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from adapter.db import Database
from adapter.decommission.resources import instant
from adapter.models import DeliveryAttempt, Event, Notification, Subscription
from adapter.models.notify import NOTICE_TOPIC
from adapter.settings import Settings


def close_change_subscriptions(session: Session, now: dt.datetime) -> None:
    """Turn off every subscription but those to the decommission notice (they get the final
    notice first), and forget every filter (a filter may name a child)."""
    session.execute(update(Subscription).values(filters={}, filter_text=[])
                    .execution_options(synchronize_session=False))
    session.execute(update(Subscription).where(Subscription.topic != NOTICE_TOPIC)
                    .values(status="off", last_updated=now,
                            error="The service's data was destroyed (decommissioning).")
                    .execution_options(synchronize_session=False))


def close_all_subscriptions(db: Database, now: dt.datetime) -> None:
    """Turn every subscription off, and drop the queue (the final notice was its last entry)."""
    with db.write_transaction() as session:
        session.execute(update(Subscription).where(Subscription.status != "off")
                        .values(status="off", last_updated=now,
                                error="The service's data was destroyed (decommissioning).")
                        .execution_options(synchronize_session=False))
        session.execute(delete(Notification))
        session.execute(delete(Event))


def _last_error(session: Session, subscription_id: int) -> str | None:
    """Return the detail of the subscription's last failed delivery attempt."""
    return session.scalar(
        select(DeliveryAttempt.detail).where(DeliveryAttempt.subscription_id == subscription_id,
                                             DeliveryAttempt.delivered.is_(False))
        .order_by(DeliveryAttempt.id.desc()).limit(1))


def deliveries(session: Session, event_id: int) -> list[dict[str, Any]]:
    """Return the final notice's delivery to each subscription it was queued for."""
    rows = session.execute(
        select(Subscription.id, Subscription.resource_id, Subscription.client_id,
               Subscription.channel, Notification.state, Notification.delivered_at)
        .join(Notification, Notification.subscription_id == Subscription.id)
        .where(Notification.event_id == event_id).order_by(Subscription.client_id,
                                                           Subscription.resource_id))
    found = []
    for sid, rid, client_id, channel, state, at in rows:
        delivered = state == "delivered"
        found.append({"subscription": rid, "client": client_id, "channel": channel,
                      "delivered": delivered, "at": instant(at) if delivered and at else None,
                      "detail": None if delivered else (_last_error(session, sid)
                                                        or "not delivered")})
    return found


def deliver_final_notice(settings: Settings, db: Database, event_id: int) -> list[dict[str, Any]]:
    """Deliver what is queued (the final notice) once, and return its deliveries."""
    from adapter.notify.dispatcher import Dispatcher

    Dispatcher(settings, db).run_once()
    with db.sessions() as session:
        return deliveries(session, event_id)
