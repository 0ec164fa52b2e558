"""The SQLite writer queue (adapter/db.py ``WriterQueue``): its lock file is opened once per
process and locked per write; a forked process opens its own, since a file inherited across
fork shares the parent's flock (flock(2))."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from adapter.db import WriterQueue


def test_the_lock_file_is_opened_once_and_unlocked_after_each_write(tmp_path: Path) -> None:
    """Two writes in turn use one open file; between them another open file can lock it."""
    queue = WriterQueue(f"sqlite:///{tmp_path / 'gateway.db'}")
    with queue:
        first = queue.handle
    with queue:
        assert queue.handle is first
    with open(f"{tmp_path / 'gateway.db'}.writers", "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises if still held
    queue.close()
    assert queue.handle is None


def test_a_forked_process_queues_behind_its_parent(tmp_path: Path) -> None:
    """While the parent holds the queue, a forked child's own lock file cannot take it (the
    inherited one would have: it shares the parent's lock)."""
    queue = WriterQueue(f"sqlite:///{tmp_path / 'gateway.db'}")
    with queue:
        pid = os.fork()
        if pid == 0:  # the child: report by exit code, never return into pytest
            code = 1
            try:
                fcntl.flock(queue._file(str(queue.path)), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    queue.close()


def test_an_in_memory_database_has_no_lock_file() -> None:
    """Without a file there is nothing to lock beside it: the thread lock alone queues."""
    queue = WriterQueue("sqlite://")
    with queue:
        assert queue.handle is None
    queue.close()
