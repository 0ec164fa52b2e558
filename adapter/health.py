"""``GET /healthz``: 200 when the database answers, 503 otherwise."""

from __future__ import annotations

import logging
from typing import Any

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
    """Report whether the database answers, and the decommissioning phase.

    :raises Unavailable: the database does not answer.
    """
    try:
        get_db().ping()
    except SQLAlchemyError as exc:
        log.warning("health check: database unreachable (%s)", type(exc).__name__)
        raise Unavailable("The database does not answer; see the gateway's log.") from exc
    from adapter.decommission.phases import current_plan

    plan = current_plan()
    body: dict[str, Any] = {"status": "ok", "database": "ok",
                            "phase": plan.phase if plan else "live"}
    if plan is not None:  # the timetable, so that monitoring sees what comes next
        body["timetable"] = {"runDownAt": plan.timetable.run_down_at.isoformat(),
                             "switchOffAt": plan.timetable.switch_off_at.isoformat(),
                             "destroyByAt": plan.timetable.destroy_by_at.isoformat()}
    return json_response(body)


def init_app(app: Flask) -> None:
    """Register the health route (public: it discloses no personal data)."""
    app.register_blueprint(blueprint)
