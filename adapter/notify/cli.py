"""``contactpoint-gateway dispatch`` and ``contactpoint-gateway events list|replay``."""

from __future__ import annotations

import signal

import click
from flask.cli import with_appcontext
from sqlalchemy import Select, select, update

from adapter.db import get_db
from adapter.models import Event, Notification, Subscription, SubscriptionLane
from adapter.models.base import utcnow
from adapter.notify.dispatcher import Dispatcher, DispatcherBusy, sole_sqlite_dispatcher
from adapter.security.policy.phase import command_kind

STATES = click.Choice(["pending", "delivered", "dead"])


@command_kind("purge")  # after switch-off only purge Tasks and notices are queued
@click.command("dispatch")
@click.option("--threads", type=int, default=None,
              help="Delivery threads (default GATEWAY_NOTIFY_THREADS).")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def dispatch_command(threads: int | None, once: bool) -> None:
    """Deliver notifications until SIGTERM (then finish the current round and exit).

    Several may run at once on PostgreSQL; one on SQLite.

    \f
    It builds the settings and the database, never the web app (``command_runtime``).

    :raises click.ClickException: another dispatcher runs on this SQLite database.
    """
    from adapter.runtime import command_runtime

    dispatcher = Dispatcher(*command_runtime())
    try:
        with sole_sqlite_dispatcher(dispatcher.db):
            if once:
                click.echo(f"delivered {dispatcher.run_once()} notifications")
                return
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: dispatcher.stop.set())
            click.echo("dispatching (SIGTERM to stop)")
            dispatcher.run(threads)
    except DispatcherBusy as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("stopped")


@click.group("events")
def events_group() -> None:
    """List queued, delivered and dead notifications; replay them."""


def _selection(subscription: str | None, state: str | None, since: int | None,
               until: int | None) -> Select[Notification, Subscription, Event]:
    """Return the notifications (with their subscription and event) a command acts on."""
    query = (select(Notification, Subscription, Event)
             .join(Subscription, Subscription.id == Notification.subscription_id)
             .join(Event, Event.id == Notification.event_id, isouter=True))
    if subscription:
        query = query.where(Subscription.resource_id == subscription)
    if state:
        query = query.where(Notification.state == state)
    if since is not None:
        query = query.where(Notification.event_number >= since)
    if until is not None:
        query = query.where(Notification.event_number <= until)
    return query


@command_kind("read")  # as GET /fhir/Subscription/{id}/$events
@events_group.command("list")
@click.option("--subscription", help="Only this Subscription (FHIR id).")
@click.option("--state", type=STATES, help="Only notifications in this state.")
@click.option("--limit", type=int, default=100, show_default=True)
@with_appcontext
def list_command(subscription: str | None, state: str | None, limit: int) -> None:
    """List notifications, oldest first: subscription, client, topic, kind, event number,
    state, attempts, focus, last error (no personal data)."""
    query = _selection(subscription, state, None, None).order_by(Notification.id).limit(limit)
    with get_db().transaction() as session:
        for note, sub, event in session.execute(query):
            focus = f"{event.focus_type}/{event.focus_id}" if event is not None else "-"
            click.echo("\t".join(str(v) for v in (
                sub.resource_id, sub.client_id, sub.topic, note.kind, note.event_number or "-",
                note.state, note.attempts, focus, note.last_error or "-")))


@command_kind("read")  # sends children's data again
@events_group.command("replay")
@click.option("--subscription", help="Only this Subscription (FHIR id).")
@click.option("--dead", "only_dead", is_flag=True, help="Only dead notifications.")
@click.option("--from", "since", type=int, help="From this event number.")
@click.option("--to", "until", type=int, help="Up to this event number.")
@with_appcontext
def replay_command(subscription: str | None, only_dead: bool, since: int | None,
                   until: int | None) -> None:
    """Queue notifications again with a fresh retry budget, due now: dead ones, or
    delivered ones to send again (same event numbers and content).

    \f
    :raises click.UsageError: neither a subscription nor --dead was given.
    """
    if not subscription and not only_dead:
        raise click.UsageError("give --subscription ID, --dead, or both")
    selection = _selection(subscription, "dead" if only_dead else None, since, until)
    ids = selection.with_only_columns(Notification.id, Notification.subscription_id)
    with get_db().write_transaction() as session:
        found = list(session.execute(ids))
        chosen = [n for n, _ in found]
        lanes = sorted({s for _, s in found})
        if lanes:  # lanes before notifications: the lock order of adapter.notify.lanes
            session.execute(update(SubscriptionLane)
                            .where(SubscriptionLane.subscription_id.in_(lanes))
                            .values(next_attempt_at=utcnow())
                            .execution_options(synchronize_session=False))
        for start in range(0, len(chosen), 1000):
            session.execute(update(Notification)
                            .where(Notification.id.in_(chosen[start:start + 1000]))
                            .values(state="pending", attempts=0, delivered_at=None)
                            .execution_options(synchronize_session=False))
    click.echo(f"replaying {len(chosen)} notifications")
