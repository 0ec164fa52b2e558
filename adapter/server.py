"""Serving with gunicorn from inside the CLI (``contactpoint-gateway serve``).

gunicorn refuses oversized requests itself, in plain HTML, before the app sees them: its limits
on header fields are set to 4 times the gateway's own (``GATEWAY_MAX_HEADER_BYTES``, at most
``MAX_HEADER_COUNT`` headers; ``adapter/http.py``), so that the gateway answers a request
over them with a FHIR OperationOutcome (431). Only a header over 4 times the limit, or over
400 headers, still meets gunicorn's answer. The request line keeps gunicorn's maximum (8190
bytes), which is also its ceiling.

The workers are gunicorn's threaded workers with one change (``CoalescingThreadWorker``): the
status line and headers go out in the same ``send`` as the first piece of the body. gunicorn
writes them in two calls, so every small answer cost two system calls and arrived in two TCP
segments (README "Benchmarks"). gunicorn sets ``TCP_NODELAY`` on its listening socket and
Linux copies it to each accepted one, so neither write waits for the other's ACK; the test
``tests/test_serve.py`` checks both on a real server.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.util import import_app
from gunicorn.workers.gthread import ThreadWorker

from adapter.http import MAX_HEADER_COUNT

# How far gunicorn's header limits stand above the gateway's own.
HEADROOM = 4
WORKER_CLASS = "adapter.server.CoalescingThreadWorker"
# Threads per worker: a request spends most of its time waiting for the database, so a few
# threads keep a core busy; more only add lock contention on 2 cores (README "Benchmarks").
THREADS = 4


class HeadersWithBody:
    """A client socket that holds gunicorn's first write of a response (its status line and
    headers) and sends it with the next write, or when the response ends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held: bytes | None = None
        self.first = True

    def sendall(self, data: bytes) -> None:
        """Hold the first write; send the held bytes and ``data`` in one call."""
        if self.first:
            self.first = False
            self.held = bytes(data)
            return
        if self.held is not None:
            data, self.held = self.held + data, None
        self.sock.sendall(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send the held headers, then the file (``wsgi.file_wrapper`` answers)."""
        self.release()
        return self.sock.sendfile(file, offset, count)

    def release(self) -> None:
        """Send what is held (an answer without a body, e.g. a 304 or a HEAD)."""
        if self.held is not None:
            held, self.held = self.held, None
            self.sock.sendall(held)

    def __getattr__(self, name: str) -> Any:
        """Everything else (reads, ``send`` of a 100 Continue, timeouts) is the socket's."""
        return getattr(self.sock, name)


class CoalescingThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering each request through ``HeadersWithBody``."""

    def handle_request(self, req: Any, conn: Any) -> bool:
        """Handle one request; the answer's headers leave with its body."""
        sock = conn.sock
        conn.sock = held = HeadersWithBody(sock)
        try:
            keep_alive: bool = super().handle_request(req, conn)
            held.release()
            return keep_alive
        finally:
            # On an error the held headers are dropped: gunicorn closes the connection or
            # answers 500 itself on the real socket, as when nothing had been sent.
            conn.sock = sock


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application serving the gateway's WSGI app (or ``app``, "module:name": the
    benchmark's bare route is served with the same settings)."""

    def __init__(self, options: dict[str, Any], app: str | None = None) -> None:
        self.options = options
        self.app = app
        super().__init__()

    def load_config(self) -> None:
        """Apply the options to gunicorn's settings."""
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # gunicorn 25+ opens a control socket at one path per user ($HOME/.gunicorn): two
        # servers on one machine would take each other's. The gateway is stopped by signal.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        """Create the app in each worker (after fork: no shared database connections), then
        freeze what it is made of (``frozen``)."""
        if self.app:
            loaded: Flask = import_app(self.app)
        else:
            from adapter import create_app

            loaded = create_app()
        return frozen(loaded)


def frozen(app: Flask) -> Flask:
    """Return ``app`` once every object alive in the worker is moved out of the garbage
    collector's generations (``gc.freeze``): the app, its models, mappings, schemas and
    SQLAlchemy's tables live as long as the worker, and a full collection, which requests'
    allocations set off again and again, walked all of them every time. Measured on a search
    page of 100 Patients on PostgreSQL, in process: about a sixth less CPU (docs/scale.md
    "Reads"). What is frozen is never collected, so garbage is collected first; no request
    is in flight yet."""
    gc.collect()
    gc.freeze()
    return app


def options(host: str, port: int, workers: int, max_header_bytes: int = 16_384,
            threads: int = THREADS) -> dict[str, Any]:
    """Return gunicorn's settings for serving on ``host:port``."""
    return {
        "limit_request_line": 8190,
        "limit_request_field_size": HEADROOM * max_header_bytes,
        "limit_request_fields": HEADROOM * MAX_HEADER_COUNT,
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "threads": threads,
        "accesslog": "-",
        # Log the path only: query strings can hold identifiers of children.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
        "timeout": 60,
    }


def serve(host: str, port: int, workers: int, max_header_bytes: int = 16_384) -> None:
    """Serve on ``host:port`` until stopped."""
    GatewayServer(options(host, port, workers, max_header_bytes)).run()
