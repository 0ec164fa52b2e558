"""Serving with gunicorn from inside the CLI (``contactpoint-gateway serve``)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


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


def serve(host: str, port: int, workers: int) -> None:
    """Serve on ``host:port`` until stopped."""
    GatewayServer({
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        "accesslog": "-",
        # Log the path only: query strings can hold identifiers of children.
        "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms',
        "timeout": 60,
    }).run()
