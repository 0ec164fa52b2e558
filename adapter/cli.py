"""The ``contactpoint-gateway`` command line, built on Flask's click group.

A command that needs the web app (``with_appcontext``) gets it built once; one that needs only
the settings and the database (``dispatch``, the phase check) gets them from
:func:`command_runtime`, without building the app (docs/architecture.md "Settings")."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext

from adapter import create_app
from adapter.db import get_db
from adapter.decommission.gate import command_refusal, skipped
from adapter.runtime import DEFAULT_FACTORIES, command_runtime
from adapter.security.policy.phase import (
    ALWAYS,
    CommandPhase,
    CommandRefused,
    command_kind,
    declared_phase,
)


def _create_app() -> Flask:
    """Create the app for the CLI from defaults and environment."""
    return create_app()


DEFAULT_FACTORIES.add(_create_app)


class PhaseGroup(FlaskGroup):
    """The command group: every command in its tree, at any depth, runs through the phase
    policy first (``adapter.security.policy.phase``), by the kind it declares with
    ``command_kind``; a command that declares none is refused."""

    def invoke(self, ctx: click.Context) -> Any:
        """Guard every command of the tree (those added since too), then run the one asked."""
        guard(self, "")
        return super().invoke(ctx)


def guard(cmd: click.Command, name: str) -> None:
    """Put the phase check in front of ``cmd``'s callback, or of every command under it."""
    if isinstance(cmd, click.Group):
        for sub_name, sub in cmd.commands.items():
            guard(sub, f"{name} {sub_name}".strip())
        return
    callback = cmd.callback
    if callback is None or getattr(callback, "phase_guarded", False):
        return
    cmd.callback = _guarded(callback, name, cmd)


def _guarded(callback: Callable[..., Any], name: str,
             cmd: click.Command) -> Callable[..., Any]:
    """Return ``callback`` behind the phase policy."""
    @functools.wraps(callback)
    def run(*args: Any, **params: Any) -> Any:
        declared = declared_phase(cmd)
        if declared is None:
            raise click.ClickException(f"`{name}` declares no kind for the decommissioning "
                                       "phases (adapter.security.policy.command_kind): refused.")
        if declared.kind not in ALWAYS and not _phase_allows(name, declared, params):
            return None
        return callback(*args, **params)
    run.phase_guarded = True  # type: ignore[attr-defined]
    return run


def _phase_allows(name: str, declared: CommandPhase, params: dict[str, Any]) -> bool:
    """Return whether the current phase lets ``name`` run (False: it has nothing to do).

    :raises CommandRefused: the phase refuses it.
    """
    from adapter.decommission.phases import read_plan

    _settings, db = command_runtime()
    plan = read_plan(db)  # not the per-process cache: a command runs once, on the latest
    refusal = command_refusal(name, declared, plan)
    if refusal is None:
        return True
    if plan is not None and declared.skip_flag and params.get(declared.skip_flag):
        click.echo(skipped(name, declared.skip_flag, plan))
        return False
    raise CommandRefused(refusal)


@click.group(cls=PhaseGroup, create_app=_create_app, add_default_commands=False,
             add_version_option=False)
def main() -> None:
    """ContactPoint Gateway: serve, migrate, load demo data and run the directory's run-down."""


@command_kind("meta")  # the server itself applies the phase to each request
@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=None, help="Port (default GATEWAY_PORT).")
@click.option("--workers", type=int, default=None, help="Workers (default GATEWAY_WORKERS).")
def serve_command(host: str, port: int | None, workers: int | None) -> None:
    """Serve the gateway with gunicorn."""
    from adapter.server import serve

    settings, _db = command_runtime()
    serve(host, port or settings.port, workers or settings.workers, settings.max_header_bytes)


@main.group("db")
def db_group() -> None:
    """Database schema commands."""


@command_kind("admin")
@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@with_appcontext
def db_upgrade_command(revision: str) -> None:
    """Migrate the database (GATEWAY_DATABASE_URL) to the latest schema."""
    get_db().upgrade(revision)
    click.echo(f"database at {revision}")


@command_kind("write", skip_flag="if_empty")  # `make run` runs it with --if-empty
@main.command("demo-data")
@click.option("--children", type=int, default=1000, show_default=True, help="Children to write.")
@click.option("--authorities", type=int, default=3, show_default=True,
              help="Local authorities to spread them over.")
@click.option("--seed", type=int, default=2026, show_default=True, help="Random seed.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the database holds children.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@with_appcontext
def demo_data_command(children: int, authorities: int, seed: int, if_empty: bool,
                      quiet: bool) -> None:
    """Write synthetic, entirely fictional directory entries (deterministic for a seed).

    \f
    :raises click.BadParameter: the amounts are out of range.
    """
    from adapter.demo import count_children, load_demo_data

    db = get_db()
    if if_empty and (existing := count_children(db)):
        click.echo(f"database already holds {existing} children: no demo data written")
        return
    try:
        written = load_demo_data(db, children=children, authorities=authorities, seed=seed,
                                 progress=not quiet)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(f"wrote {written} children")


# Flask's generic options (--app, --env-file, --debug) do not apply: the app is always ours.
main.params = [p for p in main.params if p.name not in {"app", "env_file", "debug"}]


def _register_commands() -> None:
    """Add the command groups that live beside their services."""
    from adapter.decommission.cli import decommission_group
    from adapter.directory.cli import export_command, import_command
    from adapter.export.cli import export_sweep_command
    from adapter.holder.cli import holder_command
    from adapter.kit.cli import validate_command
    from adapter.notify.cli import dispatch_command, events_group
    from adapter.security.cli import audit_group, clients_group, token_command

    main.add_command(clients_group)
    main.add_command(token_command)
    main.add_command(audit_group)
    main.add_command(export_sweep_command)
    main.add_command(import_command)
    main.add_command(export_command)
    main.add_command(dispatch_command)
    main.add_command(events_group)
    main.add_command(decommission_group)
    main.add_command(holder_command)
    main.add_command(validate_command)


_register_commands()
guard(main, "")  # now, so that a command group invoked on its own (tests) is guarded too


def run(args: list[str] | None = None, **extra: Any) -> None:
    """Run the CLI (used by tests and ``python -m adapter``)."""
    main.main(args=args, **extra)
