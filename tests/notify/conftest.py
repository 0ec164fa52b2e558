"""Fixtures for notification tests: the app with delivery settings fit for tests, demo data
and callers with real tokens, HTTP receivers on 127.0.0.1 and a running mesh-sandbox."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from adapter import create_app
from adapter.db import Database
from tests.api.conftest import Callers, callers, demo  # noqa: F401 (fixtures)
from tests.conftest import TEST_SETTINGS
from tests.notify.receivers import Receiver

# Small backoff, three attempts before a notification is dead, short timeouts.
NOTIFY_SETTINGS: dict[str, Any] = {
    **TEST_SETTINGS, "NOTIFY_ALLOW_HTTP": True, "NOTIFY_BACKOFF_BASE_MS": 10,
    "NOTIFY_BACKOFF_MAX": 1, "NOTIFY_RETRY_BUDGET": 3, "NOTIFY_TIMEOUT": 5, "NOTIFY_POLL_MS": 20,
    "NOTIFY_THREADS": 2}
MESH_SHARED_KEY = "TestKey"  # the sandbox's SHARED_KEY; mesh-client's default differs
MESH_MAILBOXES = ("X26ABC1", "X26ABC2", "X26ABC3")  # mesh-sandbox's built-in mailboxes


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mesh_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mesh-sandbox on 127.0.0.1 (uvicorn, one worker: its state is in-process); its URL."""
    port = free_port()
    data = tmp_path_factory.mktemp("mesh")
    env = {**os.environ, "STORE_MODE": "file", "MAILBOXES_DATA_DIR": str(data),
           "SHARED_KEY": MESH_SHARED_KEY}
    log = open(data / "sandbox.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "mesh_sandbox.api:app", "--host",
         "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until ``port`` accepts connections (the sandbox has started)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "mesh-sandbox exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("mesh-sandbox did not start")


@pytest.fixture
def settings() -> dict[str, Any]:
    """Extra app settings of a test (a test may add to them before ``app`` is built)."""
    return dict(NOTIFY_SETTINGS)


@pytest.fixture
def app(db: Database, tmp_path: Path, settings: dict[str, Any]) -> Flask:
    """The gateway app on the test database, with the delivery settings above."""
    application = create_app({"DATABASE_URL": db.url, "INSTANCE_PATH": str(tmp_path),
                              "TESTING": True, **settings})
    application.extensions["db"].close()
    application.extensions["db"] = db
    return application


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP receiver on 127.0.0.1."""
    started = Receiver().start()
    yield started
    started.stop()
