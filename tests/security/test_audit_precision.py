"""The audit trail says what a read delivered: a HEAD, a 304, a refused read and a failed read
are recorded as such (action code and outcome, in the record and its AuditEvent), never as a
disclosure, and feed neither the delivery ledger nor the harvesting count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from sqlalchemy import func, select

from adapter.db import Database
from adapter.fhir import conformance
from adapter.models import AuditRecord, Child, LedgerEntry
from adapter.security.access import interaction
from adapter.security.audit_events import PROFILE
from adapter.security.limits import distinct_children_read
from tests.api.conftest import Callers, bearer

FAILING_PATH = "/fhir/Patient/<resource_id>/$fails"


def records_of(db: Database, client_id: str) -> list[AuditRecord]:
    """Return the audit records of ``client_id`` that name a resource, oldest first."""
    with db.sessions() as session:
        return list(session.scalars(select(AuditRecord).where(
            AuditRecord.client_id == client_id, AuditRecord.resource_type.is_not(None))
            .order_by(AuditRecord.id)))


def held_by(db: Database, client_id: str) -> set[str]:
    """Return the children the delivery ledger says ``client_id`` holds."""
    with db.sessions() as session:
        return set(session.scalars(select(LedgerEntry.child_ref).where(
            LedgerEntry.client_id == client_id)))


def harvest_count(db: Database, client_id: str) -> int:
    """Return the distinct children the harvesting check counts for ``client_id``."""
    with db.sessions() as session:
        return distinct_children_read(session, client_id,
                                      dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))


def visible_child(db: Database) -> Child:
    """Return a child every caller may read (not shielded)."""
    with db.sessions() as session:
        return session.scalars(select(Child).where(Child.shielded.is_(False))
                               .order_by(Child.id).limit(1)).one()


def event_of(client: FlaskClient, callers: Callers, record: AuditRecord) -> dict[str, Any]:
    """Return the AuditEvent of ``record``, checked against the UK Core profile."""
    response = client.get(f"/fhir/AuditEvent/{record.id}", headers=callers.admin)
    assert response.status_code == 200, response.json
    event: dict[str, Any] = response.json
    assert [i for i in conformance.check_resource(event, PROFILE) if i.severity == "error"] == []
    return event


def codes_of(event: dict[str, Any]) -> set[str]:
    """Return the subtype codes of an AuditEvent."""
    return {c["code"] for c in event["subtype"]}


def test_head_is_recorded_as_head_and_delivers_nothing(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """HEAD on read, vread, history and search: ``<action>-head`` records, outcome 0; no
    ledger entry, no harvesting count."""
    child = visible_child(demo)
    for path in (f"/fhir/Patient/{child.resource_id}", f"/fhir/Patient/{child.resource_id}"
                 "/_history/1", f"/fhir/Patient/{child.resource_id}/_history",
                 f"/fhir/Patient?_id={child.resource_id}"):
        response = client.head(path, headers=callers.la)
        assert response.status_code == 200 and response.data == b"", path
    actions = [r.action for r in records_of(demo, "la-one")]
    assert actions == ["read-head", "vread-head", "history-head", "search-head"]
    assert all(r.outcome == "0" for r in records_of(demo, "la-one"))
    assert held_by(demo, "la-one") == set() and harvest_count(demo, "la-one") == 0
    event = event_of(client, callers, records_of(demo, "la-one")[0])
    assert {"read", "read-head"} <= codes_of(event) and event["outcome"] == "0"


@pytest.mark.parametrize("condition", ["If-None-Match", "If-Modified-Since"])
def test_304_is_recorded_as_not_modified_and_delivers_nothing(
        client: FlaskClient, callers: Callers, demo: Database, condition: str) -> None:
    """A conditional read answered 304: ``read-not-modified``, outcome 0; the client is not
    entered in the ledger by it. The same read without the condition is a disclosure."""
    child = visible_child(demo)
    url = f"/fhir/Patient/{child.resource_id}"
    first = client.get(url, headers=callers.admin)
    value = first.headers["ETag"] if condition == "If-None-Match" \
        else first.headers["Last-Modified"]
    response = client.get(url, headers={**callers.la, condition: value})
    assert response.status_code == 304 and response.data == b""
    vread = client.get(f"{url}/_history/{child.version}",
                       headers={**callers.la, condition: value})
    assert vread.status_code == 304
    assert [r.action for r in records_of(demo, "la-one")] == \
        ["read-not-modified", "vread-not-modified"]
    assert held_by(demo, "la-one") == set() and harvest_count(demo, "la-one") == 0
    event = event_of(client, callers, records_of(demo, "la-one")[0])
    assert {"read", "read-not-modified"} <= codes_of(event) and event["outcome"] == "0"
    assert client.get(url, headers=callers.la).status_code == 200
    assert records_of(demo, "la-one")[-1].action == "read"
    assert held_by(demo, "la-one") == {child.resource_id}


def test_refused_reads_are_recorded_as_refused_with_outcome_4(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database) -> None:
    """403 (no scope), 404 (no such child), 401 (no valid token): ``read-refused``,
    outcome 4; only a refusal of a child that may exist names it."""
    child = visible_child(demo)
    organisations_only = bearer(client, app, "orgs-only", callers.authority,
                                scopes="system/Organization.rs")
    assert client.get(f"/fhir/Patient/{child.resource_id}",
                      headers=organisations_only).status_code == 403
    assert client.get("/fhir/Patient/no-such-child", headers=callers.la).status_code == 404
    assert client.get("/fhir/Patient?birthdate=notadate", headers=callers.la).status_code == 400
    assert client.get(f"/fhir/Patient/{child.resource_id}",
                      headers={"Authorization": "Bearer nonsense"}).status_code == 401
    forbidden = records_of(demo, "orgs-only")
    assert [(r.action, r.outcome, r.child_ref) for r in forbidden] == \
        [("read-refused", "4", child.resource_id)]
    assert [(r.action, r.outcome, r.resource_id, r.child_ref)
            for r in records_of(demo, "la-one")] == \
        [("read-refused", "4", None, None), ("search-refused", "4", None, None)]
    assert [(r.action, r.outcome) for r in records_of(demo, "unauthenticated")] == \
        [("read-refused", "4")]
    for client_id in ("orgs-only", "la-one"):
        assert held_by(demo, client_id) == set() and harvest_count(demo, client_id) == 0
    event = event_of(client, callers, forbidden[0])
    assert event["outcome"] == "4" and "read-refused" in codes_of(event)
    assert event["outcomeDesc"] == "GET answered HTTP 403"


@pytest.fixture
def failing_route(app: Flask) -> Iterator[None]:
    """A read route of the app whose view fails (added before the app's first request)."""
    @interaction("Patient", "read", "read")
    def fails(resource_id: str) -> Response:
        raise RuntimeError("a read that fails")
    app.add_url_rule(FAILING_PATH, endpoint="fhir.Patient.failing-read", view_func=fails)
    yield


def test_a_failed_read_is_recorded_as_failed_with_outcome_8(
        failing_route: None, client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A read that fails (500 OperationOutcome): ``read-failed``, outcome 8, naming the child
    asked for."""
    child = visible_child(demo)
    response = client.get(FAILING_PATH.replace("<resource_id>", child.resource_id),
                          headers=callers.la)
    assert response.status_code == 500 and response.json["resourceType"] == "OperationOutcome"
    assert [(r.action, r.outcome, r.child_ref) for r in records_of(demo, "la-one")] == \
        [("read-failed", "8", child.resource_id)]
    event = event_of(client, callers, records_of(demo, "la-one")[0])
    assert event["outcome"] == "8" and "read-failed" in codes_of(event)
    with demo.sessions() as session:
        assert session.scalar(select(func.count(LedgerEntry.id))) == 0


def test_audit_search_by_subtype_finds_the_qualified_reads(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """``subtype=read-head`` finds HEADs only; ``subtype=read`` (restful-interaction) finds
    every read, whatever it delivered; ``outcome=4`` the refused ones."""
    child = visible_child(demo)
    client.head(f"/fhir/Patient/{child.resource_id}", headers=callers.la)
    client.get("/fhir/Patient/no-such-child", headers=callers.la)
    found = {
        query: {e["resource"]["id"] for e in client.get(
            f"/fhir/AuditEvent?agent=la-one&{query}", headers=callers.admin).json["entry"]
            if e["search"]["mode"] == "match"}
        for query in ("subtype=read-head", "subtype=read", "outcome=4")}
    head, refused = (str(r.id) for r in records_of(demo, "la-one"))
    assert found == {"subtype=read-head": {head}, "subtype=read": {head, refused},
                     "outcome=4": {refused}}


def test_refused_get_entries_of_batches_and_transactions_are_recorded_as_refused(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A GET entry of a batch or transaction that is refused is recorded as a refused read
    (outcome 4), as a refused GET route is; the batch's answered GET is a plain read, and a
    transaction's refusal is kept although the transaction is rolled back."""
    child = visible_child(demo)
    patients_writer = bearer(client, app, "writes-only", callers.authority,
                             scopes="system/Patient.cu")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{child.resource_id}"}},
        {"request": {"method": "GET", "url": "Patient/no-such-child"}},
        {"request": {"method": "GET", "url": "Patient?birthdate=notadate"}},
    ]}
    answer = client.post("/fhir", json=batch, headers=callers.la)
    assert answer.status_code == 200, answer.json
    assert [e["response"]["status"][:3] for e in answer.json["entry"]] == ["200", "404", "400"]
    assert [(r.action, r.outcome, r.resource_id) for r in records_of(demo, "la-one")] == [
        ("read", "0", child.resource_id), ("read-refused", "4", None),
        ("search-refused", "4", None)]
    assert held_by(demo, "la-one") == {child.resource_id}

    refused = client.post("/fhir", json={**batch, "entry": batch["entry"][:1]},
                          headers=patients_writer)
    assert refused.json["entry"][0]["response"]["status"] == "403"
    forbidden = records_of(demo, "writes-only")
    assert [(r.action, r.outcome, r.child_ref) for r in forbidden] == \
        [("read-refused", "4", child.resource_id)]
    assert held_by(demo, "writes-only") == set()
    assert "batch entry 0: GET answered HTTP 403" in event_of(client, callers,
                                                               forbidden[0])["outcomeDesc"]

    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": [{"request": {"method": "GET", "url": "Patient/no-such-child"}}]}
    failed = client.post("/fhir", json=transaction, headers=callers.la)
    assert failed.status_code == 404 and failed.json["resourceType"] == "OperationOutcome"
    assert [(r.action, r.outcome) for r in records_of(demo, "la-one")][-1] == \
        ("read-refused", "4")
