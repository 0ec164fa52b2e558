"""The decommissioning's HTTP routes. FHIR: ``Task`` (purge traffic), ``PlanDefinition``
(metadata), ``GET /fhir/Task/{id}/$purge-list`` (NDJSON of a large Task's children) and
``GET /fhir/CareTeam/$rekey``; directory XML: ``GET /directory/decommission`` and
``GET /directory/assessments/rekey``; the certificate and its key under ``/decommission/``.
Each route declares its kind to the access layer, which applies the phase rules."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from flask import Flask, Response, current_app, request, stream_with_context
from lxml import etree

from adapter.db import get_db
from adapter.decommission.handlers import PlanDefinitionHandler, TaskHandler, require_plan
from adapter.decommission.rekey import iter_rekeys, rekey_chunks, rekey_page, rekey_parameters
from adapter.decommission.resources import timetable_text
from adapter.decommission.tasks import iter_named, mark_reached
from adapter.directory.schema import q
from adapter.directory.writer import NSMAP, xml_datetime
from adapter.errors import BadRequest, GatewayError, NotFound
from adapter.fhir.capability import remember_handler
from adapter.fhir.handlers import ResourceHandler
from adapter.fhir.routes import ROUTES, caller, check_id
from adapter.fhir.search import decode_cursor, encode_cursor
from adapter.http import (
    current_settings,
    fhir_response,
    json_response,
    negotiated_format,
)
from adapter.models.base import utcnow
from adapter.security import audit
from adapter.security.access import authenticated, interaction, public, require_scope
from adapter.systems import OwnSystems

XML_TYPE = "application/xml; charset=utf-8"
HANDLER_KINDS = {"Task": "purge", "PlanDefinition": "meta"}


class NotAcceptable(GatewayError):
    """The representation asked for cannot be given."""

    status, issue_code = 406, "not-supported"


def json_only(view: Callable[..., Response]) -> Callable[..., Response]:
    """Return ``view`` refusing FHIR XML: the service's R4 XML writer covers the resource types
    whose R4B models match R4 (``adapter.fhir.xml``), and R4B's PlanDefinition does not
    (``subjectCanonical``); the plan's XML form is the directory's ``/directory/decommission``."""
    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Response:
        if negotiated_format() == "xml":
            raise NotAcceptable("PlanDefinition is served in FHIR JSON only; the plan in XML "
                                "is GET /directory/decommission (schemas/xml/decommission.xsd).")
        return view(*args, **kwargs)
    return guarded


def register_handlers(app: Flask) -> None:
    """Add the FHIR routes of the Task and PlanDefinition handlers with their kinds (they
    read the request's settings: ``adapter.http.current_settings``)."""
    handlers: list[ResourceHandler] = [TaskHandler(), PlanDefinitionHandler()]
    for handler in handlers:
        remember_handler(app, handler)
        kind = HANDLER_KINDS[handler.resource_type]
        for name in handler.interactions:
            suffix, methods, factory, scope, _kind = ROUTES[name]
            made = factory(handler)
            made = json_only(made) if handler.resource_type == "PlanDefinition" else made
            view = interaction(handler.resource_type, scope, kind)(made)
            app.add_url_rule(f"/fhir/{handler.resource_type}{suffix}",
                             endpoint=f"fhir.{handler.resource_type}.{name}", view_func=view,
                             methods=methods)


@interaction("Task", "read", "purge")
def purge_list(resource_id: str) -> Response:
    """Stream the children a Task names as NDJSON (one subsetted Patient per line)."""
    check_id("Task", resource_id)
    db, who = get_db(), caller()
    with db.write_transaction() as session:
        task = TaskHandler().load(session, resource_id, who)
        audit.record(session, "read", resource_type="Task", resource_id=task.resource_id,
                     detail="purge list", caller=who)
        mark_reached(task, who.client_id, utcnow())
        task_id = task.id
    own = OwnSystems(str(current_app.config["CANONICAL_BASE"]))

    def lines() -> Iterator[bytes]:
        from adapter.models import PurgeTask

        with db.sessions() as session:
            stored = session.get(PurgeTask, task_id)
            for ref, cpid in iter_named(session, stored) if stored is not None else ():
                patient: dict[str, Any] = {"resourceType": "Patient", "id": ref, "meta": {
                    "tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                             "code": "SUBSETTED"}]}}
                if cpid:
                    patient["identifier"] = [{"system": own.contactpoint_id, "value": cpid}]
                yield orjson.dumps(patient) + b"\n"
    return Response(stream_with_context(lines()), content_type="application/fhir+ndjson")


def _page_args() -> tuple[int, int]:
    """Return (after, count) of a ``$rekey`` page.

    :raises BadRequest: a malformed ``_count`` or ``_cursor``.
    """
    raw_count = request.args.get("_count", "100")
    if not raw_count.isdigit() or not 1 <= int(raw_count) <= 1000:
        raise BadRequest("_count is a whole number from 1 to 1000.", expression="_count")
    cursor = request.args.get("_cursor")
    after = decode_cursor(cursor, 1)[0] if cursor else "0"
    if not after.isdigit():
        raise BadRequest("_cursor is not a paging cursor of this operation.",
                         expression="_cursor")
    return int(after), int(raw_count)


@interaction("CareTeam", "search", "read")
def rekey_fhir() -> Response:
    """``GET /fhir/CareTeam/$rekey``: one page of the caller's re-keying records."""
    who = caller()
    require_scope(who, "Patient", "search")
    after, count = _page_args()
    with get_db().write_transaction() as session:
        records, last = rekey_page(session, who, after, count)
    next_url = (f"{current_settings().public_base}/fhir/CareTeam/$rekey?_count={count}"
                f"&_cursor={encode_cursor(last)}") if last is not None else None
    own = OwnSystems(str(current_app.config["CANONICAL_BASE"]))
    return fhir_response(rekey_parameters(records, own, next_url))


@authenticated("read")
def rekey_xml() -> Response:
    """``GET /directory/assessments/rekey``: every re-keying record of the caller, streamed."""
    who = caller()
    require_scope(who, "CareTeam", "search")
    require_scope(who, "Patient", "search")
    chunks = rekey_chunks(iter_rekeys(get_db(), who))
    return Response(stream_with_context(chunks), content_type=XML_TYPE)


def plan_element() -> etree._Element:
    """Return the ``DecommissionPlan`` element of the current plan.

    :raises NotFound: no plan.
    """
    with get_db().sessions() as session:
        plan = require_plan(session)
    t = plan.timetable
    root = etree.Element(q("DecommissionPlan"), nsmap=NSMAP, version=str(plan.version),
                         lastUpdated=xml_datetime(plan.last_updated))
    values = [("Phase", plan.phase), ("LastUse", t.last_use.isoformat()),
              ("RunDownAt", xml_datetime(t.run_down_at)),
              ("SwitchOffAt", xml_datetime(t.switch_off_at)),
              ("DestroyByAt", xml_datetime(t.destroy_by_at)), ("TimeZone", t.time_zone),
              ("ReminderDays", str(plan.reminder_days)),
              ("EscalateDays", str(plan.escalate_days)),
              ("RunDownStarted", plan.run_down_started), ("SwitchedOff", plan.switched_off),
              ("Destroyed", plan.destroyed), ("Description", timetable_text(plan))]
    for name, value in values:
        if value is not None:
            text = value if isinstance(value, str) else xml_datetime(value)
            etree.SubElement(root, q(name)).text = text
    return root


@authenticated("meta")
def plan_xml() -> Response:
    """``GET /directory/decommission``: the plan in directory XML."""
    return Response(etree.tostring(plan_element(), xml_declaration=True, encoding="UTF-8",
                                   pretty_print=True), content_type=XML_TYPE)


def _certificate() -> tuple[dict[str, Any], str]:
    """Return the stored certificate (JSON form, XML form).

    :raises NotFound: none issued yet.
    """
    from adapter.decommission.plan import load_plan

    with get_db().sessions() as session:
        plan = load_plan(session)
        if plan is None or not plan.certificate or "certificate" not in plan.certificate \
                or plan.certificate_xml is None:
            raise NotFound("No destruction certificate has been issued.")
        return plan.certificate, plan.certificate_xml


@public("meta")
def certificate_json() -> Response:
    """The signed certificate in JSON (public: it holds no personal data)."""
    return json_response(_certificate()[0])


@public("meta")
def certificate_xml() -> Response:
    """The signed certificate in XML."""
    return Response(_certificate()[1].encode(), content_type=XML_TYPE)


@public("meta")
def jwks() -> Response:
    """The public key the certificate is signed with (a JWKS, RFC 7517)."""
    from adapter.decommission.certificate import public_jwks
    from adapter.security.keys import service_key

    return json_response(public_jwks(service_key(current_app.config["INSTANCE_PATH"])),
                         content_type="application/jwk-set+json")


def init_app(app: Flask) -> None:
    """Register the routes."""
    register_handlers(app)
    rules: list[tuple[str, str, Callable[..., Response]]] = [
        ("/fhir/Task/<resource_id>/$purge-list", "fhir.Task.purge-list", purge_list),
             ("/fhir/CareTeam/$rekey", "fhir.CareTeam.rekey", rekey_fhir),
             ("/directory/assessments/rekey", "directory.rekey", rekey_xml),
             ("/directory/decommission", "directory.decommission", plan_xml),
             ("/decommission/certificate.json", "decommission.certificate_json",
              certificate_json),
             ("/decommission/certificate.xml", "decommission.certificate_xml", certificate_xml),
             ("/decommission/jwks.json", "decommission.jwks", jwks)]
    for rule, endpoint, view in rules:
        app.add_url_rule(rule, endpoint=endpoint, view_func=view, methods=["GET"])
