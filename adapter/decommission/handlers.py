"""The REST handlers of the decommissioning's FHIR resources (``adapter.fhir.handlers``
protocol): ``Task`` (the purge instructions: read and search by their owner, update by their
owner only) and ``PlanDefinition`` (the plan, read-only)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Final

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from adapter.decommission.acknowledge import apply_answer, read_answer
from adapter.decommission.codes import PLAN_ID, PURGE, code_system
from adapter.decommission.plan import PlanView, aware, load_plan, view
from adapter.decommission.resources import plan_definition
from adapter.decommission.tasks import mark_reached, render_task
from adapter.errors import Forbidden, MethodNotAllowed, NotFound, PreconditionFailed
from adapter.fhir.announce import differences
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import SearchParam, SearchRequest, decode_cursor, encode_cursor
from adapter.http import current_settings
from adapter.models import PurgeTask
from adapter.models.base import utcnow
from adapter.security import audit
from adapter.security.caller import Caller

TASK_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the Task"),
    SearchParam("status", "token", "Status of the Task (requested, accepted, completed, ...)",
                "http://hl7.org/fhir/SearchParameter/Task-status"),
    SearchParam("code", "token", "Code of the Task: purge",
                "http://hl7.org/fhir/SearchParameter/Task-code"),
)}
# Why a holder's Task is kept otherwise than sent: the gateway issues the Task; its holder
# answers with status, statusReason (kept as text) and the purge-count output only.
TASK_WHY: Final = {
    "statusReason.coding": "a reason is kept as text (its display, else its code)",
    "statusReason.text": "a reason is kept to its first 500 characters",
    "": "the gateway issues the purge Task; its holder sets only status, statusReason and "
        "the purge-count output",
}
PLAN_PARAMS: Final = {"_id": SearchParam("_id", "token", "Logical id: decommission-plan")}


def require_plan(session: Session) -> PlanView:
    """Return the plan.

    :raises NotFound: none was made.
    """
    plan = load_plan(session)
    if plan is None:
        raise NotFound("There is no decommissioning plan on this server.")
    return view(plan)


class ReadOnly:
    """The interactions the decommissioning's resources do not offer (no route is made)."""

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Not offered.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("vread is not supported on this resource.")

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Not offered.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("history is not supported on this resource.")

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """Not offered: the gateway issues these resources itself.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("This resource is issued by the gateway; it cannot be created.")

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Not offered.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("This resource cannot be deleted.")

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Not offered (no $validate route)."""
        return []


class PlanDefinitionHandler(ReadOnly):
    """The decommissioning plan, read-only (``PlanDefinition/decommission-plan``)."""

    resource_type: ClassVar[str] = "PlanDefinition"
    interactions: ClassVar[tuple[str, ...]] = ("read", "search-type")
    search_params: ClassVar[dict[str, SearchParam]] = PLAN_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = None

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return the plan.

        :raises NotFound: another id, or no plan yet.
        """
        if resource_id != PLAN_ID:
            raise NotFound(f"No PlanDefinition/{resource_id} on this server.")
        plan = require_plan(session)
        return Rendered(plan_definition(plan, current_settings().canonical_base), plan.version,
                        plan.last_updated)

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return the plan when it matches (it is the only PlanDefinition)."""
        plan = load_plan(session)
        wanted = all(PLAN_ID in c.values for c in search.values_of("_id"))
        base = current_settings().canonical_base
        matches = [plan_definition(view(plan), base)] if plan is not None and wanted else []
        return Page(matches[:search.count], [], None, len(matches))

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return 1 when the plan exists and matches, else 0."""
        return len(self.search(session, search, caller).matches)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Not offered: the plan changes only through the CLI.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("The plan is changed with `contactpoint-gateway decommission "
                               "plan`, not over the API.")


def visible_tasks(caller: Caller) -> Select[PurgeTask]:
    """Return a select of the Tasks ``caller`` may see: its own; every Task for an admin."""
    query = select(PurgeTask)
    return query if caller.has_right("admin") else \
        query.where(PurgeTask.client_id == caller.client_id)


class TaskHandler(ReadOnly):
    """Purge instructions: read and searched by their owner (and admins), updated by their
    owner only (the acknowledgement)."""

    resource_type: ClassVar[str] = "Task"
    interactions: ClassVar[tuple[str, ...]] = ("read", "search-type", "search-type-post",
                                               "update")
    # A read or search by the owner notes that the Task reached it (``mark_reached``): its
    # routes run in a write transaction (adapter.fhir.routes.read_transaction).
    writes_when_read: ClassVar[bool] = True
    search_params: ClassVar[dict[str, SearchParam]] = TASK_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    profile: ClassVar[str | None] = None

    def load(self, session: Session, resource_id: str, caller: Caller,
             lock: bool = False) -> PurgeTask:
        """Return a Task ``caller`` may see.

        :raises NotFound: no such Task, or another system's (its existence is not disclosed).
        """
        query = visible_tasks(caller).where(PurgeTask.resource_id == resource_id)
        task = session.scalar(query.with_for_update() if lock else query)
        if task is None:
            raise NotFound(f"No Task/{resource_id} addressed to this client.")
        return task

    def _render(self, session: Session, task: PurgeTask) -> Rendered:
        """Return the Task as a resource with its version."""
        plan = require_plan(session)
        return Rendered(render_task(session, task, plan, current_settings()), task.version,
                        aware(task.last_updated))

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return one Task (audited: it names children)."""
        task = self.load(session, resource_id, caller)
        audit.record(session, "read", resource_type="Task", resource_id=task.resource_id,
                     caller=caller)
        mark_reached(task, caller.client_id, utcnow())
        return self._render(session, task)

    def _filtered(self, search: SearchRequest, caller: Caller) -> Select[PurgeTask]:
        """Return the select of Tasks matching ``search`` for ``caller``."""
        query = visible_tasks(caller)
        own = code_system(current_settings().canonical_base)
        for criterion in search.criteria:
            values = [v.rpartition("|")[2] for v in criterion.values]
            if criterion.param.name == "_id":
                query = query.where(PurgeTask.resource_id.in_(values))
            elif criterion.param.name == "status":
                query = query.where(PurgeTask.status.in_(values))
            elif not any(v.rpartition("|")[2] == PURGE and v.rpartition("|")[0] in
                         ("", own) for v in criterion.values):
                query = query.where(PurgeTask.id.is_(None))  # code: every Task is a purge
        return query

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of Tasks (keyset paging on the internal id)."""
        query = self._filtered(search, caller).order_by(PurgeTask.id)
        if search.cursor:
            last = decode_cursor(search.cursor, 1)[0]
            query = query.where(PurgeTask.id > (int(last) if last.isdigit() else 0))
        tasks = list(session.scalars(query.limit(search.count + 1)))
        more, tasks = len(tasks) > search.count, tasks[:search.count]
        for task in tasks:
            audit.record(session, "search", resource_type="Task", resource_id=task.resource_id,
                         caller=caller)
            mark_reached(task, caller.client_id, utcnow())
        matches = [self._render(session, t).resource for t in tasks]
        return Page(matches, [], encode_cursor(tasks[-1].id) if more and tasks else None)

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many Tasks match."""
        from sqlalchemy import func

        subquery = self._filtered(search, caller).subquery()
        return int(session.scalar(select(func.count()).select_from(subquery)) or 0)

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Record the owner's answer.

        :raises NotFound: no such Task for this caller.
        :raises Forbidden: an admin who is not the owner.
        :raises PreconditionFailed: If-Match names another version.
        :raises Invalid: not a valid answer.
        :raises Conflict: a transition that is not allowed.
        """
        task = self.load(session, resource_id, caller, lock=True)
        if task.client_id != caller.client_id:
            raise Forbidden("Only the system the purge Task is addressed to can update it.")
        if if_match is not None and if_match != task.version:
            raise PreconditionFailed(f"Task/{resource_id} is at version {task.version}.")
        answer = read_answer(resource, resource_id, code_system(current_settings().canonical_base))
        changed = apply_answer(session, task, answer, caller, utcnow())
        session.flush()
        result = WriteResult(self._render(session, task), created=False, changed=changed)
        result.rendered.issues += differences("Task", resource, result.rendered.resource,
                                              TASK_WHY, frozenset({"status"}),
                                              frozenset({"lastModified"}))
        return result
