"""The FHIR REST API at ``/fhir``: the handlers it serves and its metadata route."""

from __future__ import annotations

from flask import Flask, Response, current_app

from adapter.fhir.capability import capability_statement
from adapter.fhir.handlers import ResourceHandler
from adapter.fhir.routes import register_handler
from adapter.http import HANDLERS_KEY, fhir_response, settings_of
from adapter.registry import specs
from adapter.security.access import public
from adapter.settings import Settings


@public("meta")
def metadata() -> Response:
    """Return the CapabilityStatement (public, FHIR R4 http.html#capabilities)."""
    return fhir_response(capability_statement())


def handlers(settings: Settings) -> list[ResourceHandler]:
    """Return the provider of every resource type with REST interactions (declared in
    ``adapter.registry``), in declaration order, each made with ``settings``."""
    return [spec.provider(settings) for spec in specs() if spec.provider is not None]


def providers_of(app: Flask) -> dict[str, ResourceHandler]:
    """Return ``app``'s providers by resource type, in declaration order: the handlers its
    routes were registered with (``adapter.http.HANDLERS_KEY``), each made with the app's
    settings (several apps in one process — the tests — never share them), of the types
    ``adapter.registry`` declares a provider for (not the decommissioning's Task and
    PlanDefinition, routed with handlers of their own)."""
    routed: dict[str, ResourceHandler] = app.extensions.get(HANDLERS_KEY, {})
    return {spec.type: routed[spec.type] for spec in specs()
            if spec.provider is not None and spec.type in routed}


def current_providers() -> dict[str, ResourceHandler]:
    """Return the providers of the app handling the request or command, by resource type (the
    batch and transaction entries, the FHIR file import and the conformance kit use them)."""
    return providers_of(current_app)


def init_app(app: Flask) -> None:
    """Register the FHIR routes, served by providers made with the app's settings."""
    for handler in handlers(settings_of(app)):
        register_handler(app, handler)
    from adapter.fhir import transaction

    transaction.init_app(app)
    app.add_url_rule("/fhir/metadata", endpoint="fhir.metadata", view_func=metadata,
                     methods=["GET"])
