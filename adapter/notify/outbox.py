"""Writing events into the outbox, in the caller's transaction (docs/architecture.md
"transactional outbox"). Directory and eCAF changes made through the ORM emit theirs by
themselves (``adapter.models.notify.emit_changes``); these functions are for the events other
services raise: the decommission notice and purge instructions, and changes written
in bulk with SQLAlchemy Core, which bypasses the ORM's flush."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from adapter.errors import Invalid
from adapter.models.base import utcnow
from adapter.models.notify import DIRECTORY_TOPIC, NOTICE_TOPIC, PURGE_TOPIC, Event
from adapter.notify.topics import NOTICE_RESOURCE, PURGE_RESOURCE


def _focus(resource: dict[str, Any], expected: str | None = None) -> tuple[str, str]:
    """Return the type and id of a resource carried by an event.

    :raises Invalid: no type or id, or not the ``expected`` type.
    """
    kind, rid = resource.get("resourceType"), resource.get("id")
    if not isinstance(kind, str) or not isinstance(rid, str) or not rid \
            or (expected and kind != expected):
        raise Invalid(f"An event needs a {expected or 'FHIR'} resource with an id.")
    return kind, rid


def emit_decommission_notice(session: Session, resource: dict[str, Any],
                             action: str = "update") -> Event:
    """Add a decommission notice event carrying ``resource`` (the published timetable, no
    personal data) for every subscriber of the decommission-notice topic.

    :raises Invalid: not a PlanDefinition with an id (the topic's resource).
    """
    kind, rid = _focus(resource, NOTICE_RESOURCE)
    event = Event(topic=NOTICE_TOPIC, action=action, focus_type=kind, focus_id=rid,
                  payload=resource)
    session.add(event)
    return event


def emit_purge_instruction(session: Session, client_id: str, task_resource: dict[str, Any],
                           action: str = "create") -> Event:
    """Add a purge instruction event: the purge ``Task`` goes only to the subscriptions of
    ``client_id`` (the system it is addressed to).

    :raises Invalid: not a Task with an id.
    """
    kind, rid = _focus(task_resource, PURGE_RESOURCE)
    event = Event(topic=PURGE_TOPIC, action=action, focus_type=kind, focus_id=rid,
                  addressee=client_id, payload=task_resource)
    session.add(event)
    return event


def emit_child_changes(session: Session, changes: Iterable[tuple[str, str | None]],
                       action: str = "update") -> int:
    """Add directory-entry events for children changed without the ORM (bulk writers):
    ``changes`` holds (Patient id, managing Organization id) pairs. Returns how many."""
    now = utcnow()
    rows = [{"topic": DIRECTORY_TOPIC, "action": action, "focus_type": "Patient",
             "focus_id": child_ref, "child_ref": child_ref, "authority_ref": authority_ref,
             "fanned_out": False, "created": now} for child_ref, authority_ref in changes]
    if rows:
        session.execute(insert(Event), rows)
    return len(rows)
