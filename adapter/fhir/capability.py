"""The CapabilityStatement, generated from the routes that exist and the handlers' search
parameters (FHIR R4 capabilitystatement.html), so that it cannot promise what the server
does not do; a test exercises every interaction and parameter it declares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from flask import Flask, current_app
from werkzeug.routing import Rule

from adapter.fhir.bundle import fhir_base, now_instant
from adapter.fhir.handlers import ResourceHandler
from adapter.http import HANDLERS_KEY
from adapter.registry import BULK_OPERATIONS, OWN, not_r4_types, spec_of, type_operations
from adapter.systems import FHIR_VERSION, OwnSystems

# Route interaction names -> CapabilityStatement codes (restful-interaction value set).
INTERACTION_CODES: Final = {"read": "read", "vread": "vread", "history-instance":
                            "history-instance", "search-type": "search-type",
                            "create": "create", "update": "update", "delete": "delete"}
OAUTH_URIS: Final = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
# The app's extension holding what adds the decommissioning phase to a statement (its
# description): the decommissioning hands it in at start-up (adapter/decommission/__init__.py),
# a layer above this one (scripts/check_layers.py).
DESCRIBE_PHASE_KEY: Final = "describe_phase"
# FHIR Bulk Data Access IG v2: its server CapabilityStatement, declared when $export has a route.
BULK_DATA: Final = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
# The definition of each system operation that has a route: (None at system level, ``*`` on
# any type; operation name) -> canonical URL; a type's own operations are in its spec
# (adapter/registry.py). The gateway's own operations are published at
# /fhir/OperationDefinition under the canonical base (``OWN``).
SYSTEM_OPERATIONS: Final[dict[tuple[str | None, str], str]] = {
    ("*", "validate"): "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    (None, "export"): BULK_OPERATIONS + "export",
}
# Routes under /fhir that are neither a type's interaction or operation nor a system one, and
# why: the CapabilityStatement itself, SMART discovery (in ``rest.security``), the Bulk Data
# status and file URLs (export.html: server-chosen, announced by the kick-off and manifest).
NOT_DECLARED: Final = {"metadata": "the CapabilityStatement itself",
                       ".well-known": "SMART configuration: rest.security",
                       "$export-status": "Bulk Data status URL (export.html)",
                       "$export-file": "Bulk Data file URL (export.html)"}


@dataclass(frozen=True)
class FhirRoute:
    """What one URL rule under /fhir is: a type's interaction or operation, or a system one
    (``resource_type`` None). ``interaction`` is the route's name (``fhir.<type>.<name>``)."""

    resource_type: str | None
    interaction: str | None = None
    operation: str | None = None


def remember_handler(app: Flask, handler: ResourceHandler) -> None:
    """Record the handler behind a type's routes (its search parameters and profile go into
    the CapabilityStatement)."""
    app.extensions.setdefault(HANDLERS_KEY, {})[handler.resource_type] = handler


def fhir_route(rule: Rule) -> FhirRoute | None:
    """Return what ``rule`` is, or None for a route that is not a FHIR interaction or
    operation (``NOT_DECLARED``, and anything outside /fhir)."""
    if rule.rule != "/fhir" and not rule.rule.startswith("/fhir/"):
        return None
    segments = rule.rule.removeprefix("/fhir").strip("/").split("/")
    first, last = segments[0], segments[-1]
    if first in NOT_DECLARED:
        return None
    if first == "":
        return FhirRoute(None, interaction=str(rule.endpoint).rsplit(".", 1)[-1])
    if first.startswith("$"):
        return FhirRoute(None, operation=first[1:])
    if last.startswith("$"):
        return FhirRoute(first, operation=last[1:])
    return FhirRoute(first, interaction=str(rule.endpoint).rsplit(".", 1)[-1])


def fhir_routes(app: Flask) -> list[FhirRoute]:
    """Return every FHIR interaction and operation route of ``app``'s URL map."""
    found = (fhir_route(rule) for rule in app.url_map.iter_rules())
    return [route for route in found if route is not None]


def operation_definition(resource_type: str | None, name: str, own: OwnSystems) -> str:
    """Return the canonical URL of operation ``name`` on ``resource_type`` (None: system): a
    standard one, else the gateway's own under its canonical base, which it must publish in
    ``schemas/fhir`` (tests/api/test_protocol.py reads each one a route declares)."""
    definition = type_operations().get((resource_type, name), "") if resource_type else ""
    definition = definition or SYSTEM_OPERATIONS.get(("*" if resource_type else None, name), OWN)
    return f"{own.base}/OperationDefinition/{name}" if definition == OWN else definition


def operations(routes: list[FhirRoute], resource_type: str | None,
               own: OwnSystems) -> list[dict[str, str]]:
    """Return the ``operation`` entries of ``resource_type`` (None: system level), once each."""
    names = dict.fromkeys(r.operation for r in routes
                          if r.resource_type == resource_type and r.operation)
    return [{"name": name, "definition": operation_definition(resource_type, name, own)}
            for name in names if name]


def resource_entry(app: Flask, resource_type: str, routes: list[FhirRoute],
                   own: OwnSystems) -> dict[str, Any]:
    """Return the ``rest.resource`` entry of one type served here, from its routes and (when
    it has one) its handler."""
    names = {r.interaction for r in routes if r.resource_type == resource_type}
    entry: dict[str, Any] = {"type": resource_type}
    handler: ResourceHandler | None = app.extensions.get(HANDLERS_KEY, {}).get(resource_type)
    if handler is None:  # no REST handler: operations only (Group: Bulk Data $export)
        spec = spec_of(resource_type)
        if spec is not None and spec.documentation:
            entry["documentation"] = spec.documentation
        if ops := operations(routes, resource_type, own):
            entry["operation"] = ops
        return entry
    if handler.profile:
        entry["profile"] = own.profile(handler.profile)
    entry["interaction"] = [{"code": code} for name, code in INTERACTION_CODES.items()
                            if name in names]
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
    if ops := operations(routes, resource_type, own):
        entry["operation"] = ops
    extras = getattr(handler, "capability_extras", None)
    if extras is not None:  # a handler's own declarations (Subscription: topics, profile)
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


def capability_statement() -> dict[str, Any]:
    """Return the CapabilityStatement of this server: every type, interaction and operation
    that has a route, in every decommissioning phase (a phase refuses what it forbids with an
    OperationOutcome that says so; the statement's description names the phase)."""
    app = current_app
    own = OwnSystems(app.config["CANONICAL_BASE"])
    routes = fhir_routes(app)
    # Types FHIR 4.0.1 has not are declared where R4 can say so (SubscriptionTopic: the
    # backport's topic-canonical extension on Subscription), never as a ``rest.resource``.
    types = sorted({r.resource_type for r in routes if r.resource_type} - not_r4_types())
    rest: dict[str, Any] = {"mode": "server", "security": _security(),
                            "resource": [resource_entry(app, t, routes, own) for t in types],
                            "interaction": _system_interactions(routes)}
    if system_operations := operations(routes, None, own):
        rest["operation"] = system_operations
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
    if any(r.operation == "export" for r in routes):
        statement["instantiates"] = [BULK_DATA]
    describe_phase: Callable[[dict[str, Any]], None] = current_app.extensions[DESCRIBE_PHASE_KEY]
    describe_phase(statement)  # the decommissioning phase
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
                           "assertion (RS384 or ES384) at the token URL. The CapabilityStatement "
                           "and the conformance resources (StructureDefinition, CodeSystem, "
                           "ValueSet, ConceptMap, OperationDefinition) and SubscriptionTopic "
                           "need no token."}


def _system_interactions(routes: list[FhirRoute]) -> list[dict[str, str]]:
    """Return the system-level interactions that have routes (transaction and batch: one
    route, ``POST [base]``, takes both Bundle types)."""
    if any(r.resource_type is None and r.interaction == "bundle" for r in routes):
        return [{"code": "transaction"}, {"code": "batch"}]
    return []
