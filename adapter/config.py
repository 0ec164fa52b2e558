"""Settings: defaults, then ``GATEWAY_*`` environment variables, then the ``config`` mapping.

Every setting is documented in README.md ("Configuration"); a test keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent

# name -> (default, description). Defaults that depend on other settings are resolved in load().
SETTINGS: Final[dict[str, tuple[Any, str]]] = {
    "INSTANCE_PATH": (str(PROJECT_ROOT / "instance"),
                      "Folder for the SQLite database, keys and export files."),
    "DATABASE_URL": (None, "SQLAlchemy URL of the database; default SQLite file "
                           "`<GATEWAY_INSTANCE_PATH>/gateway.db`. PostgreSQL: "
                           "`postgresql+psycopg://user@host:5432/db`."),
    "PORT": (8000, "TCP port `make run` serves on (127.0.0.1)."),
    "WORKERS": (2, "gunicorn worker processes for `make run` / `serve`."),
    "CANONICAL_BASE": ("https://fhir.contactpoint-gateway.example.org",
                       "Base URL of this service's own identifier systems, CodeSystems and "
                       "profiles (set it to your published address in production)."),
    "PUBLIC_URL": ("", "Absolute base URL clients reach the gateway at (token audience, links); "
                       "default: taken from each request, and `http://127.0.0.1:<PORT>` for "
                       "the CLI."),
    "TOKEN_LIFETIME": (300, "Lifetime of access tokens in seconds."),
    "MAX_BODY_BYTES": (5_000_000, "Largest FHIR request body accepted (bytes); larger: 413."),
    "MAX_IMPORT_BYTES": (2_000_000_000, "Largest directory XML batch accepted (bytes); it is "
                                        "streamed, never held in memory."),
    "LOG_LEVEL": ("INFO", "Python logging level."),
    "DEMO_CHILDREN": (2000, "Children `make run` generates into an empty database."),
    "DEMO_AUTHORITIES": (4, "Local authorities for the demo data of `make run`."),
    "DEMO_SEED": (2026, "Random seed of the demo data of `make run`."),
}


def _coerce(default: Any, raw: str) -> Any:
    """Convert an environment string to the type of its default."""
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    return raw


def load(overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings: defaults, then ``GATEWAY_<NAME>`` variables, then ``overrides``.

    :raises ValueError: an environment variable cannot be converted to its setting's type.
    """
    env = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for name, (default, _doc) in SETTINGS.items():
        raw = env.get(f"GATEWAY_{name}")
        try:
            settings[name] = default if raw in (None, "") else _coerce(default, raw)
        except ValueError as exc:
            raise ValueError(f"GATEWAY_{name}: {exc}") from exc
    settings.update(overrides or {})
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = f"sqlite:///{Path(settings['INSTANCE_PATH']) / 'gateway.db'}"
    settings["CANONICAL_BASE"] = str(settings["CANONICAL_BASE"]).rstrip("/")
    return settings
