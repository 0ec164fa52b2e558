"""Telling a holder without a subscription of its own (docs/holders.md "Being told"): a client
may be registered with a contact — a MESH mailbox (``mesh:MAILBOX``) or a rest-hook endpoint —
and at switch-off the gateway makes, for each holder with a contact, a ``purge-instruction``
subscription owned by that client to that endpoint, so its purge Task (and every reminder) is
delivered there by the dispatcher like any notification: in order, retried until the endpoint
answers. Most local systems cannot run a FHIR subscription client for a one-off purge; a
mailbox or an HTTP endpoint they can.

A Task must also reach a system that subscribes after switch-off: creating a subscription to the
purge-instruction topic while switched off sends the system's open Task at once
(``announce_open_task``) rather than at the next reminder.
"""

from __future__ import annotations

import uuid
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapter.errors import NotFound
from adapter.models import Client, Event, PurgeTask, Subscription, SubscriptionLane
from adapter.models.notify import PURGE_TOPIC
from adapter.notify.channels import MESH_PREFIX
from adapter.notify.signing import new_secret, seal
from adapter.notify.spec import _endpoint
from adapter.security import audit
from adapter.settings import Settings

MADE_BY_GATEWAY: Final = ("Made by the gateway at switch-off for the client's registered "
                          "contact: its purge instruction and reminders.")


def channel_of(contact: str) -> str:
    """Return the channel of a registered contact: ``mesh`` or ``rest-hook``."""
    return "mesh" if contact.startswith(MESH_PREFIX) else "rest-hook"


def checked_contact(contact: str, allow_http: bool) -> str:
    """Return ``contact`` when it is ``mesh:MAILBOX`` or an https (http when ``allow_http``,
    ``GATEWAY_NOTIFY_ALLOW_HTTP``) URL, the endpoints a subscription may have.

    :raises Invalid: anything else.
    """
    text = contact.strip()
    return _endpoint(channel_of(text), text, allow_http)


def set_contact(session: Session, client_id: str, contact: str | None,
                settings: Settings) -> Client:
    """Register (or with None, remove) a client's contact; while switched off, its open purge
    Task is sent there at once.

    :raises NotFound: no such client.
    :raises Invalid: not a contact a subscription could have.
    """
    client = session.scalar(select(Client).where(Client.client_id == client_id))
    if client is None:
        raise NotFound(f"No client {client_id!r} is registered.")
    client.contact = checked_contact(contact, settings.notify_allow_http) if contact else None
    audit.record(session, "client-contact", detail=f"{client_id}: "
                 + (channel_of(client.contact) if client.contact else "removed"))
    if client.contact and open_task(session, client_id) is not None:
        contact_subscription(session, client, settings.instance_path)
        announce_open_task(session, client_id, settings)
    return client


def contact_subscription(session: Session, client: Client,
                         instance_path: str) -> Subscription | None:
    """Return the purge-instruction subscription to ``client``'s contact, made (requested, its
    handshake queued, its secret sealed with the service key under ``instance_path``) when it
    has none; None when the client has no contact."""
    from adapter.notify.subscriptions import queue_handshake

    if not client.contact:
        return None
    existing = session.scalar(select(Subscription).where(
        Subscription.client_id == client.client_id, Subscription.topic == PURGE_TOPIC,
        Subscription.endpoint == client.contact, Subscription.deleted.is_(False)))
    if existing is not None:
        return existing
    subscription = Subscription(
        resource_id=str(uuid.uuid4()), client_id=client.client_id, topic=PURGE_TOPIC,
        filters={}, filter_text=[], status="requested", channel=channel_of(client.contact),
        endpoint=client.contact, payload="application/fhir+json", content="full-resource",
        headers=[], reason=MADE_BY_GATEWAY, events_since_start=0,
        secret=seal(instance_path, new_secret()),
        start_event_id=session.scalar(select(func.max(Event.id))) or 0)
    session.add(subscription)
    session.flush()
    session.add(SubscriptionLane(subscription_id=subscription.id))
    queue_handshake(session, subscription)
    audit.record(session, "create", resource_type="Subscription",
                 resource_id=subscription.resource_id,
                 detail=f"for {client.client_id}'s registered contact")
    return subscription


def open_task(session: Session, client_id: str) -> PurgeTask | None:
    """Return the client's purge Task while the owner still owes an answer or completion."""
    from adapter.decommission.tasks import OPEN_STATUSES

    return session.scalar(select(PurgeTask).where(PurgeTask.client_id == client_id,
                                                  PurgeTask.status.in_(OPEN_STATUSES)))


def announce_open_task(session: Session, client_id: str, settings: Settings) -> bool:
    """Send the client's open purge Task to its purge-instruction subscriptions now (a new
    subscription or contact after switch-off); return False when it has none open."""
    from adapter.decommission.handlers import require_plan
    from adapter.decommission.tasks import render_task
    from adapter.notify.outbox import emit_purge_instruction

    task = open_task(session, client_id)
    if task is None:
        return False
    session.flush()  # the new subscription's start precedes this event
    emit_purge_instruction(session, client_id,
                           render_task(session, task, require_plan(session), settings),
                           action="update")
    audit.record(session, "purge-instruct", resource_type="Task", resource_id=task.resource_id,
                 detail=f"to {client_id}: sent again to a new subscription or contact")
    return True


def unannounced(session: Session) -> list[str]:
    """Return the holders with a purge Task but no live purge-instruction subscription (their
    own or their contact's): they learn of their Task only by searching for it."""
    live = select(Subscription.client_id).where(
        Subscription.topic == PURGE_TOPIC, Subscription.deleted.is_(False),
        Subscription.status != "off")
    return list(session.scalars(select(PurgeTask.client_id).where(
        PurgeTask.client_id.not_in(live)).order_by(PurgeTask.client_id)))
