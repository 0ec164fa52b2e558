"""Notifications (README "Notifications"): topic-based subscriptions (Subscriptions R5 Backport
IG for R4) delivered over rest-hook and MESH from a transactional outbox; what each delivery
handed over goes into the delivery ledger (``adapter.security.ledger``).

- ``topics``: the four topics and their filters; ``spec``: the Subscription resource;
- ``subscriptions``: the ``/fhir/Subscription`` handler, ``$status``, ``$events``;
- ``outbox``: events raised by other services (decommission notice, purge instruction);
- ``fanout``, ``lanes``, ``dispatcher``: numbering and delivering, with retries;
- ``channels``: rest-hook and MESH; ``bundle``, ``content``: notification Bundles;
- ``signing``: per-subscription secrets and the body signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: Flask) -> None:
    """Register the topic, operation and ``$holders`` routes (the Subscription handler is
    registered with the other FHIR handlers)."""
    from adapter.notify import routes

    routes.init_app(app)
