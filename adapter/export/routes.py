"""The bulk export routes (FHIR Bulk Data Access IG v2, export.html): the system-, Patient-
and Group-level kick-off (GET with a query, or POST with a ``Parameters`` body), the status
request (poll, and DELETE to cancel) and the file request. Every URL answered is absolute
(docs/architecture.md "The outside contract")."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any, Final, cast

import orjson
from flask import Flask, Response, current_app, g, request, send_file

from adapter.db import get_db
from adapter.errors import GatewayError, MethodNotAllowed, NotFound, issue, operation_outcome
from adapter.export import jobs
from adapter.export.files import OUTCOME
from adapter.export.jobs import ExportSettings
from adapter.export.params import ExportRequest, parameters_of, parse_export_request, prefer_tokens
from adapter.export.runner import start_job
from adapter.fhir.body import body_format, parse_json_resource, raw_body, read_resource
from adapter.fhir.bundle import fhir_base
from adapter.http import json_response, public_base
from adapter.models import ExportJob
from adapter.models.canonical import as_utc
from adapter.security.access import authenticated, require_scope
from adapter.security.caller import Caller

NDJSON: Final = "application/fhir+ndjson"
KICK_OFF_METHODS: Final = ["GET", "POST"]
# export.html "Response - In-Progress Status": Retry-After tells the client when to poll.
POLL_SECONDS: Final = 2


class ExportFailed(GatewayError):
    """The export job itself failed (export.html "Response - Error Status")."""

    status, issue_code = 500, "exception"


def caller() -> Caller:
    """Return the authenticated caller (set by the access layer)."""
    who: Caller = g.caller
    return who


def settings() -> ExportSettings:
    """Return the export settings of the current app."""
    return ExportSettings.of(current_app.config)


def status_url(job_id: str) -> str:
    """Return the absolute status URL of a job."""
    return f"{fhir_base()}/$export-status/{job_id}"


def file_url(job_id: str, name: str) -> str:
    """Return the absolute URL of one of a job's files."""
    return f"{fhir_base()}/$export-file/{job_id}/{name}"


@authenticated("read")
def kick_off_system() -> Response:
    """``GET|POST /fhir/$export``: export everything the caller may read (export.html "Bulk
    Data Kick-off Request", system level)."""
    return kick_off("system")


@authenticated("read")
def kick_off_patient() -> Response:
    """``GET|POST /fhir/Patient/$export``: export the patient compartments of every child the
    caller may see (export.html, Patient level)."""
    return kick_off("patient")


@authenticated("read")
def kick_off_group(group_id: str) -> Response:
    """``GET|POST /fhir/Group/{id}/$export``: export the children a local authority manages."""
    return kick_off("group", group_id)


def kick_off(level: str, group_id: str | None = None) -> Response:
    """Check the request, store the job, start it and answer 202 with ``Content-Location``.

    :raises MethodNotAllowed: a HEAD request (it starts nothing).
    :raises BadRequest: no ``Prefer: respond-async``, or a bad or unsupported parameter.
    :raises Forbidden: no read scope for a requested type.
    :raises NotFound: no such Group (local authority).
    :raises Invalid: the ``patient`` parameter names no Patient the export may hold.
    """
    if request.method == "HEAD":
        # HEAD is safe (RFC 9110 section 9.2.1, 9.3.2): it may not start the job a GET
        # kick-off starts, and without one there is no Content-Location to describe.
        raise MethodNotAllowed("HEAD starts no export: kick one off with GET or POST "
                               "(Bulk Data IG, export.html).",
                               headers={"Allow": ", ".join(KICK_OFF_METHODS)})
    who, config = caller(), settings()
    wanted = _export_request(level, who)
    db = get_db()
    jobs.sweep(db, config)
    request_url = public_base() + request.full_path.rstrip("?")
    lenient = "handling=lenient" in prefer_tokens(request.headers.getlist("Prefer"))
    with db.write_transaction() as session:
        authority = jobs.find_authority(session, group_id) if group_id is not None else None
        patients = jobs.resolve_patients(session, wanted, who, authority, lenient)
        job = jobs.create_job(session, who, wanted, request_url, config, authority, group_id,
                              level, patients)
        job_id = job.job_id
    start_job(cast(Any, current_app)._get_current_object(), job_id, who)
    outcome = operation_outcome([issue("information", "informational",
                                       "Export accepted: poll the Content-Location URL.")])
    return json_response(outcome, 202, "application/fhir+json",
                         {"Content-Location": status_url(job_id)})


def _parameters_body() -> dict[str, Any]:
    """Return a POST kick-off's body as a resource: none is a Parameters without parameters.

    smart-on-fhir's bulk-data-client posts ``"parameter": []`` when it has no parameter to
    send; FHIR JSON has no empty arrays (json.html), but what the client means is plain, so
    that one element is read as absent and the rest of the body is checked as every body is.
    """
    data = raw_body()
    if not data.strip():
        return {"resourceType": "Parameters"}
    if body_format() == "json":
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = None  # read_resource says what is wrong with it
        if isinstance(value, dict) and value.get("parameter") == []:
            del value["parameter"]
            return parse_json_resource(orjson.dumps(value))
    return read_resource()


def _export_request(level: str, who: Caller) -> ExportRequest:
    """Return the checked parameters of a GET query or of a POST ``Parameters`` body (an
    empty POST body asks for everything, as a GET without a query does).

    export.html "Bulk Data Kick-off Request": a POST carries the parameters in its body; a
    query on a POST (other than ``_format``) is a parameter the kick-off does not take.
    """
    prefer = prefer_tokens(request.headers.getlist("Prefer"))
    if request.method != "POST":
        return parse_export_request(request.args, prefer, who, level)
    args, patients = parameters_of(_parameters_body(), fhir_base())
    query = [name for name in request.args if name != "_format"]
    return parse_export_request(args, prefer, who, level, patients, posted=True,
                                query_on_post=query)


@authenticated("read")
def status(job_id: str) -> Response:
    """``GET`` the status URL: 202 with progress while running, 200 with the manifest when
    complete, the failure as an OperationOutcome when the job failed.

    :raises NotFound: no such job (deleted, expired) or not the caller's.
    :raises ExportFailed: the job failed.
    """
    job = _job(job_id)
    if job.state == "failed":
        raise ExportFailed(job.failure or "The export failed.")
    if job.state != "completed":
        return Response(status=202, headers={"X-Progress": _progress(job),
                                             "Retry-After": str(POLL_SECONDS)})
    expires = as_utc(job.expires) or job.expires
    return json_response(manifest(job), 200, "application/json",
                         {"Expires": format_datetime(expires, usegmt=True)})


def _job(job_id: str) -> ExportJob:
    """Return the caller's job, expiry and stall timeout applied (committed).

    :raises NotFound: no such job, deleted or expired.
    :raises Forbidden: another client's job.
    """
    with get_db().write_transaction() as session:
        job = jobs.job_for(session, job_id, caller(), settings())
    if job is None:
        raise NotFound("This export has expired: its files were deleted.")
    return job


def _progress(job: ExportJob) -> str:
    """Return the ``X-Progress`` text (export.html "Response - In-Progress Status")."""
    if job.state == "accepted":
        return "queued"
    if job.phase == "children" and job.children_total:
        percent = 100 * job.children_done // job.children_total
        return f"{percent}% of children ({job.children_done} of {job.children_total})"
    return f"writing {job.phase}"


def manifest(job: ExportJob) -> dict[str, Any]:
    """Return the complete-status body (export.html "Response - Complete Status")."""
    moment = as_utc(job.transaction_time) or job.transaction_time
    return {
        "transactionTime": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [{"type": o["type"], "url": file_url(job.job_id, o["file"]),
                    "count": o["count"]} for o in job.outputs],
        "error": [{"type": e["type"], "url": file_url(job.job_id, e["file"]),
                   "count": e["count"]} for e in job.error_files],
    }


@authenticated("read")
def cancel(job_id: str) -> Response:
    """``DELETE`` the status URL: cancel the job and delete its files (export.html "Bulk Data
    Delete Request"); later requests get 404.

    :raises NotFound: no such job, or not the caller's.
    """
    with get_db().write_transaction() as session:
        job = jobs.job_for(session, job_id, caller(), settings())
        if job is not None:
            jobs.cancel_job(job)
    jobs.remove_files(settings(), job_id)
    if job is None:
        raise NotFound("This export has expired: its files were deleted.")
    outcome = operation_outcome([issue("information", "informational",
                                       "Export deleted with its files.")])
    return json_response(outcome, 202, "application/fhir+json")


@authenticated("read")
def download(job_id: str, name: str) -> Response:
    """``GET`` one file of a completed job, streamed from disk (export.html "File Request").

    :raises NotFound: no such job or file (deleted, expired, not complete).
    :raises Forbidden: another client's job, or no read scope for the file's type any more.
    """
    job = _job(job_id)
    items = job.outputs + job.error_files if job.state == "completed" else []
    item = next((i for i in items if i["file"] == name), None)
    path = settings().folder(job_id) / name
    if item is None or not path.is_file():
        raise NotFound(f"No file {name!r} in this export.")
    if item["type"] != OUTCOME:
        require_scope(caller(), item["type"], "export")
    return send_file(path, mimetype=NDJSON, conditional=False, etag=False)


def init_app(app: Flask) -> None:
    """Register the export routes."""
    rules = (("/fhir/$export", "system", kick_off_system, KICK_OFF_METHODS),
             ("/fhir/Patient/$export", "patient", kick_off_patient, KICK_OFF_METHODS),
             ("/fhir/Group/<group_id>/$export", "group", kick_off_group, KICK_OFF_METHODS),
             ("/fhir/$export-status/<job_id>", "status", status, ["GET"]),
             ("/fhir/$export-status/<job_id>", "delete", cancel, ["DELETE"]),
             ("/fhir/$export-file/<job_id>/<name>", "file", download, ["GET"]))
    for rule, name, view, methods in rules:
        # Static segments outrank variables in the URL map, so "Patient/$export" is never
        # taken for a read of Patient "$export"; with or without a trailing slash.
        app.add_url_rule(rule, endpoint=f"fhir.export.{name}", view_func=view, methods=methods,
                         strict_slashes=False)
