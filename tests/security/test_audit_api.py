"""The audit trail: one record per disclosure of a child's data, exposed read-only as FHIR R4
AuditEvent (UK Core) to callers with the audit right, searchable and paged; the audit report
command; and records that nothing can change."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import delete, select, update

from adapter.db import Database
from adapter.fhir import conformance
from adapter.models import AuditRecord, Child
from adapter.security import audit
from adapter.security.audit_events import PROFILE
from adapter.security.caller import Caller
from tests.api.conftest import Callers, bearer
from tests.api.test_patient import first_patient
from tests.conftest import CONFORMANCE
from tests.fhir.test_xml import assert_xsd_valid
from tests.security.helpers import invoke

CHILD_TYPES = ("Patient", "CareTeam", "PractitionerRole")


@pytest.fixture(scope="module")
def r4_schema() -> etree.XMLSchema:
    """The official FHIR R4 XML schema."""
    return etree.XMLSchema(etree.parse(str(CONFORMANCE / "fhir-r4" / "fhir-single.xsd")))


def child_records(db: Database) -> list[AuditRecord]:
    """Return every audit record that names a child, oldest first."""
    with db.sessions() as session:
        return list(session.scalars(select(AuditRecord).where(
            AuditRecord.child_ref.is_not(None)).order_by(AuditRecord.id)))


def disclosed(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the resources with a child's data in a response (a resource or a Bundle)."""
    if body.get("resourceType") == "Bundle":
        return [e["resource"] for e in body.get("entry", [])
                if e.get("resource", {}).get("resourceType") in CHILD_TYPES]
    return [body] if body.get("resourceType") in CHILD_TYPES else []


def test_every_disclosure_of_a_child_is_audited_exactly_once(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """Read, vread, history (each version shown), searches (each match and each included
    resource of a child) write one record each, naming the child; a count and a read of the
    audit trail write none that names a child."""
    patient = first_patient(client, callers.admin)
    pid = patient["id"]
    urls = [f"/fhir/Patient/{pid}", f"/fhir/Patient/{pid}/_history/1",
            f"/fhir/Patient/{pid}/_history", "/fhir/Patient?_count=7",
            f"/fhir/Patient?_id={pid}&_revinclude=CareTeam:subject",
            f"/fhir/CareTeam?patient=Patient/{pid}", "/fhir/Patient?_summary=count",
            "/fhir/AuditEvent?_count=5"]
    for url in urls:
        before = len(child_records(demo))
        response = client.get(url, headers=callers.admin)
        assert response.status_code == 200, (url, response.json)
        shown = disclosed(response.json)
        new = child_records(demo)[before:]
        assert len(new) == len(shown), url
        if url.startswith("/fhir/Patient/"):
            assert {r.child_ref for r in new} == {pid}


def _event_of(record: AuditRecord, client: FlaskClient, callers: Callers) -> dict[str, Any]:
    """Return the AuditEvent of ``record`` as the API answers it."""
    response = client.get(f"/fhir/AuditEvent/{record.id}", headers=callers.admin)
    assert response.status_code == 200, response.json
    event: dict[str, Any] = response.json
    return event


def _record(db: Database, action: str, **fields: Any) -> AuditRecord:
    """Write one audit record as a system process would; return it as stored (its id is
    given at the commit: the records of a transaction are written together)."""
    caller = Caller("la-one", fields.pop("organisation", "E09000001"), [], frozenset(),
                    fields.pop("purpose", None))
    with db.transaction() as session:
        audit.record(session, action, caller=caller, **fields)
    with db.sessions() as session:
        stored = session.scalars(select(AuditRecord).order_by(AuditRecord.id.desc())).first()
    assert stored is not None and stored.action == action
    return stored


@pytest.mark.parametrize(("action", "fields"), [
    ("read", {"resource_type": "Patient", "resource_id": "p1", "child_ref": "p1"}),
    ("read", {"resource_type": "Patient", "resource_id": "p1", "child_ref": "p1",
              "override": True, "purpose": "CAREMGT"}),
    ("search", {"resource_type": "CareTeam", "resource_id": "t1", "child_ref": "p1",
                "purpose": "checking who to contact"}),
    ("update", {"resource_type": "Patient", "resource_id": "p1", "child_ref": "p1",
                "organisation": "A81001"}),
    ("export", {"resource_type": "Patient", "resource_id": "p1", "child_ref": "p1"}),
    ("alert", {"detail": "harvesting pattern", "outcome": "4"}),
    ("audit-read", {"resource_type": "AuditEvent", "resource_id": "7"}),
    ("a-future-action", {}),
])
def test_audit_events_are_valid_fhir_r4_and_uk_core(
        client: FlaskClient, callers: Callers, demo: Database, r4_schema: etree.XMLSchema,
        action: str, fields: dict[str, Any]) -> None:
    """Each kind of record is a valid R4 AuditEvent (fhir.resources R4B, the same shape; the
    official R4 XSD for its XML) that claims the UK Core AuditEvent profile and meets it."""
    record = _record(demo, action, **dict(fields))
    event = _event_of(record, client, callers)
    AuditEvent.model_validate(event)
    assert event["meta"]["profile"] == [PROFILE]
    errors = [i for i in conformance.check_resource(event, PROFILE) if i.severity == "error"]
    assert errors == []
    assert event["agent"][0]["who"]["identifier"]["value"] == "la-one"
    assert event["agent"][0]["requestor"] is True
    if fields.get("child_ref"):
        assert event["entity"][0]["what"]["reference"] == "Patient/p1"
    if fields.get("override"):
        uses = [c["code"] for u in event["agent"][0]["purposeOfUse"] for c in u.get("coding", [])]
        assert "BTG" in uses and "CAREMGT" in uses
        assert event["entity"][0]["securityLabel"][0]["code"] == "R"
    xml = client.get(f"/fhir/AuditEvent/{record.id}?_format=xml", headers=callers.admin)
    assert_xsd_valid(r4_schema, xml.data)
    root = etree.fromstring(xml.data)
    assert root.tag == "{http://hl7.org/fhir}AuditEvent"
    assert root.find("{http://hl7.org/fhir}action").get("value") == event["action"]


def _ids(client: FlaskClient, callers: Callers, query: str) -> list[str]:
    """Return the ids of the AuditEvents a search finds (one page)."""
    response = client.get(f"/fhir/AuditEvent?{query}", headers=callers.admin)
    assert response.status_code == 200, response.json
    return [e["resource"]["id"] for e in response.json.get("entry", [])]


def test_search_by_patient_agent_date_type_subtype_action_outcome(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """Each search parameter selects the records it names."""
    read = _record(demo, "read", resource_type="Patient", resource_id="p9", child_ref="p9")
    write = _record(demo, "update", resource_type="Patient", resource_id="p8", child_ref="p8",
                    organisation="A81001")
    alert = _record(demo, "alert", outcome="4")
    ids = {str(r.id) for r in (read, write, alert)}
    assert _ids(client, callers, "patient=Patient/p9") == [str(read.id)]
    assert set(_ids(client, callers, "agent=Device/la-one")) >= ids
    assert _ids(client, callers, "agent=Organization/A81001") == [str(write.id)]
    assert str(alert.id) in _ids(client, callers, "type=http://dicom.nema.org/resources/"
                                                  "ontology/DCM|110113")
    assert str(read.id) in _ids(client, callers, "type=rest&subtype=read")
    assert str(write.id) in _ids(client, callers, "action=U")
    assert str(read.id) not in _ids(client, callers, "action=U")
    assert _ids(client, callers, "outcome=4") == [str(alert.id)]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert set(_ids(client, callers, f"date=ge{today}&_count=1000")) >= ids
    assert _ids(client, callers, "date=lt2000-01-01") == []
    response = client.get("/fhir/AuditEvent?date=yesterday", headers=callers.admin)
    assert response.status_code == 400


def test_paging_walks_the_trail_newest_first_without_gaps(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """``_count`` pages follow the ``next`` links; together they list every record once."""
    for index in range(7):
        _record(demo, "read", resource_type="Patient", resource_id=f"q{index}",
                child_ref=f"q{index}")
    url: str | None = "/fhir/AuditEvent?agent=la-one&_count=3"
    seen: list[str] = []
    while url:
        bundle = client.get(url, headers=callers.admin).json
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, key=int, reverse=True)
    count = client.get("/fhir/AuditEvent?agent=la-one&_summary=count", headers=callers.admin)
    assert count.json["total"] == 7


def test_reading_the_trail_is_audited_but_not_as_a_childs_data(
        client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A search of the trail writes one audit-read record without a child reference."""
    _record(demo, "read", resource_type="Patient", resource_id="p1", child_ref="p1")
    client.get("/fhir/AuditEvent?patient=p1", headers=callers.admin)
    with demo.sessions() as session:
        last = session.scalars(select(AuditRecord).order_by(AuditRecord.id.desc())).first()
    assert last is not None
    assert (last.action, last.child_ref, last.client_id) == ("audit-read", None, "admin")
    assert last.detail == "search by patient: 1 events"


def test_only_auditors_with_an_auditevent_scope_read_the_trail(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database) -> None:
    """Without the audit right, or without an AuditEvent read scope: 403."""
    assert client.get("/fhir/AuditEvent", headers=callers.la).status_code == 403
    narrow = bearer(client, app, "auditor-without-scope", callers.authority, ["audit"],
                    "system/Patient.rs")
    assert client.get("/fhir/AuditEvent", headers=narrow).status_code == 403
    auditor = bearer(client, app, "auditor", callers.authority, ["audit"],
                     "system/AuditEvent.rs")
    assert client.get("/fhir/AuditEvent", headers=auditor).status_code == 200
    assert client.get("/fhir/AuditEvent/999999", headers=auditor).status_code == 404
    assert client.get("/fhir/AuditEvent/not-a-number", headers=auditor).status_code == 404


def test_audit_records_cannot_be_changed(client: FlaskClient, callers: Callers,
                                         demo: Database) -> None:
    """No route writes the trail (405 from the framework, in a Bundle too), and the ORM
    refuses an update of a record."""
    record = _record(demo, "read", resource_type="Patient", resource_id="p1", child_ref="p1")
    event = _event_of(record, client, callers)
    url = f"/fhir/AuditEvent/{record.id}"
    for method, path in (("PUT", url), ("DELETE", url), ("POST", "/fhir/AuditEvent"),
                         ("PATCH", url)):
        response = client.open(path, method=method, json=event, headers=callers.admin)
        assert response.status_code == 405, (method, response.json)
        assert response.json["resourceType"] == "OperationOutcome"
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": event, "request": {"method": "PUT", "url": url[6:]}}]}
    assert client.post("/fhir", json=bundle, headers=callers.admin).status_code == 405
    with pytest.raises(PermissionError), demo.transaction() as session:
        stored = session.get(AuditRecord, record.id)
        assert stored is not None
        stored.outcome = "12"
        session.flush()
    with pytest.raises(PermissionError), demo.transaction() as session:
        session.execute(update(AuditRecord).where(AuditRecord.id == record.id)
                        .values(outcome="12"))
    with pytest.raises(PermissionError), demo.transaction() as session:
        session.execute(delete(AuditRecord).where(AuditRecord.id == record.id))
    with pytest.raises(PermissionError), demo.transaction() as session:
        stored = session.get(AuditRecord, record.id)
        session.delete(stored)
        session.flush()
    assert _event_of(record, client, callers)["outcome"] == "0"


def test_audit_report_by_child_and_by_client(app: Flask, client: FlaskClient,
                                             callers: Callers, demo: Database) -> None:
    """``audit report`` prints who, organisation, action, when, outcome, override and
    purpose, for a child (by Patient id or ContactPoint ID) or a client, and no child data."""
    patient = first_patient(client, callers.admin)
    client.get(f"/fhir/Patient/{patient['id']}",
               headers={**callers.admin, "X-Purpose-Of-Use": "CAREMGT"})
    with demo.sessions() as session:
        child = session.scalar(select(Child).where(Child.resource_id == patient["id"]))
        assert child is not None
        cpid, family = child.contactpoint_id, child.names[0].family
    for key in (patient["id"], cpid):
        result = invoke(app, "audit", "report", "--child", key)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0] == f"audit trail of Patient/{patient['id']}"
        assert lines[1].split() == ["when", "who", "organisation", "action", "what", "outcome",
                                    "override", "purpose"]
        assert any(" admin " in line and " read " in line and "CAREMGT" in line
                   for line in lines)
        assert family not in result.output and patient["birthDate"] not in result.output
    by_client = invoke(app, "audit", "report", "--client", "admin", "--since", "2000-01-01")
    assert by_client.exit_code == 0
    assert patient["id"] not in by_client.output
    assert by_client.output.rstrip().endswith(" events")
    future = invoke(app, "audit", "report", "--client", "admin", "--since", "2999-01-01")
    assert future.output.rstrip().endswith("0 events")
    assert invoke(app, "audit", "report").exit_code == 2
    assert invoke(app, "audit", "report", "--child", "x", "--client", "y").exit_code == 2


def test_the_audit_index_answers_the_harvesting_check(demo: Database) -> None:
    """The client activity index holds what the harvesting check reads (no table lookup on
    PostgreSQL once visible; a covering index on SQLite)."""
    with demo.engine.connect() as connection:
        if demo.is_sqlite:
            plan = connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT count(DISTINCT child_ref) FROM audit_record "
                "WHERE client_id = 'x' AND recorded >= '2026-01-01' AND child_ref IS NOT NULL "
                "AND action IN ('read', 'search')").all()
            assert "COVERING INDEX ix_audit_record_client_activity" in str(plan)
        else:
            # This test's own schema only: every test schema has the index, and another test
            # process dropping its schema meanwhile makes pg_get_indexdef fail on its rows.
            indexes = connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname = 'ix_audit_record_client_activity'").scalar()
            assert "(client_id, recorded, child_ref, action)" in str(indexes)
