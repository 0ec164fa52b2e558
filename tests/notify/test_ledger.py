"""The delivery ledger is fed by every route that returns a child's data,
through ``adapter.security.ledger.record_delivery``: a client that only read the child's
CareTeam (its team, or an eCAF Team Around the Child), only found it in a CareTeam search,
only read one of its PractitionerRoles or only fetched its directory XML entry is listed by
``$holders`` for that child; a notification counts once it is delivered, not when rendered;
``$holders`` lists exactly those clients."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.models import Assessment, Involvement
from tests.api.conftest import Callers, bearer
from tests.notify.helpers import dispatch, subscribe, subscription
from tests.notify.receivers import Receiver
from tests.notify.test_delivery import Clock, holders


def _plain_child_with_assessment(db: Database) -> tuple[str, str, str, str, str]:
    """Return (Patient id, its CareTeam id, an eCAF CareTeam id, an involvement's
    PractitionerRole id, its ContactPoint ID) of an unshielded live child with an eCAF
    assessment and at least one involvement."""
    with db.sessions() as session:
        for assessment in session.scalars(select(Assessment).order_by(Assessment.id)):
            child = assessment.child
            if child.shielded or child.record_status != "live" or not child.careteam_id:
                continue
            involvement = session.scalar(select(Involvement.resource_id).where(
                Involvement.child_id == child.id).order_by(Involvement.id))
            if involvement is not None and child.contactpoint_id:
                return (child.resource_id, child.careteam_id, assessment.resource_id,
                        involvement, child.contactpoint_id)
    pytest.fail("the demo data has no unshielded child with an assessment and a team")


def test_each_route_returning_a_child_feeds_the_ledger(app: Flask, client: FlaskClient,
                                                      callers: Callers, demo: Database,
                                                      receiver: Receiver) -> None:
    """One client per route, each touching the child only there; all are holders, and no
    one else is (an eCAF notification that failed to arrive does not count until it does)."""
    patient, team, ecaf, role, cpid = _plain_child_with_assessment(demo)
    org = callers.authority
    who = {name: bearer(client, app, name, org) for name in (
        "team-reader", "ecaf-reader", "team-searcher", "role-reader", "xml-reader",
        "ecaf-subscriber", "bystander")}
    assert holders(client, callers, patient) == set()

    assert client.get(f"/fhir/CareTeam/{team}", headers=who["team-reader"]).status_code == 200
    assert holders(client, callers, patient) == {"team-reader"}  # the case of the issue
    assert client.get(f"/fhir/CareTeam/{ecaf}", headers=who["ecaf-reader"]).status_code == 200
    found = client.get(f"/fhir/CareTeam?subject=Patient/{patient}",
                       headers=who["team-searcher"]).json
    assert {e["resource"]["id"] for e in found["entry"]} >= {team, ecaf}
    assert client.get(f"/fhir/PractitionerRole/{role}",
                      headers=who["role-reader"]).status_code == 200
    assert client.get(f"/directory/entries/{cpid}", headers=who["xml-reader"]).status_code == 200
    # A search that finds nothing of this child discloses nothing of it.
    other = client.get("/fhir/CareTeam?subject=Patient/no-such-child",
                       headers=who["bystander"])
    assert other.status_code == 200 and not other.json.get("entry")

    # An eCAF full-resource notification: rendered (and audited) for a receiver that is down,
    # it is no delivery; once the receiver takes it, it is.
    clock = Clock()
    subscribe(client, who["ecaf-subscriber"], subscription(
        "ecaf-assessment-changed", receiver.url("/ecaf"), content="full-resource",
        filters=(f"CareTeam?subject=Patient/{patient}",)))
    assert dispatch(app, clock=clock) == 1  # the handshake
    with demo.write_transaction() as session:
        assessment = session.scalar(select(Assessment).where(Assessment.resource_id == ecaf))
        assert assessment is not None
        assessment.consent_to_share = not assessment.consent_to_share
    receiver.mode = "500"
    assert dispatch(app, clock=clock) == 0
    readers = {"team-reader", "ecaf-reader", "team-searcher", "role-reader", "xml-reader"}
    assert holders(client, callers, patient) == readers
    receiver.mode = "ok"
    clock.now += dt.timedelta(seconds=30)
    assert dispatch(app, clock=clock) == 1
    assert holders(client, callers, patient) == readers | {"ecaf-subscriber"}

    parameters = client.get(f"/fhir/Patient/{patient}/$holders", headers=callers.admin).json
    via = {p["part"][0]["valueString"]: next(x["valueCode"] for x in p["part"]
                                             if x["name"] == "via")
           for p in parameters["parameter"]}
    assert via == {"team-reader": "read", "ecaf-reader": "read", "team-searcher": "search",
                   "role-reader": "read", "xml-reader": "read",
                   "ecaf-subscriber": "notification"}


def test_a_writer_receives_the_entry_it_wrote(app: Flask, client: FlaskClient,
                                             callers: Callers, demo: Database) -> None:
    """A write's answer is the whole entry as the writer may see it (other organisations'
    involvements too): the writer becomes a holder (via ``write``) and so is in scope of the
    purge, though it never read the child."""
    from tests.api.test_patient import own_patient

    patient = own_patient(client, callers)
    writer = bearer(client, app, "writer", callers.authority)
    assert "writer" not in holders(client, callers, patient["id"])
    patient["gender"] = "unknown" if patient.get("gender") != "unknown" else "other"
    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient,
                          headers={**writer, "Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.json
    parameters = client.get(f"/fhir/Patient/{patient['id']}/$holders",
                            headers=callers.admin).json
    via = {p["part"][0]["valueString"]: next(x["valueCode"] for x in p["part"]
                                             if x["name"] == "via")
           for p in parameters["parameter"]}
    assert via["writer"] == "write"
