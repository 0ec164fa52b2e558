"""Every request that can return a child's data, enumerated from the URL map: reads, vreads
(of every version the record has),
histories, searches (GET and POST, with each declared ``_include`` and ``_revinclude``) of the
resource types that carry a child's data, other GET routes on such resources, and bulk export
(kick-off, status, every file). A route that is neither exercised here nor listed as carrying
no child data fails ``test_every_get_route_is_covered``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask
from flask.testing import FlaskClient

from tests.security.routes import Route, declared_routes

# Resource types whose resources hold a child's data (the directory entry and its team).
CHILD_TYPES = frozenset({"Patient", "CareTeam", "PractitionerRole"})
# GET routes that hold no child's data, and why.
NO_CHILD_DATA = {
    "Organization": "organisations are public services; none names a child",
    "Practitioner": "practitioners as staff of organisations; none names a child",
    "Subscription": "the caller's own subscriptions (notification content: tests/notify)",
    "SubscriptionTopic": "topic definitions",
    "StructureDefinition": "conformance resource", "CodeSystem": "conformance resource",
    "ValueSet": "conformance resource", "ConceptMap": "conformance resource",
    "OperationDefinition": "conformance resource",
    "AuditEvent": "opaque ids of children only; needs the audit right",
    "PlanDefinition": "the decommissioning timetable",
    "Task": "purge instructions: the identifiers a holder already received, never contact "
            "details (tests/decommission)",
}
# Non-FHIR GET routes that hold no child's data, by path prefix.
NO_CHILD_DATA_PATHS = {
    "/admin/": "the run-down dashboard: counts and dates, no child",
    "/directory/decommission": "the decommissioning timetable in the directory dialect",
}
# The directory dialect's records: lists by authority and reads by id.
DIRECTORY_RECORDS = ("/directory/entries", "/directory/assessments")
EXPORT_ENDPOINTS = frozenset({"fhir.export.system", "fhir.export.patient", "fhir.export.group",
                              "fhir.export.status", "fhir.export.file", "fhir.export.delete"})
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@dataclass
class Call:
    """One request: method, path with query, form data."""

    method: str
    path: str
    form: dict[str, str] | None = None
    route: str = ""
    # The route needs a right (e.g. admin): callers without it get 403.
    needs_right: bool = False
    # FHIR routes answer JSON and XML (``_format``); the directory dialect is XML only.
    formats: tuple[str, ...] = ("json", "xml")
    # A FHIR JSON body (a batch or transaction Bundle).
    body: dict[str, Any] | None = None

    def run(self, client: FlaskClient, headers: dict[str, str], fmt: str) -> Answer:
        """Send the request in format ``fmt`` (json or xml; ignored by the directory)."""
        path = self.path
        if len(self.formats) > 1:
            path += f"{'&' if '?' in path else '?'}_format={fmt}"
        data: Any = self.form
        if self.body is not None:
            headers = {**headers, "Content-Type": "application/fhir+json"}
            data = orjson.dumps(self.body)
        with client.open(path, method=self.method, headers=headers, data=data) as response:
            return Answer(response.status_code, response.get_data(), dict(response.headers))


@dataclass(frozen=True)
class Answer:
    """A response, read whole and closed (streamed bodies hold spooled files)."""

    status_code: int
    data: bytes
    headers: dict[str, str]


@dataclass
class Plan:
    """The requests to make, and the routes they cover."""

    calls: list[Call] = field(default_factory=list)
    covered: set[str] = field(default_factory=set)
    export: list[str] = field(default_factory=list)


def resource_type_of(route: Route) -> str | None:
    """Return the resource type in a ``/fhir/<Type>...`` rule, if any."""
    parts = route.rule.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "fhir" and parts[2][:1].isupper() \
        else None


def related_ids(client: FlaskClient, headers: dict[str, str], resource_type: str,
                markers: tuple[str, ...]) -> list[str]:
    """Return the ids of the resources of a type (as ``headers`` sees them) that mention one
    of ``markers`` (the canary children's ids or strings)."""
    bundle = client.get(f"/fhir/{resource_type}?_count=1000", headers=headers).json
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if any(m in orjson.dumps(e["resource"]).decode() for m in markers)]


def version_ids(client: FlaskClient, headers: dict[str, str], resource_type: str,
                resource_id: str) -> list[str]:
    """Return every version id of a resource (as ``headers`` sees its ``_history``)."""
    bundle = client.get(f"/fhir/{resource_type}/{resource_id}/_history", headers=headers).json
    found = [str(e["response"]["etag"]).removeprefix('W/"').removesuffix('"')
             for e in (bundle or {}).get("entry", [])]
    return found or ["1"]


def _search_calls(route: Route, resource_type: str, handler: Any,
                  patient_ids: tuple[str, ...]) -> Iterator[Call]:
    """Yield the searches of one type: plain, each _include/_revinclude, and for Patient by
    the canaries' ids and by the shielded child's postcode."""
    base = f"/fhir/{resource_type}?_count=1000"
    if route.method == "POST":
        yield Call("POST", f"/fhir/{resource_type}/_search", {"_count": "1000"}, str(route))
        return
    yield Call("GET", base, route=str(route))
    for name in sorted(handler.includes):
        yield Call("GET", f"{base}&_include={name}", route=str(route))
    for name in sorted(handler.revincludes):
        yield Call("GET", f"{base}&_revinclude={name}", route=str(route))
    if resource_type == "Patient":
        yield Call("GET", f"{base}&address-postalcode=ZZ7", route=str(route))
        yield Call("GET", f"{base}&_elements=identifier,address,contact,generalPractitioner",
                   route=str(route))
        revincludes = "".join(f"&_revinclude={n}" for n in sorted(handler.revincludes))
        yield Call("GET", f"{base}&_id={','.join(patient_ids)}{revincludes}", route=str(route))


@dataclass(frozen=True)
class Subjects:
    """What the requests are about: the children's ids, their authority, and markers (ids and
    strings) that tell their resources among the others."""

    patient_ids: tuple[str, ...]
    contactpoint_ids: tuple[str, ...]
    authority: str
    markers: tuple[str, ...]


def _directory_calls(route: Route, subjects: Subjects,
                     assessment_ids: list[str]) -> Iterator[Call]:
    """Yield the calls of a directory XML GET route (lists by authority, reads by id)."""
    if route.method != "GET":
        return
    if not route.arguments:
        yield Call("GET", f"{route.rule}?authority={subjects.authority}&_count=1000",
                   route=str(route), formats=("xml",))
    for name, values in (("contactpoint_id", subjects.contactpoint_ids),
                         ("assessment_id", tuple(assessment_ids))):
        if route.arguments == {name}:
            for value in values:
                yield Call("GET", route.url(**{name: value}), route=str(route),
                           formats=("xml",))


def plan_requests(app: Flask, client: FlaskClient, admin: dict[str, str],
                  subjects: Subjects) -> Plan:
    """Return every request that can return the canary children's data."""
    from adapter.fhir.api import providers_of

    handlers = providers_of(app)
    plan = Plan()
    ids: dict[str, list[str]] = {"Patient": list(subjects.patient_ids)}
    versions: dict[tuple[str, str], list[str]] = {}
    assessments = _assessment_ids(app, subjects.authority)
    for route in declared_routes(app):
        if route.method not in ("GET", "POST") or route.access is None or route.access.public:
            continue
        kind = resource_type_of(route)
        if route.endpoint in EXPORT_ENDPOINTS:
            plan.covered.add(route.endpoint)
            continue
        if route.rule.startswith(DIRECTORY_RECORDS):
            calls = list(_directory_calls(route, subjects, assessments))
            plan.covered.update([route.endpoint] if calls else [])
            plan.calls.extend(calls)
            continue
        if kind in NO_CHILD_DATA or kind not in CHILD_TYPES:
            continue
        if kind not in ids:
            ids[kind] = related_ids(client, admin, kind, subjects.markers)
        for rid in ids[kind]:
            if (kind, rid) not in versions:
                versions[(kind, rid)] = version_ids(client, admin, kind, rid)
        calls = list(_route_calls(route, kind, handlers.get(kind),
                                  {rid: versions[(kind, rid)] for rid in ids[kind]}))
        if calls:
            plan.covered.add(route.endpoint)
            plan.calls.extend(calls)
    plan.export = [r.endpoint for r in declared_routes(app) if r.endpoint in EXPORT_ENDPOINTS]
    plan.calls.extend(_bundle_calls(app, plan))
    return plan


def _bundle_calls(app: Flask, plan: Plan) -> Iterator[Call]:
    """Yield a batch Bundle (``POST /fhir``) whose GET entries are every FHIR read and vread
    of the plan: each entry is answered through the same handlers, and its response must
    disclose no more (a transaction's GET entries take the same path,
    ``adapter.fhir.transaction._read_entry``; searches in a Bundle run the search page the
    search routes run)."""
    reads = [call.path.removeprefix("/fhir/") for call in plan.calls
             if call.method == "GET" and call.path.startswith("/fhir/")
             and not any(mark in call.path for mark in ("$", "?"))
             and not call.path.endswith("/_history")]
    for route in declared_routes(app):
        if route.endpoint != "fhir.system.bundle":
            continue
        plan.covered.add(route.endpoint)
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": url}} for url in reads]}
        yield Call("POST", route.rule, route=str(route), body=bundle)


def _route_calls(route: Route, kind: str, handler: Any,
                 ids: dict[str, list[str]]) -> Iterator[Call]:
    """Yield the calls that exercise one route of a child-data type (``ids``: each resource's
    version ids; a route taking a version is called with every one)."""
    name = route.endpoint.rsplit(".", 1)[-1]
    if name in ("search-type", "search-type-post"):
        yield from _search_calls(route, kind, handler, tuple(ids) if kind == "Patient" else ())
        return
    if route.method != "GET" or not route.arguments <= {"resource_id", "version"}:
        return  # writes, $validate: no child's data comes back that was not sent
    needs_right = route.access is not None and route.access.right is not None
    if not route.arguments:  # an operation on the type
        yield Call("GET", route.rule, route=str(route), needs_right=needs_right)
        return
    for rid, numbers in ids.items():
        for version in numbers if "version" in route.arguments else numbers[:1]:
            yield Call("GET", route.url(resource_id=rid, version=version), route=str(route),
                       needs_right=needs_right)


def _assessment_ids(app: Flask, authority: str) -> list[str]:
    """Return the eCAF ids of a few assessment references of ``authority``'s children (of any
    authority's when it has none)."""
    from sqlalchemy import select

    from adapter.models import Assessment, Child, Organisation

    with app.extensions["db"].sessions() as session:
        own = list(session.scalars(
            select(Assessment.assessment_id).join(Assessment.child)
            .join(Child.managing_organisation).where(Organisation.gss_code == authority)
            .order_by(Assessment.id).limit(3)))
        return own or list(session.scalars(
            select(Assessment.assessment_id).order_by(Assessment.id).limit(3)))


def uncovered_get_routes(app: Flask, plan: Plan) -> list[str]:
    """Return the non-public GET routes that are neither exercised nor known to hold no
    child's data."""
    out = []
    for route in declared_routes(app):
        if route.method != "GET" or route.access is None or route.access.public:
            continue
        if route.endpoint in plan.covered or resource_type_of(route) in NO_CHILD_DATA \
                or route.rule.startswith(tuple(NO_CHILD_DATA_PATHS)):
            continue
        out.append(str(route))
    return out


def export_bodies(client: FlaskClient, headers: dict[str, str], group: str) -> list[bytes]:
    """Run a system-, a Patient- and a Group-level export for ``headers``' client; return the
    status answers and every file that can hold a child's data: the system-level Organization
    and Practitioner files are the whole directory of services and staff, as their REST
    searches answer every client, so they are left out; a Patient or Group export's are those
    its children's disclosed resources refer to, and are kept."""
    from adapter.export.runner import join_jobs

    bodies = []
    for path in ("/fhir/$export", "/fhir/Patient/$export", f"/fhir/Group/{group}/$export"):
        response = client.get(path, headers={**headers, **ASYNC})
        assert response.status_code == 202, response.data
        join_jobs(timeout=60)
        status = client.get(response.headers["Content-Location"], headers=headers)
        assert status.status_code == 200, status.data
        bodies.append(status.data)
        for item in status.json["output"] + status.json["error"]:
            if path == "/fhir/$export" and item["type"] in NO_CHILD_DATA:
                continue
            with client.get(item["url"], headers=headers) as download:
                assert download.status_code == 200
                bodies.append(download.data)
    return bodies
