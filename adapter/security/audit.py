"""The audit trail: one call, made by every service function that reads or changes a child's
data, in the same transaction as the access (docs/domain.md "Who used it"). The records are
gathered in the session and written together at its commit; a read route reads in a read
transaction and commits its records (and deliveries) in a short write transaction before the
response leaves (``adapter.db.Database.read_transaction``, docs/architecture.md "Audit before
the answer").

A record says what the client got, not only what it asked for:
- a disclosure (read, vread, history, search, export) answered to ``HEAD`` is recorded as
  ``<action>-head``: the client got the headers, not the data;
- a read answered ``304 Not Modified`` is recorded as ``<action>-not-modified``: the read
  route marks the records it is about to gather (``hold``) and, once it knows whether the
  client's copy is current, qualifies them (``release``) before they are written;
- a read refused (4xx: 401, 403, 404, 410, a phase refusal, a bad request) or failed (5xx) is
  recorded after the response is made (``record_refusal``, after_request) as
  ``<action>-refused`` with outcome 4 or ``<action>-failed`` with outcome 8 (FHIR R4
  AuditEvent.outcome: minor / serious failure), in its own transaction: the read's own
  transaction was rolled back with whatever it recorded. A 429 is not recorded: the rate
  limit answers it without touching the database, and a record per refused request would put
  back the load it sheds.
A write refused because another live entry holds the NHS number (409) tells the caller that
a child with that number is in the directory, and names the entry when the caller may be shown
it (``adapter.store.entry_rules.duplicate_refusal``; a shielded child's only with the right),
so it is recorded as ``duplicate-refused`` (outcome 4) against that child, its detail saying
whether the entry was named (``record_duplicate``) — in the write's own transaction where the
refusal is one entry's of a batch, a Bundle or an import that goes on; in a transaction of its
own where the refusal rolled the write back (``record_refusal_disclosure``).
None of these is a disclosure: the harvesting check (``adapter.security.limits``) and the
delivery ledger (``adapter.security.ledger``) count only plain disclosures.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import Connection, Table, bindparam, event, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from adapter import identity
from adapter.db import Database, built_once, set_gathered_writer, set_refusal_recorder
from adapter.errors import ExistingEntry
from adapter.identifiers import InvalidIdentifier, validate_contactpoint_id
from adapter.models import AuditRecord
from adapter.models.base import utcnow
from adapter.security.caller import Caller, anonymous, current_caller

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)

# Actions that hand a child's data to the caller, and how one that did not is qualified.
DISCLOSURES: Final = frozenset({"read", "vread", "history", "search", "export"})
HEAD: Final = "head"
NOT_MODIFIED: Final = "not-modified"
REFUSED: Final = "refused"
FAILED: Final = "failed"
QUALIFIERS: Final = (HEAD, NOT_MODIFIED, REFUSED, FAILED)
DUPLICATE: Final = "duplicate-refused"
DUPLICATE_NAMED: Final = ("a write was refused (409): the live entry holding its NHS number "
                          "was named to the caller")
DUPLICATE_UNNAMED: Final = ("a write was refused (409): the caller was told a live entry holds "
                            "its NHS number, not which (not one it may be shown)")
GATHERED: Final = "audit_gathered"
HELD: Final = "audit_held"
MARKS: Final = "audit_savepoint_marks"
# Read routes' interactions (``fhir.<type>.<interaction>``) and their audit actions.
ROUTE_ACTIONS: Final = {"read": "read", "vread": "vread", "history-instance": "history",
                        "search-type": "search", "search-type-post": "search"}
FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def record(session: Session, action: str, *, resource_type: str | None = None,
           resource_id: str | None = None, child_ref: str | None = None, outcome: str = "0",
           override: bool = False, detail: str | None = None,
           caller: Caller | None = None) -> None:
    """Gather one audit record in ``session``'s transaction: written at its commit with every
    other record of the transaction by one INSERT (``write_gathered``), rolled back with it.
    It is gathered as the INSERT's parameters, never as an ORM object (making one cost about a
    third of the record's write).

    A search page of 100 or an export batch of 500 children is one statement, not one per
    child (every read writes at least one record: this is the hottest write of the service).
    Nothing reads a record back in the transaction that wrote it.

    ``detail`` must never hold personal data: it is kept after destruction.
    """
    who = caller or current_caller()
    if action in DISCLOSURES and head_request():
        action = f"{action}-{HEAD}"
    values = {
        "recorded": utcnow(),
        "client_id": who.client_id if who else "system",
        "organisation_code": who.organisation_code if who else "-",
        "action": action, "resource_type": resource_type, "resource_id": resource_id,
        "child_ref": child_ref, "outcome": outcome, "override": override,
        "purpose_of_use": who.purpose_of_use if who else None,
        "detail": _clipped(detail), "request_id": who.request_id if who else None,
    }
    session.info.setdefault(GATHERED, []).append(values)


def _clipped(detail: str | None) -> str | None:
    """Return ``detail`` cut to the column's length, marked where cut: an overlong detail must
    not fail the access it records."""
    if detail is None or len(detail) <= DETAIL_LENGTH:
        return detail
    return detail[:DETAIL_LENGTH - 1] + "…"


DETAIL_LENGTH: Final = AuditRecord.__table__.c.detail.type.length  # type: ignore[attr-defined]
_INSERT: Final = insert(AuditRecord.__table__)  # type: ignore[arg-type]


def head_request() -> bool:
    """Return True inside a ``HEAD`` request (the answer carries no body); without the web
    layer loaded there is no request (the dispatcher runs without Flask)."""
    if sys.modules.get("flask") is None:
        return False
    from flask import has_request_context, request

    return has_request_context() and request.method == "HEAD"


def hold(session: Session) -> None:
    """Mark the records ``session`` gathers from now on: ``release`` qualifies them."""
    session.info[HELD] = len(session.info.get(GATHERED, ()))


def release(session: Session, qualifier: str | None = None) -> None:
    """Qualify the disclosures gathered in ``session`` since ``hold`` by ``qualifier`` (none:
    they stand as disclosures); they are written at the commit with the others."""
    mark: int | None = session.info.pop(HELD, None)
    if mark is None or not qualifier:
        return
    for values in session.info.get(GATHERED, [])[mark:]:
        if values["action"] in DISCLOSURES:
            values["action"] = f"{values['action']}-{qualifier}"


@event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    """Write what the transaction being committed gathered before its COMMIT (a read's
    response is sent only after its transaction committed, so never before its record is
    durable). A savepoint's commit leaves it to the enclosing transaction."""
    if session.in_nested_transaction() or not gathered(session.info):
        return
    write_gathered(session.connection(), session.info)


def gathered(info: dict[str, Any]) -> bool:
    """Return True when ``info`` holds audit records or deliveries to write."""
    from adapter.security.ledger import PENDING

    return bool(info.get(GATHERED) or info.get(PENDING))


def write_gathered(connection: Connection, info: dict[str, Any]) -> None:
    """Write, on ``connection``, the audit records and deliveries gathered in ``info`` (a
    session's, taken out of it): what a session's commit writes, and what
    ``Database.read_transaction`` writes on SQLite in its own short transaction.

    The records go in with one INSERT executed for all of them (``executemany``: one prepared
    statement stepped per row on SQLite, one pipelined batch on PostgreSQL with psycopg 3; a
    statement of many VALUES would be compiled anew for every count of rows, which costs ten
    times more), then the deliveries with one ledger upsert likewise. On PostgreSQL one record
    and one delivery (a read by id, a search of one hit) go in one statement, the INSERT in a
    data-modifying CTE of the upsert: one round trip fewer (PostgreSQL "WITH Queries",
    section 7.8.4).
    """
    from adapter.security import ledger  # it imports this module

    rows: list[dict[str, Any]] = info.pop(GATHERED, None) or []
    info.pop(HELD, None)
    deliveries = ledger.delivery_rows(info)
    dialect = connection.dialect.name
    if dialect == "postgresql" and len(rows) == 1 and len(deliveries) == 1:
        connection.execute(_record_and_deliver(), {
            **{f"audit_{key}": value for key, value in rows[0].items()},
            **{f"ledger_{key}": value for key, value in deliveries[0].items()}})
        return
    if rows:
        connection.execute(_INSERT, rows if len(rows) > 1 else rows[0])
    if deliveries:
        connection.execute(ledger.upsert_statement(dialect),
                           deliveries if len(deliveries) > 1 else deliveries[0])


@built_once
def _record_and_deliver() -> Any:
    """Return the PostgreSQL statement writing one audit record and one delivery (built once:
    it is on every read's path)."""
    from adapter.security import ledger

    table = cast(Table, AuditRecord.__table__)
    columns = [c for c in table.c if c.name != "id"]
    audited = insert(table).values(
        {c: bindparam(f"audit_{c.name}", type_=c.type) for c in columns}).cte("audited")
    return ledger.upsert_of(postgresql.insert, "ledger_").add_cte(audited)


set_gathered_writer(write_gathered)


def _held_entry(error: BaseException) -> str | None:
    """Return the id of the child's entry a refusal told its caller about, if any."""
    if not isinstance(error, ExistingEntry) or error.holder is None:
        return None
    kind, _, resource_id = error.holder.partition("/")
    return resource_id if kind == "Patient" and resource_id else None


def record_duplicate(session: Session, error: BaseException, *,
                     caller: Caller | None = None) -> None:
    """Gather in ``session`` the record of a refusal that told its caller about a child's
    entry (a 409 for an NHS number another live entry holds); nothing for any other error.
    For a refusal caught where the transaction goes on (a batch entry, an imported record)."""
    held = _held_entry(error)
    if held is not None:
        named = isinstance(error, ExistingEntry) and error.resource is not None
        record(session, DUPLICATE, resource_type="Patient", resource_id=held, child_ref=held,
               outcome="4", caller=caller,
               detail=DUPLICATE_NAMED if named else DUPLICATE_UNNAMED)


def record_refusal_disclosure(db: Database, error: BaseException) -> None:
    """Record, in a transaction of its own, the entry told of by a refusal that rolled its
    write transaction back (``Database.write_transaction``), once however many transactions
    it leaves. When the record cannot be written, its error replaces the refusal (a 503
    then, naming nothing): the answer leaves only once its record is committed, as a read's
    data does (docs/architecture.md "Audit before the answer")."""
    if _held_entry(error) is None or getattr(error, "disclosure_recorded", False):
        return
    with db.write_transaction() as session:
        record_duplicate(session, error)
    error.disclosure_recorded = True  # type: ignore[attr-defined]


set_refusal_recorder(record_refusal_disclosure)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: Any) -> None:
    """Remember how many records and deliveries were gathered when a savepoint began."""
    if transaction.nested:
        session.info.setdefault(MARKS, {})[transaction] = _gathered_counts(session.info)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous_transaction: Any) -> None:
    """Drop the records and deliveries of a rolled-back savepoint (a batch entry that
    failed): what they record did not happen, and what was read was never sent (a
    rolled-back transaction's go in ``_end_transaction``)."""
    from adapter.security.ledger import PENDING

    marks: dict[Any, tuple[int, int]] = session.info.get(MARKS, {})
    if previous_transaction.nested and previous_transaction in marks:
        records, deliveries = marks.pop(previous_transaction)
        del session.info.get(GATHERED, [])[records:]
        del session.info.get(PENDING, [])[deliveries:]


def _gathered_counts(info: dict[str, Any]) -> tuple[int, int]:
    """Return how many audit records and deliveries ``info`` holds."""
    from adapter.security.ledger import PENDING

    return len(info.get(GATHERED, ())), len(info.get(PENDING, ()))


@event.listens_for(Session, "after_transaction_end")
def _end_transaction(session: Session, transaction: Any) -> None:
    """Forget, when the outermost transaction ends, whatever it did not write (nothing, after
    a commit) and its savepoints' marks (``after_soft_rollback`` follows this event, so a
    savepoint's mark stays until then)."""
    if transaction.parent is None:
        _forget(session)


def _forget(session: Session) -> None:
    """Drop the gathered records and marks of ``session``."""
    for key in (GATHERED, HELD, MARKS):
        session.info.pop(key, None)


def record_refusal(response: Response) -> Response:
    """Record a refused (4xx) or failed (5xx) read as such (after_request)."""
    from flask import request

    status = response.status_code
    if status < 400 or status == 429 or request.endpoint is None:
        return response
    from adapter.security.access import access_of

    access = access_of(request.endpoint)
    if access is None or access.kind != "read" or not (
            request.method in ("GET", "HEAD") or access.interaction == "search"):
        return response
    try:
        _write_refusal(access.resource_type, status)
    except Exception as exc:  # the database may be what failed: the answer stands
        log.warning("could not record a refused read: %s", type(exc).__name__)
    return response


def _write_refusal(resource_type: str | None, status: int) -> None:
    """Write the record of a refused or failed read in its own transaction."""
    from flask import request

    from adapter.db import get_db

    endpoint = str(request.endpoint)
    action = ROUTE_ACTIONS.get(endpoint.rsplit(".", 1)[-1]) \
        or ("export" if ".export." in endpoint else "read")
    qualifier, outcome = (FAILED, "8") if status >= 500 else (REFUSED, "4")
    resource_id = _target(status)
    with get_db().write_transaction() as session:
        record(session, f"{action}-{qualifier}", resource_type=resource_type,
               resource_id=resource_id, outcome=outcome, caller=_refused_caller(),
               child_ref=resource_id if resource_type == "Patient" else None,
               detail=f"{request.method} answered HTTP {status}")


def _target(status: int) -> str | None:
    """Return the id a refused read named, only when it may exist: a 404, 410 or phase
    refusal names no live child, and must not put its id back in the trail."""
    from flask import request

    resource_id = (request.view_args or {}).get("resource_id")
    if not isinstance(resource_id, str) or not FHIR_ID.fullmatch(resource_id) \
            or status not in (401, 403) and status < 500:
        return None
    return resource_id


def _refused_caller() -> Caller:
    """Return the caller of a refused request: the authenticated client, else the token's if
    it is valid (a phase refusal comes before authentication), else ``unauthenticated``."""
    from flask import g, request

    who: Caller | None = g.get("caller")
    if who is not None:
        return who
    if request.headers.get("Authorization"):
        from adapter.errors import GatewayError
        from adapter.security.access import authenticate

        try:
            return authenticate()[0]
        except GatewayError:
            pass
    return anonymous(g.get("request_id"))


def init_app(app: Flask) -> None:
    """Record refused and failed reads after every response."""
    app.after_request(record_refusal)


def child_ref_of(text: str) -> str:
    """Return the child reference (Patient id) for a Patient id or a ContactPoint ID, as the
    audit trail keeps it (the id is derived from the ContactPoint ID, so it outlives the entry)."""
    try:
        return identity.patient_id(validate_contactpoint_id(text))
    except InvalidIdentifier:
        return text.strip()


def trail(session: Session, *, child_ref: str | None = None, client_id: str | None = None,
          since: dt.datetime | None = None) -> Iterator[AuditRecord]:
    """Yield the audit records of one child or one client, oldest first, streamed."""
    query = select(AuditRecord).order_by(AuditRecord.recorded, AuditRecord.id)
    if child_ref is not None:
        query = query.where(AuditRecord.child_ref == child_ref)
    if client_id is not None:
        query = query.where(AuditRecord.client_id == client_id)
    if since is not None:
        query = query.where(AuditRecord.recorded >= since)
    yield from session.scalars(query.execution_options(yield_per=500))
