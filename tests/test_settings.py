"""The frozen Settings (adapter/settings.py): one typed field per setting, built once by the
app factory and by the command line, passed to what runs below the web layer; the mapping and
the storage of records run without Flask, and ``dispatch`` never builds the web app."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapter import config, create_app, settings
from adapter.http import settings_of
from tests.conftest import REPO


def test_one_typed_field_per_setting() -> None:
    """Every setting of the table is a field of Settings, converted to the field's type."""
    names = {f.name.upper() for f in dataclasses.fields(settings.Settings)}
    assert names == set(config.SETTINGS)
    loaded = settings.load(environ={"GATEWAY_PORT": "9001", "GATEWAY_NOTIFY_ALLOW_HTTP": "yes",
                                    "GATEWAY_CANONICAL_BASE": "https://example.org/fhir/"})
    assert (loaded.port, loaded.notify_allow_http) == (9001, True)
    assert loaded.canonical_base == "https://example.org/fhir"
    assert loaded.public_fhir_base == "http://127.0.0.1:9001/fhir"
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.port = 1  # type: ignore[misc]


def test_app_builds_its_settings_once_and_follows_config_changes(tmp_path: Path) -> None:
    """The app factory's Settings are the app's until ``app.config`` changes; nothing reads
    settings from a global or a context variable (they are passed in)."""
    app = create_app({"INSTANCE_PATH": str(tmp_path), "TESTING": True})
    first = settings_of(app)
    assert settings_of(app) is first
    assert app.config["TESTING"] is True
    app.config["PUBLIC_URL"] = "https://gateway.example.org/"
    assert settings_of(app).public_fhir_base == "https://gateway.example.org/fhir"
    assert not hasattr(settings, "current") and not hasattr(settings, "bound")


def test_each_app_keeps_the_providers_made_with_its_own_settings(tmp_path: Path) -> None:
    """Two apps in one process (the tests build many) never share providers: a batch, the
    FHIR file import and the kit use the providers of the app they run in, each made with
    that app's settings."""
    from adapter.fhir.api import current_providers

    first = create_app({"INSTANCE_PATH": str(tmp_path / "a"), "TESTING": True,
                        "CANONICAL_BASE": "https://one.example.org"})
    second = create_app({"INSTANCE_PATH": str(tmp_path / "b"), "TESTING": True,
                         "CANONICAL_BASE": "https://two.example.org"})
    for app, base in ((first, "https://one.example.org"), (second, "https://two.example.org")):
        with app.test_request_context("/fhir"):
            providers = current_providers()
            assert {p.settings.canonical_base for p in providers.values()} == {base}
            assert "Patient" in providers and "CareTeam" in providers
            assert "Task" not in providers  # the decommissioning's, not a registry provider


def run_without_flask(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter in which importing Flask fails; return stdout."""
    prelude = "import sys\nsys.modules['flask'] = None\n"
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(tmp_path),
           "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}"}
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_mapping_and_stored_records_work_without_flask(tmp_path: Path) -> None:
    """Settings, the database, the demo data and the mapping import and run with Flask
    blocked: a demo child is stored, read back and mapped to a Patient under the configured
    canonical base."""
    out = run_without_flask("""
        from sqlalchemy import select
        from adapter import settings
        from adapter.db import connect
        from adapter.demo import load_demo_data
        from adapter.mapping import fhir
        from adapter.models import Child
        from adapter.store.records import apply_child

        gateway = settings.load()
        db = connect(gateway)
        db.upgrade()
        load_demo_data(db, children=3, authorities=1, seed=7, progress=False)
        with db.sessions() as session:
            child = session.scalars(select(Child).order_by(Child.id)).first()
            patient = fhir.child_to_patient(child, base=gateway.canonical_base)
            read, _ignored = fhir.patient_to_child(patient, base=gateway.canonical_base)
        assert callable(apply_child)
        print(patient["resourceType"], patient["id"] == child.resource_id,
              read.contactpoint_id == child.contactpoint_id, patient["meta"]["profile"][0])
        print("flask" in sys.modules and sys.modules["flask"] is not None)
    """, tmp_path)
    first, flask_loaded = out.splitlines()
    assert first == ("Patient True True https://fhir.contactpoint-gateway.example.org/"
                     "StructureDefinition/ContactPointGateway-Patient")
    assert flask_loaded == "False"


def test_dispatch_never_builds_the_web_app(tmp_path: Path) -> None:
    """``contactpoint-gateway dispatch --once`` builds Settings and a Database and delivers,
    with any construction of a Flask app made to fail."""
    env = {**os.environ, "GATEWAY_INSTANCE_PATH": str(tmp_path),
           "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}"}
    code = textwrap.dedent("""
        import flask
        from adapter import settings
        from adapter.cli import run
        from adapter.db import connect

        connect(settings.load()).upgrade()

        def refuse(*args, **kwargs):
            raise AssertionError("dispatch built a Flask app")

        flask.Flask.__init__ = refuse
        run(["dispatch", "--once"], standalone_mode=False)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "delivered 0 notifications" in done.stdout
