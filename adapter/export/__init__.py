"""Bulk FHIR export (FHIR Bulk Data Access IG v2, export.html): ``GET /fhir/$export`` and
``GET /fhir/Group/{authority}/$export``, run as jobs stored in the database, written as NDJSON
files under ``<instance>/exports/<job id>/`` for the client that asked, and deleted when they
expire (``GATEWAY_EXPORT_TTL_SECONDS``)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the export routes."""
    from adapter.export import routes

    routes.init_app(app)
