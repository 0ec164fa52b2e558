"""``contactpoint-gateway serve`` answers each request in one write: the status line, headers
and body reach the client in one TCP segment (``adapter/server.py``), on a real gunicorn server
over real sockets, and keep-alive connections and answers without a body still work."""

from __future__ import annotations

import gc
import socket
import struct
import sys
from pathlib import Path

import orjson

from adapter.server import GatewayServer, options
from tests.security.test_header_limit import served

__all__ = ["served"]  # the fixture: `serve` on the test database, its port

BIN = Path(sys.executable).parent
# Offset of tcpi_data_segs_in (segments that carried data) in struct tcp_info of Linux's
# include/uapi/linux/tcp.h (since Linux 4.6).
DATA_SEGS_IN = 152


def data_segments_in(sock: socket.socket) -> int:
    """Return how many TCP segments with data this connection has received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, DATA_SEGS_IN)[0])


def exchange(sock: socket.socket, method: str, path: str,
             accept: str = "application/fhir+json") -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request on a kept-alive connection; read the whole answer (its
    length from Content-Length); return status, headers (lower-case names) and body."""
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n"
                 .encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += receive(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = 0 if method == "HEAD" else int(headers["content-length"])
    while len(body) < length:
        body += receive(sock)
    assert len(body) == length, "more bytes than Content-Length"
    return int(status_line.split()[1]), headers, body


def receive(sock: socket.socket) -> bytes:
    """Return the next bytes of the answer (the server must not close the connection)."""
    chunk = sock.recv(1 << 20)
    assert chunk, "the server closed the connection"
    return chunk


def test_each_answer_arrives_in_one_tcp_segment(served: int) -> None:
    """Answers of a few hundred bytes and of ~20 KB, JSON and XML, 200 and 401, one after
    another on one keep-alive connection: each arrives as one segment of data, not as its
    headers and then its body."""
    requests = [("/fhir/metadata", "application/fhir+json", 200),
                ("/fhir/Patient/unknown", "application/fhir+json", 401),
                ("/fhir/metadata", "application/fhir+xml", 200),
                ("/fhir/Patient?family=x", "application/fhir+xml", 401)]
    with socket.create_connection(("127.0.0.1", served), timeout=20) as sock:
        for path, accept, expected in requests:
            before = data_segments_in(sock)
            status, headers, body = exchange(sock, "GET", path, accept)
            assert status == expected, body[:300]
            assert "chunked" not in headers.get("transfer-encoding", "")
            assert headers["connection"] == "keep-alive"
            assert ("xml" in accept) == ("xml" in headers["content-type"])
            if "json" in accept:
                assert orjson.loads(body)["resourceType"] in ("CapabilityStatement",
                                                              "OperationOutcome")
            assert data_segments_in(sock) - before == 1, (path, accept)


def test_an_answer_without_a_body_is_sent_whole(served: int) -> None:
    """A HEAD answer (headers only, held until the response ends) arrives in one segment,
    and the connection then serves the next request."""
    with socket.create_connection(("127.0.0.1", served), timeout=20) as sock:
        before = data_segments_in(sock)
        status, headers, body = exchange(sock, "HEAD", "/fhir/metadata")
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 1000
        assert data_segments_in(sock) - before == 1
        status, _headers, body = exchange(sock, "GET", "/fhir/metadata")
        assert status == 200
        assert orjson.loads(body)["resourceType"] == "CapabilityStatement"


def test_a_worker_freezes_what_its_app_is_made_of() -> None:
    """A worker's loaded app, and everything alive with it, is out of the garbage collector's
    generations (``adapter.server.frozen``): full collections no longer walk it."""
    assert gc.get_freeze_count() == 0
    server = GatewayServer(options("127.0.0.1", 0, 1), app="bench.bare_app:app")
    try:
        app = server.load()
        assert app.name == "bench.bare_app"
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
