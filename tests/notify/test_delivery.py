"""End to end over real HTTP receivers on 127.0.0.1: changes made through the API and the ORM
reach every matching subscriber as valid, signed notification Bundles with gap-free event
numbers; full-resource content is what a read by that subscriber shows; the ledger records
exactly who received each child."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select

from adapter.db import Database
from adapter.errors import Invalid
from adapter.fhir.xml import loads_resource
from adapter.models import Assessment, Child, Organisation
from adapter.notify.outbox import emit_decommission_notice, emit_purge_instruction
from adapter.notify.signing import SIGNATURE_HEADER, verify
from tests.api.conftest import Callers
from tests.conftest import CONFORMANCE
from tests.notify.helpers import dispatch, event_numbers, status_of, subscribe, subscription
from tests.notify.receivers import Received, Receiver

JSON = {"Content-Type": "application/fhir+json"}
REDACTED = "REDACTED"


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    """The official FHIR R4 schema."""
    return etree.XMLSchema(etree.parse(str(CONFORMANCE / "fhir-r4" / "fhir-single.xsd")))


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def bundle_of(item: Received, schema: etree.XMLSchema) -> dict[str, Any]:
    """Return a received body as a Bundle dict, validated: fhir.resources for both forms, and
    the official R4 XSD for XML."""
    if item.headers["Content-Type"] == "application/fhir+xml":
        document = etree.fromstring(item.body)
        assert schema.validate(document), schema.error_log
        bundle = loads_resource(item.body)
    else:
        assert item.headers["Content-Type"] == "application/fhir+json"
        bundle = orjson.loads(item.body)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "history"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Parameters"
    return bundle


def children_of(db: Database, gss: str) -> list[str]:
    """Return the Patient ids of an authority's children (from the database: no ledger)."""
    with db.sessions() as session:
        return list(session.scalars(
            select(Child.resource_id).join(Organisation, Child.managing_organisation)
            .where(Organisation.gss_code == gss).order_by(Child.id)))


def shielded_child(db: Database) -> str:
    """Return the Patient id of the demo's shielded child."""
    with db.sessions() as session:
        return str(session.scalars(select(Child.resource_id).where(Child.shielded)).first())


def organisation_id(db: Database, gss: str) -> str:
    """Return the Organization id of an authority."""
    with db.sessions() as session:
        return str(session.scalar(select(Organisation.resource_id)
                                  .where(Organisation.gss_code == gss)))


def touch(client: FlaskClient, headers: dict[str, str], patient_id: str) -> None:
    """Read a Patient and write it back with another telecom (a real update)."""
    patient = client.get(f"/fhir/Patient/{patient_id}", headers=headers).json
    patient["gender"] = "female" if patient["gender"] != "female" else "male"
    response = client.put(f"/fhir/Patient/{patient_id}", json=patient,
                          headers={**headers, **JSON})
    assert response.status_code == 200, response.json


def holders(client: FlaskClient, callers: Callers, patient_id: str) -> set[str]:
    """Return the clients ``$holders`` lists for a child."""
    result = client.get(f"/fhir/Patient/{patient_id}/$holders", headers=callers.admin).json
    return {p["part"][0]["valueString"] for p in result.get("parameter", [])}


def check_stream(bodies: list[Received], secret: str, schema: etree.XMLSchema,
                 events: int) -> list[dict[str, Any]]:
    """Check one subscriber's notifications: valid, signed, a handshake first, then events
    numbered 1..``events`` without gaps; return the Bundles."""
    bundles = []
    for item in bodies:
        assert verify(secret, item.body, item.headers[SIGNATURE_HEADER])
        bundles.append(bundle_of(item, schema))
    kinds = [status_of(b)["type"] for b in bundles]
    assert kinds[0] == "handshake" and set(kinds[1:]) <= {"event-notification"}
    numbers = [int(e["event-number"]) for b in bundles for e in
               status_of(b)["notification-event"]]
    assert numbers == list(range(1, events + 1))
    return bundles


def patient_entries(bundles: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the Patients of full-resource notifications by id (last one wins)."""
    return {e["resource"]["id"]: e["resource"] for b in bundles for e in b["entry"][1:]
            if e.get("resource", {}).get("resourceType") == "Patient"}


def test_changes_reach_every_subscriber(app: Flask, client: FlaskClient, callers: Callers,
                                        receiver: Receiver, demo: Database,
                                        schema: etree.XMLSchema) -> None:
    """Three directory subscribers (JSON full-resource, XML full-resource, id-only filtered
    by authority) and an eCAF one get exactly their events; shielding applies per
    subscriber; the ledger lists exactly who received each child."""
    second = organisation_id(demo, "E08900002")
    one, s1 = subscribe(client, callers.la, subscription(
        "directory-entry-changed", receiver.url("/one"), content="full-resource"))
    two, s2 = subscribe(client, callers.other_la, subscription(
        "directory-entry-changed", receiver.url("/two"), content="full-resource",
        payload="application/fhir+xml"))
    adm, s3 = subscribe(client, callers.admin, subscription(
        "directory-entry-changed", receiver.url("/admin"),
        filters=(f"Patient?organization=Organization/{second}",)))
    ecaf, s4 = subscribe(client, callers.other_la, subscription(
        "ecaf-assessment-changed", receiver.url("/ecaf"), content="full-resource"))
    assert dispatch(app) == 4  # the handshakes
    own = children_of(demo, callers.authority)
    shielded = shielded_child(demo)
    touch(client, callers.la, own[0])
    touch(client, callers.la, own[1])
    touch(client, callers.admin, shielded)
    with demo.write_transaction() as session:
        assessment = session.scalars(select(Assessment).order_by(Assessment.id)).first()
        assert assessment is not None
        assessment.consent_to_share = not assessment.consent_to_share
        ecaf_child = assessment.child.resource_id
    assert dispatch(app) == 3 + 3 + 1 + 1
    first = check_stream(receiver.bodies("/one"), s1, schema, 3)
    second_bundles = check_stream(receiver.bodies("/two"), s2, schema, 3)
    admin_bundles = check_stream(receiver.bodies("/admin"), s3, schema, 1)
    ecaf_bundles = check_stream(receiver.bodies("/ecaf"), s4, schema, 1)
    for bundles in (first, second_bundles):
        patients = patient_entries(bundles)
        assert set(patients) == {own[0], own[1], shielded}
        assert REDACTED in str(patients[shielded]["meta"].get("security"))
        assert "address" not in patients[shielded]
    focus = status_of(admin_bundles[1])["notification-event"][0]["focus"]["reference"]
    assert focus.endswith(f"/Patient/{shielded}") and len(admin_bundles[1]["entry"]) == 2
    assert "resource" not in admin_bundles[1]["entry"][1]  # id-only
    careteam = ecaf_bundles[1]["entry"][1]["resource"]
    assert careteam["resourceType"] == "CareTeam"
    assert holders(client, callers, own[0]) == {"la-one", "la-two"}
    assert holders(client, callers, shielded) == {"admin", "la-one", "la-two"}
    touched = {own[0]: {"la-one", "la-two"}, own[1]: {"la-one", "la-two"},
               shielded: {"admin", "la-one", "la-two"}}
    assert holders(client, callers, ecaf_child) == {"la-two"} | touched.get(ecaf_child, set())
    assert holders(client, callers, own[5]) == set()
    states = client.get("/fhir/Subscription/$status", headers=callers.la).json
    assert status_of({"entry": states["entry"]})["status"] == "active"
    assert {one, two, adm, ecaf}


def test_events_operation_replays_past_events(app: Flask, client: FlaskClient,
                                             callers: Callers, receiver: Receiver,
                                             demo: Database) -> None:
    """``$events`` returns past events by number, rendered for the caller now, at most the
    subscription's content; it counts in the ledger."""
    sid, _secret = subscribe(client, callers.other_la, subscription(
        "directory-entry-changed", receiver.url(), content="full-resource"))
    dispatch(app)
    own = children_of(demo, callers.authority)
    for patient_id in own[:3]:
        touch(client, callers.la, patient_id)
    dispatch(app)
    events = client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=2",
                        headers=callers.other_la).json
    Bundle.model_validate(events)
    status = status_of(events)
    assert status["type"] == "query-event"
    assert [int(e["event-number"]) for e in status["notification-event"]] == [2, 3]
    assert [e["resource"]["id"] for e in events["entry"][1:]] == own[1:3]
    ids = client.get(f"/fhir/Subscription/{sid}/$events?eventsUntilNumber=1&content=id-only",
                     headers=callers.other_la).json
    assert len(ids["entry"]) == 2 and "resource" not in ids["entry"][1]
    assert client.get(f"/fhir/Subscription/{sid}/$events",
                      headers=callers.la).status_code == 404


def test_decommission_notice_and_purge_instruction(app: Flask, client: FlaskClient,
                                                  callers: Callers, receiver: Receiver,
                                                  demo: Database,
                                                  schema: etree.XMLSchema) -> None:
    """The notice — the published plan, a PlanDefinition, as the topic declares — reaches
    every notice subscriber and is the resource GET /fhir/PlanDefinition serves; a purge Task
    only the subscriptions of the client it is addressed to, with the Task as full resource."""
    from adapter.decommission.cli import decommission_group

    _n, s1 = subscribe(client, callers.la, subscription("decommission-notice",
                                                        receiver.url("/notice"),
                                                        content="full-resource"))
    _p1, s2 = subscribe(client, callers.la, subscription("purge-instruction",
                                                         receiver.url("/purge-one"),
                                                         content="full-resource"))
    _p2, s3 = subscribe(client, callers.other_la, subscription(
        "purge-instruction", receiver.url("/purge-two"), content="full-resource",
        payload="application/fhir+xml"))
    dispatch(app)
    planned = app.test_cli_runner().invoke(decommission_group, [
        "plan", "--last-use", "2099-08-05", "--switch-off", "2099-08-06"])
    assert planned.exit_code == 0, planned.output
    task = {"resourceType": "Task", "id": "purge-la-two", "status": "requested",
            "intent": "order"}
    with demo.write_transaction() as session:
        emit_purge_instruction(session, "la-two", task)
        with pytest.raises(Invalid):  # the notice topic carries the plan, nothing else
            emit_decommission_notice(session, {"resourceType": "Basic", "id": "plan"})
    assert dispatch(app) == 2
    notice = check_stream(receiver.bodies("/notice"), s1, schema, 1)
    published = client.get("/fhir/PlanDefinition/decommission-plan", headers=callers.la).json
    declared = client.get("/fhir/SubscriptionTopic/decommission-notice",
                          headers=callers.la).json
    kinds = {declared["resourceTrigger"][0]["resource"],
             declared["notificationShape"][0]["resource"],
             *(f["resource"] for f in declared.get("canFilterBy", []))}
    assert kinds == {"PlanDefinition"}
    focus = status_of(notice[1])["notification-event"][0]["focus"]["reference"]
    assert focus.endswith("/PlanDefinition/decommission-plan")
    assert notice[1]["entry"][1]["resource"] == published
    assert notice[1]["entry"][1]["fullUrl"].endswith("/PlanDefinition/decommission-plan")
    check_stream(receiver.bodies("/purge-one"), s2, schema, 0)
    purge = check_stream(receiver.bodies("/purge-two"), s3, schema, 1)
    assert purge[1]["entry"][1]["resource"]["id"] == "purge-la-two"


def test_heartbeats_and_max_count(app: Flask, client: FlaskClient, callers: Callers,
                                  receiver: Receiver, demo: Database) -> None:
    """A quiet subscription gets a heartbeat once its period has passed; events are batched
    up to backport-max-count per Bundle, in order."""
    clock = Clock()
    _sid, _secret = subscribe(client, callers.la, subscription(
        "directory-entry-changed", receiver.url(), heartbeat=60, max_count=2))
    dispatch(app, clock=clock)
    clock.now += dt.timedelta(seconds=61)
    dispatch(app, clock=clock)
    kinds = [status_of(orjson.loads(r.body))["type"] for r in receiver.bodies()]
    assert kinds == ["handshake", "heartbeat"]
    for patient_id in children_of(demo, callers.authority)[:3]:
        touch(client, callers.la, patient_id)
    dispatch(app, clock=clock)
    bodies = [r.body for r in receiver.bodies()[2:]]
    assert [len(status_of(orjson.loads(b))["notification-event"]) for b in bodies] == [2, 1]
    assert event_numbers(bodies) == [1, 2, 3]
