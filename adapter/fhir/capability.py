"""The CapabilityStatement, generated from the routes that exist and the handlers' search
parameters (FHIR R4 capabilitystatement.html), so that it cannot promise what the server
does not do; a test exercises every interaction and parameter it declares."""

from __future__ import annotations

from typing import Any, Final

from flask import Flask, current_app

from adapter.fhir.bundle import fhir_base, now_instant
from adapter.fhir.handlers import ResourceHandler
from adapter.fhir.systems import FHIR_VERSION, OwnSystems

# Route interaction names -> CapabilityStatement codes (restful-interaction value set).
INTERACTION_CODES: Final = {"read": "read", "vread": "vread", "history-instance":
                            "history-instance", "search-type": "search-type",
                            "create": "create", "update": "update", "delete": "delete"}
OAUTH_URIS: Final = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
# FHIR Bulk Data Access IG v2: its server CapabilityStatement and export OperationDefinitions,
# declared when the export routes exist (endpoint -> declaration).
BULK_DATA: Final = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
SYSTEM_EXPORT: Final = ("fhir.export.system",
                        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")
GROUP_EXPORT: Final = ("fhir.export.group",
                       "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export")
# Type-level operations of a handler's type, declared when their route exists:
# type -> ((endpoint, operation name, definition), ...).
TYPE_OPERATIONS: Final = {"Patient": (
    ("fhir.export.patient", "export",
     "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"),)}


def registered_interactions(app: Flask, resource_type: str) -> list[str]:
    """Return the interactions that have a URL rule for ``resource_type``."""
    prefix = f"fhir.{resource_type}."
    names = {rule.endpoint[len(prefix):] for rule in app.url_map.iter_rules()
             if rule.endpoint.startswith(prefix)}
    return [code for name, code in INTERACTION_CODES.items() if name in names]


def resource_entry(app: Flask, handler: ResourceHandler, own: OwnSystems) -> dict[str, Any]:
    """Return the ``rest.resource`` entry of one handler."""
    names = {rule.endpoint.rsplit(".", 1)[-1] for rule in app.url_map.iter_rules()
             if rule.endpoint.startswith(f"fhir.{handler.resource_type}.")}
    entry: dict[str, Any] = {"type": handler.resource_type}
    if handler.profile:
        entry["profile"] = own.profile(handler.profile)
    entry["interaction"] = [{"code": c}
                            for c in registered_interactions(app, handler.resource_type)]
    entry["versioning"] = "versioned-update"
    entry["readHistory"] = "vread" in names
    entry["updateCreate"] = "update" in names
    entry["conditionalCreate"] = "create" in names
    entry["conditionalRead"] = "full-support"
    entry["conditionalUpdate"] = "conditional-update" in names
    entry["conditionalDelete"] = "not-supported"
    if handler.includes:
        entry["searchInclude"] = sorted(handler.includes)
    if handler.revincludes:
        entry["searchRevInclude"] = sorted(handler.revincludes)
    entry["searchParam"] = [_search_param(p) for p in handler.search_params.values()]
    if "validate" in names:
        entry["operation"] = [{"name": "validate", "definition":
                               "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]
    endpoints = _endpoints(app)
    operations = [{"name": name, "definition": definition} for endpoint, name, definition
                  in TYPE_OPERATIONS.get(handler.resource_type, ()) if endpoint in endpoints]
    if operations:
        entry["operation"] = [*entry.get("operation", []), *operations]
    extras = getattr(handler, "capability_extras", None)
    if extras is not None:  # a handler's own declarations (Subscription: topics, operations)
        for key, value in extras().items():
            entry[key] = [*entry.get(key, []), *value] if isinstance(value, list) else value
    return entry


def _search_param(param: Any) -> dict[str, Any]:
    """Return one ``searchParam`` entry; its documentation ends with the modifiers the server
    applies to it (R4 has no element for them), e.g. ``Modifiers: :exact, :contains.``."""
    out = {"name": param.name, "type": param.type,
           "documentation": param.description + modifier_note(param.modifiers)}
    if param.definition:
        out["definition"] = param.definition
    return out


def modifier_note(modifiers: frozenset[str]) -> str:
    """Return the sentence listing a parameter's modifiers (none: "No modifiers.")."""
    if not modifiers:
        return ". No modifiers."
    return ". Modifiers: " + ", ".join(f":{m}" for m in sorted(modifiers)) + "."


def capability_statement(handlers: list[ResourceHandler],
                         extra_resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the CapabilityStatement of this server."""
    app = current_app
    own = OwnSystems(app.config["CANONICAL_BASE"])
    resources = [resource_entry(app, h, own) for h in handlers] + extra_resources \
        + _group_export(app)
    rest: dict[str, Any] = {"mode": "server", "security": _security(),
                            "resource": sorted(resources, key=lambda r: str(r["type"])),
                            "interaction": _system_interactions(app)}
    if operations := _system_operations(app):
        rest["operation"] = operations
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active", "date": now_instant(), "kind": "instance",
        "publisher": "ContactPoint Gateway",
        "description": "FHIR R4 (UK Core) interface of the ContactPoint children's directory "
                       "gateway; canonical base of its own systems and profiles: " + own.base,
        "software": {"name": "ContactPoint Gateway", "version": "0.1.0"},
        "implementation": {"description": "ContactPoint Gateway", "url": fhir_base()},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "xml"],
        "rest": [rest],
    }
    if operations:
        statement["instantiates"] = [BULK_DATA]
    from adapter.decommission import describe_phase

    describe_phase(statement, app)  # the decommissioning phase, and its resources
    return statement


def _security() -> dict[str, Any]:
    """Return ``rest.security`` with the SMART oauth-uris extension (SMART App Launch)."""
    token_url = fhir_base().removesuffix("/fhir") + "/auth/token"
    return {"extension": [{"url": OAUTH_URIS,
                           "extension": [{"url": "token", "valueUri": token_url}]}],
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"}]}],
            "description": "SMART Backend Services: client credentials with a signed JWT "
                           "assertion (RS384 or ES384) at the token URL."}


def _system_interactions(app: Flask) -> list[dict[str, str]]:
    """Return the system-level interactions that have routes (transaction, batch)."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    return [{"code": code} for code in ("transaction", "batch")
            if f"fhir.system.{code}" in endpoints or "fhir.system.bundle" in endpoints]


def _endpoints(app: Flask) -> set[str]:
    """Return the endpoints that have URL rules."""
    return {rule.endpoint for rule in app.url_map.iter_rules()}


def _system_operations(app: Flask) -> list[dict[str, str]]:
    """Return the system-level operations that have routes (Bulk Data ``$export``)."""
    endpoint, definition = SYSTEM_EXPORT
    return [{"name": "export", "definition": definition}] if endpoint in _endpoints(app) else []


def _group_export(app: Flask) -> list[dict[str, Any]]:
    """Return the ``Group`` entry when Group-level ``$export`` has a route: a Group here is a
    local authority's children, exported but not read or searched."""
    endpoint, definition = GROUP_EXPORT
    if endpoint not in _endpoints(app):
        return []
    return [{"type": "Group", "documentation": "A Group is a local authority's children, named "
             "by the authority's GSS code or Organization id; only $export is supported.",
             "operation": [{"name": "export", "definition": definition}]}]
