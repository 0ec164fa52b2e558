"""Hostile bodies sent through HTTP to every route that takes one: XXE naming
``file:///etc/passwd`` or a named pipe, billion laughs, parameter entities, an external DTD on
disk or on a (local) server, and bodies over the size limit — refused with a 400 or 413
OperationOutcome, without any file being opened, any connection being made or anything being
written. (The parser itself is tested in tests/fhir/test_xml.py.)"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from tests.api.conftest import Callers
from tests.security.routes import Route, declared_routes, table_counts

FHIR_XML = "application/fhir+xml"
HANG_GUARD = 30.0  # seconds; a parser that opened the pipe would block for ever


def body_routes(app: Flask) -> list[Route]:
    """Return the routes that take an XML body: FHIR writes, $validate, the Bundle endpoint
    and the directory imports (searches by POST take forms, the token endpoint too)."""
    return [r for r in declared_routes(app) if r.method in ("POST", "PUT")
            and (r.rule.startswith("/fhir") or r.rule.startswith("/directory/"))
            and not r.rule.endswith("/_search") and r.access is not None
            and not r.access.public]


def content_type(route: Route) -> str:
    """Return the XML media type the route accepts."""
    return "application/xml" if route.rule.startswith("/directory/") else FHIR_XML


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe: a parser that opened it to read would block until a writer came."""
    path = tmp_path / "secret"
    os.mkfifo(path)
    yield path
    try:  # release a reader that should never have come
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def nobody_reads(path: Path) -> bool:
    """Return True when no process has the pipe open for reading (ENXIO on a writer's open)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as exc:
        return exc.errno == errno.ENXIO
    return False


def payloads(fifo: Path, port: int) -> dict[str, bytes]:
    """Return the hostile documents, by name."""
    root = b'<Patient xmlns="http://hl7.org/fhir"><id value="&e;"/></Patient>'
    laughs = b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 12))
    return {
        "xxe-passwd": b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY e SYSTEM '
                      b'"file:///etc/passwd">]>' + root,
        "xxe-pipe": b'<!DOCTYPE Patient [<!ENTITY e SYSTEM "file://%s">]>' % bytes(fifo) + root,
        "parameter-entity": b'<!DOCTYPE Patient [<!ENTITY %% p SYSTEM "file://%s"> %%p;]>'
                            b'<Patient xmlns="http://hl7.org/fhir"/>' % bytes(fifo),
        "external-dtd-file": b'<!DOCTYPE Patient SYSTEM "file://%s">'
                             b'<Patient xmlns="http://hl7.org/fhir"/>' % bytes(fifo),
        "external-dtd-http": b'<?xml version="1.0"?>\n<!DOCTYPE Patient SYSTEM '
                             b'"http://127.0.0.1:%d/fhir.dtd"><Patient xmlns='
                             b'"http://hl7.org/fhir"/>' % port,
        "billion-laughs": b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY l0 "lol">' + laughs
                          + b']><Patient xmlns="http://hl7.org/fhir"><id value="&l11;"/>'
                            b'</Patient>',
    }


def send(client: FlaskClient, route: Route, headers: dict[str, str], body: bytes,
         mimetype: str) -> Any:
    """Send ``body`` to ``route`` in a thread; fail if it does not come back (a parser blocked
    on the pipe) rather than hang the suite."""
    answers: list[Any] = []

    def request() -> None:
        with client.open(route.url(resource_id="x"), method=route.method, data=body,
                         headers={**headers, "Content-Type": mimetype}) as response:
            response.get_data()
            answers.append(response)

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(HANG_GUARD)
    assert not worker.is_alive(), f"{route}: the request blocked: a file was opened"
    assert answers, f"{route}: the request failed without an answer"
    return answers[0]


def test_hostile_xml_is_refused_by_every_route_that_takes_a_body(
        app: Flask, client: FlaskClient, callers: Callers, demo: Database, fifo: Path) -> None:
    """400 OperationOutcome for each payload and route; no file opened, no connection made,
    nothing written, nothing of /etc/passwd in any answer."""
    routes = body_routes(app)
    assert len(routes) >= 5
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        hostile = payloads(fifo, server.getsockname()[1])
        for route in routes:
            for name, body in hostile.items():
                before = table_counts(demo)
                response = send(client, route, callers.admin, body, content_type(route))
                assert response.status_code == 400, (str(route), name, response.data[:300])
                assert response.json["resourceType"] == "OperationOutcome"
                assert b"root:" not in response.data
                assert nobody_reads(fifo), (str(route), name)
                assert table_counts(demo) == before, (str(route), name)
        with pytest.raises(TimeoutError):
            server.accept()


def test_oversize_bodies_are_413(app: Flask, client: FlaskClient, callers: Callers,
                                 demo: Database) -> None:
    """A body over the configured limit is refused with 413 before it is parsed, whether its
    length is declared or not; a search form over the form limit too."""
    app.config["MAX_BODY_BYTES"] = 10_000
    app.config["MAX_IMPORT_BYTES"] = 10_000
    big_json = b'{"resourceType": "Patient", "text": "' + b"x" * 20_000 + b'"}'
    big_xml = b'<Patient xmlns="http://hl7.org/fhir">' + b"<!-- x -->" * 2_000 + b"</Patient>"
    for route in body_routes(app):
        for body, mimetype in ((big_json, "application/fhir+json"),
                               (big_xml, content_type(route))):
            if route.rule.startswith("/directory/") and "json" in mimetype:
                continue
            before = table_counts(demo)
            response = send(client, route, callers.admin, body, mimetype)
            assert response.status_code == 413, (str(route), mimetype, response.data[:200])
            assert response.json["issue"][0]["code"] == "too-costly"
            assert table_counts(demo) == before
    for path in ("/fhir/Patient/_search", "/auth/token"):
        response = client.post(path, data={"family": "x" * 20_000}, headers=callers.admin)
        assert response.status_code == 413, path
    app.config["MAX_BODY_BYTES"] = 5_000_000
    response = client.post("/fhir/Patient/_search", data={"family": "x" * 60_000},
                           headers=callers.admin)
    assert response.status_code == 400  # a search value that long is refused, not run
    assert response.json["issue"][0]["location"] == ["http.family"]


def test_deeply_nested_json_and_wrong_content_types_are_refused(
        client: FlaskClient, callers: Callers) -> None:
    """JSON nested beyond the depth limit is a 400; a body of another media type a 415."""
    deep = b'{"resourceType": "Patient", "extension": ' + b"[" * 100 + b"]" * 100 + b"}"
    response = client.post("/fhir/Patient", data=deep, headers={
        **callers.admin, "Content-Type": "application/fhir+json"})
    assert response.status_code == 400
    response = client.post("/fhir/Patient", data=b"name=x", headers={
        **callers.admin, "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json["resourceType"] == "OperationOutcome"
