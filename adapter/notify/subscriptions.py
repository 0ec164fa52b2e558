"""Subscriptions as a FHIR REST resource (``/fhir/Subscription``), owned by the client that
created them: create (status ``requested``, a handshake queued, the signing secret returned
once), read, search, update (a changed channel or a reactivation queues a new handshake) and
delete; and the backport's ``$status`` and ``$events`` operations (Subscriptions R5 Backport
IG, "Operations")."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Final

from flask import current_app
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from adapter.errors import Gone, Invalid, NotFound, PreconditionFailed, issue
from adapter.fhir.announce import differences
from adapter.fhir.bundle import fhir_base
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import (
    Criterion,
    SearchParam,
    SearchRequest,
    decode_cursor,
    encode_cursor,
    split_token,
)
from adapter.http import current_settings
from adapter.models import Event, Notification, Subscription, SubscriptionLane
from adapter.models.base import utcnow
from adapter.models.notify import NOTICE_TOPIC, PURGE_TOPIC
from adapter.notify.addresses import REFUSED, AddressRefused, check_endpoint
from adapter.notify.bundle import EventItem, StatusInfo, notification_bundle, status_parameters
from adapter.notify.content import focus_of, load_events, render_event
from adapter.notify.signing import new_secret, seal
from adapter.notify.spec import (
    MAX_COUNT_CAP,
    MAX_TIMEOUT,
    PROFILE,
    Spec,
    apply_spec,
    read_spec,
    render_subscription,
)
from adapter.notify.topics import TOPICS, topic_url
from adapter.security import audit
from adapter.security.caller import Caller
from adapter.security.ledger import record_deliveries
from adapter.settings import Settings

log = logging.getLogger(__name__)
MAX_EVENTS: Final = 100  # events one $events call returns
# Subscriptions to these topics are purge traffic in the decommissioning phases.
PURGE_TRAFFIC_TOPICS: Final = frozenset({PURGE_TOPIC, NOTICE_TOPIC})
# What a new purge-instruction subscription sets off: the client's open purge Task is sent to
# it at once (``adapter.decommission.contact.announce_open_task``). The decommissioning, a
# layer above notifications, hands it in at start-up (``adapter.decommission.init_app``).
PurgeSubscribed = Callable[[Session, str, Settings], object]
PURGE_SUBSCRIBED_KEY: Final = "purge_subscribed"
CONTENT_ORDER: Final = ("empty", "id-only", "full-resource")
# Why a Subscription element is kept otherwise than sent, by plain path; and the paths whose
# values are codes (said in the note; any other value is not repeated).
WRITE_WHY: Final = {
    "status": "the server sets the status: requested until the handshake succeeds, then "
              "active (Subscriptions Backport IG, 'REST-Hook'); a client sets only off, or "
              "requested to resume",
    "channel.payload": "kept as the FHIR MIME type of that format",
    "channel.extension.valueUnsignedInt": f"the timeout is at most {MAX_TIMEOUT} seconds",
    "channel.extension.valuePositiveInt": f"the max count is at most {MAX_COUNT_CAP}",
    "criteria": "kept as the topic's canonical URL",
}
R5_PARAMETER: Final = "extension-Subscription.parameter"  # the R5 element's R4 extension
WRITE_CODES: Final = frozenset({"status", "channel.type", "channel.payload",
                                "channel.payload.extension.valueCode",
                                "channel.extension.valueUnsignedInt",
                                "channel.extension.valuePositiveInt"})
SUBSCRIPTION_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Subscription"),
    SearchParam("status", "token", "requested | active | error | off",
                "http://hl7.org/fhir/SearchParameter/Subscription-status"),
    SearchParam("url", "uri", "The channel endpoint",
                "http://hl7.org/fhir/SearchParameter/Subscription-url"),
    SearchParam("type", "token", "rest-hook | message (MESH)",
                "http://hl7.org/fhir/SearchParameter/Subscription-type"),
)}


def canonical() -> str:
    """Return the canonical base of topics and this server's systems."""
    return str(current_app.config["CANONICAL_BASE"])


def _spec(resource: dict[str, Any], caller: Caller, stored: str | None = None) -> Spec:
    """Read an inbound Subscription with this app's settings; a rest-hook endpoint other than
    the ``stored`` one must resolve to public addresses (an unchanged one is checked by each
    delivery, so that a subscriber can still pause a subscription whose name moved).

    :raises Invalid: not a Subscription this server accepts.
    """
    spec = read_spec(resource, caller, canonical(),
                     bool(current_app.config["NOTIFY_ALLOW_HTTP"]))
    if spec.channel == "rest-hook" and spec.endpoint != stored \
            and not current_app.config["NOTIFY_ALLOW_PRIVATE"]:
        _check_address(spec.endpoint)
    return spec


def _check_address(endpoint: str) -> None:
    """Refuse an endpoint whose host does not resolve to public addresses (checked again at
    each delivery: ``adapter.notify.channels``); the log says why, the caller gets one text
    whatever the reason, so that a refusal tells nothing of the network.

    :raises Invalid: it does not.
    """
    try:
        check_endpoint(endpoint)
    except AddressRefused as exc:
        log.info("rest-hook endpoint refused: %s", exc)
        raise Invalid(REFUSED, expression="Subscription.channel.endpoint") from exc


def owned(session: Session, resource_id: str, caller: Caller, *, write: bool = False,
          lock: bool = False) -> Subscription:
    """Return a subscription of ``caller`` (admins may read every one).

    :raises NotFound: none, or another client's.
    :raises Gone: deleted.
    """
    query = select(Subscription).where(Subscription.resource_id == resource_id)
    found = session.scalar(query)
    if lock and found is not None:
        # Lane first, then subscription: the order a dispatcher takes them in (no deadlock).
        session.execute(select(SubscriptionLane.subscription_id).where(
            SubscriptionLane.subscription_id == found.id).with_for_update())
        session.refresh(found, with_for_update=True)
    mine = found is not None and (found.client_id == caller.client_id
                                  or (not write and caller.has_right("admin")))
    if found is None or not mine:
        raise NotFound(f"No Subscription/{resource_id} of yours on this server.")
    if found.deleted:
        raise Gone(f"Subscription/{resource_id} has been deleted.")
    return found


def _require_future_end(end: dt.datetime | None, stored: dt.datetime | None) -> None:
    """A subscription's ``end`` is in the future (FHIR R4 subscription.html: the time for
    the server to turn the subscription off); a stored one sent back unchanged may have
    passed.

    :raises Invalid: a new end that has passed.
    """
    if end is None or end > utcnow() or _same_moment(end, stored):
        return
    raise Invalid("Subscription.end is in the past: give a future instant, or leave end out "
                  "for a subscription without an end (status off pauses one).",
                  expression="Subscription.end")


def _same_moment(end: dt.datetime, stored: dt.datetime | None) -> bool:
    """Return True when ``end`` is the ``stored`` end (stored naive in UTC on SQLite)."""
    if stored is None:
        return False
    aware = stored if stored.tzinfo else stored.replace(tzinfo=dt.UTC)
    return end == aware


def _kept(resource: dict[str, Any]) -> dict[str, Any]:
    """Return a rendered subscription without its version and time (what an update compares)."""
    return {k: v for k, v in resource.items() if k != "meta"}


def write_notes(sent: dict[str, Any], written: dict[str, Any]) -> list[dict[str, Any]]:
    """Return what a Subscription write did not keep or kept otherwise (never a value but a
    code: a header or endpoint may carry a secret)."""
    notes = differences("Subscription", sent, written, WRITE_WHY, WRITE_CODES)
    for note in notes:  # R5's parameter (an HTTP header of rest-hook) in R4 is channel.header
        if note["diagnostics"].startswith("Not kept:") and R5_PARAMETER in note["diagnostics"]:
            note["diagnostics"] = note["diagnostics"].rstrip(".") + \
                ": in R4 a rest-hook header is a channel.header (Subscriptions Backport IG)."
    return notes


def rendered(subscription: Subscription, secret: str | None = None) -> Rendered:
    """Return a subscription as its FHIR resource with its version."""
    return Rendered(render_subscription(subscription, canonical(), secret),
                    subscription.version, subscription.last_updated)


def queue_handshake(session: Session, subscription: Subscription) -> None:
    """Set ``requested`` and queue a handshake unless one is queued already (backport
    "REST-Hook": the server sets requested, then active after the handshake)."""
    subscription.status = "requested"
    queued = session.scalar(select(Notification.id).where(
        Notification.subscription_id == subscription.id, Notification.kind == "handshake",
        Notification.state.in_(("pending", "dead"))))
    if queued is None:
        session.add(Notification(subscription_id=subscription.id, kind="handshake"))
    session.execute(update(SubscriptionLane)  # due now, whatever backoff it was in
                    .where(SubscriptionLane.subscription_id == subscription.id)
                    .values(next_attempt_at=utcnow())
                    .execution_options(synchronize_session=False))


def _criterion_condition(criterion: Criterion) -> Any:
    """Return the SQL condition of one search criterion (values OR-ed)."""
    name = criterion.param.name
    values = [split_token(v)[1] for v in criterion.values]
    if name == "type":
        values = ["mesh" if v == "message" else v for v in values]
    column = {"_id": Subscription.resource_id, "status": Subscription.status,
              "url": Subscription.endpoint, "type": Subscription.channel}[name]
    return column.in_(values)


def subscription_select(search: SearchRequest, caller: Caller) -> Select[Subscription]:
    """Return the caller's (an admin: every) live subscriptions matching ``search``."""
    query = select(Subscription).where(Subscription.deleted.is_(False))
    if not caller.has_right("admin"):
        query = query.where(Subscription.client_id == caller.client_id)
    for criterion in search.criteria:
        query = query.where(_criterion_condition(criterion))
    return query


class SubscriptionHandler:
    """The REST handler of ``Subscription``."""

    resource_type: ClassVar[str] = "Subscription"
    interactions: ClassVar[tuple[str, ...]] = (
        "read", "search-type", "search-type-post", "create", "update", "delete", "validate")
    search_params: ClassVar[dict[str, SearchParam]] = SUBSCRIPTION_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def capability_extras(self) -> dict[str, Any]:
        """Return what the CapabilityStatement adds to Subscription: the backport profile
        and the topics (backport capabilitystatement-subscriptiontopic-canonical); its
        operations come from their routes (``adapter.fhir.capability``)."""
        from adapter.notify.topics import TOPIC_CANONICAL_EXT

        return {"extension": [{"url": TOPIC_CANONICAL_EXT,
                               "valueCanonical": topic_url(canonical(), key)} for key in TOPICS],
                "supportedProfile": [PROFILE],
                "documentation": "Topic-based subscriptions (Subscriptions R5 Backport IG): "
                                 "the topics are served in their R4B form, JSON only, at "
                                 "/fhir/SubscriptionTopic. Channels: rest-hook (signed with "
                                 "X-Hub-Signature) and MESH."}

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return one of the caller's subscriptions."""
        return rendered(owned(session, resource_id, caller))

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Return the current version when asked for it (only the current one is kept).

        :raises NotFound: another version.
        """
        current = owned(session, resource_id, caller)
        if version != current.version:
            raise NotFound(f"Subscription/{resource_id} keeps only its current version.")
        return rendered(current)

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Return the current version only."""
        current = owned(session, resource_id, caller)
        return [(rendered(current), current.version, "PUT", current.last_updated)]

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of the caller's subscriptions (keyset paging on the id)."""
        query = subscription_select(search, caller).order_by(Subscription.id)
        if search.cursor:
            query = query.where(Subscription.id > int(decode_cursor(search.cursor, 1)[0]))
        found = list(session.scalars(query.limit(search.count + 1)))
        more = len(found) > search.count
        found = found[:search.count]
        cursor = encode_cursor(found[-1].id) if more and found else None
        return Page([rendered(s).resource for s in found], [], cursor)

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many subscriptions match."""
        query = subscription_select(search, caller).with_only_columns(func.count(Subscription.id))
        return int(session.scalar(query.order_by(None)) or 0)

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Create a subscription for the caller, queue its handshake and return its signing
        secret (this once: it is stored encrypted and never shown again)."""
        spec = _spec(resource, caller)
        _require_future_end(spec.end, None)
        secret = new_secret()
        subscription = Subscription(
            resource_id=str(uuid.uuid4()), client_id=caller.client_id, status="requested",
            secret=seal(current_app.config["INSTANCE_PATH"], secret),
            start_event_id=session.scalar(select(func.max(Event.id))) or 0)
        apply_spec(subscription, spec)
        session.add(subscription)
        session.flush()
        session.add(SubscriptionLane(subscription_id=subscription.id))
        queue_handshake(session, subscription)
        audit.record(session, "create", resource_type="Subscription",
                     resource_id=subscription.resource_id, caller=caller)
        if subscription.topic == PURGE_TOPIC:  # switched off: its open Task now, not later
            purge_subscribed: PurgeSubscribed = current_app.extensions[PURGE_SUBSCRIBED_KEY]
            purge_subscribed(session, caller.client_id, current_settings())
        session.flush()
        result = WriteResult(rendered(subscription, secret), created=True, shown_once=True)
        result.rendered.issues += write_notes(resource, rendered(subscription).resource)
        return result

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Update one of the caller's subscriptions: ``off`` pauses it; ``requested`` (or
        ``active``) after ``error``/``off``, or a new channel, queues a handshake.

        :raises PreconditionFailed: ``If-Match`` names another version.
        :raises Invalid: the id or the topic differs.
        """
        subscription = owned(session, resource_id, caller, write=True, lock=True)
        if if_match is not None and if_match != subscription.version:
            raise PreconditionFailed(f"If-Match names version {if_match}; the current version "
                                     f"is {subscription.version}.")
        spec = _spec(resource, caller, subscription.endpoint)
        if resource.get("id") not in (None, resource_id) or spec.topic.key != subscription.topic:
            raise Invalid("The id and the topic (criteria) of a subscription cannot change: "
                          "create another one.", expression="Subscription.criteria")
        _require_future_end(spec.end, subscription.end)
        before = _kept(rendered(subscription).resource)
        moved = apply_spec(subscription, spec)
        self._apply_status(session, subscription, spec.status, moved)
        changed = _kept(rendered(subscription).resource) != before
        if changed:  # an update that changes nothing keeps its version (as every type here)
            subscription.version += 1
            subscription.last_updated = utcnow()
        audit.record(session, "update" if changed else "update-unchanged",
                     resource_type="Subscription", resource_id=resource_id, caller=caller)
        session.flush()
        result = WriteResult(rendered(subscription), created=False, changed=changed)
        result.rendered.issues += write_notes(resource, result.rendered.resource)
        return result

    def _apply_status(self, session: Session, subscription: Subscription, asked: str | None,
                      moved: bool) -> None:
        """Apply the status a client asks for (``error`` is the server's to set)."""
        if asked == "off":
            subscription.status = "off"
        elif moved or (asked in ("requested", "active")
                       and subscription.status in ("error", "off")):
            queue_handshake(session, subscription)

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Delete one of the caller's subscriptions (kept, marked deleted and ``off``: what
        was sent stays on record)."""
        subscription = owned(session, resource_id, caller, write=True, lock=True)
        subscription.deleted, subscription.status = True, "off"
        subscription.version += 1
        subscription.last_updated = utcnow()
        audit.record(session, "delete", resource_type="Subscription", resource_id=resource_id,
                     caller=caller)

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Return the issues a create of ``resource`` would meet."""
        try:
            _spec(resource, caller)
        except Invalid as exc:
            return [issue("error", exc.issue_code, exc.message, exc.expression)]
        return []


# --- decommissioning: subscriptions that are purge traffic -----------------------------------

def purge_subscription_write() -> bool:
    """Return True when the request creates, updates or deletes a Subscription to the
    purge-instruction or decommission-notice topic: purge traffic, which the decommissioning
    phases let through when they refuse writes (a local system must be able to subscribe to
    receive its purge Task). Both the criteria sent (create, update) and the subscription
    stored (update, delete) must name such a topic; a body or id that cannot be read is not
    purge traffic (the write is refused as any other)."""
    from flask import request

    from adapter.db import get_db
    from adapter.errors import GatewayError
    from adapter.fhir.body import read_resource
    from adapter.notify.topics import topic_for_url

    topics: list[str] = []
    if request.method in ("POST", "PUT"):
        try:
            resource = read_resource()
            criteria = resource.get("criteria")
            if resource.get("resourceType") != "Subscription" or not isinstance(criteria, str):
                return False
            topics.append(topic_for_url(canonical(), criteria).key)
        except GatewayError:
            return False
    if request.method in ("PUT", "DELETE"):
        resource_id = (request.view_args or {}).get("resource_id")
        if not resource_id:
            return False
        with get_db().sessions() as session:
            stored = session.scalar(select(Subscription.topic).where(
                Subscription.resource_id == str(resource_id)))
        if stored is None:
            return False
        topics.append(stored)
    return bool(topics) and all(topic in PURGE_TRAFFIC_TOPICS for topic in topics)


# --- $status and $events ---------------------------------------------------------------------

def status_info(subscription: Subscription) -> StatusInfo:
    """Return the status part of notifications of ``subscription`` (request context)."""
    return StatusInfo(fhir_base(), subscription.resource_id,
                      topic_url(canonical(), subscription.topic), subscription.status,
                      int(subscription.events_since_start), subscription.content,
                      subscription.error)


def status_bundle(subscriptions: list[Subscription]) -> dict[str, Any]:
    """Return the ``$status`` result: a searchset Bundle of one status Parameters each."""
    entries = []
    for subscription in subscriptions:
        parameters = status_parameters(status_info(subscription), "query-status", [])
        entries.append({"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters,
                        "search": {"mode": "match"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                              "type": "searchset", "total": len(entries)}
    if entries:
        bundle["entry"] = entries
    return bundle


def statuses(session: Session, caller: Caller, ids: list[str],
             states: list[str]) -> list[Subscription]:
    """Return the caller's subscriptions for type-level ``$status`` (filtered by id and
    status, each OR-ed; none given: all)."""
    query = subscription_select(SearchRequest(), caller).order_by(Subscription.id)
    if ids:
        query = query.where(Subscription.resource_id.in_(ids))
    if states:
        query = query.where(Subscription.status.in_(states))
    return list(session.scalars(query))


def _event_range(args: Any) -> tuple[int, int | None]:
    """Return eventsSinceNumber and eventsUntilNumber.

    :raises Invalid: not numbers.
    """
    try:
        since = int(args.get("eventsSinceNumber") or 1)
        until = int(args["eventsUntilNumber"]) if args.get("eventsUntilNumber") else None
    except ValueError as exc:
        raise Invalid("eventsSinceNumber and eventsUntilNumber are event numbers.",
                      expression="eventsSinceNumber") from exc
    return since, until


def events_bundle(session: Session, subscription: Subscription, caller: Caller,
                  args: Any) -> dict[str, Any]:
    """Return the ``$events`` result: a history Bundle of past events of ``subscription``
    (at most ``MAX_EVENTS`` from eventsSinceNumber), rendered now for ``caller`` with the
    requested content, never more than the subscription's own."""
    since, until = _event_range(args)
    asked = args.get("content") or subscription.content
    content = min(asked if asked in CONTENT_ORDER else subscription.content,
                  subscription.content, key=CONTENT_ORDER.index)
    query = (select(Notification.event_number, Notification.event_id)
             .where(Notification.subscription_id == subscription.id,
                    Notification.event_number >= since)
             .order_by(Notification.event_number).limit(MAX_EVENTS))
    if until is not None:
        query = query.where(Notification.event_number <= until)
    numbered = list(session.execute(query))
    events = load_events(session, [event_id for _number, event_id in numbered if event_id])
    items, disclosed = [], set()
    for number, event_id in numbered:
        event = events[int(event_id or 0)]  # every numbered notification has its event
        found = render_event(session, event, content, caller, fhir_base(),
                             current_settings().canonical_base)
        disclosed.update(found.discloses)
        items.append(EventItem(int(number or 0), event.created,
                               f"{fhir_base()}/{focus_of(event)}", found.entries))
    record_deliveries(session, caller.client_id, disclosed, "events")
    info = status_info(subscription)
    return notification_bundle(StatusInfo(info.base, info.subscription_id, info.topic_url,
                                          info.status, info.events_since_start, content,
                                          info.error), "query-event", items)
