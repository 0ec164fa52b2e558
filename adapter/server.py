"""Serving with gunicorn from inside the CLI (``contactpoint-gateway serve``).

gunicorn refuses oversized requests itself, in plain HTML, before the app sees them: its limits
on header fields are set to 4 times the gateway's own (``GATEWAY_MAX_HEADER_BYTES``, at most
``MAX_HEADER_COUNT`` headers; ``adapter/http.py``), so that the gateway answers a request
over them with a FHIR OperationOutcome (431). Only a header over 4 times the limit, or over
400 headers, still meets gunicorn's answer. The request line keeps gunicorn's maximum (8190
bytes), which is also its ceiling.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from adapter.http import MAX_HEADER_COUNT

# How far gunicorn's header limits stand above the gateway's own.
HEADROOM = 4


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application serving the gateway's WSGI app."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply the options to gunicorn's settings."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """Create the app in each worker (after fork: no shared database connections)."""
        from adapter import create_app

        return create_app()


def serve(host: str, port: int, workers: int, max_header_bytes: int = 16_384) -> None:
    """Serve on ``host:port`` until stopped."""
    GatewayServer({
        "limit_request_line": 8190,
        "limit_request_field_size": HEADROOM * max_header_bytes,
        "limit_request_fields": HEADROOM * MAX_HEADER_COUNT,
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        "accesslog": "-",
        # Log the path only: query strings can hold identifiers of children.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
        "timeout": 60,
    }).run()
