"""The basic ``contactpoint-gateway`` commands (``db upgrade``, ``demo-data``, ``--help``)
and ``GET /healthz``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient
from sqlalchemy import inspect

from adapter import create_app
from adapter.cli import main
from adapter.db import Database
from adapter.demo import count_children


def _invoke(app: Flask, *args: str) -> Result:
    """Run the CLI against ``app`` (its test database)."""
    return CliRunner().invoke(main, list(args), obj=ScriptInfo(create_app=lambda: app))


def test_db_upgrade_and_demo_data_from_the_environment(tmp_path: Path) -> None:
    """With GATEWAY_DATABASE_URL set, ``db upgrade`` migrates and ``demo-data`` fills that
    database; ``--if-empty`` then does nothing."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_INSTANCE_PATH": str(tmp_path)}
    runner = CliRunner()
    upgraded = runner.invoke(main, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert "database at head" in upgraded.output
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            assert {"child", "organisation", "alembic_version"} <= \
                set(inspect(connection).get_table_names())
        first = runner.invoke(main, ["demo-data", "--children", "40", "--authorities", "2",
                                     "--seed", "3", "--if-empty"], env=env)
        assert first.exit_code == 0, first.output
        assert "wrote 40 children" in first.output
        assert "100%" in first.stderr  # the progress bar, on stderr
        second = runner.invoke(main, ["demo-data", "--children", "40", "--if-empty", "--quiet"],
                               env=env)
        assert second.exit_code == 0, second.output
        assert "already holds 40 children" in second.output
        assert count_children(database) == 40
    finally:
        database.dispose()


def test_demo_data_command_on_each_backend(app: Flask, db: Database) -> None:
    """``demo-data`` writes into the configured database; without ``--if-empty`` it adds more."""
    result = _invoke(app, "demo-data", "--children", "25", "--authorities", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "wrote 25 children"
    assert result.stderr == ""
    again = _invoke(app, "demo-data", "--children", "5", "--quiet")
    assert again.exit_code == 0, again.output
    assert count_children(db) == 30


@pytest.mark.parametrize("args", [["--authorities", "0"], ["--authorities", "151"],
                                  ["--children", "-5"]])
def test_demo_data_refuses_out_of_range_amounts(app: Flask, db: Database,
                                                args: list[str]) -> None:
    """Amounts out of range are a usage error (exit 2) that says which, and nothing is written."""
    result = _invoke(app, "demo-data", "--quiet", *args)
    assert result.exit_code == 2
    assert args[0].strip("-") in result.output
    assert count_children(db) == 0


@pytest.mark.parametrize("args", [[], ["db"], ["db", "upgrade"], ["demo-data"], ["serve"]])
def test_every_command_has_help(args: list[str]) -> None:
    """``--help`` works for the group and each command, without touching a database."""
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert ":raises" not in result.output


def test_healthz_answers_when_the_database_does(client: FlaskClient) -> None:
    """200 with the database reachable."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def _unreachable_sqlite(tmp_path: Path) -> str:
    """Return a SQLite URL whose folder is gone by the time the app connects."""
    return f"sqlite:///{tmp_path / 'gone' / 'gateway.db'}"


@pytest.mark.parametrize("kind", ["file-in-removed-folder", "closed-port"])
def test_healthz_503_when_the_database_is_unreachable(tmp_path: Path, kind: str) -> None:
    """503 with a JSON OperationOutcome (issue code transient) when the database is down."""
    url = _unreachable_sqlite(tmp_path) if kind == "file-in-removed-folder" \
        else "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(tmp_path), "TESTING": True})
    if kind == "file-in-removed-folder":
        (tmp_path / "gone").rmdir()  # the engine made the folder; the database file is gone
    try:
        response = app.test_client().get("/healthz")
    finally:
        app.extensions["db"].close()
    assert response.status_code == 503
    assert response.mimetype == "application/fhir+json"
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["code"] == "transient"
    assert url.split("@")[-1] not in response.get_data(as_text=True)
