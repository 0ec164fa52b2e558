"""The MESH channel against a running mesh-sandbox: the message read from the subscriber's
mailbox is the notification Bundle the dispatcher sent, byte for byte."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from flask import Flask
from flask.testing import FlaskClient
from mesh_client import MeshClient

from adapter.db import Database
from adapter.notify.channels import Mesh, MeshSettings, Outcome, Parcel
from tests.api.conftest import Callers
from tests.notify.conftest import MESH_MAILBOXES, MESH_SHARED_KEY, NOTIFY_SETTINGS
from tests.notify.helpers import dispatch, status_of, subscribe, subscription
from tests.notify.test_delivery import children_of, holders, touch

SENDER, RECIPIENT = MESH_MAILBOXES[0], MESH_MAILBOXES[1]


@pytest.fixture
def settings(mesh_sandbox: str) -> dict[str, Any]:
    """Delivery settings with the gateway's MESH mailbox on the sandbox."""
    return {**NOTIFY_SETTINGS, "MESH_URL": mesh_sandbox, "MESH_MAILBOX": SENDER,
            "MESH_PASSWORD": "password", "MESH_SHARED_KEY": MESH_SHARED_KEY}


class Recording(Mesh):
    """The real MESH channel, keeping what it sent by local id."""

    def __init__(self, settings: MeshSettings) -> None:
        super().__init__(settings)
        self.sent: dict[str, bytes] = {}

    def send(self, parcel: Parcel) -> Outcome:
        """Send and remember the body."""
        outcome = super().send(parcel)
        if outcome.delivered:
            self.sent[parcel.reference] = parcel.body
        return outcome


def read_mailbox(url: str) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Return (and acknowledge) every message in the recipient's inbox by local id."""
    found = {}
    with MeshClient(url, RECIPIENT, "password", shared_key=MESH_SHARED_KEY.encode(),
                    max_retries=0) as client:
        for message_id in client.list_messages():
            message = client.retrieve_message(message_id)
            headers = dict(message.mex_headers())
            found[str(headers["localid"])] = (message.read(), headers)
            message.acknowledge()
    return found


def test_mesh_delivers_the_same_bundle(app: Flask, client: FlaskClient, callers: Callers,
                                       demo: Database, mesh_sandbox: str) -> None:
    """Handshake and event go to the mailbox as the Bundles sent; the subscription is active;
    the ledger lists the MESH subscriber (it only received the child by MESH) and the writer."""
    channel = Recording(MeshSettings.from_config(app.config))
    sid, _secret = subscribe(client, callers.other_la, subscription(
        "directory-entry-changed", f"mesh:{RECIPIENT}", content="full-resource", mesh=True))
    read = client.get(f"/fhir/Subscription/{sid}", headers=callers.other_la).json
    assert read["channel"]["type"] == "message"
    child = children_of(demo, callers.authority)[0]
    touch(client, callers.la, child)
    assert holders(client, callers, child) == {"la-one"}  # not sent yet
    assert dispatch(app, channels={"mesh": channel}) == 2
    assert holders(client, callers, child) == {"la-one", "la-two"}
    received = read_mailbox(mesh_sandbox)
    assert set(channel.sent) <= set(received)
    kinds = []
    for local_id, body in channel.sent.items():
        message, headers = received[local_id]
        assert message == body
        assert headers["workflowid"] == app.config["MESH_WORKFLOW_ID"]
        bundle = orjson.loads(message)
        Bundle.model_validate(bundle)
        kinds.append(status_of(bundle)["type"])
    assert sorted(kinds) == ["event-notification", "handshake"]
    assert client.get(f"/fhir/Subscription/{sid}",
                      headers=callers.other_la).json["status"] == "active"


def test_mesh_endpoint_is_a_mailbox(client: FlaskClient, callers: Callers) -> None:
    """A MESH subscription's endpoint is mesh:MAILBOX."""
    body = subscription("decommission-notice", "https://example.org/", mesh=True)
    response = client.post("/fhir/Subscription", json=body,
                           headers={**callers.la, "Content-Type": "application/fhir+json"})
    assert response.status_code == 422
