"""ContactPoint Gateway: FHIR R4 (UK Core) and directory XML in front of the children's
directory, and its managed decommissioning."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapter import settings as settings_module

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the gateway's Flask application.

    Its ``Settings`` come from defaults, then ``GATEWAY_*`` environment variables, then
    ``config``; they are built here, once, and kept in ``app.extensions`` (read them in the
    web layer with ``adapter.http.current_settings``).
    """
    from flask import Flask

    from adapter import db, health, http, security
    from adapter.fhir.xml import dumps_resource

    settings = settings_module.load(config)
    app = Flask(__name__, static_folder=None)
    app.config = http.SettingsConfig(app, {**app.config, **(config or {}),
                                           **settings.as_config()})
    app.extensions["settings"], app.config.changed = settings, False
    logging.getLogger("adapter").setLevel(settings.log_level)
    db.init_app(app, settings)
    http.init_app(app, dumps_resource)
    security.init_app(app)
    health.init_app(app)
    from adapter.fhir import api as fhir_api
    from adapter.fhir import validation

    validation.init_app(app)

    fhir_api.init_app(app)
    from adapter import export

    export.init_app(app)  # $export's routes, after the FHIR API's
    from adapter.directory import routes as directory_routes

    directory_routes.init_app(app)
    from adapter import notify

    notify.init_app(app)
    from adapter import decommission

    decommission.init_app(app)
    http.accept_trailing_slashes(app)  # last: every FHIR route is registered by now
    return app
