"""Oversized request headers are answered by the gateway with a 431 OperationOutcome (JSON or
XML as negotiated), under the documented ``GATEWAY_MAX_HEADER_BYTES`` and header count, both
in the app and behind the real gunicorn server ``contactpoint-gateway serve`` starts."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree

from adapter.db import Database
from adapter.http import MAX_HEADER_COUNT
from tests.conftest import REPO
from tests.notify.test_crash import dispatcher_env

BIN = Path(sys.executable).parent
LIMIT = 16_384  # the default of GATEWAY_MAX_HEADER_BYTES
FHIR = "{http://hl7.org/fhir}"


def oversized_cases() -> dict[str, dict[str, str]]:
    """Return header sets over the limits: one huge header, many small ones, and a total
    over the limit made of headers each under it."""
    return {
        "one huge header": {"X-Filler": "a" * (LIMIT + 10)},
        "too many headers": {f"X-H{n}": "1" for n in range(MAX_HEADER_COUNT + 1)},
        "too much in total": {f"X-Part{n}": "b" * 3000 for n in range(6)},
    }


def assert_431(status: int, content_type: str, body: bytes) -> None:
    """Check a 431 OperationOutcome in JSON or XML that says what the limit is."""
    assert status == 431, body[:300]
    if "xml" in content_type:
        root = etree.fromstring(body)
        assert root.tag == f"{FHIR}OperationOutcome"
        assert root.find(f"{FHIR}issue/{FHIR}code").get("value") == "too-long"
        text = root.find(f"{FHIR}issue/{FHIR}diagnostics").get("value")
    else:
        outcome = orjson.loads(body)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "too-long"
        text = outcome["issue"][0]["diagnostics"]
    assert "at most" in text


@pytest.mark.parametrize("case", sorted(oversized_cases()))
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_the_app_answers_oversized_headers_with_431(client: FlaskClient, case: str,
                                                   fmt: str) -> None:
    """Every route, public or not: 431 before authentication reads anything."""
    headers = {**oversized_cases()[case], "Accept": f"application/fhir+{fmt}"}
    for path in ("/fhir/metadata", "/fhir/Patient", "/no-such-route"):
        response = client.get(path, headers=headers)
        assert_431(response.status_code, response.content_type, response.data)


def test_headers_within_the_limits_pass(client: FlaskClient) -> None:
    """A request just under both limits is served."""
    headers = {f"X-H{n}": "c" * 100 for n in range(MAX_HEADER_COUNT - 10)}
    assert client.get("/fhir/metadata", headers=headers).status_code == 200


def test_the_limit_is_a_setting(app: Flask, client: FlaskClient) -> None:
    """``GATEWAY_MAX_HEADER_BYTES`` sets it (here lowered for the test)."""
    app.config["MAX_HEADER_BYTES"] = 2000
    response = client.get("/fhir/metadata", headers={"X-Filler": "d" * 2000})
    assert_431(response.status_code, response.content_type, response.data)


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(db: Database, tmp_path: Path) -> Iterator[int]:
    """``contactpoint-gateway serve`` (gunicorn, one worker) on the test database; its port."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [str(BIN / "contactpoint-gateway"), "serve", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1"], cwd=REPO, env=dispatcher_env(db, tmp_path),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_answer(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_for_answer(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until the server answers (gunicorn listens before its worker loads the app)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited"
        try:
            if fetch(port, {})[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not answer")


def fetch(port: int, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """GET /fhir/metadata over a real connection; return status, content type and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", "/fhir/metadata", headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_gunicorn_lets_the_gateway_answer_oversized_headers(served: int) -> None:
    """Behind gunicorn too, every oversized case is the gateway's 431 OperationOutcome (not
    gunicorn's HTML), and headers within the limits are served."""
    for case, headers in oversized_cases().items():
        for fmt in ("json", "xml"):
            status, content_type, body = fetch(served, {**headers,
                                                        "Accept": f"application/fhir+{fmt}"})
            assert fmt in content_type, (case, content_type, body[:200])
            assert_431(status, content_type, body)
    assert fetch(served, {"X-Filler": "e" * (LIMIT - 1000)})[0] == 200
