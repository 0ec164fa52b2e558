"""Statements kept for the life of a process are built once even when the first requests of a
threaded worker ask for them together (adapter/db.py ``built_once``): an equal copy of a
statement would make SQLAlchemy match its 132 result columns anew on every read."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from adapter.db import built_once

THREADS = 8


def test_threads_asking_together_get_one_value_built_once() -> None:
    """Eight threads that ask at the same moment, while the first build is under way, all get
    the one value built (``functools.cache`` would build it in each)."""
    builds: list[int] = []

    @built_once
    def build(admin: bool) -> object:
        builds.append(1)
        time.sleep(0.05)  # the others ask while this build runs
        return SimpleNamespace(admin=admin)

    start, got = threading.Barrier(THREADS), []

    def ask() -> None:
        start.wait()
        got.append(build(False))

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(builds) == 1
    assert len(got) == THREADS and all(value is got[0] for value in got)
    assert build(True) is not got[0] and len(builds) == 2  # each argument its own value
    assert build(True) is build(True) and len(builds) == 2

