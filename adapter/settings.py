"""The gateway's settings as one frozen, typed object (docs/architecture.md "Settings").

:func:`load` builds it from ``adapter.config.load`` (defaults, then ``GATEWAY_*`` variables,
then overrides). The app factory (``adapter.create_app``) and the command line build it once
and pass it on: to the dispatcher and the database (constructor arguments), to every FHIR
provider (``Provider(settings)``), to the decommissioning's commands, to the mappings
(``base=settings.canonical_base``), to a notification's content (the dispatcher's lanes).
Nothing reads them from a global or a context variable, and nothing here imports Flask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, get_type_hints

from adapter import config


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of ``adapter.config.SETTINGS``, by its lower-case name."""

    instance_path: str
    database_url: str
    port: int
    workers: int
    canonical_base: str
    public_url: str
    token_lifetime: int
    client_cache_seconds: float
    max_body_bytes: int
    max_header_bytes: int
    max_import_bytes: int
    export_ttl_seconds: float
    export_stall_seconds: float
    export_inline: bool
    notify_threads: int
    notify_batch: int
    notify_timeout: float
    notify_retry_budget: int
    notify_backoff_base_ms: int
    notify_backoff_max: float
    notify_poll_ms: int
    notify_allow_http: bool
    notify_allow_private: bool
    mesh_url: str
    mesh_mailbox: str
    mesh_password: str
    mesh_shared_key: str
    mesh_workflow_id: str
    mesh_ca_bundle: str
    decommission_time_zone: str
    decommission_switch_off_time: str
    decommission_reminder_days: int
    decommission_escalate_days: int
    decommission_min_purge_days: int
    decommission_inline_children: int
    admin_session_seconds: int
    log_level: str
    demo_children: int
    demo_authorities: int
    demo_seed: int

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Return the settings named (upper case, as ``config.load`` returns them) in
        ``values``; other keys (Flask's own, ``TESTING``) are left out.

        :raises ValueError: a value cannot be converted to its setting's type.
        """
        kinds = _field_types()
        return cls(**{name: _typed(kinds[name], values[name.upper()]) for name in kinds})

    def as_config(self) -> dict[str, Any]:
        """Return the settings by their upper-case names (Flask's ``app.config``)."""
        return {name.upper(): value for name, value in dataclasses.asdict(self).items()}

    @property
    def public_base(self) -> str:
        """The absolute base URL of this server: ``GATEWAY_PUBLIC_URL``, else
        ``http://127.0.0.1:<GATEWAY_PORT>`` (where ``make run`` serves)."""
        return (self.public_url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @property
    def public_fhir_base(self) -> str:
        """The absolute FHIR base URL (links in notifications sent outside a request)."""
        return f"{self.public_base}/fhir"


def load(overrides: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Return the settings: defaults, then ``GATEWAY_<NAME>`` variables, then ``overrides``.

    :raises ValueError: a value cannot be converted to its setting's type.
    """
    return Settings.from_mapping(config.load(overrides, environ))


def _field_types() -> dict[str, type]:
    """Return each field's type (``bool``, ``int``, ``float`` or ``str``)."""
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _typed(kind: type, value: Any) -> Any:
    """Convert ``value`` to ``kind`` (strings as ``GATEWAY_*`` variables are read)."""
    if isinstance(value, str) and kind is bool:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if kind is str:
        return "" if value is None else str(value)
    return kind(value)
