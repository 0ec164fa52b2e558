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
    "PUBLIC_URL": ("", "Absolute base URL clients reach the gateway at (token audience, SMART "
                       "configuration, links); default `http://127.0.0.1:<PORT>`. The `Host` a "
                       "request names is never used."),
    "TOKEN_LIFETIME": (300, "Lifetime of access tokens in seconds."),
    "CLIENT_CACHE_SECONDS": (1, "How long a gateway process reuses a client's registration "
                                "(status, keys' version, rights, limits) before reading it "
                                "again; a change made in the same process applies at once, one "
                                "made elsewhere (the CLI) within this time. 0: every request."),
    "MAX_BODY_BYTES": (5_000_000, "Largest FHIR request body accepted (bytes); larger: 413."),
    "MAX_HEADER_BYTES": (16_384, "Largest request header section accepted (bytes, every "
                                 "`Name: value` line counted), and so the largest single "
                                 "header; at most 100 headers. Larger or more: 431 "
                                 "(OperationOutcome). `serve` lets gunicorn read 4 times as "
                                 "much so that the gateway, not gunicorn, answers."),
    "MAX_IMPORT_BYTES": (2_000_000_000, "Largest directory XML batch accepted (bytes); it is "
                                        "streamed, never held in memory."),
    "EXPORT_TTL_SECONDS": (3600, "How long a bulk `$export` job and its NDJSON files are kept "
                                 "after the job finishes (seconds); then they are deleted."),
    "EXPORT_STALL_SECONDS": (300, "A running `$export` job that makes no progress for this long "
                                  "(seconds; its process ended) is marked failed."),
    "EXPORT_INLINE": (False, "Run `$export` jobs inside the kick-off request instead of a "
                             "background thread (deterministic runs: tests, scripts)."),
    "NOTIFY_THREADS": (4, "Delivery threads of each `contactpoint-gateway dispatch` process."),
    "NOTIFY_BATCH": (100, "Most notifications a dispatcher delivers for one subscription before "
                          "it lets go of it (its lane) and commits."),
    "NOTIFY_TIMEOUT": (10, "Seconds a delivery attempt may take; a subscription's "
                           "backport-timeout extension overrides it (up to 60)."),
    "NOTIFY_RETRY_BUDGET": (8, "Attempts per notification before it is marked dead and its "
                               "subscription `error` (delivery then goes on at the slowest "
                               "backoff, in order, until it succeeds)."),
    "NOTIFY_BACKOFF_BASE_MS": (2000, "First retry delay in milliseconds; doubled per attempt, "
                                     "with jitter."),
    "NOTIFY_BACKOFF_MAX": (600, "Longest retry delay in seconds (also how often a subscription "
                                "in `error` is retried)."),
    "NOTIFY_POLL_MS": (500, "How long an idle dispatcher thread waits before looking for work "
                            "again (milliseconds)."),
    "NOTIFY_ALLOW_HTTP": (False, "Accept `http://` rest-hook endpoints (tests, local receivers); "
                                 "otherwise only `https://`."),
    "NOTIFY_ALLOW_PRIVATE": (False, "Deliver rest-hook notifications to loopback, private, "
                                    "link-local and other non-public addresses (tests, local "
                                    "receivers); otherwise endpoints must resolve to public "
                                    "internet addresses, checked at each write and delivery."),
    "MESH_URL": ("", "MESH API base URL of the gateway's mailbox for the `mesh` channel, e.g. "
                     "`https://mesh-sync.spineservices.nhs.uk`; empty: no MESH channel."),
    "MESH_MAILBOX": ("", "The gateway's own MESH mailbox id (the sender)."),
    "MESH_PASSWORD": ("", "Password of the gateway's MESH mailbox."),
    "MESH_SHARED_KEY": ("", "MESH shared key for the authorisation token (environment-specific)."),
    "MESH_WORKFLOW_ID": ("CPGW_NOTIFICATION", "MESH workflow id of notification messages."),
    "MESH_CA_BUNDLE": ("", "CA bundle file to verify the MESH server's TLS certificate; empty: "
                           "the system's."),
    "DECOMMISSION_TIME_ZONE": ("Europe/London", "Time zone of the decommissioning timetable's "
                                                 "dates (`decommission plan`)."),
    "DECOMMISSION_SWITCH_OFF_TIME": ("12:00", "Time of day of a switch-off or destroy-by given "
                                              "as a bare date (HH:MM; the announcement said "
                                              "noon)."),
    "DECOMMISSION_REMINDER_DAYS": (7, "Days between reminders of a purge Task nobody "
                                      "answered or completed (a plan may set its own)."),
    "DECOMMISSION_ESCALATE_DAYS": (14, "Days after switch-off when a purge Task not completed "
                                       "is escalated (a plan may set its own)."),
    "DECOMMISSION_MIN_PURGE_DAYS": (28, "Fewest days a plan may leave holders between "
                                        "switch-off and destroy-by to purge their copies "
                                        "(shorter, or dates in the past: drills only, --drill)."),
    "DECOMMISSION_INLINE_CHILDREN": (1000, "Most children a purge Task names inline; above "
                                           "this it refers to an NDJSON list instead."),
    "ADMIN_SESSION_SECONDS": (28800, "Lifetime of an admin dashboard session (seconds) "
                                     "opened with an admin client's access token."),
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
