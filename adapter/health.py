"""``GET /healthz``: 200 when the database answers, 503 otherwise."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response
from sqlalchemy.exc import SQLAlchemyError

from adapter.db import get_db
from adapter.errors import Unavailable
from adapter.http import json_response
from adapter.security.access import public

log = logging.getLogger(__name__)
blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@public("meta")
def healthz() -> Response:
    """Report whether the database answers.

    :raises Unavailable: the database does not answer.
    """
    try:
        get_db().ping()
    except SQLAlchemyError as exc:
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        raise Unavailable("The database does not answer; see the gateway's log.") from exc
    return json_response({"status": "ok", "database": "ok"})


def init_app(app: Flask) -> None:
    """Register the health route (public: it discloses no personal data)."""
    app.register_blueprint(blueprint)
