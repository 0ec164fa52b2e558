"""The ``contactpoint-gateway`` command line, built on Flask's click group."""

from __future__ import annotations

from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from adapter import create_app
from adapter.db import get_db


def _create_app() -> Flask:
    """Create the app for the CLI from defaults and environment."""
    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False,
             add_version_option=False)
def main() -> None:
    """ContactPoint Gateway: serve, migrate, load demo data and run the directory's run-down."""


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=None, help="Port (default GATEWAY_PORT).")
@click.option("--workers", type=int, default=None, help="Workers (default GATEWAY_WORKERS).")
@with_appcontext
def serve_command(host: str, port: int | None, workers: int | None) -> None:
    """Serve the gateway with gunicorn."""
    from adapter.server import serve

    settings = current_app.config
    serve(host, port or settings["PORT"], workers or settings["WORKERS"],
          settings["MAX_HEADER_BYTES"])


@main.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@with_appcontext
def db_upgrade_command(revision: str) -> None:
    """Migrate the database (GATEWAY_DATABASE_URL) to the latest schema."""
    get_db().upgrade(revision)
    click.echo(f"database at {revision}")


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
    :raises click.ClickException: the decommissioning run-down has begun.
    """
    from adapter.demo import count_children, load_demo_data

    db = get_db()
    from adapter.decommission.phases import current_phase

    if current_phase(db) != "live":  # issue 7: no writes once run-down has begun
        raise click.ClickException(f"The directory is {current_phase(db)}: no data is written.")
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


_register_commands()


def run(args: list[str] | None = None, **extra: Any) -> None:
    """Run the CLI (used by tests and ``python -m adapter``)."""
    main.main(args=args, **extra)
