"""An operation URL (its last segment a ``$name``: ``/fhir/Patient/$export``,
``/fhir/Patient/$validate``, ``/fhir/CareTeam/$rekey``...) asked with a method it does not
answer is 405 with the operation's own methods in ``Allow``, like every other URL: never the
instance route that the URL map would fill with the operation's name as an id ("No Patient has
this id" to ``PUT /fhir/Patient/$export``), and never that route's methods in ``Allow``. The
operation URLs are taken from the URL map, so a new one is covered without editing this file."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from tests.api.conftest import Callers

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def operation_urls(app: Flask) -> dict[str, set[str]]:
    """Return every operation URL of the URL map (variables filled) with its methods."""
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.rsplit("/", 1)[-1].startswith("$"):
            path = re.sub(r"<[^>]+>", "x1", rule.rule)
            found.setdefault(path, set()).update((rule.methods or set()) & set(METHODS))
    return found


def test_every_other_method_on_an_operation_url_is_405(app: Flask, client: FlaskClient,
                                                       callers: Callers) -> None:
    """Each operation URL, each method it does not answer, with and without a trailing
    slash (FHIR URLs answer with one): 405, an OperationOutcome naming the methods, and
    ``Allow`` with exactly them."""
    urls = operation_urls(app)
    assert {"/fhir/Patient/$export", "/fhir/Patient/$validate", "/fhir/$export",
            "/fhir/CareTeam/$rekey"} <= set(urls)
    for path, methods in sorted(urls.items()):
        for method in sorted(set(METHODS) - methods):
            for url in (path, path + "/") if path.startswith("/fhir/") else (path,):
                answer = client.open(url, method=method, headers=callers.la,
                                     json={"resourceType": "Parameters"})
                assert answer.status_code == 405, (method, url, answer.json)
                allowed = {m.strip() for m in answer.headers["Allow"].split(",")}
                assert allowed - {"HEAD", "OPTIONS"} == methods, (method, url, allowed)
                assert answer.json["resourceType"] == "OperationOutcome"
                text = answer.json["issue"][0]["diagnostics"]
                assert all(m in text for m in methods), (method, url, text)


def test_bulk_patient_export_refuses_writes_with_its_methods(client: FlaskClient,
                                                             callers: Callers) -> None:
    """``PUT``/``DELETE``/``PATCH /fhir/Patient/$export`` (which took the route of a Patient
    update and answered 404 "No Patient has this id") are 405 with ``Allow: GET, POST`` (as a
    ``HEAD`` there is); an
    unauthenticated caller is told the same (the method is wrong whoever asks)."""
    for method in ("PUT", "DELETE", "PATCH"):
        for headers in (callers.la, {}):
            answer = client.open("/fhir/Patient/$export", method=method, headers=headers,
                                 json={"resourceType": "Patient"})
            assert answer.status_code == 405, answer.json
            assert answer.headers["Allow"] == "GET, POST"  # HEAD starts no export
            assert "No Patient has this id" not in answer.json["issue"][0]["diagnostics"]


def test_an_operation_name_is_never_read_as_an_id(client: FlaskClient,
                                                  callers: Callers) -> None:
    """``GET /fhir/Patient/$validate`` is 405 (``$validate`` is POSTed), not a read of a
    Patient whose id is "$validate"; an operation no route names is still a 404."""
    answer = client.get("/fhir/Patient/$validate", headers=callers.la)
    assert answer.status_code == 405 and answer.headers["Allow"] == "POST"
    unknown = client.put("/fhir/Patient/$everything", headers=callers.la,
                         json={"resourceType": "Patient"})
    assert unknown.status_code == 404
