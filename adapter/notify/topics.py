"""The four subscription topics, their filters and their R4B ``SubscriptionTopic`` form for
discovery (Subscriptions R5 Backport IG; FHIR R4B subscriptiontopic.html).

The server declares FHIR 4.0.1, which has no SubscriptionTopic resource: the topics are
advertised in the CapabilityStatement with the backport's
``capabilitystatement-subscriptiontopic-canonical`` extension and served, JSON only, in the
R4B shape that backport clients read (``GET /fhir/SubscriptionTopic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from adapter.errors import Invalid
from adapter.models.notify import DIRECTORY_TOPIC, ECAF_TOPIC, NOTICE_TOPIC, PURGE_TOPIC

BACKPORT: Final = "http://hl7.org/fhir/uv/subscriptions-backport"
TOPIC_CANONICAL_EXT: Final = (f"{BACKPORT}/StructureDefinition/"
                              "capabilitystatement-subscriptiontopic-canonical")
# The resource types the decommissioning's topics carry (and only these).
NOTICE_RESOURCE: Final = "PlanDefinition"
PURGE_RESOURCE: Final = "Task"


@dataclass(frozen=True)
class Filter:
    """A filter a subscriber may set on a topic (SubscriptionTopic.canFilterBy)."""

    parameter: str
    reference_type: str | None
    description: str


@dataclass(frozen=True)
class Topic:
    """One topic: what triggers it, the resource it is about and its filters."""

    key: str
    title: str
    resource: str
    description: str
    interactions: tuple[str, ...]
    filters: tuple[Filter, ...] = ()
    # The resource type a client must be allowed to read to subscribe (None: anyone).
    read_scope: str | None = None


AUTHORITY_FILTER: Final = Filter("organization", "Organization",
                                 "The child's managing local authority (Organization/[id]).")
TOPICS: Final = {t.key: t for t in (
    Topic(DIRECTORY_TOPIC, "Directory entry changed", "Patient",
          "A child's directory entry was created or updated (details, carers, services and "
          "practitioners working with the child, or its status, e.g. archived).",
          ("create", "update"),
          (AUTHORITY_FILTER, Filter("_id", "Patient", "One child (Patient/[id]).")),
          "Patient"),
    Topic(ECAF_TOPIC, "eCAF assessment changed", "CareTeam",
          "An eCAF assessment reference (status, dates, lead professional, Team Around the "
          "Child, consent) was created or updated.",
          ("create", "update"),
          (AUTHORITY_FILTER, Filter("subject", "Patient", "The child (Patient/[id]).")),
          "CareTeam"),
    # The plan is published as a PlanDefinition (adapter.decommission.resources), the
    # resource every notice carries and GET /fhir/PlanDefinition/decommission-plan serves.
    Topic(NOTICE_TOPIC, "Decommission notice", NOTICE_RESOURCE,
          "The decommissioning timetable (a PlanDefinition: last use, switch-off, destroy-by, "
          "the current phase) was published or changed.", ("create", "update")),
    Topic(PURGE_TOPIC, "Purge instruction", PURGE_RESOURCE,
          "A purge Task addressed to the subscribing system was issued or changed; it names "
          "the records that system received.", ("create", "update")),
)}


def topic_url(base: str, key: str) -> str:
    """Return the canonical URL of topic ``key`` under the canonical base."""
    return f"{base}/SubscriptionTopic/{key}"


def topic_for_url(base: str, url: str) -> Topic:
    """Return the topic whose canonical URL (or id) is ``url``.

    :raises Invalid: no such topic.
    """
    key = url.removeprefix(f"{base}/SubscriptionTopic/")
    if key in TOPICS and url in (key, topic_url(base, key)):
        return TOPICS[key]
    raise Invalid(f"Subscription.criteria must be the canonical URL of one of this server's "
                  f"topics: {', '.join(topic_url(base, k) for k in TOPICS)}.",
                  expression="Subscription.criteria")


def parse_filter(topic: Topic, text: str) -> dict[str, list[str]]:
    """Return one backport filter criteria string (``[Resource?]param=value[,value]&...``) as
    parameter -> values (logical ids for references).

    :raises Invalid: another resource type, or a parameter the topic cannot filter by.
    """
    resource, sep, query = text.partition("?")
    if not sep:
        resource, query = topic.resource, text
    if resource != topic.resource:
        raise Invalid(f"Filters of this topic apply to {topic.resource}.",
                      expression="Subscription.criteria.extension")
    allowed = {f.parameter: f for f in topic.filters}
    parsed: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        spec = allowed.get(name)
        if spec is None or not value:
            raise Invalid(f"Topic {topic.key} can be filtered by "
                          f"{', '.join(allowed) or 'nothing'}; got {name!r}.",
                          expression="Subscription.criteria.extension")
        values = [_reference_id(v.strip(), spec.reference_type) for v in value.split(",")]
        # A repeated parameter is AND-ed (FHIR R4 search.html#combining).
        parsed[name] = sorted(set(parsed[name]) & set(values)) if name in parsed else values
    return parsed


def _reference_id(value: str, reference_type: str | None) -> str:
    """Return the logical id of ``Type/id`` (or of a bare id).

    :raises Invalid: a reference to another type, or an empty id.
    """
    kind, sep, rid = value.rpartition("/")
    if sep and reference_type and kind.rsplit("/", 1)[-1] != reference_type:
        raise Invalid(f"Expected a reference to {reference_type}, got {value!r}.",
                      expression="Subscription.criteria.extension")
    if not (rid if sep else value):
        raise Invalid("A filter value is empty.", expression="Subscription.criteria.extension")
    return rid if sep else value


def matches(filters: dict[str, list[str]], event: dict[str, Any]) -> bool:
    """Return True when an event passes a subscription's filters (AND over parameters)."""
    for name, values in filters.items():
        key = {"organization": "authority_ref", "_id": "child_ref",
               "subject": "child_ref"}[name]
        if event.get(key) not in values:
            return False
    return True


def subscription_topic(base: str, topic: Topic) -> dict[str, Any]:
    """Return ``topic`` as an R4B SubscriptionTopic resource."""
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionTopic", "id": topic.key,
        "url": topic_url(base, topic.key), "title": topic.title, "status": "active",
        "description": topic.description,
        "resourceTrigger": [{"description": topic.description, "resource": topic.resource,
                             "supportedInteraction": list(topic.interactions)}],
        "notificationShape": [{"resource": topic.resource}],
    }
    if topic.filters:
        resource["canFilterBy"] = [{"description": f.description, "resource": topic.resource,
                                    "filterParameter": f.parameter} for f in topic.filters]
    return resource
