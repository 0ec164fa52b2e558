"""The access matrix: every route of the URL map that is not declared
public, called with no token, a malformed, expired, foreign-audience token, a token of a
disabled or re-keyed client, or without the scope it needs, is refused with 401 (with a
``WWW-Authenticate`` challenge) or 403, as an OperationOutcome, and writes nothing; other
organisations' writes are refused with 403 and write nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from adapter.db import Database
from adapter.export.runner import join_jobs
from adapter.models import Client
from adapter.security import clients as registry
from adapter.security.tokens import issue_access_token
from tests.api.conftest import Callers
from tests.api.test_patient import own_patient
from tests.security.helpers import get_token, make_key, register
from tests.security.routes import Route, body_for, declared_routes, protected_routes, table_counts

ELSEWHERE = "https://elsewhere.example.org/fhir"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
# Routes declared @authenticated (not tied to one resource type) that need no scope: the
# test of insufficient scope does not apply to them. Each says why; a new such route fails
# ``test_every_authenticated_route_is_classified`` until it is exercised or listed here.
NO_SCOPE_NEEDED = {
    "fhir.export.status": "the status of the caller's own job: URLs and counts, no child data",
    "fhir.export.delete": "cancelling the caller's own job",
    "directory.decommission": "the decommissioning timetable: the same for every client",
}
# Routes that check their scopes themselves, exercised with the request of _scope_request.
EXERCISED = frozenset({"fhir.system.bundle", "fhir.export.system", "fhir.export.patient",
                       "fhir.export.group", "fhir.export.file", "directory.entries.import",
                       "directory.assessments.import", "directory.rekey"})
BATCH = b'<DirectoryEntries xmlns="urn:contactpoint-gateway:directory:1"/>'


def _token(app: Flask, client_id: str, lifetime: int, audience: str) -> str:
    """Return an access token for a registered client minted directly with the service key."""
    with app.extensions["db"].sessions() as session:
        row = session.scalar(select(Client).where(Client.client_id == client_id))
        assert row is not None
        return issue_access_token(row, "system/*.cruds", app.config["INSTANCE_PATH"],
                                  lifetime, audience).access_token


def _no_token(app: Flask, client: FlaskClient) -> dict[str, str]:
    """No Authorization header at all."""
    return {}


def _malformed(app: Flask, client: FlaskClient) -> dict[str, str]:
    """A bearer value that is not a JWT, and one signed by nobody we know."""
    return {"Authorization": "Bearer not.a.token"}


def _expired(app: Flask, client: FlaskClient) -> dict[str, str]:
    """A token of this server that expired two minutes ago."""
    register(app, "expired-client")
    token = _token(app, "expired-client", -120, "http://localhost/fhir")
    return {"Authorization": f"Bearer {token}"}


def _foreign_audience(app: Flask, client: FlaskClient) -> dict[str, str]:
    """A token signed by this server's key but minted for another server's FHIR base."""
    register(app, "foreign-client")
    return {"Authorization": f"Bearer {_token(app, 'foreign-client', 300, ELSEWHERE)}"}


def _disabled(app: Flask, client: FlaskClient) -> dict[str, str]:
    """A token whose client was disabled after it was issued."""
    token = get_token(client, register(app, "disabled-client"))
    with app.extensions["db"].transaction() as session:
        registry.disable_client(session, "disabled-client")
    return {"Authorization": f"Bearer {token}"}


def _rotated(app: Flask, client: FlaskClient) -> dict[str, str]:
    """A token issued before its client's keys were rotated."""
    token = get_token(client, register(app, "rotated-client"))
    with app.extensions["db"].transaction() as session:
        registry.rotate_key(session, "rotated-client",
                            {"keys": [make_key("ES384").as_dict(private=False)]})
    return {"Authorization": f"Bearer {token}"}


# case -> (headers, a word of the diagnostics that says why)
UNAUTHENTICATED: dict[str, tuple[Callable[[Flask, FlaskClient], dict[str, str]], str]] = {
    "no-token": (_no_token, "bearer token is required"),
    "malformed": (_malformed, "not valid"),
    "expired": (_expired, "expired"),
    "other-audience": (_foreign_audience, "another server"),
    "disabled-client": (_disabled, "disabled"),
    "rotated-keys": (_rotated, "rotated"),
}


def assert_refused(response: Any, status: int, route: Route) -> None:
    """Assert a refusal with ``status`` as an OperationOutcome (and a challenge on 401)."""
    assert response.status_code == status, (str(route), response.status_code, response.data)
    assert response.json["resourceType"] == "OperationOutcome", str(route)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer "), str(route)


def call(client: FlaskClient, route: Route, headers: dict[str, str], **values: str) -> Any:
    """Call ``route`` with its parameters filled from ``values`` and a small body."""
    return client.open(route.url(**values), method=route.method, headers=headers,
                       **body_for(route))


def test_every_route_has_an_access_declaration(app: Flask) -> None:
    """No route is left undeclared (the access layer would refuse it, but say so here)."""
    undeclared = [str(r) for r in declared_routes(app) if r.access is None]
    assert not undeclared


@pytest.mark.parametrize("case", list(UNAUTHENTICATED))
def test_every_protected_route_refuses_an_invalid_token(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database, case: str) -> None:
    """401 with a Bearer challenge and an OperationOutcome, and nothing written."""
    make_headers, reason = UNAUTHENTICATED[case]
    headers = make_headers(app, client)
    patient = own_patient(client, callers)
    routes = protected_routes(app)
    assert len(routes) > 10
    for route in routes:
        before = table_counts(demo)
        response = call(client, route, headers, resource_id=patient["id"], version="1",
                        group_id=callers.authority)
        if case == "no-token" and route.rule.startswith("/admin/"):
            # A browser without token or session is sent to the admin login form.
            assert response.status_code == 303, str(route)
            assert response.headers["Location"].startswith("/admin/login")
            assert table_counts(demo) == before, str(route)
            continue
        assert_refused(response, 401, route)
        assert reason in response.json["issue"][0]["diagnostics"], str(route)
        assert table_counts(demo) == before, str(route)


def _export_job(client: FlaskClient, headers: dict[str, str]) -> tuple[str, str]:
    """Run an export of Patients with a full token; return its job id and a file name."""
    response = client.get("/fhir/$export?_type=Patient", headers={**headers, **ASYNC})
    assert response.status_code == 202, response.json
    status_url = response.headers["Content-Location"]
    join_jobs(timeout=60)
    manifest = client.get(status_url, headers=headers).json
    file_url = manifest["output"][0]["url"]
    return status_url.rsplit("/", 1)[-1], file_url.rsplit("/", 1)[-1]


def _scope_request(route: Route, patient_id: str) -> dict[str, Any]:
    """Return the request that makes scope the only reason to refuse an @authenticated route."""
    if route.endpoint == "fhir.system.bundle":
        return {"json": {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{patient_id}"}}]}}
    if route.endpoint.startswith("fhir.export."):
        return {"headers": ASYNC}
    if route.endpoint.endswith(".import"):
        return {"data": BATCH, "headers": {"Content-Type": "application/xml"}}
    return body_for(route)


def test_every_protected_route_refuses_a_token_without_its_scope(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database) -> None:
    """A token whose scopes cover no resource this server serves (and whose client has no
    right) gets 403 on every route that needs a scope or a right, and nothing is written."""
    app.config["EXPORT_INLINE"] = True
    who = register(app, "scopeless")
    full = {"Authorization": f"Bearer {get_token(client, who)}"}
    job_id, file_name = _export_job(client, full)
    narrow = {"Authorization": f"Bearer {get_token(client, who, 'system/Observation.rs')}"}
    patient = own_patient(client, callers)
    for route in protected_routes(app):
        if route.endpoint in NO_SCOPE_NEEDED:
            continue
        before = table_counts(demo)
        request = _scope_request(route, patient["id"])
        response = client.open(
            route.url(resource_id=patient["id"], version="1", group_id=callers.authority,
                      job_id=job_id, name=file_name, topic_id="x"),
            method=route.method, **{**request,
                                    "headers": {**narrow, **request.get("headers", {})}})
        assert_refused(response, 403, route)
        assert table_counts(demo) == before, str(route)


def test_every_authenticated_route_is_classified(app: Flask) -> None:
    """Each route that checks its scopes itself is exercised above or listed as needing none."""
    unclassified = [str(r) for r in protected_routes(app)
                    if r.access is not None and r.access.resource_type is None
                    and r.access.right is None
                    and r.endpoint not in EXERCISED | set(NO_SCOPE_NEEDED)]
    assert not unclassified, "add each to NO_SCOPE_NEEDED or to _scope_request"


def _writes_of_another_authority(client: FlaskClient,
                                 callers: Callers) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (method, path, body) writes of the first authority's entry (Patient, and the
    same as transaction and batch Bundles)."""
    patient = own_patient(client, callers)
    changed = copy.deepcopy(patient)
    changed["gender"] = "unknown" if changed["gender"] != "unknown" else "female"
    new = copy.deepcopy(patient)
    for key in ("id", "meta"):
        new.pop(key)
    new["identifier"] = [i for i in new["identifier"] if i["system"].endswith("/nhs-number")]
    cpid = next(i for i in patient["identifier"] if i["system"].endswith("contactpoint-id"))
    entry = {"resource": changed, "request": {"method": "PUT", "url": f"Patient/{patient['id']}"}}
    return [
        ("PUT", f"/fhir/Patient/{patient['id']}", changed),
        ("PUT", f"/fhir/Patient?identifier={cpid['system']}|{cpid['value']}", changed),
        ("POST", "/fhir/Patient", new),
        ("POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}),
    ]


def test_other_organisations_writes_are_refused(client: FlaskClient, callers: Callers,
                                                demo: Database) -> None:
    """Another authority's system cannot write the first authority's entries: 403 (in a
    transaction too), and nothing is written; a batch reports 403 for the entry."""
    for method, path, body in _writes_of_another_authority(client, callers):
        before = table_counts(demo)
        response = client.open(path, method=method, json=body, headers=callers.other_la)
        assert response.status_code == 403, (method, path, response.json)
        assert response.json["resourceType"] == "OperationOutcome"
        assert table_counts(demo) == before, (method, path)
    *_, (_, _, transaction) = _writes_of_another_authority(client, callers)
    before = table_counts(demo)
    response = client.post("/fhir", json={**transaction, "type": "batch"},
                           headers=callers.other_la)
    assert response.json["entry"][0]["response"]["status"] == "403"
    assert table_counts(demo) == before
