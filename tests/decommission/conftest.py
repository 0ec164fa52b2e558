"""Fixtures for the decommissioning tests: the app with delivery and export settings fit for
tests (the notification engineer's), a rest-hook receiver on 127.0.0.1, and callers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from adapter import create_app
from adapter.db import Database
from adapter.decommission import phases
from tests.notify.conftest import NOTIFY_SETTINGS
from tests.notify.conftest import mesh_sandbox as mesh_sandbox  # the session's MESH sandbox
from tests.notify.receivers import Receiver

# Purge Tasks name at most five children inline: the drill's exporting system holds more, so
# its Task refers to the NDJSON list.
DRILL_SETTINGS: dict[str, Any] = {**NOTIFY_SETTINGS, "EXPORT_INLINE": True,
                                  "DECOMMISSION_INLINE_CHILDREN": 5}


@pytest.fixture
def app(db: Database, tmp_path: Path) -> Iterator[Flask]:
    """The gateway app on the test database (instance folder: ``tmp_path/instance``)."""
    instance = tmp_path / "instance"
    application = create_app({"DATABASE_URL": db.url, "INSTANCE_PATH": str(instance),
                              "TESTING": True, **DRILL_SETTINGS})
    application.extensions["db"].close()
    application.extensions["db"] = db
    yield application
    phases.forget(db)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP rest-hook receiver on 127.0.0.1."""
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app served on 127.0.0.1 by werkzeug in a thread; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_URL"] = base  # tokens are issued for, and checked at, this address
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    thread.join(timeout=10)
