"""What one event puts in a notification for one subscriber: nothing (``empty``), a
reference (``id-only``), or the resource (``full-resource``) as a read by that subscriber
would show it — the same disclosure policy (shielding, sensitive services, other
organisations' numbers) and an audit record of the access."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import not_, select
from sqlalchemy.orm import Session

from adapter.mapping import fhir as mapping
from adapter.models import Child, Client
from adapter.models.notify import DIRECTORY_TOPIC, ECAF_TOPIC, Event
from adapter.notify.bundle import reference_entry
from adapter.security import audit
from adapter.security.caller import Caller
from adapter.security.policy import child_visible, disclose_child
from adapter.security.scopes import parse_scopes
from adapter.store.rows import entry_rows


@dataclass(frozen=True)
class EventData:
    """What rendering needs of an outbox event (read without the ORM: a lane may carry
    hundreds)."""

    id: int
    topic: str
    action: str
    focus_type: str
    focus_id: str
    child_ref: str | None
    payload: dict[str, Any] | None
    created: dt.datetime


EVENT_COLUMNS: Final = (Event.id, Event.topic, Event.action, Event.focus_type, Event.focus_id,
                        Event.child_ref, Event.payload, Event.created)


def load_events(session: Session, ids: Iterable[int]) -> dict[int, EventData]:
    """Return the events with ``ids`` by id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.execute(select(*EVENT_COLUMNS).where(Event.id.in_(wanted)))
    return {row.id: EventData(*row) for row in rows}


@dataclass
class Rendered:
    """The entries of one event and the children whose data they disclose."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    discloses: list[str] = field(default_factory=list)


def subscriber(client: Client) -> Caller:
    """Return the caller a subscription's owner is when it receives a notification: its
    registered scopes and rights, as for a read with a token it could obtain."""
    return Caller(client.client_id, client.organisation_code, parse_scopes(client.scopes),
                  frozenset(client.rights), "notification")


def focus_of(event: EventData) -> str:
    """Return the event's focus as ``Type/id``."""
    return f"{event.focus_type}/{event.focus_id}"


def render_event(session: Session, event: EventData, content: str, caller: Caller,
                 base: str, canonical: str) -> Rendered:
    """Return the entries ``event`` contributes with ``content`` for ``caller`` (``base``:
    the absolute FHIR base of its references; ``canonical``: the canonical base of this
    server's own systems, which the resources' identifiers and codes are under)."""
    if content == "empty":
        return Rendered()
    focus = focus_of(event)
    if content == "id-only":
        return Rendered([reference_entry(base, focus, event.action)])
    if event.payload is not None:
        return Rendered([reference_entry(base, focus, event.action, event.payload)])
    if event.topic == DIRECTORY_TOPIC:
        return _patient(session, event, caller, base, canonical)
    if event.topic == ECAF_TOPIC:
        return _careteam(session, event, caller, base, canonical)
    return Rendered([reference_entry(base, focus, event.action, status="404")])


def may_resend(session: Session, discloses: list[str] | None, caller: Caller) -> bool:
    """Return True when content rendered at an earlier attempt may be sent again as it was:
    no child it discloses has since been shielded (for a subscriber without the right) or
    archived. Otherwise it is rendered again, by the child's current state
    (docs/domain.md "Shielding", "Retention")."""
    if not discloses:
        return True
    hidden = session.scalar(select(Child.id).where(Child.resource_id.in_(discloses),
                                                   not_(child_visible(caller))).limit(1))
    return hidden is None


def _patient(session: Session, event: EventData, caller: Caller, base: str,
             canonical: str) -> Rendered:
    """Return the Patient of a directory event as ``caller`` may see it (audited): the entry
    as light records (``adapter.store.rows``), None when it is archived for an ordinary caller
    (docs/domain.md "Retention")."""
    focus = focus_of(event)
    child = entry_rows(session, event.focus_id, caller) if event.focus_id is not None else None
    if child is None:
        return Rendered([reference_entry(base, focus, event.action, status="404")])
    disclosure = disclose_child(child, caller)
    audit.record(session, "notify", resource_type="Patient", resource_id=child.resource_id,
                 child_ref=child.resource_id, override=disclosure.override, caller=caller)
    patient = mapping.child_to_patient(disclosure.child, redacted=disclosure.redacted,
                                       base=canonical)
    return Rendered([reference_entry(base, focus, event.action, patient)], [child.resource_id])


def _careteam(session: Session, event: EventData, caller: Caller, base: str,
              canonical: str) -> Rendered:
    """Return the CareTeam of an eCAF event exactly as a read by ``caller`` returns it
    (``adapter.fhir.careteams``: shielding, sensitive members, audit)."""
    from adapter.fhir.careteams import render_ecaf
    from adapter.store.careteams import load_assessment

    focus = focus_of(event)
    assessment = load_assessment(session, event.focus_id, caller)
    if assessment is None:
        return Rendered([reference_entry(base, focus, event.action, status="404")])
    careteam = render_ecaf(session, assessment, caller, "notify", canonical).resource
    return Rendered([reference_entry(base, focus, event.action, careteam)],
                    [assessment.child.resource_id])
