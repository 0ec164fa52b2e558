"""Where export jobs run: in a background thread of the process that received the kick-off
(or inline with ``GATEWAY_EXPORT_INLINE``). The job's state lives in the database, so any
process answers status requests; a job whose process dies stops beating and is failed by the
stall timeout (``GATEWAY_EXPORT_STALL_SECONDS``)."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Final

from flask import Flask
from sqlalchemy import select

from adapter.db import Database, get_db
from adapter.export.exporter import Exporter, JobGone, JobSpec
from adapter.export.jobs import ExportSettings, fail_job, remove_files
from adapter.models import ExportJob
from adapter.models.export import RUNNING_STATES
from adapter.security.caller import Caller

log = logging.getLogger(__name__)
FAILED: Final = ("The export failed with an internal error (logged for the operators); its "
                 "partial files were deleted: start a new export.")

_threads: dict[str, threading.Thread] = {}
_lock = threading.Lock()


def start_job(app: Flask, job_id: str, caller: Caller) -> None:
    """Run the job ``job_id`` inline (``EXPORT_INLINE``) or in a new background thread."""
    if app.config["EXPORT_INLINE"]:
        run_job(app, job_id, caller)
        return
    thread = threading.Thread(target=run_job, args=(app, job_id, caller),
                              name=f"export-{job_id[:8]}", daemon=True)
    with _lock:
        _threads[job_id] = thread
    thread.start()


def join_jobs(timeout: float | None = None) -> None:
    """Wait for the export threads of this process to end (tests, orderly shutdown)."""
    with _lock:
        threads = list(_threads.values())
    for thread in threads:
        thread.join(timeout)


def run_job(app: Flask, job_id: str, caller: Caller) -> None:
    """Run one job to its end in an application context of ``app``; a failure marks the job
    failed and never escapes (a thread must not die silently)."""
    with app.app_context():
        db, settings = get_db(), ExportSettings.of(app.config)
        try:
            with db.transaction() as session:
                job = session.scalar(select(ExportJob).where(ExportJob.job_id == job_id))
                spec = JobSpec.of(job) if job is not None else None
            if spec is None:
                raise JobGone(job_id)
            Exporter(db, settings, spec, caller).run()
            log.info("export %s completed", job_id)
        except JobGone:
            remove_files(settings, job_id)
            log.info("export %s was deleted or failed while running: files removed", job_id)
        except Exception as exc:  # the job fails and says so
            log.error("export %s failed: %s\n%s", job_id, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            _mark_failed(db, settings, job_id)
        finally:
            with _lock:
                _threads.pop(job_id, None)


def _mark_failed(db: Database, settings: ExportSettings, job_id: str) -> None:
    """Mark a job failed after an internal error (if it is still running) and delete files."""
    try:
        with db.write_transaction() as session:
            job = session.scalar(select(ExportJob).where(ExportJob.job_id == job_id))
            if job is not None and job.state in RUNNING_STATES:
                fail_job(job, FAILED, settings)
    except Exception as exc:  # the database itself failed: the stall timeout will tell
        log.error("export %s: could not record the failure (%s)", job_id, type(exc).__name__)
    remove_files(settings, job_id)
