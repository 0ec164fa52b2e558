"""The settings and database of a running command line, made once per command: the running
app's when there is one (or the app a caller's ``ScriptInfo`` supplies: the tests), else built
from the environment without the web app, so that ``dispatch`` and the other workers never
construct Flask's app (docs/architecture.md "Settings")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import click
from flask import current_app
from flask.cli import ScriptInfo

from adapter import settings as settings_module
from adapter.db import Database, connect
from adapter.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

_RUNTIME: Final = "contactpoint_gateway.runtime"

# The command group's own app factories (adapter/cli.py): a ScriptInfo still holding one of
# these was given no app by its caller, so the command builds none either.
DEFAULT_FACTORIES: Final[set[Callable[..., Any]]] = set()


def command_runtime() -> tuple[Settings, Database]:
    """Return the settings and database of the running command, made once per command line:
    the app's when one is running or the caller supplied one (tests pass a ``ScriptInfo``),
    else built from the environment without the web app."""
    context = click.get_current_context()
    meta = context.meta
    if _RUNTIME not in meta:
        info = context.ensure_object(ScriptInfo)
        if current_app or info.create_app not in DEFAULT_FACTORIES:
            from adapter.http import settings_of

            app: Flask = info.load_app() if not current_app \
                else current_app._get_current_object()  # type: ignore[attr-defined]
            meta[_RUNTIME] = (settings_of(app), app.extensions["db"])
        else:
            settings = settings_module.load()
            db = connect(settings)
            context.find_root().call_on_close(db.close)
            meta[_RUNTIME] = (settings, db)
    runtime: tuple[Settings, Database] = meta[_RUNTIME]
    return runtime
