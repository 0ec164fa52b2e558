"""Routes of the notifications service beside the generic FHIR ones: topic discovery
(``/fhir/SubscriptionTopic``, R4B JSON only), the backport's ``$status`` and ``$events``
operations, and ``GET /fhir/Patient/{id}/$holders`` (admin: who holds a child)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, request
from sqlalchemy import select

from adapter.db import get_db
from adapter.errors import GatewayError, NotFound
from adapter.fhir.bundle import searchset
from adapter.fhir.routes import caller, check_id, instant
from adapter.http import fhir_response, json_response, negotiated_format
from adapter.models import Child, LedgerEntry
from adapter.notify.subscriptions import events_bundle, owned, status_bundle, statuses
from adapter.notify.topics import TOPICS, subscription_topic, topic_url
from adapter.security import audit, ledger
from adapter.security.access import authenticated, interaction, public

FHIR_JSON = "application/fhir+json; charset=utf-8"


class NotAcceptable(GatewayError):
    """The representation asked for cannot be given (SubscriptionTopic has no R4 XML form)."""

    status, issue_code = 406, "not-supported"


def _json_only() -> None:
    """SubscriptionTopic is an R4B resource: FHIR 4.0.1 XML has no such element, so it is
    served in JSON only.

    :raises NotAcceptable: XML was asked for.
    """
    if negotiated_format() == "xml":
        raise NotAcceptable("SubscriptionTopic is served as R4B JSON only "
                            "(_format=json or Accept: application/fhir+json); FHIR 4.0.1 XML "
                            "has no SubscriptionTopic.")


@public("meta")
def topic_search() -> Response:
    """Return every topic (optionally those with ``url``) as a searchset Bundle (public, as
    the conformance resources are: the same definitions for every caller, no child's data)."""
    _json_only()
    base = current_app.config["CANONICAL_BASE"]
    wanted = request.args.getlist("url")
    topics = [subscription_topic(base, t) for key, t in TOPICS.items()
              if not wanted or topic_url(base, key) in wanted]
    return json_response(searchset("SubscriptionTopic", topics, [], None, []),
                         content_type=FHIR_JSON)


@public("meta")
def topic_read(topic_id: str) -> Response:
    """Return one topic.

    :raises NotFound: no such topic.
    """
    _json_only()
    if topic_id not in TOPICS:
        raise NotFound(f"No SubscriptionTopic/{topic_id} on this server.")
    resource = subscription_topic(current_app.config["CANONICAL_BASE"], TOPICS[topic_id])
    return json_response(resource, content_type=FHIR_JSON)


@interaction("Subscription", "read", "purge")
def status_type() -> Response:
    """``GET /fhir/Subscription/$status``: the caller's subscriptions' status."""
    with get_db().transaction() as session:
        found = statuses(session, caller(), request.args.getlist("id"),
                         request.args.getlist("status"))
        return fhir_response(status_bundle(found))


@interaction("Subscription", "read", "purge")
def status_instance(resource_id: str) -> Response:
    """``GET /fhir/Subscription/{id}/$status``."""
    check_id("Subscription", resource_id)
    with get_db().transaction() as session:
        return fhir_response(status_bundle([owned(session, resource_id, caller())]))


@interaction("Subscription", "read", "read")
def events_instance(resource_id: str) -> Response:
    """``GET /fhir/Subscription/{id}/$events``: past events, rendered for the caller now."""
    check_id("Subscription", resource_id)
    # A write transaction: the past events' children are recorded in the delivery ledger
    # and audited as they are rendered, and on SQLite a deferred transaction that reads and
    # then writes fails when another writer committed in between (adapter.db).
    with get_db().write_transaction() as session:
        subscription = owned(session, resource_id, caller())
        return fhir_response(events_bundle(session, subscription, caller(), request.args))


@authenticated("admin", right="admin")
def holders(resource_id: str) -> Response:
    """``GET /fhir/Patient/{id}/$holders``: which client systems received this child.

    :raises NotFound: no such child and nothing in the ledger.
    """
    check_id("Patient", resource_id)
    with get_db().write_transaction() as session:  # it writes its audit record (adapter.db)
        entries = ledger.holders(session, resource_id)
        known = session.scalar(select(Child.id).where(Child.resource_id == resource_id))
        if not entries and known is None:
            raise NotFound(f"No Patient/{resource_id} on this server.")
        audit.record(session, "holders", resource_type="Patient", resource_id=resource_id,
                     child_ref=resource_id, caller=caller())
        return fhir_response(holders_parameters(entries))


def holders_parameters(entries: list[tuple[LedgerEntry, str | None]]) -> dict[str, Any]:
    """Return the ``$holders`` result: one ``holder`` parameter per client (FHIR Parameters)."""
    parameters = []
    for entry, organisation in entries:
        parts: list[dict[str, Any]] = [{"name": "client", "valueString": entry.client_id}]
        if organisation:
            parts.append({"name": "organization", "valueString": organisation})
        parts += [{"name": "first", "valueInstant": instant(entry.first_at)},
                  {"name": "last", "valueInstant": instant(entry.last_at)},
                  {"name": "via", "valueCode": entry.last_via},
                  {"name": "deliveries", "valueInteger": int(entry.deliveries)}]
        parameters.append({"name": "holder", "part": parts})
    result: dict[str, Any] = {"resourceType": "Parameters"}
    if parameters:
        result["parameter"] = parameters
    return result


def init_app(app: Flask) -> None:
    """Register the routes."""
    rules = (("/fhir/SubscriptionTopic", "fhir.SubscriptionTopic.search", topic_search),
             ("/fhir/SubscriptionTopic/<topic_id>", "fhir.SubscriptionTopic.read", topic_read),
             ("/fhir/Subscription/$status", "fhir.Subscription.status-type", status_type),
             ("/fhir/Subscription/<resource_id>/$status", "fhir.Subscription.status",
              status_instance),
             ("/fhir/Subscription/<resource_id>/$events", "fhir.Subscription.events",
              events_instance),
             ("/fhir/Patient/<resource_id>/$holders", "fhir.Patient.holders", holders))
    for rule, endpoint, view in rules:
        app.add_url_rule(rule, endpoint=endpoint, view_func=view, methods=["GET"])
