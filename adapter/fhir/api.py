"""The FHIR REST API at ``/fhir``: the handlers it serves and its metadata route."""

from __future__ import annotations

from typing import Final

from flask import Flask, Response, current_app

from adapter.fhir.capability import capability_statement
from adapter.fhir.handlers import ResourceHandler
from adapter.fhir.routes import register_handler
from adapter.http import fhir_response, settings_of
from adapter.registry import specs
from adapter.security.access import public
from adapter.settings import Settings

# Where an app keeps the providers it was built with, by resource type: each app's own, made
# with its settings (several apps in one process — the tests — never share them).
PROVIDERS_KEY: Final = "fhir_providers"


@public("meta")
def metadata() -> Response:
    """Return the CapabilityStatement (public, FHIR R4 http.html#capabilities)."""
    return fhir_response(capability_statement())


def handlers(settings: Settings) -> list[ResourceHandler]:
    """Return the provider of every resource type with REST interactions (declared in
    ``adapter.registry``), in declaration order, each made with ``settings``."""
    return [spec.provider(settings) for spec in specs() if spec.provider is not None]


def current_providers() -> dict[str, ResourceHandler]:
    """Return the providers of the app handling the request or command, by resource type (the
    batch and transaction entries, the FHIR file import and the conformance kit use them)."""
    providers: dict[str, ResourceHandler] = current_app.extensions[PROVIDERS_KEY]
    return providers


def init_app(app: Flask) -> None:
    """Register the FHIR routes, served by providers made with the app's settings."""
    made = handlers(settings_of(app))
    app.extensions[PROVIDERS_KEY] = {handler.resource_type: handler for handler in made}
    for handler in made:
        register_handler(app, handler)
    from adapter.fhir import transaction

    transaction.init_app(app)
    app.add_url_rule("/fhir/metadata", endpoint="fhir.metadata", view_func=metadata,
                     methods=["GET"])
