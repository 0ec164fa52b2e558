"""Destruction (docs/architecture.md "Decommissioning"): after destroy-by once every purge Task
is completed or escalated (or with an explicit override and its reason, recorded in the
certificate), every personal datum is deleted — children with their names, identifiers, carers,
involvements and assessment references, practitioners (with their national identifiers) and
organisations, every version snapshot, the aliases of earlier role ids, the ledger's
identities, the purge Tasks' child lists, queued notification bodies and outbox payloads,
bulk export files — and scrubbed from the database files: SQLite overwrites deleted content
(``secure_delete``), rebuilds the file (``VACUUM``) and empties its write-ahead log
(``wal_checkpoint(TRUNCATE)``); PostgreSQL rewrites each table (``VACUUM FULL``) so that no dead
row version survives. The audit trail stays, pseudonymised: each child's reference becomes a
keyed hash (HMAC-SHA-256) under a random key that exists only in this process's memory and is
overwritten when the step ends — so the same child keeps one pseudonym across the trail, and
nobody can recompute it. That step is the one sanctioned change to audit records: a Core
``UPDATE`` statement, which the ORM's append-only guard (``adapter.models.security``) does not
intercept by design.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Table, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from adapter.db import Database
from adapter.decommission import phases
from adapter.decommission.final_notice import (
    close_all_subscriptions,
    close_change_subscriptions,
    deliver_final_notice,
)
from adapter.decommission.notices import announce
from adapter.decommission.plan import aware, load_plan
from adapter.decommission.resources import local_text
from adapter.decommission.tasks import stamp_reached
from adapter.errors import Conflict, NotFound
from adapter.models import (
    Assessment,
    AuditRecord,
    Carer,
    Child,
    ChildName,
    Client,
    DecommissionPlan,
    Event,
    ExportJob,
    Involvement,
    LedgerEntry,
    LocalIdentifier,
    Notification,
    OperatorExport,
    Organisation,
    Practitioner,
    PractitionerIdentifier,
    PurgeTask,
    PurgeTaskItem,
    RecordVersion,
    ResourceAlias,
    Subscription,
    TeamMember,
)
from adapter.registry import personal_types
from adapter.security import audit
from adapter.settings import Settings

log = logging.getLogger(__name__)

# Tables whose every row goes, children's parts before the rows they point at.
DELETED: Final = (PurgeTaskItem, Notification, Event, LedgerEntry, TeamMember, Assessment,
                  Involvement, Carer, LocalIdentifier, ChildName, Child,
                  PractitionerIdentifier, Practitioner, Organisation, RecordVersion, ResourceAlias)
# Tables that stay (no personal data), counted in the certificate.
KEPT: Final = (AuditRecord, PurgeTask, Subscription, Client, ExportJob, DecommissionPlan,
               OperatorExport)
# Audit resource types whose ids are a child's or a person's (pseudonymised like child_ref),
# as adapter/registry.py declares them.
PERSONAL_TYPES: Final = personal_types()
PSEUDONYM: Final = "hmac:"
BATCH: Final = 2000


@dataclass
class Destruction:
    """What destruction did, for the certificate."""

    started: dt.datetime
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    export_jobs: int = 0
    pseudonymised: int = 0
    storage: str = ""
    finished: dt.datetime | None = None
    override: str | None = None
    overruled: list[str] = field(default_factory=list)
    final_notice: list[dict[str, Any]] = field(default_factory=list)
    operator_exports: dict[str, Any] = field(default_factory=dict)


def table_of(model: Any) -> Table:
    """Return the Core table of a mapped class."""
    table: Table = model.__table__
    return table


def count_rows(session: Session) -> dict[str, int]:
    """Return the rows of every table the destruction touches or keeps, by table name."""
    return {table_of(m).name: int(session.scalar(select(func.count()).select_from(table_of(m)))
                                  or 0) for m in (*DELETED, *KEPT)}


def destroy_blockers(session: Session, plan: DecommissionPlan, now: dt.datetime) -> list[str]:
    """Return why destroying now would cut the holders short (empty: it would not): before
    destroy-by, or purge Tasks neither completed nor escalated (README "Decommissioning")."""
    blockers = []
    if now < aware(plan.destroy_by_at):
        blockers.append("destroy-by is "
                        + local_text(aware(plan.destroy_by_at), plan.time_zone))
    open_tasks = list(session.scalars(
        select(PurgeTask.client_id).where(PurgeTask.status != "completed",
                                          PurgeTask.escalated.is_(None))
        .order_by(PurgeTask.client_id)))
    if open_tasks:
        blockers.append(f"the purge Tasks of {_some(open_tasks)} are neither "
                        "completed nor escalated (`decommission escalation` records them once "
                        "the escalation threshold has passed)")
    return blockers


def _some(names: list[str], shown: int = 5) -> str:
    """Return ``names`` for a sentence: all of a few, else the first few and how many more
    (a national run-down has hundreds of holders; the certificate lists every one)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)} holders ({', '.join(names[:shown])} and {len(names) - shown} more)"


def check_destroyable(session: Session, plan: DecommissionPlan | None, now: dt.datetime,
                      override: str | None) -> tuple[DecommissionPlan, list[str]]:
    """Return the plan when destruction may run now (or resume: destroyed, no certificate)
    and what the override had to overrule.

    :raises NotFound: no plan.
    :raises Conflict: not switched off, or it would cut the holders short
        (``destroy_blockers``) and no override reason is given.
    """
    if plan is None:
        raise NotFound("There is no decommissioning plan.")
    if plan.phase == "destroyed" and plan.certificate and "pending" in plan.certificate:
        return plan, []  # interrupted after the deletion: scrub and certify again
    if plan.phase != "switched-off":
        raise Conflict(f"Destruction follows the switch-off; the service is {plan.phase}.")
    blockers = destroy_blockers(session, plan, now)
    if blockers and not (override and override.strip()):
        raise Conflict("Destroying now would cut the holders short: " + "; ".join(blockers)
                       + ". To destroy anyway, give the reason with --override REASON (it is "
                       "recorded in the certificate).")
    return plan, blockers


def _pseudonym(key: bytearray, value: str) -> str:
    """Return the keyed hash of ``value`` (160 bits, hex)."""
    return PSEUDONYM + hmac.new(bytes(key), value.encode(), hashlib.sha256).hexdigest()[:40]


def _pseudonymise_column(session: Session, key: bytearray, column: str,
                         personal_only: bool) -> int:
    """Replace every clear value of one audit column by its pseudonym; return how many."""
    table = table_of(AuditRecord)
    target = table.c[column]
    done, last = 0, ""
    while True:
        query = select(target).distinct().where(target > last, ~target.startswith(PSEUDONYM))
        if personal_only:
            query = query.where(table.c.resource_type.in_(PERSONAL_TYPES))
        values = list(session.scalars(query.order_by(target).limit(BATCH)))
        if not values:
            return done
        statement = update(table).where(target == bindparam("old"))
        if personal_only:  # OR-ed equalities: an IN list cannot be used with executemany
            statement = statement.where(or_(*(table.c.resource_type == kind
                                              for kind in PERSONAL_TYPES)))
        session.execute(statement.values({column: bindparam("new")}),
                        [{"old": v, "new": _pseudonym(key, v)} for v in values])
        done, last = done + len(values), values[-1]


def pseudonymise_audit(session: Session) -> int:
    """Pseudonymise children's references in the audit trail; the key is then overwritten."""
    key = bytearray(secrets.token_bytes(32))
    try:
        return (_pseudonymise_column(session, key, "child_ref", False)
                + _pseudonymise_column(session, key, "resource_id", True))
    finally:
        for index in range(len(key)):
            key[index] = 0
        del key


def delete_personal_data(session: Session, now: dt.datetime) -> int:
    """Delete every personal datum and pseudonymise the audit trail (one transaction)."""
    if session.get_bind().dialect.name == "sqlite":
        # Deleted content is overwritten with zeros, not left in free pages (sqlite.org
        # pragma.html#pragma_secure_delete).
        session.connection().exec_driver_sql("PRAGMA secure_delete=ON")
        for model in DELETED:
            session.execute(delete(table_of(model)))
    else:
        # One TRUNCATE of every personal table: new empty files at commit instead of millions
        # of dead rows to delete and then rewrite (postgresql.org docs, "TRUNCATE": transactional,
        # and no other table refers to these). The names are the model's own, never input.
        names = ", ".join(f'"{table_of(model).name}"' for model in DELETED)
        session.connection().exec_driver_sql(f"TRUNCATE TABLE {names}")
    close_change_subscriptions(session, now)
    return pseudonymise_audit(session)


def _destroy_rows(db: Database, result: Destruction, base: str) -> None:
    """Count, delete, pseudonymise, record and enter the destroyed phase (one transaction);
    what was there before is kept with the plan until the certificate replaces it."""
    now = result.started
    with db.write_transaction() as session:
        plan, result.overruled = check_destroyable(session, load_plan(session, lock=True), now,
                                                   result.override)
        result.override = result.override if result.overruled else None
        result.before = count_rows(session)
        result.before["export_job"] = result.export_jobs
        stamp_reached(session)  # the notifications that say so are about to go
        result.pseudonymised = delete_personal_data(session, now)
        plan.phase, plan.destroyed = "destroyed", now
        plan.version, plan.last_updated = plan.version + 1, now
        notice = announce(session, plan, base)
        session.flush()
        plan.certificate = {"pending": {"started": now.isoformat(), "before": result.before,
                                        "exportJobs": result.export_jobs,
                                        "override": result.override,
                                        "overruled": result.overruled,
                                        "noticeEvent": notice.id,
                                        "operatorExports": result.operator_exports}}
        audit.record(session, "decommission-phase", resource_type="PlanDefinition",
                     resource_id="decommission-plan", detail="switched-off -> destroyed")
        audit.record(session, "decommission-destroy", resource_type="PlanDefinition",
                     resource_id="decommission-plan",
                     detail=f"{sum(result.before[table_of(m).name] for m in DELETED)} rows "
                            f"deleted from {len(DELETED)} tables; "
                            f"{result.pseudonymised} references pseudonymised"
                            + (f"; override ({'; '.join(result.overruled)}): {result.override}"
                               if result.override else ""))


def _say_last_word(db: Database, result: Destruction, now: dt.datetime,
                   settings: Settings) -> None:
    """Deliver the final notice, keep its deliveries with the plan, then end every
    subscription (``adapter.decommission.final_notice``)."""
    with db.sessions() as session:
        plan = load_plan(session)
        event_id = int(((plan.certificate if plan else None) or {})
                       .get("pending", {}).get("noticeEvent") or 0)
    result.final_notice = deliver_final_notice(settings, db, event_id)
    with db.write_transaction() as session:
        stored = load_plan(session, lock=True)
        if stored is not None and stored.certificate and "pending" in stored.certificate:
            stored.certificate = {"pending": {**stored.certificate["pending"],
                                              "finalNotice": result.final_notice}}
    close_all_subscriptions(db, now)


def _resumed(pending: dict[str, Any]) -> Destruction:
    """Return what an interrupted destruction had done (kept with the plan)."""
    return Destruction(started=dt.datetime.fromisoformat(pending["started"]),
                       before=dict(pending["before"]), export_jobs=int(pending["exportJobs"]),
                       override=pending.get("override") or None,
                       overruled=list(pending.get("overruled") or []),
                       final_notice=list(pending.get("finalNotice") or []),
                       operator_exports=dict(pending.get("operatorExports") or {}))


def destroy(db: Database, settings: Settings, now: dt.datetime,
            override: str | None) -> Destruction:
    """Destroy every personal datum and scrub the storage (the export files under the
    settings' instance folder among them); return what was done. A run cut short after the
    deletion (e.g. the WAL could not be truncated) is resumed by running it again.

    :raises NotFound: no plan.
    :raises Conflict: not switched off, or it would cut the holders short without an override
        reason.
    :raises Unavailable: the SQLite WAL could not be truncated.
    """
    from pathlib import Path

    from adapter.decommission.storage import scrub
    from adapter.export.jobs import ExportSettings, destroy_exports
    from adapter.export.operator import remove_operator_exports

    with db.sessions() as session:
        plan, _blockers = check_destroyable(session, load_plan(session), now, override)
        pending = (plan.certificate or {}).get("pending")
    if pending is not None:
        result = _resumed(pending)
    else:
        result = Destruction(started=now, override=override)
        exports = ExportSettings(Path(settings.instance_path), dt.timedelta(0), dt.timedelta(0),
                                 True)
        result.export_jobs = destroy_exports(db, exports)
        result.operator_exports = remove_operator_exports(db, now)
        _destroy_rows(db, result, settings.canonical_base)
    phases.forget(db)
    if not result.final_notice:
        _say_last_word(db, result, now, settings)
    result.storage = scrub(db, [table_of(m).name for m in (*DELETED, *KEPT)])
    with db.sessions() as session:
        result.after = count_rows(session)
    log.info("destruction done: %d tables emptied", len(DELETED))
    return result
