"""Notification Bundles (Subscriptions R5 Backport IG, "R4 Topic-Based Subscription
Notification Bundle"): a ``history`` Bundle whose first entry is a ``Parameters`` resource per
the backport-subscription-status-r4 profile (subscription, topic, status, type,
events-since-subscription-start, notification-event with event-number, timestamp and focus),
followed by the entries of the events' resources as the subscription's payload content asks.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from adapter.notify.topics import BACKPORT

STATUS_PROFILE: Final = f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"
NOTIFICATION_PROFILE: Final = (f"{BACKPORT}/StructureDefinition/"
                               "backport-subscription-notification-r4")
# http://terminology.hl7.org/CodeSystem/subscription-error (R4B), used by the backport's error.
SUBSCRIPTION_ERROR: Final = "http://terminology.hl7.org/CodeSystem/subscription-error"


def aware(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` as an aware datetime (SQLite gives back naive UTC ones)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def instant(moment: dt.datetime) -> str:
    """Return a FHIR instant in UTC with milliseconds."""
    return aware(moment).astimezone(dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


@dataclass
class EventItem:
    """One event in a notification: its number, time, focus and Bundle entries."""

    number: int
    timestamp: dt.datetime
    focus: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StatusInfo:
    """What the status part of a notification says about its subscription."""

    base: str
    subscription_id: str
    topic_url: str
    status: str
    events_since_start: int
    content: str
    error: str | None = None


def _notification_event(item: EventItem, content: str) -> dict[str, Any]:
    """Return one ``notification-event`` parameter (no focus for empty content: IG
    "Payload Types", Empty: focus SHALL NOT be present)."""
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(item.number)},
        {"name": "timestamp", "valueInstant": instant(item.timestamp)}]
    if content != "empty" and item.focus:
        parts.append({"name": "focus", "valueReference": {"reference": item.focus}})
    return {"name": "notification-event", "part": parts}


def status_parameters(info: StatusInfo, kind: str, items: list[EventItem]) -> dict[str, Any]:
    """Return the backport R4 SubscriptionStatus ``Parameters`` of a notification.

    ``kind`` is the notification type: handshake, heartbeat, event-notification,
    query-status or query-event (R4B subscription-notification-type).
    """
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {
            "reference": f"{info.base}/Subscription/{info.subscription_id}"}}]
    if info.content != "empty":  # topic SHOULD NOT be present with empty payloads
        parameters.append({"name": "topic", "valueCanonical": info.topic_url})
    parameters += [{"name": "status", "valueCode": info.status},
                   {"name": "type", "valueCode": kind},
                   {"name": "events-since-subscription-start",
                    "valueString": str(info.events_since_start)}]
    parameters += [_notification_event(item, info.content) for item in items]
    if info.status == "error" and info.error:
        parameters.append({"name": "error", "valueCodeableConcept": {
            "coding": [{"system": SUBSCRIPTION_ERROR, "code": "no-response"}],
            "text": info.error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def notification_bundle(info: StatusInfo, kind: str, items: list[EventItem],
                        bundle_type: str = "history",
                        now: dt.datetime | None = None) -> dict[str, Any]:
    """Return a notification Bundle: the status entry, then every event's entries."""
    status = status_parameters(info, kind, items)
    moment = instant(now or dt.datetime.now(dt.UTC))
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status['id']}", "resource": status,
        "request": {"method": "GET",
                    "url": f"{info.base}/Subscription/{info.subscription_id}/$status"},
        "response": {"status": "200"}}]
    for item in items:
        entries.extend(item.entries)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": moment, "profile": [NOTIFICATION_PROFILE]},
            "type": bundle_type, "timestamp": moment, "entry": entries}


def reference_entry(base: str, focus: str, action: str,
                    resource: dict[str, Any] | None = None,
                    status: str | None = None) -> dict[str, Any]:
    """Return a history entry for ``focus`` (``Type/id``): the resource when given, and the
    request and response every history entry carries (FHIR R4 bundle.html, bdl-3/bdl-4)."""
    created = action == "create"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{focus}"}
    if resource is not None:
        entry["resource"] = resource
    entry["request"] = ({"method": "POST", "url": focus.split("/", 1)[0]} if created
                        else {"method": "PUT", "url": focus})
    entry["response"] = {"status": status or ("201" if created else "200")}
    return entry


def serialise(bundle: dict[str, Any], mime: str) -> bytes:
    """Return the Bundle as FHIR JSON or XML bytes for ``mime``."""
    if mime.endswith("xml"):
        from adapter.fhir.xml import dumps_resource

        return dumps_resource(bundle)
    return orjson.dumps(bundle)
