"""Issuing the destruction certificate after the destruction: its content from
what destruction did, the purge Tasks' answers and the audit trail's digest; both forms signed,
kept with the plan and written under ``<instance>/decommission/`` with the public key."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Final

import orjson

from adapter.db import Database
from adapter.decommission.certificate import audit_digest, public_jwks, signed_json, signed_xml
from adapter.decommission.destruction import Destruction
from adapter.decommission.plan import PlanView, load_plan, view
from adapter.decommission.resources import instant
from adapter.decommission.storage import checkpoint_sqlite
from adapter.decommission.tasks import TaskRow, task_rows
from adapter.errors import NotFound
from adapter.security.keys import service_key
from adapter.settings import Settings

FOLDER: Final = "decommission"
PSEUDONYMISATION: Final = ("Children's references (child_ref, and the ids of Patient, CareTeam, "
                           "PractitionerRole, Practitioner and RelatedPerson resources) replaced "
                           "by HMAC-SHA-256 under a random 256-bit key held only in memory and "
                           "overwritten after use.")


def certificate_folder(instance_path: str) -> Path:
    """Return the folder the certificate files are written to."""
    return Path(instance_path) / FOLDER


def _ack(row: TaskRow) -> dict[str, Any]:
    """Return one acknowledgement entry of the certificate."""
    return {"task": row.resource_id, "client": row.client_id, "clientName": row.client_name,
            "organisation": row.organisation_code, "organisationName": row.organisation_name,
            "status": row.status, "shown": row.shown,
            "children": row.children, "purged": row.purged, "reason": row.reason,
            "delivered": instant(row.delivered) if row.delivered else None,
            "answered": instant(row.answered) if row.answered else None,
            "reminders": row.reminders, "escalated": row.escalated}


def _timetable(plan: PlanView) -> dict[str, Any]:
    """Return the certificate's timetable."""
    t = plan.timetable
    return {"lastUse": t.last_use.isoformat(), "runDownAt": instant(t.run_down_at),
            "switchOffAt": instant(t.switch_off_at), "destroyByAt": instant(t.destroy_by_at),
            "timeZone": t.time_zone, "drill": plan.drill,
            "runDownStarted": instant(plan.run_down_started) if plan.run_down_started else None,
            "switchedOff": instant(plan.switched_off) if plan.switched_off else None,
            "destroyed": instant(plan.destroyed) if plan.destroyed else None}


def _override(done: Destruction) -> dict[str, Any] | None:
    """Return the certificate's override: the operator's reason and what it overruled."""
    if not done.override:
        return None
    return {"reason": done.override, "overruled": list(done.overruled)}


def certificate_content(plan: PlanView, done: Destruction, rows: list[TaskRow],
                        audit: tuple[int, int, str], now: dt.datetime,
                        issuer: str) -> dict[str, Any]:
    """Return the certificate (no personal data: counts, client ids, digests), issued by
    ``issuer`` (the canonical base)."""
    records, last_id, digest = audit
    return {
        "certificateId": uuid.uuid4().hex, "issued": instant(now), "issuer": issuer,
        "timetable": _timetable(plan),
        "destruction": {"started": instant(done.started),
                        "finished": instant(done.finished or now), "override": _override(done),
                        "storage": done.storage, "exportJobsRemoved": done.export_jobs,
                        "operatorExports": done.operator_exports or {
                            "exports": 0, "filesRemoved": 0, "filesMissing": 0,
                            "folders": []}},
        "tables": [{"name": name, "before": done.before.get(name, 0),
                    "after": done.after.get(name, 0)} for name in sorted(done.before)],
        "acknowledgements": [_ack(r) for r in rows],
        "summary": dict(sorted(Counter(r.shown for r in rows).items())),
        "finalNotice": list(done.final_notice),
        "audit": {"records": records, "lastRecordId": last_id, "digest": digest,
                  "pseudonymisation": PSEUDONYMISATION},
    }


def issue_certificate(db: Database, settings: Settings, done: Destruction,
                      now: dt.datetime) -> dict[str, Any]:
    """Sign (with the service key under the settings' instance folder), store and write the
    certificate; return its JSON form.

    :raises NotFound: no plan.
    """
    instance_path = settings.instance_path
    key = service_key(instance_path)
    with db.write_transaction() as session:
        plan = load_plan(session, lock=True)
        if plan is None:
            raise NotFound("There is no decommissioning plan.")
        shown = view(plan)
        content = certificate_content(shown, done, task_rows(session, shown, now),
                                      audit_digest(session), now, settings.canonical_base)
        document, xml = signed_json(content, key), signed_xml(content, key)
        plan.certificate, plan.certificate_xml = document, xml.decode()
    folder = certificate_folder(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "certificate.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    (folder / "certificate.xml").write_bytes(xml)
    (folder / "jwks.json").write_bytes(orjson.dumps(public_jwks(key), option=orjson.OPT_INDENT_2))
    if db.is_sqlite:
        checkpoint_sqlite(db)
    return document
