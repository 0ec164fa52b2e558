"""A dispatcher "zygote" for the crash tests: it builds the settings and the database once
(from ``GATEWAY_*`` environment variables, as ``contactpoint-gateway dispatch`` does) and
then, for each ``fork`` line on stdin, forks a child that runs the dispatcher — so a test can
start and SIGKILL dispatchers dozens of times without paying the start-up each time.
Commands: ``fork`` (prints the child's pid), ``kill PID`` (SIGKILL and reap; prints
``killed``), ``term PID`` (SIGTERM, wait; prints the exit status), ``exit``.

The zygote itself never touches the database and runs no thread, so forking it is safe.
"""

from __future__ import annotations

import os
import signal
import sys

from adapter import settings as settings_module
from adapter.db import Database, connect
from adapter.notify.dispatcher import Dispatcher
from adapter.settings import Settings


def child(settings: Settings, db: Database) -> None:
    """Run a dispatcher until SIGTERM, then exit (never returns)."""
    db.engine.dispose(close=False)
    db.write_engine.dispose(close=False)
    db.read_engine.dispose(close=False)
    dispatcher = Dispatcher(settings, db)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop.set())
    # SIGTERM was blocked across the fork (``serve``): one sent before the handler was set
    # waits until now, and stops the dispatcher gracefully instead of killing it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    dispatcher.run()
    os._exit(0)


def answer(text: str) -> None:
    """Write one answer line."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def serve() -> None:
    """Answer commands on stdin until ``exit``."""
    settings = settings_module.load()
    db = connect(settings)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "fork":
            # A test may ask to stop the child at once (everything was delivered before it
            # started): the child unblocks SIGTERM once its handler is set (``child``).
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            pid = os.fork()
            if pid == 0:
                child(settings, db)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            answer(str(pid))
        elif command in ("kill", "term"):
            os.kill(int(argument), signal.SIGKILL if command == "kill" else signal.SIGTERM)
            _, status = os.waitpid(int(argument), 0)
            answer("killed" if command == "kill" else str(os.waitstatus_to_exitcode(status)))
        elif command == "exit":
            return


if __name__ == "__main__":
    serve()
