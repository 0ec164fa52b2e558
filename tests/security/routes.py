"""Test helpers over the app's URL map: every route with its methods and access declaration,
URLs with their parameters filled in, and the row counts that show whether anything was
written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from adapter.db import Database
from adapter.models import Base
from adapter.security.access import Access

IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
# Counters of requests, not data: the rate limit counts refused requests too.
COUNTERS = frozenset({"rate_window"})


@dataclass(frozen=True)
class Route:
    """One method on one URL rule, with the view's access declaration."""

    rule: str
    method: str
    endpoint: str
    access: Access | None
    arguments: frozenset[str]

    def url(self, **values: str) -> str:
        """Return the rule's path with its ``<arguments>`` replaced by ``values``."""
        path = self.rule
        for name in self.arguments:
            path = path.replace(f"<{name}>", values.get(name, "unknown"))
        return path

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def declared_routes(app: Flask) -> list[Route]:
    """Return every route of ``app`` (each method of each rule), in a stable order."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        access = getattr(app.view_functions[rule.endpoint], "_access", None)
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            out.append(Route(rule.rule, method, rule.endpoint, access,
                             frozenset(rule.arguments)))
    return sorted(out, key=lambda r: (r.rule, r.method))


def protected_routes(app: Flask) -> list[Route]:
    """Return every route that is not declared public."""
    return [r for r in declared_routes(app) if r.access is None or not r.access.public]


def table_counts(db: Database) -> dict[str, int]:
    """Return the row count of every table but the request counters, in one query; audit
    records of refused or failed requests (outcome 4 or 8, adapter/security/audit.py) are the
    record of the refusal, not a change it made, and are not counted."""
    tables = [t for t in Base.metadata.sorted_tables if t.name not in COUNTERS]
    query = select(*(_counted(select(func.count()).select_from(t), t).scalar_subquery()
                     .label(t.name) for t in tables))
    with db.engine.connect() as connection:
        row = connection.execute(query).one()
    return dict(row._mapping)


def _counted(query: Any, table: Any) -> Any:
    """Return ``query`` restricted to the rows that count as a change of ``table``."""
    return query.where(table.c.outcome == "0") if table.name == "audit_record" else query


def body_for(route: Route) -> dict[str, Any]:
    """Return request arguments sending a small FHIR JSON body for methods that take one."""
    if route.method in ("POST", "PUT"):
        return {"json": {"resourceType": "Bundle" if route.rule == "/fhir" else "Patient"}}
    return {}


# FHIR routes that are no type's or system's interaction or operation, and where the
# CapabilityStatement says they exist instead.
NOT_IN_CAPABILITY = {
    "/fhir/metadata": "the CapabilityStatement itself",
    "/fhir/.well-known/smart-configuration": "SMART discovery: rest.security names the token URL",
    "/fhir/$export-status/<job_id>": "Bulk Data status URL: announced by the kick-off",
    "/fhir/$export-file/<job_id>/<name>": "Bulk Data file URL: announced by the manifest",
}
# (path after the type, method) -> the restful-interaction code of a type-level route
# (FHIR R4 http.html), or a flag of the resource entry (conditional update).
TYPE_INTERACTIONS = {
    ("", "GET"): "search-type", ("/_search", "POST"): "search-type", ("", "POST"): "create",
    ("", "PUT"): "conditionalUpdate", ("/<resource_id>", "GET"): "read",
    ("/<resource_id>", "PUT"): "update", ("/<resource_id>", "DELETE"): "delete",
    ("/<resource_id>/_history", "GET"): "history-instance",
    ("/<resource_id>/_history/<version>", "GET"): "vread",
}


def missing_from_capability(app: Flask, statement: dict[str, Any]) -> list[str]:
    """Return each FHIR route of ``app``'s URL map (method and rule) that ``statement`` does
    not declare: a type's interaction or operation, a system interaction or operation.
    Classified from the rule's shape and method, independently of the gateway's own code."""
    rest = statement["rest"][0]
    resources = {r["type"]: r for r in rest["resource"]}
    topics = [e.get("valueCanonical") for e in
              resources.get("Subscription", {}).get("extension", [])]
    missing = []
    for route in declared_routes(app):
        if not route.rule.startswith("/fhir") or route.rule in NOT_IN_CAPABILITY:
            continue
        if not _declares(route, rest, resources, topics):
            missing.append(str(route))
    return missing


def _declares(route: Route, rest: dict[str, Any], resources: dict[str, Any],
              topics: list[Any]) -> bool:
    """Return whether the CapabilityStatement's ``rest`` declares ``route``."""
    path = route.rule.removeprefix("/fhir")
    if path == "":
        return {"transaction", "batch"} <= {i["code"] for i in rest.get("interaction", [])}
    kind, _, rest_of_path = path.removeprefix("/").partition("/")
    if kind.startswith("$"):
        return kind[1:] in {o["name"] for o in rest.get("operation", [])}
    if kind == "SubscriptionTopic":  # not an R4 type: each topic is on Subscription
        return bool(topics) and all(topics)
    entry = resources.get(kind)
    if entry is None:
        return False
    last = path.rsplit("/", 1)[-1]
    if last.startswith("$"):
        return last[1:] in {o["name"] for o in entry.get("operation", [])}
    code = TYPE_INTERACTIONS.get((f"/{rest_of_path}" if rest_of_path else "", route.method))
    if code == "conditionalUpdate":
        return entry.get("conditionalUpdate") is True
    return code in {i["code"] for i in entry.get("interaction", [])}
