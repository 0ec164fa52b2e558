"""Purge instructions: at switch-off, one Task per system that received any
child's data, naming exactly the children in that system's delivery ledger (a snapshot taken in
the switch-off transaction), delivered over its purge-instruction subscription; reminders at the
plan's interval and the escalation report of owners that have not completed."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, literal, or_, select
from sqlalchemy.orm import Session

from adapter.decommission.contact import contact_subscription
from adapter.decommission.plan import PlanView, aware
from adapter.decommission.resources import task_resource
from adapter.models import (
    Child,
    Client,
    Event,
    LedgerEntry,
    Notification,
    Organisation,
    PurgeTask,
    PurgeTaskItem,
)
from adapter.models.notify import PURGE_TOPIC
from adapter.notify.outbox import emit_purge_instruction
from adapter.security import audit
from adapter.settings import Settings

# Statuses in which the owner still owes an answer or the completion (reminded, escalated).
OPEN_STATUSES = ("requested", "received", "accepted", "in-progress")


def owner_organisation(session: Session, code: str) -> Organisation | None:
    """Return the directory's organisation with ODS, GSS or URN code ``code``, if any."""
    return session.scalar(select(Organisation).where(or_(
        Organisation.ods_code == code, Organisation.gss_code == code, Organisation.urn == code)))


def named_children(session: Session, task: PurgeTask,
                   inline: int) -> list[tuple[str, str | None]] | None:
    """Return (Patient id, ContactPoint ID) of each child a Task names, or None when there are
    more than ``inline`` (``GATEWAY_DECOMMISSION_INLINE_CHILDREN``: the Task then refers to
    its NDJSON list)."""
    if task.children > inline:
        return None
    return [(ref, cpid) for ref, cpid in iter_named(session, task)]


def iter_named(session: Session, task: PurgeTask) -> Iterator[tuple[str, str | None]]:
    """Yield (Patient id, ContactPoint ID) of each child a Task names, in Patient id order."""
    query = (select(PurgeTaskItem.child_ref, Child.contactpoint_id)
             .join(Child, Child.resource_id == PurgeTaskItem.child_ref, isouter=True)
             .where(PurgeTaskItem.task_id == task.id).order_by(PurgeTaskItem.child_ref)
             .execution_options(yield_per=2000))
    for ref, cpid in session.execute(query):
        yield str(ref), cpid


def render_task(session: Session, task: PurgeTask, plan: PlanView,
                settings: Settings) -> dict[str, Any]:
    """Return the FHIR Task of ``task``."""
    return task_resource(task, plan, owner_organisation(session, task.organisation_code),
                         named_children(session, task, settings.decommission_inline_children),
                         settings)


def _holders(session: Session) -> list[tuple[str, int, str]]:
    """Return (client id, children held, organisation code) of every system in the ledger."""
    query = (select(LedgerEntry.client_id, func.count(LedgerEntry.id), Client.organisation_code)
             .join(Client, Client.client_id == LedgerEntry.client_id, isouter=True)
             .group_by(LedgerEntry.client_id, Client.organisation_code)
             .order_by(LedgerEntry.client_id))
    return [(cid, int(n), code or "-") for cid, n, code in session.execute(query)]


def issue_purge_tasks(session: Session, plan: PlanView, now: dt.datetime,
                      settings: Settings) -> list[PurgeTask]:
    """Create, audit and send one purge Task per holding system (switch-off transaction)."""
    issued = []
    for client_id, children, code in _holders(session):
        organisation = owner_organisation(session, code)
        task = PurgeTask(resource_id=uuid.uuid4().hex, client_id=client_id,
                         organisation_code=code[:9], status="requested", children=children,
                         organisation_name=organisation.name if organisation else None,
                         version=1, issued=now, last_updated=now, reminders=0)
        session.add(task)
        session.flush()
        # The snapshot of the ledger, set-based: no child list is held in memory.
        session.execute(insert(PurgeTaskItem).from_select(
            ["task_id", "child_ref"],
            select(literal(task.id), LedgerEntry.child_ref)
            .where(LedgerEntry.client_id == client_id)))
        holder = session.scalar(select(Client).where(Client.client_id == client_id))
        if holder is not None:  # told at its registered contact too, if it has one
            contact_subscription(session, holder, settings.instance_path)
        emit_purge_instruction(session, client_id, render_task(session, task, plan, settings))
        audit.record(session, "purge-instruct", resource_type="Task",
                     resource_id=task.resource_id, detail=f"to {client_id}: {children} children")
        issued.append(task)
    return issued


def remind(session: Session, plan: PlanView, now: dt.datetime, settings: Settings,
           force: bool = False) -> int:
    """Send the Task again to each owner that has not completed (nor rejected) it and was
    last told at least the plan's interval ago (all of them when ``force``); return how many."""
    due = now - dt.timedelta(days=plan.reminder_days)
    sent = 0
    for task in session.scalars(select(PurgeTask).where(PurgeTask.status.in_(OPEN_STATUSES))
                                .order_by(PurgeTask.id).with_for_update()):
        if not force and aware(task.last_reminded or task.issued) > due:
            continue
        task.reminders += 1
        task.last_reminded = now
        emit_purge_instruction(session, task.client_id,
                               render_task(session, task, plan, settings), action="update")
        audit.record(session, "purge-remind", resource_type="Task",
                     resource_id=task.resource_id,
                     detail=f"reminder {task.reminders} to {task.client_id}")
        sent += 1
    return sent


@dataclass(frozen=True)
class TaskRow:
    """One purge Task as the dashboard, the escalation report and the certificate show it."""

    resource_id: str
    client_id: str
    client_name: str
    organisation_code: str
    organisation_name: str | None
    status: str
    shown: str
    children: int
    purged: int | None
    reason: str | None
    issued: dt.datetime
    delivered: dt.datetime | None
    answered: dt.datetime | None
    reminders: int
    escalated: bool


def escalation_due(plan: PlanView, now: dt.datetime) -> bool:
    """Return True once the plan's escalation threshold after switch-off has passed, or the
    data is destroyed (whoever had not completed by then is on the escalation list)."""
    if plan.phase == "destroyed":
        return True
    if plan.phase != "switched-off":
        return False
    start = plan.switched_off or plan.timetable.switch_off_at
    return now >= start + dt.timedelta(days=plan.escalate_days)


def shown_status(status: str, overdue: bool, delivered: bool = True) -> str:
    """Return the dashboard status: never-sent (the Task never reached its owner), instructed,
    accepted, completed, rejected or silent (no answer by the escalation threshold)."""
    if status == "completed":
        return "completed"
    if status in ("rejected", "failed"):
        return "rejected"
    if status == "requested":
        return "never-sent" if not delivered else "silent" if overdue else "instructed"
    return "accepted"


def reached(session: Session) -> dict[str, dt.datetime]:
    """Return when each purge Task first reached its owner (by Task id): when the owner first
    read or searched it (stamped by the handlers, ``mark_reached``) or a notification carrying
    it was delivered."""
    by_notification = (  # purge events by their partial index, then their notifications
        select(Event.focus_id, func.min(Notification.delivered_at))
        .join(Notification, Notification.event_id == Event.id)
        .where(Event.topic == PURGE_TOPIC, Notification.state == "delivered")
        .group_by(Event.focus_id))
    found: dict[str, dt.datetime] = {}
    for query in (by_notification, select(PurgeTask.resource_id, PurgeTask.delivered)):
        for rid, moment in session.execute(query):
            if moment is not None and (rid not in found or aware(moment) < found[rid]):
                found[str(rid)] = aware(moment)
    return found


def mark_reached(task: PurgeTask, client_id: str, now: dt.datetime) -> None:
    """Note that the Task reached its owner, when ``client_id`` (reading it) is the owner."""
    if task.client_id == client_id and task.delivered is None:
        task.delivered = now


def stamp_reached(session: Session) -> None:
    """Keep on each purge Task when it first reached its owner (before destruction deletes the
    notifications that say so)."""
    when = reached(session)
    for task in session.scalars(select(PurgeTask).where(PurgeTask.delivered.is_(None))):
        task.delivered = when.get(task.resource_id)


def task_rows(session: Session, plan: PlanView, now: dt.datetime) -> list[TaskRow]:
    """Return every purge Task with its owner's name, in client order."""
    overdue, when = escalation_due(plan, now), reached(session)
    rows = []
    query = (select(PurgeTask, Client.name).join(Client, Client.client_id == PurgeTask.client_id,
                                                 isouter=True).order_by(PurgeTask.client_id))
    for task, name in session.execute(query):
        delivered = when.get(task.resource_id)
        rows.append(TaskRow(
            task.resource_id, task.client_id, name or task.client_id, task.organisation_code,
            task.organisation_name, task.status,
            shown_status(task.status, overdue, delivered is not None), task.children,
            task.purged, task.status_reason, aware(task.issued), delivered,
            aware(task.answered) if task.answered else None, task.reminders,
            task.status != "completed" and (overdue or task.escalated is not None)))
    return rows


def escalate(session: Session, plan: PlanView, now: dt.datetime) -> list[TaskRow]:
    """Return the escalation list (owners not completed by the threshold); the first time an
    owner is on it, mark its Task escalated and record that in the audit trail."""
    rows = [r for r in task_rows(session, plan, now) if r.escalated]
    fresh = {r.resource_id for r in rows}
    for task in session.scalars(select(PurgeTask).where(
            PurgeTask.resource_id.in_(fresh), PurgeTask.escalated.is_(None))):
        task.escalated = now
        audit.record(session, "purge-escalate", resource_type="Task",
                     resource_id=task.resource_id,
                     detail=f"{task.client_id}: {task.status} at the escalation threshold")
    return rows
