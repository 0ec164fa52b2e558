"""The rest-hook channel on its own, against a real HTTP server on 127.0.0.1: only a 2xx
answer is a delivery, a redirect is not followed, Retry-After is read, refused connections
and stalls are failures within the timeout, one pool of keep-alive connections serves every
dispatcher thread, and whatever the receiver answers, the connection is released."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from adapter.notify.channels import MAX_ANSWER, Parcel, RestHook
from adapter.notify.signing import SIGNATURE_HEADER, verify


class _Handler(BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /204, /redirect 302 to /ok, /429 with Retry-After, /500,
    /stall (sleeps 2 s), /big 200 with a body over the channel's limit."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Record the request and its connection, then answer."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen.append((self.path, self.client_address[1],
                                     dict(self.headers.items()), body))
        if self.path == "/stall":
            time.sleep(2)
        status = {"/204": 204, "/redirect": 302, "/429": 429, "/500": 500}.get(self.path, 200)
        answer = b"y" * (MAX_ANSWER * 4) if self.path == "/big" else b"" if status == 204 \
            else b"ok"
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        if status == 429:
            self.send_header("Retry-After", "7")
        if status != 204:
            self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, int, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a stall, a closed connection) is expected: stay quiet."""

    def url(self, path: str) -> str:
        """Return the URL of ``path``."""
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[_Server]:
    """A receiving server on a free port."""
    started = _Server()
    thread = threading.Thread(target=started.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield started
    started.shutdown()
    started.server_close()


def parcel(url: str, timeout: float = 1.0, headers: tuple[str, ...] = ("X-Tenant: a",)) -> Parcel:
    """Return a parcel for ``url``."""
    return Parcel(url, b'{"resourceType":"Bundle"}', "application/fhir+json", headers,
                  "secret", timeout, "ref-1")


def free_port() -> int:
    """Return a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_answers_decide_delivery(server: _Server) -> None:
    """2xx delivers (with the subscription's headers and a valid signature); a redirect is
    a failure and is not followed; 429 carries its Retry-After; 500 fails."""
    channel = RestHook(allow_private=True)  # the receivers listen on 127.0.0.1
    try:
        ok = channel.send(parcel(server.url("/ok")))
        assert (ok.delivered, ok.http_status) == (True, 200)
        assert channel.send(parcel(server.url("/204"))).delivered
        redirected = channel.send(parcel(server.url("/redirect")))
        assert (redirected.delivered, redirected.http_status) == (False, 302)
        limited = channel.send(parcel(server.url("/429")))
        assert (limited.delivered, limited.http_status, limited.retry_after) == (False, 429, 7.0)
        failed = channel.send(parcel(server.url("/500")))
        assert (failed.delivered, failed.detail) == (False, "HTTP 500")
    finally:
        channel.close()
    assert [path for path, *_ in server.seen] == ["/ok", "/204", "/redirect", "/429", "/500"]
    _path, _port, headers, body = server.seen[0]
    assert headers["X-Tenant"] == "a" and headers["Content-Type"] == "application/fhir+json"
    assert verify("secret", body, headers[SIGNATURE_HEADER])


def test_refused_and_stalled_receivers_fail_within_the_timeout(server: _Server) -> None:
    """Nothing listening: "connection failed"; an answer slower than the timeout: "timeout",
    after about the timeout; a header the HTTP client cannot send: a failure, not a crash."""
    channel = RestHook(allow_private=True)  # the receivers listen on 127.0.0.1
    try:
        refused = channel.send(parcel(f"http://127.0.0.1:{free_port()}/x"))
        assert (refused.delivered, refused.detail) == (False, "connection failed")
        started = time.monotonic()
        stalled = channel.send(parcel(server.url("/stall"), timeout=0.5))
        assert (stalled.delivered, stalled.detail) == (False, "timeout")
        assert time.monotonic() - started < 1.5
        odd = channel.send(parcel(server.url("/ok"), headers=("X-Cost: 5\u20ac",)))
        assert not odd.delivered and odd.detail == "request failed: UnicodeEncodeError"
        assert channel.send(parcel(server.url("/ok"))).delivered  # the channel still works
    finally:
        channel.close()


def test_connections_are_reused_across_threads_and_released(server: _Server) -> None:
    """Four threads sending 25 notifications each share at most four keep-alive connections;
    an oversized answer closes its connection rather than blocking or poisoning the pool;
    ``close`` drops the pool and the channel reconnects."""
    channel = RestHook(allow_private=True)  # the receivers listen on 127.0.0.1

    def send_many() -> None:
        for _ in range(25):
            assert channel.send(parcel(server.url("/ok"))).delivered

    try:
        threads = [threading.Thread(target=send_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ports = {port for path, port, *_ in server.seen if path == "/ok"}
        assert len(server.seen) == 100 and len(ports) <= 4
        assert channel.send(parcel(server.url("/big"))).delivered
        assert channel.send(parcel(server.url("/ok"))).delivered
        channel.close()
        assert channel.send(parcel(server.url("/ok"))).delivered
    finally:
        channel.close()
