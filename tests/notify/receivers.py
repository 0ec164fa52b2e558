"""Real HTTP receivers on 127.0.0.1 for notification tests and the benchmark: each records
what it is sent and can be told to refuse connections, answer 500, stall, or answer 429 with
Retry-After."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One POST a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    """Records POSTs and answers as its server's mode says."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would offer
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        """Read the body, then answer per mode (recording only accepted deliveries)."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # the sender died mid-request: nothing was delivered
            self.close_connection = True
            return
        owner = self.server.owner
        mode = owner.mode
        if mode == "slow":
            time.sleep(owner.stall)
        if mode == "ok":
            owner.record(Received(self.path, dict(self.headers.items()), body))
            self._answer(200)
        elif mode == "429":
            self._answer(429, {"Retry-After": str(owner.retry_after)})
        else:
            self._answer(500)

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Send an empty answer."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Stay quiet."""


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its Receiver."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, owner: Receiver, port: int) -> None:
        self.owner = owner
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track each connection, so that stopping can cut kept-alive ones too."""
        with self.open_lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget a finished connection."""
        with self.open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed dispatcher) is expected here: stay quiet."""

    def cut_connections(self) -> None:
        """Close every open connection (a receiver going down drops its clients)."""
        with self.open_lock:
            connections, self.open = list(self.open), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


class Receiver:
    """A receiver: ``mode`` is ok, 500, slow (stalls ``stall`` seconds) or 429."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.stall = 3.0
        self.retry_after = 7
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def record(self, item: Received) -> None:
        """Keep one delivery."""
        with self._lock:
            self.received.append(item)

    def url(self, path: str = "/hook") -> str:
        """Return the URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        """Listen (on the same port as before, if it was started already)."""
        self._server = _Server(self, self.port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start`` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._server = None

    def bodies(self, path: str | None = None) -> list[Received]:
        """Return what was received (on ``path`` only, if given)."""
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]
