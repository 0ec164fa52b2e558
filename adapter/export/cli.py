"""``contactpoint-gateway export-sweep``: the export housekeeping a scheduler can run."""

from __future__ import annotations

import click

from adapter.export.jobs import ExportSettings, sweep
from adapter.security.policy.phase import command_kind


@command_kind("admin")  # it only deletes expired exports
@click.command("export-sweep")
def export_sweep_command() -> None:
    """Delete expired bulk exports with their files and fail stalled ones (with the settings
    and the database only: no web app)."""
    from adapter.runtime import command_runtime

    settings, db = command_runtime()
    result = sweep(db, ExportSettings.of(settings.as_config()))
    click.echo(f"export sweep: {result.expired} expired, {result.stalled} stalled, "
               f"{result.orphans} orphan folders removed")
