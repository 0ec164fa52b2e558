"""Directory XML out: directory entries and eCAF assessment references as one caller may see
them, by id or page by page (an authority's records, optionally those changed since an
instant), each disclosed through the one policy (``adapter.security.policy``:
``disclose_child``, and for assessment references ``disclose_assessment`` as the FHIR CareTeam)
and audited in the transaction that reads it. A record the policy cut is marked
``redacted`` (common.xsd ``DisclosureAttributes``): a visible redaction, never a silent gap.

Pages are keyset-paged on (last updated, internal id), so a client that walks an authority's
records while they change sees each change once at least (a record updated meanwhile moves to
the end), and a page deep into a large authority costs what the first one does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from adapter.db import Database
from adapter.errors import BadRequest, NotFound
from adapter.fhir.search import decode_cursor, encode_cursor
from adapter.models import Assessment, Child, Organisation
from adapter.models.canonical import (
    Canonical,
    as_utc,
    canonical_assessment_dump,
    canonical_dump,
    child_reference_dump,
)
from adapter.security import audit, ledger
from adapter.security.caller import Caller
from adapter.security.policy import (
    child_visible,
    disclose_assessment,
    disclose_child,
    visible_to,
)
from adapter.store.children import child_query

MAX_COUNT: Final = 1000
DEFAULT_COUNT: Final = 100
EXPORT_PAGE: Final = 500
Record = TypeVar("Record", Child, Assessment)


@dataclass(frozen=True)
class ListQuery:
    """Which records a page holds: an authority's (GSS code), changed after ``since``."""

    authority: str
    since: dt.datetime | None = None
    count: int = DEFAULT_COUNT
    cursor: str | None = None


@dataclass
class Page:
    """Disclosed records (canonical dicts for the writer) and the cursor of the next page."""

    records: list[Canonical] = field(default_factory=list)
    next_cursor: str | None = None
    # Shielded children disclosed with the shielding right (audited as overrides).
    overrides: int = 0


def disclosed_entry(session: Session, child: Child, caller: Caller,
                    action: str) -> tuple[Canonical, bool]:
    """Return what ``caller`` may see of an entry (marked redacted where cut), audited as
    ``action``, and whether it was a break-glass override."""
    disclosure = disclose_child(child, caller)
    audit.record(session, action, resource_type="Patient", resource_id=child.resource_id,
                 child_ref=child.resource_id, override=disclosure.override, caller=caller)
    ledger.record_delivery(session, caller, child, action)
    data = canonical_dump(disclosure.child)
    if disclosure.redacted:
        data["redacted"] = True
    return data, disclosure.override


def disclosed_assessment(session: Session, assessment: Assessment, caller: Caller,
                         action: str) -> tuple[Canonical, bool]:
    """Return what ``caller`` may see of an assessment reference (its team as the FHIR
    CareTeam shows it, its child's identifiers as the child's policy does), audited."""
    view, redacted = disclose_assessment(assessment, caller)
    child = disclose_child(assessment.child, caller)
    data = canonical_assessment_dump(view)
    data["child"] = child_reference_dump(child.child)
    if redacted or child.redacted:
        data["redacted"] = True
    audit.record(session, action, resource_type="CareTeam", resource_id=assessment.resource_id,
                 child_ref=assessment.child.resource_id, override=child.override, caller=caller)
    ledger.record_delivery(session, caller, assessment.child, action)
    return data, child.override


def read_entry(session: Session, contactpoint_id: str, caller: Caller) -> Page:
    """Return the one-record page of the entry with this ContactPoint ID (audited "read").

    :raises NotFound: no such entry, or archived for this caller.
    """
    child = session.scalar(child_query().where(Child.contactpoint_id == contactpoint_id,
                                               visible_to(caller)))
    if child is None:
        raise NotFound("No directory entry with this ContactPoint ID (or not one you may see).")
    data, override = disclosed_entry(session, child, caller, "read")
    return Page([data], None, int(override))


def assessment_query(caller: Caller) -> Select[Assessment]:
    """Return a select of the assessment references ``caller`` may see, with their child's
    parts that disclosure needs (the FHIR CareTeam's visibility: ``child_visible``)."""
    child = contains_eager(Assessment.child)
    return (select(Assessment).join(Child, Assessment.child_id == Child.id)
            .where(child_visible(caller))
            .options(child.selectinload(Child.names), child.selectinload(Child.carers),
                     child.selectinload(Child.involvements),
                     child.selectinload(Child.local_identifiers),
                     child.joinedload(Child.managing_organisation),
                     selectinload(Assessment.members)))


def read_assessment(session: Session, assessment_id: str, caller: Caller) -> Page:
    """Return the one-record page of an assessment reference (audited "read").

    :raises NotFound: no such reference, or its child hidden from this caller.
    """
    assessment = session.scalar(assessment_query(caller).where(
        Assessment.assessment_id == assessment_id))
    if assessment is None:
        raise NotFound("No assessment reference with this id (or not one you may see).")
    data, override = disclosed_assessment(session, assessment, caller, "read")
    return Page([data], None, int(override))


def _authority_id(session: Session, gss_code: str) -> int | None:
    """Return the internal id of the local authority with this GSS code."""
    return session.scalar(select(Organisation.id).where(Organisation.gss_code == gss_code))


def _after(cursor: str | None, updated: Any, row_id: Any) -> Any:
    """Return the keyset condition "after the cursor's (last updated, id)", or None.

    :raises BadRequest: not a cursor of this server.
    """
    if cursor is None:
        return None
    moment_text, id_text = decode_cursor(cursor, 2)
    try:
        moment, last_id = as_utc(dt.datetime.fromisoformat(moment_text)), int(id_text)
    except (ValueError, OverflowError):
        raise BadRequest("_cursor is not a paging cursor of this server: follow the Link "
                         "header's next URL.", expression="_cursor") from None
    return or_(updated > moment, and_(updated == moment, row_id > last_id))


def _page_of(session: Session, query: Select[Any], updated: Any, row_id: Any,
             spec: ListQuery) -> tuple[list[Any], str | None]:
    """Return one keyset page of ``query``'s rows and the cursor of the next one."""
    if spec.since is not None:
        query = query.where(updated > spec.since)
    after = _after(spec.cursor, updated, row_id)
    if after is not None:
        query = query.where(after)
    rows = list(session.scalars(query.order_by(updated, row_id).limit(spec.count + 1)).unique())
    more = len(rows) > spec.count
    rows = rows[:spec.count]
    cursor = None
    if more and rows:
        cursor = encode_cursor(rows[-1].last_updated.isoformat(), rows[-1].id)
    return rows, cursor


def _disclosed_page(session: Session, records: list[Record], cursor: str | None,
                    disclose: Callable[[Session, Record, Caller, str], tuple[Canonical, bool]],
                    caller: Caller, action: str) -> Page:
    """Return the page of ``records``, each disclosed to ``caller`` and audited as ``action``
    by ``disclose`` (``disclosed_entry``, ``disclosed_assessment``), in order."""
    page = Page(next_cursor=cursor)
    for record in records:
        data, override = disclose(session, record, caller, action)
        page.records.append(data)
        page.overrides += override
    return page


def entries_page(session: Session, spec: ListQuery, caller: Caller,
                 action: str = "read") -> Page:
    """Return one page of an authority's entries for ``caller``, each audited as ``action``.

    :raises BadRequest: a cursor that is not this server's.
    """
    authority = _authority_id(session, spec.authority)
    if authority is None:
        return Page()
    query = child_query().where(Child.managing_organisation_id == authority, visible_to(caller))
    children, cursor = _page_of(session, query, Child.last_updated, Child.id, spec)
    return _disclosed_page(session, children, cursor, disclosed_entry, caller, action)


def assessments_page(session: Session, spec: ListQuery, caller: Caller,
                     action: str = "read") -> Page:
    """Return one page of the assessment references of an authority's children.

    :raises BadRequest: a cursor that is not this server's.
    """
    authority = _authority_id(session, spec.authority)
    if authority is None:
        return Page()
    query = assessment_query(caller).where(Child.managing_organisation_id == authority) \
        .options(joinedload(Assessment.lead_organisation))
    assessments, cursor = _page_of(session, query, Assessment.last_updated, Assessment.id, spec)
    return _disclosed_page(session, assessments, cursor, disclosed_assessment, caller, action)


def iter_pages(db: Database, spec: ListQuery, caller: Caller, *, assessments: bool = False,
               action: str = "export") -> Iterator[Page]:
    """Yield every page of an authority's entries (or assessment references), each read and
    audited in its own transaction (for the export command: memory stays flat)."""
    read = assessments_page if assessments else entries_page
    while True:
        with db.write_transaction() as session:
            page = read(session, spec, caller, action)
        yield page
        if page.next_cursor is None:
            return
        spec = replace(spec, cursor=page.next_cursor)
