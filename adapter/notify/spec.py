"""A FHIR R4 ``Subscription`` with the Subscriptions R5 Backport extensions, read into what the
gateway stores and written back from it (backport "R4/B Topic-Based Subscription" profile):
``criteria`` is the topic's canonical URL with ``backport-filter-criteria`` extensions,
``channel.payload`` the MIME type with ``backport-payload-content``, ``channel`` carries
``backport-heartbeat-period``, ``backport-timeout`` and ``backport-max-count``, and a MESH
channel is ``message`` with the ``backport-channel-type`` coding ``mesh`` and the endpoint
``mesh:MAILBOX``."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from fhir.resources.R4B.subscription import Subscription as SubscriptionModel
from pydantic import ValidationError

from adapter.errors import Invalid
from adapter.models.notify import Subscription
from adapter.notify.bundle import instant
from adapter.notify.channels import MESH_PREFIX
from adapter.notify.topics import BACKPORT, TOPICS, Topic, parse_filter, topic_for_url, topic_url
from adapter.security.caller import Caller
from adapter.systems import OwnSystems

SD: Final = f"{BACKPORT}/StructureDefinition/"
PROFILE: Final = SD + "backport-subscription"
FILTER_EXT: Final = SD + "backport-filter-criteria"
CONTENT_EXT: Final = SD + "backport-payload-content"
HEARTBEAT_EXT: Final = SD + "backport-heartbeat-period"
TIMEOUT_EXT: Final = SD + "backport-timeout"
MAX_COUNT_EXT: Final = SD + "backport-max-count"
CHANNEL_TYPE_EXT: Final = SD + "backport-channel-type"
PAYLOADS: Final = {"application/fhir+json": "application/fhir+json",
                   "application/json": "application/fhir+json",
                   "application/fhir+xml": "application/fhir+xml",
                   "application/xml": "application/fhir+xml"}
# Headers the gateway sets itself (RFC 9110 framing headers, the signature).
RESERVED_HEADERS: Final = frozenset({"content-type", "content-length", "host", "connection",
                                     "transfer-encoding", "x-hub-signature", "user-agent"})
HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
MAILBOX: Final = re.compile(r"[A-Za-z0-9]{1,20}")
MAX_TIMEOUT: Final = 60
MAX_COUNT_CAP: Final = 100
MAX_HEADERS: Final = 10


@dataclass
class Spec:
    """What a client asks for in a Subscription."""

    topic: Topic
    filters: dict[str, list[str]]
    filter_text: list[str]
    status: str | None
    channel: str
    endpoint: str
    payload: str
    content: str
    headers: list[str] = field(default_factory=list)
    heartbeat_period: int | None = None
    timeout: int | None = None
    max_count: int | None = None
    end: dt.datetime | None = None
    reason: str | None = None


def _extensions(element: Any, url: str) -> list[dict[str, Any]]:
    """Return the extensions of ``element`` (a dict) with ``url``."""
    items = element.get("extension") if isinstance(element, dict) else None
    return [e for e in items or [] if isinstance(e, dict) and e.get("url") == url]


def _one_value(element: Any, url: str, key: str) -> Any:
    """Return the value of the one extension ``url`` of ``element``, or None."""
    found = _extensions(element, url)
    return found[0].get(key) if found else None


def _validate_model(resource: dict[str, Any]) -> None:
    """Check the R4 Subscription structure with fhir.resources.

    :raises Invalid: not a Subscription, or not valid FHIR.
    """
    if resource.get("resourceType") != "Subscription":
        raise Invalid("A Subscription resource is needed.", expression="Subscription")
    try:
        SubscriptionModel.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        where = ".".join(str(p) for p in errors[0]["loc"] if isinstance(p, str | int))
        raise Invalid(f"Subscription.{where}: {errors[0]['msg']}",
                      expression=f"Subscription.{where}") from None


def _filters(resource: dict[str, Any], topic: Topic) -> tuple[dict[str, list[str]], list[str]]:
    """Return the parsed filter criteria (AND-ed) and their text."""
    texts = [str(e.get("valueString", "")) for e in _extensions(resource.get("_criteria"),
                                                                FILTER_EXT)]
    merged: dict[str, list[str]] = {}
    for text in texts:
        for name, values in parse_filter(topic, text).items():
            merged[name] = sorted(set(merged[name]) & set(values)) if name in merged else values
    return merged, texts


def _endpoint(kind: str, endpoint: str, allow_http: bool) -> str:
    """Return a checked endpoint: an https URL (http when allowed) or ``mesh:MAILBOX``.

    :raises Invalid: anything else.
    """
    if kind == "mesh":
        if not MAILBOX.fullmatch(endpoint.removeprefix(MESH_PREFIX)) \
                or not endpoint.startswith(MESH_PREFIX):
            raise Invalid("A MESH channel's endpoint is mesh:MAILBOX (the mailbox id).",
                          expression="Subscription.channel.endpoint")
        return endpoint
    parts = urlsplit(endpoint)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.username or len(endpoint) > 500:
        raise Invalid("A rest-hook endpoint is an https:// URL (Subscriptions Backport IG, "
                      "rest-hook security notes).", expression="Subscription.channel.endpoint")
    return endpoint


def _channel_kind(channel: dict[str, Any], base: str) -> str:
    """Return ``rest-hook`` or ``mesh``.

    :raises Invalid: another channel type.
    """
    coding = _one_value(channel.get("_type"), CHANNEL_TYPE_EXT, "valueCoding") or {}
    if coding.get("code") == "mesh" and coding.get("system") == channel_type_system(base):
        return "mesh"
    if channel.get("type") == "rest-hook" and not coding:
        return "rest-hook"
    raise Invalid("The channel is rest-hook, or message with the backport-channel-type coding "
                  f"{channel_type_system(base)}|mesh.", expression="Subscription.channel.type")


def channel_type_system(base: str) -> str:
    """Return the code system of this server's extra channel types."""
    return OwnSystems(base).code_system("subscription-channel-type")


def _payload(channel: dict[str, Any]) -> tuple[str, str]:
    """Return the payload MIME type and content level (default: JSON, id-only).

    :raises Invalid: another MIME type or content code.
    """
    mime = PAYLOADS.get(str(channel.get("payload") or "application/fhir+json").split(";")[0])
    content = _one_value(channel.get("_payload"), CONTENT_EXT, "valueCode") or "id-only"
    if mime is None or content not in ("empty", "id-only", "full-resource"):
        raise Invalid("channel.payload is application/fhir+json or application/fhir+xml, with "
                      "content empty, id-only or full-resource.",
                      expression="Subscription.channel.payload")
    return mime, str(content)


def _headers(channel: dict[str, Any]) -> list[str]:
    """Return the extra HTTP headers (``Name: value``).

    :raises Invalid: malformed, too many, or one the gateway sets itself.
    """
    headers = [str(h) for h in channel.get("header") or []]
    for line in headers:
        name, sep, value = line.partition(":")
        # Values in visible US-ASCII (RFC 9110 section 5.5): no line breaks, nothing that
        # the HTTP client could not encode when it sends the notification.
        if not sep or not HEADER_NAME.fullmatch(name.strip()) or not value.isascii() \
                or not value.isprintable() or name.strip().lower() in RESERVED_HEADERS:
            raise Invalid("Each channel.header is 'Name: value'; Content-Type, Host, "
                          "X-Hub-Signature and other framing headers are set by the gateway.",
                          expression="Subscription.channel.header")
    if len(headers) > MAX_HEADERS:
        raise Invalid(f"At most {MAX_HEADERS} channel headers.",
                      expression="Subscription.channel.header")
    return headers


def _check_access(topic: Topic, caller: Caller) -> None:
    """A client subscribes to a topic about children only if it may read those resources.

    :raises Invalid: it may not.
    """
    if topic.read_scope and not caller.may(topic.read_scope, "read"):
        raise Invalid(f"Subscribing to {topic.key} needs a scope to read {topic.read_scope}.",
                      expression="Subscription.criteria")


def _end(resource: dict[str, Any]) -> dt.datetime | None:
    """Return ``Subscription.end`` as an aware datetime."""
    raw = resource.get("end")
    if not raw:
        return None
    moment = dt.datetime.fromisoformat(str(raw))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def read_spec(resource: dict[str, Any], caller: Caller, base: str, allow_http: bool) -> Spec:
    """Return what an inbound Subscription asks for.

    :raises Invalid: not a valid backport Subscription this server can serve.
    """
    _validate_model(resource)
    topic = topic_for_url(base, str(resource.get("criteria", "")))
    _check_access(topic, caller)
    filters, texts = _filters(resource, topic)
    channel: dict[str, Any] = resource["channel"]
    kind = _channel_kind(channel, base)
    mime, content = _payload(channel)
    heartbeat = _one_value(channel, HEARTBEAT_EXT, "valueUnsignedInt")
    timeout = _one_value(channel, TIMEOUT_EXT, "valueUnsignedInt")
    max_count = _one_value(channel, MAX_COUNT_EXT, "valuePositiveInt")
    return Spec(topic, filters, texts, resource.get("status"), kind,
                _endpoint(kind, str(channel.get("endpoint") or ""), allow_http), mime, content,
                _headers(channel), int(heartbeat) if heartbeat else None,
                min(int(timeout), MAX_TIMEOUT) if timeout else None,
                min(int(max_count), MAX_COUNT_CAP) if max_count else None,
                _end(resource), resource.get("reason"))


def apply_spec(subscription: Subscription, spec: Spec) -> bool:
    """Copy ``spec`` onto ``subscription``; return True when its channel changed."""
    channel_changed = (subscription.channel, subscription.endpoint) != (spec.channel,
                                                                        spec.endpoint)
    subscription.topic = spec.topic.key
    subscription.filters, subscription.filter_text = spec.filters, spec.filter_text
    subscription.channel, subscription.endpoint = spec.channel, spec.endpoint
    subscription.payload, subscription.content = spec.payload, spec.content
    subscription.headers = spec.headers
    subscription.heartbeat_period, subscription.timeout = spec.heartbeat_period, spec.timeout
    subscription.max_count, subscription.end = spec.max_count, spec.end
    subscription.reason = spec.reason
    return channel_changed


def _channel(subscription: Subscription, base: str, secret: str | None) -> dict[str, Any]:
    """Return ``Subscription.channel``."""
    extensions = []
    for url, key, value in ((HEARTBEAT_EXT, "valueUnsignedInt", subscription.heartbeat_period),
                            (TIMEOUT_EXT, "valueUnsignedInt", subscription.timeout),
                            (MAX_COUNT_EXT, "valuePositiveInt", subscription.max_count)):
        if value:
            extensions.append({"url": url, key: value})
    if secret:
        extensions.append({"url": OwnSystems(base).extension("SubscriptionSecret"),
                           "valueString": secret})
    channel: dict[str, Any] = {"extension": extensions} if extensions else {}
    if subscription.channel == "mesh":
        channel["type"] = "message"
        channel["_type"] = {"extension": [{"url": CHANNEL_TYPE_EXT, "valueCoding": {
            "system": channel_type_system(base), "code": "mesh",
            "display": "NHS MESH message"}}]}
    else:
        channel["type"] = "rest-hook"
    channel["endpoint"] = subscription.endpoint
    channel["payload"] = subscription.payload
    channel["_payload"] = {"extension": [{"url": CONTENT_EXT, "valueCode": subscription.content}]}
    if subscription.headers:
        channel["header"] = list(subscription.headers)
    return channel


def render_subscription(subscription: Subscription, base: str,
                        secret: str | None = None) -> dict[str, Any]:
    """Return ``subscription`` as a FHIR R4 Subscription (``secret`` only right after it was
    generated: the one time the client sees it)."""
    resource: dict[str, Any] = {
        "resourceType": "Subscription", "id": subscription.resource_id,
        "meta": {"versionId": str(subscription.version),
                 "lastUpdated": instant(subscription.last_updated), "profile": [PROFILE]},
        "status": subscription.status}
    if subscription.end:
        resource["end"] = instant(subscription.end)
    title = TOPICS[subscription.topic].title.lower()
    resource["reason"] = subscription.reason or f"Topic-based subscription to {title}"
    resource["criteria"] = topic_url(base, subscription.topic)
    if subscription.filter_text:
        resource["_criteria"] = {"extension": [{"url": FILTER_EXT, "valueString": text}
                                               for text in subscription.filter_text]}
    if subscription.status == "error" and subscription.error:
        resource["error"] = subscription.error
    resource["channel"] = _channel(subscription, base, secret)
    return resource
