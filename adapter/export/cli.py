"""``contactpoint-gateway export-sweep``: the export housekeeping a scheduler can run."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from adapter.db import get_db
from adapter.export.jobs import ExportSettings, sweep
from adapter.security.policy.phase import command_kind


@command_kind("admin")  # it only deletes expired exports
@click.command("export-sweep")
@with_appcontext
def export_sweep_command() -> None:
    """Delete expired bulk exports with their files and fail stalled ones."""
    result = sweep(get_db(), ExportSettings.of(current_app.config))
    click.echo(f"export sweep: {result.expired} expired, {result.stalled} stalled, "
               f"{result.orphans} orphan folders removed")
