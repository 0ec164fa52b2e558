"""``GET /fhir/AuditEvent``: the audit trail for auditors, read-only.

Callers need the ``audit`` right and an AuditEvent read scope. Records are never changed: the
handler offers read and search only, so create, update and delete have no route and the
framework answers 405. Reading the trail is itself audited (action ``audit-read``), without a
``child_ref``: it discloses who accessed a child, not the child's data, and so does not count
as a read of a child's data (the harvesting check, "who used it" reports).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar, Final

from flask import current_app
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from adapter.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from adapter.fhir.bundle import fhir_base
from adapter.fhir.handlers import Page, Rendered, WriteResult
from adapter.fhir.search import (
    NOT,
    Criterion,
    SearchParam,
    SearchRequest,
    decode_cursor,
    encode_cursor,
    negated,
    parse_date,
    reference_id,
    split_token,
)
from adapter.models import AuditRecord
from adapter.models.canonical import as_utc
from adapter.security import audit
from adapter.security.audit_events import EVENT_KINDS, OTHER, audit_event
from adapter.security.caller import Caller
from adapter.settings import Settings
from adapter.systems import OwnSystems

SP: Final = "http://hl7.org/fhir/SearchParameter/AuditEvent-"
AUDIT_PARAMS: Final = {p.name: p for p in (
    SearchParam("_id", "token", "Logical id of the AuditEvent", modifiers=NOT),
    SearchParam("patient", "reference", "The child the event concerns (Patient id)",
                f"{SP}patient"),
    SearchParam("agent", "reference", "The client (its client id, or Device/<client id>) or "
                "its organisation (Organization/<ODS or GSS code>)", f"{SP}agent"),
    SearchParam("date", "date", "When the event was recorded (eq, ne, lt, le, gt, ge, sa, "
                "eb, ap)", f"{SP}date"),
    SearchParam("type", "token", "Event type: audit-event-type or DICOM code", f"{SP}type", NOT),
    SearchParam("subtype", "token", "restful-interaction code, or the gateway's action code",
                f"{SP}subtype", NOT),
    SearchParam("action", "token", "C | R | U | D | E", f"{SP}action", NOT),
    SearchParam("outcome", "token", "0 | 4 | 8 | 12", f"{SP}outcome", NOT),
)}


def require_auditor(caller: Caller) -> None:
    """Only callers with the ``audit`` right see the audit trail.

    :raises Forbidden: the caller lacks it.
    """
    if not caller.has_right("audit"):
        raise Forbidden("Reading the audit trail needs the 'audit' right.")


def _actions_where(matches: Any) -> Any:
    """Return a condition on ``action`` for the event kinds for which ``matches`` is true."""
    known = [action for action, kind in EVENT_KINDS.items() if matches(kind)]
    condition = AuditRecord.action.in_(known) if known else AuditRecord.id.is_(None)
    if matches(OTHER):  # actions the table does not know appear as OTHER
        return or_(condition, AuditRecord.action.not_in(list(EVENT_KINDS)))
    return condition


def _token_matches(value: str, system: str, code: str) -> bool:
    """Return True when a token search value (``system|code`` or ``code``) matches."""
    wanted_system, wanted = split_token(value)
    return wanted == code and wanted_system in (None, system)


def _subtype_condition(value: str) -> Any:
    """Match a restful-interaction code, or the gateway's own action code."""
    wanted_system, wanted = split_token(value)
    own = OwnSystems(current_app.config["CANONICAL_BASE"]).code_system("audit-action")
    by_interaction = _actions_where(lambda k: k.interaction is not None and _token_matches(
        value, "http://hl7.org/fhir/restful-interaction", k.interaction))
    return or_(by_interaction, AuditRecord.action == wanted) if wanted_system in (None, own) \
        else by_interaction


def _date_condition(value: str) -> Any:
    """Return a FHIR date comparison on ``recorded`` (search.html#prefix)."""
    rng = parse_date(value, "date")
    column, start, end = AuditRecord.recorded, rng.start, rng.end
    around = dt.timedelta(days=1)  # "ap": within a day either side
    return {
        "eq": and_(column >= start, column < end), "ne": or_(column < start, column >= end),
        "lt": column < start, "le": column < end, "gt": column >= end, "ge": column >= start,
        "sa": column >= end, "eb": column < start,
        "ap": and_(column >= start - around, column < end + around),
    }[rng.prefix]


def _agent_condition(value: str) -> Any:
    """Match the client id, or the organisation code of ``Organization/<code>``."""
    if value.startswith("Organization/"):
        return AuditRecord.organisation_code == value.removeprefix("Organization/")
    return AuditRecord.client_id == reference_id(value, "Device", "agent")


def criterion_condition(criterion: Criterion) -> Any:
    """Return the SQL condition of one criterion (its values OR-ed).

    :raises BadRequest: a malformed value.
    """
    builders: dict[str, Callable[[str], Any]] = {
        "_id": lambda v: AuditRecord.id == int(v) if v.isdigit() else AuditRecord.id.is_(None),
        "patient": lambda v: AuditRecord.child_ref == reference_id(v, "Patient", "patient"),
        "agent": _agent_condition,
        "date": _date_condition,
        "type": lambda v: _actions_where(
            lambda k: _token_matches(v, k.type[0], k.type[1])),
        "subtype": _subtype_condition,
        "action": lambda v: _actions_where(lambda k: _token_matches(
            v, "http://hl7.org/fhir/audit-event-action", k.action)),
        "outcome": lambda v: AuditRecord.outcome == split_token(v)[1],
    }
    build = builders[criterion.param.name]
    return negated(criterion, or_(*(build(value) for value in criterion.values)))


def audit_select(search: SearchRequest) -> Select[AuditRecord]:
    """Return the select of audit records matching ``search`` (no paging)."""
    query = select(AuditRecord)
    for criterion in search.criteria:
        query = query.where(criterion_condition(criterion))
    return query


def _after(cursor: str) -> Any:
    """Return the keyset condition of a page after ``cursor`` (newest first).

    :raises BadRequest: not a cursor of this search.
    """
    moment, last_id = decode_cursor(cursor, 2)
    try:
        recorded = as_utc(dt.datetime.fromisoformat(moment))
    except ValueError as exc:
        raise BadRequest("_cursor is not a paging cursor of this search.",
                         expression="_cursor") from exc
    if not last_id.isdigit():
        raise BadRequest("_cursor is not a paging cursor of this search.", expression="_cursor")
    return or_(AuditRecord.recorded < recorded,
               and_(AuditRecord.recorded == recorded, AuditRecord.id < int(last_id)))


def render(record: AuditRecord) -> dict[str, Any]:
    """Return one record as an AuditEvent with this server's address as its source site."""
    return audit_event(record, OwnSystems(current_app.config["CANONICAL_BASE"]), fhir_base())


class AuditEventHandler:
    """The REST handler of ``AuditEvent``: read and search the audit trail."""

    resource_type: ClassVar[str] = "AuditEvent"
    interactions: ClassVar[tuple[str, ...]] = ("read", "search-type", "search-type-post")
    search_params: ClassVar[dict[str, SearchParam]] = AUDIT_PARAMS
    includes: ClassVar[frozenset[str]] = frozenset()
    revincludes: ClassVar[frozenset[str]] = frozenset()
    # Events claim the UK Core AuditEvent profile; the service has no profile of its own.
    profile: ClassVar[str | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def read(self, session: Session, resource_id: str, caller: Caller) -> Rendered:
        """Return one AuditEvent.

        :raises Forbidden: the caller lacks the audit right.
        :raises NotFound: no such event.
        """
        require_auditor(caller)
        record = session.get(AuditRecord, int(resource_id)) if resource_id.isdigit() else None
        if record is None:
            raise NotFound(f"No AuditEvent/{resource_id} on this server.")
        rendered = Rendered(render(record), 1, as_utc(record.recorded) or record.recorded)
        audit.record(session, "audit-read", resource_type="AuditEvent",
                     resource_id=resource_id, caller=caller)
        return rendered

    def search(self, session: Session, search: SearchRequest, caller: Caller) -> Page:
        """Return one page of AuditEvents, newest first (keyset paging on recorded, id).

        :raises Forbidden: the caller lacks the audit right.
        """
        require_auditor(caller)
        query = audit_select(search).order_by(AuditRecord.recorded.desc(),
                                              AuditRecord.id.desc())
        if search.cursor:
            query = query.where(_after(search.cursor))
        records = list(session.scalars(query.limit(search.count + 1)))
        more = len(records) > search.count
        records = records[:search.count]
        matches = [render(r) for r in records]
        last = records[-1] if records else None
        cursor = encode_cursor((as_utc(last.recorded) or last.recorded).isoformat(), last.id) \
            if more and last else None
        _audit_search(session, search, len(matches), caller)
        return Page(matches, [], cursor)

    def count(self, session: Session, search: SearchRequest, caller: Caller) -> int:
        """Return how many AuditEvents match (``_summary=count``).

        :raises Forbidden: the caller lacks the audit right.
        """
        require_auditor(caller)
        query = audit_select(search).with_only_columns(func.count(AuditRecord.id))
        total = int(session.scalar(query.order_by(None)) or 0)
        _audit_search(session, search, total, caller)
        return total

    def vread(self, session: Session, resource_id: str, version: int,
              caller: Caller) -> Rendered:
        """Audit events have one version; vread is not offered.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("AuditEvent supports read and search only.")

    def history(self, session: Session, resource_id: str,
                caller: Caller) -> list[tuple[Rendered | None, int, str, dt.datetime]]:
        """Audit events have no history.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("AuditEvent supports read and search only.")

    def create(self, session: Session, resource: dict[str, Any], caller: Caller) -> WriteResult:
        """The audit trail is written by the gateway only.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("The audit trail cannot be written through the API.")

    def update(self, session: Session, resource_id: str, resource: dict[str, Any],
               caller: Caller, if_match: int | None) -> WriteResult:
        """Audit records cannot be changed.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("Audit records cannot be changed.")

    def delete(self, session: Session, resource_id: str, caller: Caller) -> None:
        """Audit records cannot be deleted.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("Audit records cannot be deleted.")

    def validate(self, resource: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """There is nothing to validate: AuditEvents are not accepted.

        :raises MethodNotAllowed: always.
        """
        raise MethodNotAllowed("AuditEvents are not accepted.")


def _audit_search(session: Session, search: SearchRequest, found: int, caller: Caller) -> None:
    """Record a search of the audit trail: the parameters used (names only) and the count."""
    names = ",".join(sorted({c.param.name for c in search.criteria})) or "none"
    audit.record(session, "audit-read", resource_type="AuditEvent", caller=caller,
                 detail=f"search by {names}: {found} events")

