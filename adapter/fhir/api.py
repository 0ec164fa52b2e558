"""The FHIR REST API at ``/fhir``: the handlers it serves and its metadata route."""

from __future__ import annotations

from flask import Flask, Response

from adapter.fhir.capability import capability_statement
from adapter.fhir.handlers import ResourceHandler
from adapter.fhir.routes import register_handler
from adapter.http import fhir_response, settings_of
from adapter.registry import specs
from adapter.security.access import public
from adapter.settings import Settings

HANDLERS: list[ResourceHandler] = []


@public("meta")
def metadata() -> Response:
    """Return the CapabilityStatement (public, FHIR R4 http.html#capabilities)."""
    return fhir_response(capability_statement())


def handlers(settings: Settings) -> list[ResourceHandler]:
    """Return the provider of every resource type with REST interactions (declared in
    ``adapter.registry``), in declaration order, each made with ``settings``."""
    return [spec.provider(settings) for spec in specs() if spec.provider is not None]


def init_app(app: Flask) -> None:
    """Register the FHIR routes, served by providers made with the app's settings."""
    HANDLERS[:] = handlers(settings_of(app))
    for handler in HANDLERS:
        register_handler(app, handler)
    from adapter.fhir import transaction

    transaction.init_app(app)
    app.add_url_rule("/fhir/metadata", endpoint="fhir.metadata", view_func=metadata,
                     methods=["GET"])
