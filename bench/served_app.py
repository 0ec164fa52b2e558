"""Serve a WSGI app with the gateway's own gunicorn settings (``adapter/server.py``), for
``bench.http``: the gateway and the bare baseline route run under the same server.

    python -m bench.served_app APP PORT [setting=value ...]

APP is "module:name"; each ``setting=value`` replaces one gunicorn setting (e.g.
``worker_class=gthread threads=8``), to compare others.
"""

from __future__ import annotations

import sys
from typing import Any

from adapter import config
from adapter.server import GatewayServer, options


def value_of(text: str) -> Any:
    """Return a setting's value: an integer when it is one, else the text."""
    return int(text) if text.isdigit() else text


def settings(port: int, overrides: list[str]) -> dict[str, Any]:
    """Return the gateway's settings on 127.0.0.1:``port`` with ``overrides`` applied."""
    gateway = config.load()  # GATEWAY_WORKERS and GATEWAY_MAX_HEADER_BYTES, as ``serve``
    chosen = options("127.0.0.1", port, gateway["WORKERS"], gateway["MAX_HEADER_BYTES"])
    for item in overrides:
        key, _, text = item.partition("=")
        chosen[key] = value_of(text)
    return chosen


def run(argv: list[str]) -> None:
    """Serve until stopped."""
    app, port, *overrides = argv
    GatewayServer(settings(int(port), overrides), app).run()


if __name__ == "__main__":
    run(sys.argv[1:])
