"""Subscriptions across the decommissioning phases: in
run-down and after switch-off a local system can still create, update and delete its
subscriptions to the purge-instruction and decommission-notice topics — purge traffic, or it
could not receive its purge Task — while subscriptions to the change topics are refused like
every other write. The decision is the access layer's, from the route's declared kind and the
subscription's topic (``adapter.decommission.gate.request_kind``), on both backends."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from adapter.decommission.cli import decommission_group
from adapter.fhir.xml import dumps_resource
from adapter.security.access import access_of
from tests.api.conftest import bearer
from tests.notify.helpers import dispatch, subscribe, subscription
from tests.notify.receivers import Receiver

JSON = {"Content-Type": "application/fhir+json"}
XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+json"}
PLAN = ("plan", "--last-use", "2099-08-05", "--switch-off", "2099-08-06")


def cli(app: Flask, *args: str) -> Any:
    """Run ``contactpoint-gateway decommission ARGS``."""
    result = app.test_cli_runner().invoke(decommission_group, list(args))
    assert result.exit_code == 0, result.output
    return result


def post(client: FlaskClient, headers: dict[str, str], body: dict[str, Any],
         xml: bool = False) -> Any:
    """POST a Subscription (FHIR JSON, or XML)."""
    data = dumps_resource(body) if xml else orjson.dumps(body)
    return client.post("/fhir/Subscription", data=data, headers={**headers,
                                                                  **(XML if xml else JSON)})


def put(client: FlaskClient, headers: dict[str, str], sid: str, body: dict[str, Any]) -> Any:
    """PUT a Subscription."""
    return client.put(f"/fhir/Subscription/{sid}", data=orjson.dumps({**body, "id": sid}),
                      headers={**headers, **JSON})


def refused(response: Any, status: int, phase: str) -> None:
    """Check a phase refusal: the status and an OperationOutcome giving the timetable."""
    assert response.status_code == status, response.data[:300]
    issue = response.json["issue"][0]
    assert issue["code"] == "business-rule" and phase in issue["diagnostics"]
    assert "switch-off at 6 August 2099 12:00 BST" in issue["diagnostics"]


def test_purge_and_notice_subscriptions_are_purge_traffic(app: Flask, client: FlaskClient,
                                                          db: Database,
                                                          receiver: Receiver) -> None:
    """Run-down: purge/notice subscriptions can be created (JSON and XML), updated and
    deleted; change-topic ones cannot, nor can a purge-topic body turn a change subscription
    into one. Switched-off: the same, refused with 410. Subscription writes stay declared
    ``write``: the topic is looked at by the one access layer, not by the route."""
    with app.test_request_context():
        assert {access_of(f"fhir.Subscription.{name}").kind  # type: ignore[union-attr]
                for name in ("create", "update", "delete")} == {"write"}
    la = bearer(client, app, "la-one", "E09000001")
    hook = receiver.url("/la-one")
    changes, _s = subscribe(client, la, subscription("directory-entry-changed", hook))
    early_notice, _s = subscribe(client, la, subscription("decommission-notice", hook))
    cli(app, *PLAN)
    assert cli(app, "advance", "--now").output.strip() == "live -> run-down"

    refused(post(client, la, subscription("directory-entry-changed", hook)), 409, "run-down")
    refused(post(client, la, subscription("ecaf-assessment-changed", hook)), 409, "run-down")
    refused(put(client, la, changes, subscription("directory-entry-changed", hook,
                                                  status="off")), 409, "run-down")
    refused(put(client, la, changes, subscription("purge-instruction", hook)), 409, "run-down")
    refused(client.delete(f"/fhir/Subscription/{changes}", headers=la), 409, "run-down")
    refused(post(client, la, {"resourceType": "Patient"}), 409, "run-down")
    refused(client.delete("/fhir/Subscription/no-such-one", headers=la), 409, "run-down")

    created = post(client, la, subscription("purge-instruction", hook, content="full-resource"))
    assert created.status_code == 201, created.json
    purge = created.json["id"]
    as_xml = post(client, la, subscription("decommission-notice", hook), xml=True)
    assert as_xml.status_code == 201, as_xml.json
    moved = put(client, la, purge, subscription("purge-instruction", receiver.url("/moved"),
                                                content="full-resource"))
    assert moved.status_code == 200 and moved.json["channel"]["endpoint"].endswith("/moved")
    assert client.delete(f"/fhir/Subscription/{early_notice}", headers=la).status_code == 204
    # Others' subscriptions stay out of reach: the phase lets the write through, the owner
    # check still answers.
    other = bearer(client, app, "la-two", "E09000002")
    assert put(client, other, purge, subscription("purge-instruction", hook)).status_code == 404
    assert dispatch(app) >= 2  # the new subscriptions' handshakes go out in run-down
    assert {r.path for r in receiver.bodies()} >= {"/moved"}

    assert cli(app, "advance", "--now").output.strip().startswith("run-down -> switched-off")
    refused(post(client, la, subscription("directory-entry-changed", hook)), 410, "switched off")
    refused(client.delete(f"/fhir/Subscription/{changes}", headers=la), 410, "switched off")
    again = post(client, la, subscription("purge-instruction", receiver.url("/again")))
    assert again.status_code == 201, again.json
    paused = put(client, la, again.json["id"], subscription(
        "purge-instruction", receiver.url("/again"), status="off"))
    assert paused.status_code == 200 and paused.json["status"] == "off"
    assert client.delete(f"/fhir/Subscription/{as_xml.json['id']}",
                         headers=la).status_code == 204
    assert client.get(f"/fhir/Subscription/{purge}/$status", headers=la).status_code == 200
