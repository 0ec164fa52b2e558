"""Settings: precedence and the README's configuration table."""

from __future__ import annotations

import re

import pytest

from adapter import config
from tests.conftest import REPO


def test_defaults_then_environment_then_mapping() -> None:
    """Environment overrides defaults; the config mapping overrides both."""
    settings = config.load({"PORT": 9100}, environ={"GATEWAY_PORT": "9001",
                                                     "GATEWAY_WORKERS": "5"})
    assert settings["PORT"] == 9100
    assert settings["WORKERS"] == 5
    assert settings["LOG_LEVEL"] == "INFO"


def test_database_url_defaults_to_sqlite_under_instance(tmp_path: object) -> None:
    """Without GATEWAY_DATABASE_URL the database is a SQLite file under the instance folder."""
    settings = config.load(environ={"GATEWAY_INSTANCE_PATH": "/srv/gw"})
    assert settings["DATABASE_URL"] == "sqlite:////srv/gw/gateway.db"


def test_bad_environment_value_names_the_variable() -> None:
    """A value that cannot be converted names its variable."""
    with pytest.raises(ValueError, match="GATEWAY_PORT"):
        config.load(environ={"GATEWAY_PORT": "eighty"})


def test_readme_documents_every_setting() -> None:
    """Every GATEWAY_* setting has a row in the README's configuration table, and no more."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- settings-table", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `GATEWAY_([A-Z_]+)`", table, flags=re.MULTILINE))
    assert documented == set(config.SETTINGS)
