"""What off-the-shelf FHIR clients do works: a trailing slash on any FHIR URL answers as without
it (``/fhir/`` for a transaction); a ``_format`` that is not FHIR JSON or XML is 406; the
conformance resources are public; the CapabilityStatement declares every route there is.
Every route is taken from the URL map, so a new one is covered without editing this file."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import MethodNotAllowed, NotFound

from adapter.security.access import access_of
from tests.api.conftest import Callers
from tests.api.test_patient import own_patient
from tests.conftest import REPO
from tests.security.routes import declared_routes, missing_from_capability

FHIR_JSON = "application/fhir+json"


def _fhir_rules(app: Flask) -> list[tuple[str, str, str, dict[str, str]]]:
    """Return (method, path, endpoint, arguments) of every FHIR route, arguments filled."""
    out = []
    for route in declared_routes(app):
        if route.rule == "/fhir" or route.rule.startswith("/fhir/"):
            values = dict.fromkeys(route.arguments, "x1")
            out.append((route.method, route.url(**values), route.endpoint, values))
    return out


def test_every_fhir_route_matches_with_a_trailing_slash(app: Flask) -> None:
    """Each FHIR route of the URL map, asked with a trailing slash, reaches the same view
    with the same arguments, for its method (no redirect: a 308 to a POST is no answer)."""
    urls = app.url_map.bind("localhost")
    rules = _fhir_rules(app)
    assert len(rules) > 50
    for method, path, endpoint, values in rules:
        assert urls.match(path, method=method) == (endpoint, values), path
        assert urls.match(path + "/", method=method) == (endpoint, values), f"{method} {path}/"


def test_other_routes_keep_their_exact_paths(app: Flask) -> None:
    """Outside /fhir nothing changes: a trailing slash there is still no route."""
    urls = app.url_map.bind("localhost")
    with pytest.raises(NotFound):
        urls.match("/healthz/", method="GET")
    with pytest.raises(MethodNotAllowed):
        urls.match("/fhir/", method="DELETE")


def test_trailing_slashes_answer_as_without(client: FlaskClient, callers: Callers) -> None:
    """The requests clients make with a trailing slash answer as without it: a transaction
    posted to ``/fhir/``, a search, a read and a create."""
    patient = own_patient(client, callers)
    search = client.get("/fhir/Patient/?_count=2", headers=callers.la)
    assert search.status_code == 200 and search.json["type"] == "searchset"
    read = client.get(f"/fhir/Patient/{patient['id']}/", headers=callers.la)
    assert read.status_code == 200 and read.json["id"] == patient["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{patient['id']}"}}]}
    answer = client.post("/fhir/", json=bundle, headers=callers.la)
    assert answer.status_code == 200, answer.json
    assert answer.json["type"] == "transaction-response"
    assert answer.json["entry"][0]["response"]["status"].startswith("200")
    assert client.get("/fhir/metadata/").json["resourceType"] == "CapabilityStatement"
    refused = client.post("/fhir/Organization/", json={"resourceType": "Organization"},
                          headers=callers.la)
    assert refused.status_code == client.post("/fhir/Organization", headers=callers.la,
                                              json={"resourceType": "Organization"}).status_code


@pytest.mark.parametrize("value", ["text/turtle", "ttl", "html", "text/html",
                                   "application/rdf+xml", "csv", "jsonx", "application/pdf"])
def test_a_format_that_is_not_fhir_json_or_xml_is_406(client: FlaskClient, callers: Callers,
                                                      value: str) -> None:
    """``_format`` naming another representation is 406 with an OperationOutcome (in JSON),
    on public and protected routes, before anything is read."""
    for path, headers in (("/fhir/metadata", {}), ("/fhir/Patient", callers.la),
                          ("/fhir/StructureDefinition", {})):
        response = client.get(path, query_string={"_format": value}, headers=headers)
        assert response.status_code == 406, (path, value, response.data[:200])
        assert response.mimetype == FHIR_JSON
        outcome = response.json
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "not-supported"
        assert "_format" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("value", "mimetype"), [
    ("json", "application/fhir+json"), ("application/fhir+json", "application/fhir+json"),
    ("application/json", "application/fhir+json"), ("xml", "application/fhir+xml"),
    ("application/fhir+xml", "application/fhir+xml"), ("application/xml", "application/fhir+xml"),
    ("text/xml", "application/fhir+xml"), ("application/fhir+xml; fhirVersion=4.0",
                                          "application/fhir+xml"),
    ("application/fhir xml", "application/fhir+xml")])  # an unescaped "+" arrives as " "
def test_every_fhir_format_is_served(client: FlaskClient, callers: Callers, value: str,
                                     mimetype: str) -> None:
    """The ``_format`` values of FHIR R4 http.html#mime-type answer in their format."""
    for path, headers in (("/fhir/metadata", {}), ("/fhir/Patient", callers.la)):
        response = client.get(path, query_string={"_format": value, "_count": "1"},
                              headers=headers)
        assert response.status_code == 200, (path, value)
        assert response.mimetype == mimetype


ACCEPTED = [("application/fhir+xml", "application/fhir+xml"), ("", FHIR_JSON),
            ("text/xml;q=0.9, application/json;q=0.5", "application/fhir+xml"),
            ("*/*", FHIR_JSON), ("application/xml, application/fhir+json;q=0.1",
                                 "application/fhir+xml"), ("text/html", FHIR_JSON)]


def test_accept_chooses_the_format_request_by_request(client: FlaskClient,
                                                      callers: Callers) -> None:
    """``Accept`` chooses JSON or XML by its qualities (RFC 9110 section 12.5.1), JSON by
    default; the choice is remembered per header value (``adapter.http.accepted_format``), so
    values asked in turn, twice over, each keep their own answer."""
    for value, mimetype in [*ACCEPTED, *reversed(ACCEPTED)]:
        response = client.get("/fhir/Patient", query_string={"_count": "1"},
                              headers={**callers.la, "Accept": value})
        assert response.status_code == 200, value
        assert response.mimetype == mimetype, value


def conformance_routes(app: Flask) -> list[tuple[str, str]]:
    """Return (rule, endpoint) of every GET route of a type whose routes are public."""
    public_types = {route.rule.split("/")[2] for route in declared_routes(app)
                    if route.rule.startswith("/fhir/") and route.access is not None
                    and route.access.public and route.rule.split("/")[2][:1].isupper()}
    return [(route.rule, route.endpoint) for route in declared_routes(app)
            if route.method == "GET" and route.rule.startswith("/fhir/")
            and route.rule.split("/")[2] in public_types]


CONFORMANCE_TYPES = {"StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap",
                     "OperationDefinition", "SubscriptionTopic"}


def test_every_conformance_type_is_public(app: Flask) -> None:
    """Every conformance resource type the gateway serves (each type it publishes from
    ``schemas/fhir`` and ``mappings/conceptmaps``, and the topics) is declared public metadata
    to the access layer, on every route of the type; no type that holds data is."""
    from adapter.fhir.published import published

    served = {kind for kind, _id in published(app.config["CANONICAL_BASE"])}
    assert served | {"SubscriptionTopic"} == CONFORMANCE_TYPES
    rules = conformance_routes(app)
    assert {rule.split("/")[2] for rule, _e in rules} == CONFORMANCE_TYPES
    with app.test_request_context():
        for rule, endpoint in rules:
            declared = access_of(endpoint)
            assert declared is not None and declared.public and declared.kind == "meta", rule


def _sample_ids(client: FlaskClient, kind: str) -> tuple[str, str]:
    """Return the id and version of the first resource of ``kind`` (read anonymously)."""
    bundle = client.get(f"/fhir/{kind}")
    assert bundle.status_code == 200, (kind, bundle.data[:300])
    first = bundle.json["entry"][0]["resource"]
    return str(first["id"]), str(first.get("meta", {}).get("versionId", "1"))


def test_conformance_resources_are_read_and_searched_without_a_token(
        client: FlaskClient, app: Flask) -> None:
    """Read, vread and search of every conformance route answer 200 without a token, in JSON
    and XML (SubscriptionTopic: R4B JSON only), and may be cached (the same for everyone)."""
    for rule, _endpoint in conformance_routes(app):
        kind = rule.split("/")[2]
        resource_id, version = _sample_ids(client, kind)
        path = re.sub(r"<(resource_id|topic_id)>", resource_id, rule).replace("<version>",
                                                                              version)
        for fmt in ("json",) if kind == "SubscriptionTopic" else ("json", "xml"):
            response = client.get(path, query_string={"_format": fmt})
            assert response.status_code == 200, (path, fmt, response.data[:300])
            assert response.mimetype == f"application/fhir+{fmt}"
            assert "no-store" not in response.headers.get("Cache-Control", "")
        assert client.get(path, headers={"Authorization": "Bearer not.a.token"}) \
            .status_code == 200, path
    search = client.get("/fhir/StructureDefinition",
                        query_string={"url": "https://fhir.contactpoint-gateway.example.org/"
                                             "StructureDefinition/ContactPointGateway-Patient"})
    assert [e["resource"]["id"] for e in search.json["entry"]] == ["ContactPointGateway-Patient"]
    missing = client.get("/fhir/ValueSet/no-such-value-set")
    assert missing.status_code == 404 and missing.json["resourceType"] == "OperationOutcome"


def test_data_routes_still_need_a_token(client: FlaskClient) -> None:
    """Only conformance resources became public: a child's data still needs a token."""
    for path in ("/fhir/Patient", "/fhir/CareTeam", "/fhir/Organization", "/fhir/Task",
                 "/fhir/PlanDefinition", "/fhir/AuditEvent", "/fhir/Subscription"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_readme_names_every_public_route(app: Flask) -> None:
    """The README's auth contract names every route that needs no token, and no other."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| auth |"))
    public, protected = [], []
    for route in declared_routes(app):
        assert route.access is not None, str(route)
        (public if route.access.public else protected).append(route.rule)
    for rule in public:
        parts = rule.split("/")
        if rule.startswith("/fhir/") and parts[2][:1].isupper():
            assert f"`{parts[2]}`" in row, rule
        else:
            assert rule.removeprefix("/fhir") in row or f"/{parts[1]}/" in row, rule
    for rule in protected:
        parts = rule.split("/")
        if rule.startswith("/fhir/") and parts[2][:1].isupper():
            assert f"`{parts[2]}`" not in row, rule


def test_capability_statement_declares_every_route(client: FlaskClient, app: Flask) -> None:
    """Every FHIR interaction and operation route of the URL map is in the CapabilityStatement
    (the phases: tests/decommission/test_phase_matrix.py), and each operation of the gateway's
    own is defined by an OperationDefinition it serves without a token."""
    statement: dict[str, Any] = client.get("/fhir/metadata").json
    assert missing_from_capability(app, statement) == []
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert {"Task", "PlanDefinition"} <= types
    base = app.config["CANONICAL_BASE"]
    definitions = [o["definition"] for r in statement["rest"][0]["resource"]
                   for o in r.get("operation", [])]
    own = [d for d in definitions if d.startswith(f"{base}/OperationDefinition/")]
    assert len(own) >= 3
    for definition in own:
        found = client.get(f"/fhir/OperationDefinition?url={definition}").json
        assert [e["resource"]["url"] for e in found["entry"]] == [definition]
