"""The directory XML interface at /directory: batch import with its ImportReport, reads by id
and lists by authority that can be posted back, paging, errors, disclosure (canaries) and
audit, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import func, select

from adapter.db import Database
from adapter.directory.routes import LimitedBody
from adapter.directory.schema import ASSESSMENT_XSD, ENTRY_XSD, NS, REPORT_XSD, load_schema
from adapter.errors import PayloadTooLarge
from adapter.models import Assessment, AuditRecord, Child, Involvement, Organisation
from tests.api.conftest import Callers, bearer
from tests.directory.batches import Batch
from tests.security.canaries import (
    CONSENTED_CANARIES,
    SHIELDED_CANARIES,
    UNCONSENTED_CANARIES,
    canaries_in,
    plant_canaries,
)

XML = {"Content-Type": "application/xml"}
Files = tuple[Batch, Batch, str]


def xml(body: bytes) -> etree._Element:
    """Parse a response body."""
    return etree.fromstring(body)


def summary(body: bytes) -> dict[str, int]:
    """Return the Summary of an ImportReport, validated against import-report.xsd."""
    root = xml(body)
    load_schema(REPORT_XSD).assertValid(root)
    found = root.find(f"{{{NS}}}Summary")
    assert found is not None
    return {etree.QName(e).localname.lower(): int(e.text or 0) for e in found}


def records(body: bytes, schema: str = ENTRY_XSD) -> list[etree._Element]:
    """Return the records of a batch answered by the gateway, validated against its XSD."""
    root = xml(body)
    load_schema(schema).assertValid(root)
    return [e for e in root if etree.QName(e).localname != "Header"]


def audits(db: Database, action: str) -> int:
    """Return how many audit records of ``action`` there are."""
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(AuditRecord)
                                  .where(AuditRecord.action == action)) or 0)


@pytest.fixture
def importer(app: Flask, client: FlaskClient, db: Database,
             demo_files: Files) -> dict[str, str]:
    """Bearer headers of the demo files' authority's directory team on an empty directory."""
    return bearer(client, app, "la-team", demo_files[2], ["shielded"])


# --- import ---------------------------------------------------------------------------------

def test_post_imports_a_batch_and_reports_each_record(client: FlaskClient, db: Database,
                                                      importer: dict[str, str],
                                                      demo_files: Files) -> None:
    """200 with an ImportReport: created, and the broken record rejected with its line; the
    same file again changes nothing."""
    entries, _references, _gss = demo_files
    batch, broken = Batch(entries.head, entries.records[:100], entries.tail).broken(50)
    response = client.post("/directory/entries", data=batch.document(),
                           headers={**importer, **XML})
    assert response.status_code == 200 and response.mimetype == "application/xml"
    assert summary(response.data) == {"created": 98, "updated": 0, "unchanged": 0,
                                      "rejected": 2}
    report = xml(response.data)
    rejected = [r for r in report.iter(f"{{{NS}}}Record")
                if r.findtext(f"{{{NS}}}Status") == "rejected"]
    assert [int(r.findtext(f"{{{NS}}}RecordNumber") or 0) for r in rejected] == broken
    assert [int(r.findtext(f"{{{NS}}}Line") or 0) for r in rejected] == [
        batch.lines()[n - 1] for n in broken]
    assert audits(db, "import-create") == 98
    again = client.post("/directory/entries", data=batch.document(),
                        headers={**importer, "Content-Type": "text/xml; charset=utf-8"})
    assert summary(again.data) == {"created": 0, "updated": 0, "unchanged": 98, "rejected": 2}
    assert audits(db, "import-create") == 98 and audits(db, "import-update") == 0


@pytest.mark.parametrize("body", [
    b"<Foo/>", b"not xml at all", b"",
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><DirectoryEntries xmlns="'
    + NS.encode() + b'"/>',
    b'<DirectoryEntries xmlns="' + NS.encode() + b'"><DirectoryEntry/></DirectoryEntries>',
])
def test_a_body_that_is_not_a_batch_is_a_400(client: FlaskClient, db: Database,
                                            importer: dict[str, str], body: bytes) -> None:
    """Another document, a DTD, no header, not XML: 400 OperationOutcome (XML when asked),
    nothing written."""
    response = client.post("/directory/entries", data=body,
                           headers={**importer, **XML, "Accept": "application/xml"})
    assert response.status_code == 400
    assert etree.QName(xml(response.data)).localname == "OperationOutcome"
    assert b"passwd" not in response.data or b"root:" not in response.data
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Child)) == 0


def test_content_type_size_and_scope(app: Flask, client: FlaskClient,
                                     importer: dict[str, str], demo_files: Files) -> None:
    """415 for another content type, 413 over GATEWAY_MAX_IMPORT_BYTES, 401 without a token,
    403 with a read-only token."""
    document = demo_files[0].document(3)
    assert client.post("/directory/entries", data=document,
                       headers={**importer, "Content-Type": "text/plain"}).status_code == 415
    app.config["MAX_IMPORT_BYTES"] = 1000
    assert client.post("/directory/entries", data=document,
                       headers={**importer, **XML}).status_code == 413
    app.config["MAX_IMPORT_BYTES"] = 10_000_000
    assert client.post("/directory/entries", data=document, headers=XML).status_code == 401
    reader = bearer(client, app, "reader", demo_files[2], scopes="system/Patient.rs")
    assert client.post("/directory/entries", data=document,
                       headers={**reader, **XML}).status_code == 403


def test_the_limit_holds_for_a_body_of_unknown_length() -> None:
    """A body without Content-Length is refused once it passes the limit (never read whole)."""
    body = LimitedBody(io.BytesIO(b"x" * 5000), 1000)
    assert len(body.read(600)) == 600
    with pytest.raises(PayloadTooLarge):
        body.read(600)


def test_a_truncated_batch_reports_where_it_stopped(client: FlaskClient, db: Database,
                                                    importer: dict[str, str],
                                                    demo_files: Files) -> None:
    """Records before the point where the body stops being XML are applied; the report ends
    with a rejected outcome naming the line."""
    entries = demo_files[0]
    body = entries.head + b"".join(entries.records[:2]) + entries.records[2][:150]
    response = client.post("/directory/entries", data=body, headers={**importer, **XML})
    assert response.status_code == 200
    assert summary(response.data) == {"created": 2, "updated": 0, "unchanged": 0,
                                      "rejected": 1}
    last = list(xml(response.data).iter(f"{{{NS}}}Record"))[-1]
    assert "unreadable" in (last.findtext(f"{{{NS}}}Reason") or "")
    assert last.findtext(f"{{{NS}}}Line")


def test_another_authority_is_rejected_per_record(app: Flask, client: FlaskClient,
                                                  demo_files: Files) -> None:
    """A caller of another authority: 200, each record rejected "not your authority"."""
    other = bearer(client, app, "other", "E09000033")
    response = client.post("/directory/entries", data=demo_files[0].document(4),
                           headers={**other, **XML})
    assert response.status_code == 200
    assert summary(response.data)["rejected"] == 4
    assert response.data.count(b"not your authority") == 4


def test_assessment_references_post_and_read_back(client: FlaskClient, db: Database,
                                                  importer: dict[str, str],
                                                  demo_files: Files) -> None:
    """Assessment references are imported after their children, read back by id as a batch
    that posts back unchanged."""
    entries, references, gss = demo_files
    wanted = re.findall(rb"<ContactPointId>([^<]*)</ContactPointId>", references.records[0])
    children = [r for r in entries.records if any(c in r for c in wanted)][:1]
    client.post("/directory/entries", data=Batch(entries.head, children, entries.tail)
                .document(), headers={**importer, **XML})
    one = Batch(references.head, references.records[:1], references.tail).document()
    response = client.post("/directory/assessments", data=one, headers={**importer, **XML})
    assert summary(response.data)["created"] == 1
    assessment_id = re.search(rb"<AssessmentId>([^<]*)</AssessmentId>", one)
    assert assessment_id is not None
    read = client.get(f"/directory/assessments/{assessment_id.group(1).decode()}",
                      headers=importer)
    assert read.status_code == 200 and len(records(read.data, ASSESSMENT_XSD)) == 1
    back = client.post("/directory/assessments", data=read.data, headers={**importer, **XML})
    assert summary(back.data) == {"created": 0, "updated": 0, "unchanged": 1, "rejected": 0}
    listed = client.get(f"/directory/assessments?authority={gss}", headers=importer)
    assert len(records(listed.data, ASSESSMENT_XSD)) == 1
    assert client.get("/directory/assessments/NO-SUCH", headers=importer).status_code == 404


# --- reads ----------------------------------------------------------------------------------

def _live_cpids(db: Database, gss: str) -> set[str]:
    """Return the ContactPoint IDs of an authority's live children."""
    with db.sessions() as session:
        return set(session.scalars(select(Child.contactpoint_id).join(
            Organisation, Child.managing_organisation_id == Organisation.id).where(
            Organisation.gss_code == gss, Child.record_status == "live")))


def test_read_by_id_posts_back_unchanged(client: FlaskClient, demo: Database,
                                         callers: Callers) -> None:
    """GET by ContactPoint ID: a batch of one, audited as a read, that posts back as it is
    (the same entry, unchanged, even where it is redacted for the caller)."""
    cpids = sorted(_live_cpids(demo, callers.authority))
    before = audits(demo, "read")
    for cpid in cpids[:5]:
        response = client.get(f"/directory/entries/{cpid}", headers=callers.la)
        assert response.status_code == 200
        [entry] = records(response.data)
        assert entry.findtext(f"{{{NS}}}ContactPointId") == cpid
        back = client.post("/directory/entries", data=response.data,
                           headers={**callers.la, **XML})
        result = summary(back.data)
        shielded = entry.findtext(f"{{{NS}}}Shielded") == "true"
        assert result == {"created": 0, "updated": 0, "unchanged": int(not shielded),
                          "rejected": int(shielded)}
    assert audits(demo, "read") == before + 5
    assert client.get("/directory/entries/CP000000000", headers=callers.la).status_code in (
        400, 404)
    assert client.get("/directory/entries/not-an-id", headers=callers.la).status_code == 400


def test_list_pages_follow_the_link_header(client: FlaskClient, demo: Database,
                                           callers: Callers) -> None:
    """Pages of _count entries linked by Link rel=next hold every live entry once; each
    entry is one read audit record."""
    expected = _live_cpids(demo, callers.authority)
    before = audits(demo, "read")
    url: str | None = f"/directory/entries?authority={callers.authority}&_count=7"
    seen: list[str] = []
    while url:
        response = client.get(url, headers=callers.la)
        assert response.status_code == 200
        page = records(response.data)
        assert len(page) <= 7
        seen += [e.findtext(f"{{{NS}}}ContactPointId") or "" for e in page]
        link = response.headers.get("Link")
        url = None
        if link:
            found = re.match(r'<([^>]+)>; rel="next"', link)
            assert found is not None
            parts = urlsplit(found.group(1))
            url = f"{parts.path}?{parts.query}"
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert audits(demo, "read") == before + len(seen)
    later = client.get(f"/directory/entries?authority={callers.authority}"
                       "&changed-since=2999-01-01T00:00:00Z", headers=callers.la)
    assert records(later.data) == []


@pytest.mark.parametrize("query", [
    "", "authority=E07000001", "authority=E06900001&changed-since=yesterday",
    "authority=E06900001&changed-since=2026-01-01T00:00:00", "authority=E06900001&_count=0",
    "authority=E06900001&_cursor=%%%", "authority=E06900001&colour=red",
])
def test_bad_list_parameters_are_a_400(client: FlaskClient, callers: Callers,
                                       query: str) -> None:
    """Missing or malformed parameters: 400 OperationOutcome."""
    response = client.get(f"/directory/entries?{query}", headers=callers.la)
    assert response.status_code == 400, response.data[:200]


def test_redaction_is_visible_and_withholds_the_canaries(client: FlaskClient, demo: Database,
                                                         callers: Callers) -> None:
    """Without the rights: the shielded child's and the sensitive services' canaries are
    absent and the entries are marked redacted (still valid against the XSD); with them:
    all there, with the break-glass warning for the shielded child."""
    canaries = plant_canaries(demo, callers.authority)
    shielded, unconsented, consented = canaries.contactpoint_ids
    listed = client.get(f"/directory/entries?authority={callers.authority}&_count=1000",
                        headers=callers.la)
    assert canaries_in(listed.data) == []
    for cpid in (shielded, unconsented, consented):
        plain = client.get(f"/directory/entries/{cpid}", headers=callers.la)
        [entry] = records(plain.data)
        assert entry.get("redacted") == "true" and canaries_in(plain.data) == []
    full = client.get(f"/directory/entries/{shielded}", headers=callers.admin)
    assert set(canaries_in(full.data, SHIELDED_CANARIES)) >= {"postcode", "GP", "school"}
    assert "reviewed" in full.headers["Warning"]
    for cpid, names in ((unconsented, UNCONSENTED_CANARIES), (consented, CONSENTED_CANARIES)):
        seen = client.get(f"/directory/entries/{cpid}", headers=callers.admin)
        assert set(canaries_in(seen.data, names)) == set(names)
        assert records(seen.data)[0].get("redacted") is None


def test_a_redacted_entry_posted_back_changes_nothing(client: FlaskClient, demo: Database,
                                                      callers: Callers) -> None:
    """The caller's redacted view posted back: the sensitive involvement it could not see is
    kept; the shielded entry (its address withheld) is refused; nothing changes."""
    canaries = plant_canaries(demo, callers.authority)
    shielded, unconsented, _consented = canaries.contactpoint_ids
    for cpid, status in ((unconsented, "unchanged"), (shielded, "rejected")):
        view = client.get(f"/directory/entries/{cpid}", headers=callers.la).data
        result = summary(client.post("/directory/entries", data=view,
                                     headers={**callers.la, **XML}).data)
        assert result[status] == 1
    with demo.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Involvement).where(
            Involvement.sensitive.is_(True), Involvement.child.has(
                Child.contactpoint_id == unconsented))) == 1
        assert set(session.scalars(select(Child.version).where(
            Child.contactpoint_id.in_([shielded, unconsented])))) == {1}


def test_assessments_list_withholds_sensitive_members(client: FlaskClient, demo: Database,
                                                      callers: Callers) -> None:
    """Assessment references listed for the authority: valid batches, audited; no sensitive
    service's role for a caller without that right."""
    with demo.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Assessment).join(
            Child, Assessment.child_id == Child.id).join(
            Organisation, Child.managing_organisation_id == Organisation.id).where(
            Organisation.gss_code == callers.authority, Child.record_status == "live",
            Child.shielded.is_(False)))
    response = client.get(f"/directory/assessments?authority={callers.authority}",
                          headers=callers.la)
    listed = records(response.data, ASSESSMENT_XSD)
    assert len(listed) == total
    for role in (b"camhs", b"sexual-health", b"substance-misuse"):
        assert b"<Role>" + role not in response.data


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["changed-since", "_count", "_cursor", "authority"]),
       value=st.text(max_size=40))
def test_garbage_parameters_never_fail_the_server(client: FlaskClient, callers: Callers,
                                                  name: str, value: str) -> None:
    """Any value of any list parameter is answered 200 or 400, never 500."""
    query = {"authority": callers.authority, name: value}
    response = client.get("/directory/entries", query_string=query, headers=callers.la)
    assert response.status_code in (200, 400), response.data[:300]
