"""A dispatcher "zygote" for the crash tests: it builds the app once (from ``GATEWAY_*``
environment variables, as the CLI does) and then, for each ``fork`` line on stdin, forks a
child that runs the dispatcher — so a test can start and SIGKILL dispatchers dozens of times
without paying the app's start-up each time. Commands: ``fork`` (prints the child's pid),
``kill PID`` (SIGKILL and reap; prints ``killed``), ``term PID`` (SIGTERM, wait; prints the
exit status), ``exit``.

The zygote itself never touches the database and runs no thread, so forking it is safe.
"""

from __future__ import annotations

import os
import signal
import sys

from adapter import create_app
from adapter.notify.dispatcher import Dispatcher


def child(app: object) -> None:
    """Run a dispatcher until SIGTERM, then exit (never returns)."""
    from flask import Flask

    assert isinstance(app, Flask)
    app.extensions["db"].engine.dispose(close=False)
    app.extensions["db"].write_engine.dispose(close=False)
    dispatcher = Dispatcher(app)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop.set())
    dispatcher.run()
    os._exit(0)


def answer(text: str) -> None:
    """Write one answer line."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def serve() -> None:
    """Answer commands on stdin until ``exit``."""
    app = create_app()
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "fork":
            pid = os.fork()
            if pid == 0:
                child(app)
            answer(str(pid))
        elif command in ("kill", "term"):
            os.kill(int(argument), signal.SIGKILL if command == "kill" else signal.SIGTERM)
            _, status = os.waitpid(int(argument), 0)
            answer("killed" if command == "kill" else str(os.waitstatus_to_exitcode(status)))
        elif command == "exit":
            return


if __name__ == "__main__":
    serve()
