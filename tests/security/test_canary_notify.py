"""The canary matrix for full-resource notifications, over real HTTP receivers on 127.0.0.1:
each caller of the matrix subscribes (JSON and XML) to directory changes; the canary children
are written, one of them is shielded after a notification about its earlier versions was
rendered for a receiver that was down, and no notification — first attempt or retry — nor
the subscription's ``$events`` brings a subscriber a canary its rights and organisation do
not allow."""

from __future__ import annotations

import datetime as dt

import orjson
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import Notification
from tests.api.conftest import Callers
from tests.notify import conftest as notify_fixtures
from tests.notify.helpers import dispatch, subscribe, subscription
from tests.notify.receivers import Receiver
from tests.security.canaries import (
    LATER_CANARIES,
    LOCAL_CANARIES,
    SHIELDED_CANARIES,
    Viewer,
    allowed,
    canaries_in,
    plant_canaries,
    shield_later,
)

PAYLOADS = ("application/fhir+json", "application/fhir+xml")
# What a Patient carries (involvements are CareTeams and PractitionerRoles, not notified here).
PATIENT_CANARIES = frozenset({"NHS number", "postcode", "street", "carer phone", "carer email",
                              "GP", *LATER_CANARIES, *LOCAL_CANARIES}) \
    - {"later school", "later school phone"}


class Clock:
    """A clock the test moves (the dispatcher's retry backoff)."""

    def __init__(self) -> None:
        self.now = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def _kept(db: Database) -> set[str]:
    """Return the canaries in the content kept for retries of every queued notification."""
    with db.sessions() as session:
        kept = session.scalars(select(Notification.content).where(
            Notification.content.is_not(None)))
        return {name for content in kept for name in canaries_in(orjson.dumps(content))}


# The notification tests' app (their delivery settings) and receiver.
app, receiver, settings = notify_fixtures.app, notify_fixtures.receiver, notify_fixtures.settings


def _received(receiver: Receiver, viewers: list[Viewer]) -> dict[str, set[str]]:
    """Return the canaries each subscriber's endpoints received so far, by viewer name."""
    return {v.name: {name for payload in PAYLOADS
                     for item in receiver.bodies(f"/{v.name}/{payload.rsplit('+', 1)[1]}")
                     for name in canaries_in(item.body)} for v in viewers}


def test_notifications_bring_each_subscriber_only_what_its_rights_allow(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database,
        receiver: Receiver, viewers: list[Viewer], other_authority: str) -> None:
    """Full-resource notifications of the canary children, rendered per subscriber: none
    carries a canary its subscriber may not see, including a retry of content rendered before
    the child was shielded; the subscribers with the rights do receive theirs."""
    subscriptions = {viewer.name: [subscribe(client, viewer.headers, subscription(
        "directory-entry-changed", receiver.url(f"/{viewer.name}/{payload.rsplit('+', 1)[1]}"),
        content="full-resource", payload=payload))[0] for payload in PAYLOADS]
        for viewer in viewers}
    clock = Clock()
    dispatch(app, clock=clock)  # the handshakes
    canaries = plant_canaries(demo, callers.authority, other_authority)
    receiver.mode = "500"  # rendered (the later child unshielded) and kept, not taken
    dispatch(app, clock=clock)
    assert LATER_CANARIES.keys() & _kept(demo)  # what a retry must no longer carry
    shield_later(client, callers.la, canaries)
    receiver.mode = "ok"
    for _attempt in range(3):
        clock.now += dt.timedelta(seconds=30)
        dispatch(app, clock=clock)
    after = _received(receiver, viewers)
    for viewer in viewers:
        may = allowed(viewer, other_authority)
        assert after[viewer.name] <= may, (viewer.name, after[viewer.name] - may)
        for sid in subscriptions[viewer.name]:  # the past events, rendered again on request
            for fmt in ("json", "xml"):
                events = client.get(f"/fhir/Subscription/{sid}/$events?_format={fmt}",
                                    headers=viewer.headers)
                assert events.status_code == 200, events.data[:300]
                assert set(canaries_in(events.data)) <= may, (viewer.name, "$events")
    assert set().union(*after.values()) >= PATIENT_CANARIES & (
        SHIELDED_CANARIES.keys() | LATER_CANARIES.keys() | LOCAL_CANARIES.keys())
