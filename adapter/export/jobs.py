"""Export jobs in the database and their files on disk: creation, lookup for the client that
started them, cancellation, expiry and the sweep (FHIR Bulk Data Access IG v2, export.html
"Bulk Data Status Request", "Bulk Data Delete Request"; the decommissioning destroys export
files)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from adapter.db import Database
from adapter.errors import Forbidden, Invalid, NotFound, issue
from adapter.export.params import ExportRequest
from adapter.models import Child, ExportJob, Organisation
from adapter.models.base import utcnow
from adapter.models.canonical import as_utc
from adapter.models.export import RUNNING_STATES
from adapter.security.caller import Caller
from adapter.security.policy import visible_to

log = logging.getLogger(__name__)
JOB_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
STALLED: Final = ("The export stopped making progress (the process running it ended): "
                  "its partial files were deleted; start a new export.")


@dataclass(frozen=True)
class ExportSettings:
    """The export settings of the app (``GATEWAY_EXPORT_*``, ``GATEWAY_INSTANCE_PATH``)."""

    instance_path: Path
    ttl: dt.timedelta
    stall: dt.timedelta
    inline: bool

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> ExportSettings:
        """Return the export settings of an app's config."""
        return cls(Path(config["INSTANCE_PATH"]),
                   dt.timedelta(seconds=int(config["EXPORT_TTL_SECONDS"])),
                   dt.timedelta(seconds=int(config["EXPORT_STALL_SECONDS"])),
                   bool(config["EXPORT_INLINE"]))

    @property
    def root(self) -> Path:
        """Return the folder holding every job's folder."""
        return self.instance_path / "exports"

    def folder(self, job_id: str) -> Path:
        """Return the folder of one job's files."""
        return self.root / job_id


@dataclass(frozen=True)
class SweepResult:
    """What a sweep removed."""

    expired: int
    stalled: int
    orphans: int


def remove_files(settings: ExportSettings, job_id: str) -> None:
    """Delete a job's folder and files (nothing to do when already gone)."""
    shutil.rmtree(settings.folder(job_id), ignore_errors=True)


def find_authority(session: Session, group_id: str) -> Organisation:
    """Return the local authority a Group id names: its GSS code or Organization id.

    :raises NotFound: no such local authority.
    """
    authority = session.scalar(select(Organisation).where(
        Organisation.type == "local-authority",
        or_(Organisation.gss_code == group_id, Organisation.resource_id == group_id)))
    if authority is None:
        raise NotFound(f"No Group {group_id!r}: a Group here is a local authority, named by its "
                       "GSS code or its Organization id.", expression="Group")
    return authority


def scope_text(caller: Caller) -> str:
    """Return the caller's scopes as SMART v2 scope strings (kept with the job)."""
    return " ".join(f"system/{scope.resource}."
                    + "".join(c for c in "cruds" if c in scope.permissions)
                    for scope in caller.scopes)


def resolve_patients(session: Session, wanted: ExportRequest, caller: Caller,
                     authority: Organisation | None, lenient: bool) -> list[str] | None:
    """Return the ids of the ``patient`` parameter that name a Patient the export may hold:
    one ``caller`` may see (the disclosure policy's ``visible_to``) and, at Group level, a
    member of the Group (None when the parameter was not given).

    export.html "Query Parameters" (patient): patients that are not on the server, or not in
    the Group, are reported; here the kick-off is refused naming them, as every unresolvable
    reference is, and under ``Prefer: handling=lenient`` they are noted in the error file.
    One message for absent and invisible: the answer does not tell that an entry exists.

    :raises Invalid: an id names no such Patient (strict handling).
    """
    if wanted.patients is None:
        return None
    asked = sorted(set(wanted.patients))
    query = select(Child.resource_id).where(Child.resource_id.in_(asked), visible_to(caller))
    if authority is not None:
        query = query.where(Child.managing_organisation_id == authority.id)
    found = set(session.scalars(query))
    missing = [i for i in asked if i not in found]
    if missing:
        where = "in this Group" if authority is not None else "that this client may export"
        names = ", ".join(f"Patient/{i}" for i in missing[:10])
        message = f"The patient parameter names no Patient {where}: {names}."
        if not lenient:
            raise Invalid(message + " Remove these references (or send 'Prefer: "
                          "handling=lenient' to have them ignored).", expression="patient")
        wanted.notes.append(issue("warning", "not-found", "Ignored: " + message, "patient"))
    return [i for i in asked if i in found]


def create_job(session: Session, caller: Caller, wanted: ExportRequest, request_url: str,
               settings: ExportSettings, authority: Organisation | None = None,
               group_id: str | None = None, level: str | None = None,
               patients: list[str] | None = None) -> ExportJob:
    """Add a new accepted job for ``caller`` and return it (``level`` defaults to group when
    an authority is given, else system)."""
    now = utcnow()
    job = ExportJob(
        job_id=uuid.uuid4().hex, client_id=caller.client_id,
        organisation_code=caller.organisation_code,
        scopes=scope_text(caller),
        rights=sorted(caller.rights), purpose_of_use=caller.purpose_of_use,
        request_id=caller.request_id,
        level=level or ("group" if authority is not None else "system"),
        group_id=group_id, authority_id=authority.id if authority is not None else None,
        patients=patients,
        types=list(wanted.types), since=wanted.since, output_format=wanted.output_format,
        request_url=request_url, state="accepted", children_total=0, children_done=0,
        phase="queued", outputs=[], error_files=[], notes=wanted.notes, transaction_time=now,
        created=now, heartbeat=now, expires=now + settings.ttl)
    session.add(job)
    session.flush()
    return job


def job_for(session: Session, job_id: str, caller: Caller,
            settings: ExportSettings) -> ExportJob | None:
    """Return the job ``job_id`` of ``caller`` after applying the stall timeout, or None when
    it has expired (it is then deleted with its files: commit, then answer 404).

    :raises NotFound: no such job, or cancelled (export.html "Bulk Data Delete Request":
        later requests get 404).
    :raises Forbidden: another client's job (only the client that started an export is
        served its status and files).
    """
    job = session.scalar(select(ExportJob).where(ExportJob.job_id == job_id)) \
        if JOB_ID_RE.fullmatch(job_id) else None
    if job is None or job.state == "cancelled":
        raise NotFound("No such export job: it may have expired or been deleted.")
    if job.client_id != caller.client_id:
        raise Forbidden("This export belongs to another client.")
    now = utcnow()
    if job.state not in RUNNING_STATES and aware(job.expires) <= now:
        remove_files(settings, job.job_id)
        session.delete(job)
        return None
    if job.state in RUNNING_STATES and aware(job.heartbeat) <= now - settings.stall:
        fail_job(job, STALLED, settings)
    return job


def aware(moment: dt.datetime) -> dt.datetime:
    """Return a stored timestamp as an aware UTC datetime (SQLite returns naive ones)."""
    return as_utc(moment) or moment


def fail_job(job: ExportJob, message: str, settings: ExportSettings) -> None:
    """Mark a running job failed with ``message`` (no personal data) and delete its files."""
    now = utcnow()
    job.state, job.failure, job.phase = "failed", message[:500], "failed"
    job.finished, job.expires = now, now + settings.ttl
    remove_files(settings, job.job_id)


def cancel_job(job: ExportJob) -> None:
    """Mark a job cancelled (export.html "Bulk Data Delete Request"); the sweep removes it."""
    now = utcnow()
    job.state, job.phase, job.finished, job.expires = "cancelled", "cancelled", now, now


def sweep(db: Database, settings: ExportSettings) -> SweepResult:
    """Fail stalled jobs, delete expired and cancelled jobs with their files, and remove
    folders that belong to no job (left by a process that died)."""
    now = utcnow()
    with db.write_transaction() as session:
        stalled = list(session.scalars(select(ExportJob).where(
            ExportJob.state.in_(RUNNING_STATES), ExportJob.heartbeat <= now - settings.stall)))
        for job in stalled:
            fail_job(job, STALLED, settings)
        expired = list(session.scalars(select(ExportJob.job_id).where(
            ExportJob.state.not_in(RUNNING_STATES), ExportJob.expires <= now)))
        for job_id in expired:
            remove_files(settings, job_id)
        session.execute(delete(ExportJob).where(ExportJob.job_id.in_(expired)))
    orphans = _remove_orphans(db, settings)
    if stalled or expired or orphans:
        log.info("export sweep: %d expired, %d stalled, %d orphan folders", len(expired),
                 len(stalled), orphans)
    return SweepResult(len(expired), len(stalled), orphans)


def _remove_orphans(db: Database, settings: ExportSettings) -> int:
    """Delete job folders whose job no longer exists; return how many."""
    if not settings.root.is_dir():
        return 0
    names = [p.name for p in settings.root.iterdir() if JOB_ID_RE.fullmatch(p.name)]
    if not names:
        return 0
    with db.transaction() as session:
        known = set(session.scalars(select(ExportJob.job_id).where(ExportJob.job_id.in_(names))))
    orphans = [name for name in names if name not in known]
    for name in orphans:
        remove_files(settings, name)
    return len(orphans)


def destroy_exports(db: Database, settings: ExportSettings) -> int:
    """Delete every export job and every export file (the decommissioning's destruction);
    return how many jobs there were."""
    with db.write_transaction() as session:
        count = int(session.scalar(select(func.count(ExportJob.id))) or 0)
        session.execute(delete(ExportJob))
    shutil.rmtree(settings.root, ignore_errors=True)
    return count
