"""The dispatcher is built from Settings and a Database and runs with Flask not importable
(adapter/notify/dispatcher.py, docs/architecture.md "Settings")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from adapter.db import Database
from tests.api.conftest import bearer
from tests.conftest import REPO
from tests.notify.helpers import subscribe, subscription
from tests.notify.receivers import Receiver
from tests.notify.test_crash import dispatcher_env, emit

ROUND = textwrap.dedent("""
    import sys
    sys.modules["flask"] = None  # importing Flask now fails
    from adapter import settings
    from adapter.db import connect
    from adapter.notify.dispatcher import Dispatcher

    gateway = settings.load()
    print(Dispatcher(gateway, connect(gateway)).run_once())
""")


def test_a_dispatcher_round_runs_without_flask(app: Flask, client: FlaskClient,
                                               receiver: Receiver, db: Database) -> None:
    """A subscription's handshake and two decommission notices are delivered by a dispatcher
    in a process where Flask cannot be imported."""
    headers = bearer(client, app, "no-flask", "E09000001")
    subscribe(client, headers, subscription("decommission-notice", receiver.url("/no-flask")))
    emit(db, 1, 2)
    env = dispatcher_env(db, Path(app.config["INSTANCE_PATH"]))
    done = subprocess.run([sys.executable, "-c", ROUND], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert len(receiver.bodies("/no-flask")) == 3
