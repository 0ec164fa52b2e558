"""The transactional outbox: one event per changed child or assessment per transaction,
committed or rolled back with the change; events raised by other services; topic filters,
backoff, Retry-After and signatures."""

from __future__ import annotations

import datetime as dt
import random
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from adapter.db import Database
from adapter.errors import Invalid
from adapter.models import Assessment, Child, Event
from adapter.notify.channels import MAX_RETRY_AFTER, retry_after
from adapter.notify.lanes import Policy
from adapter.notify.outbox import emit_child_changes, emit_purge_instruction
from adapter.notify.signing import new_secret, signature, verify
from adapter.notify.topics import TOPICS, matches, parse_filter


def events(db: Database) -> list[tuple[str, str, str, str | None]]:
    """Return (topic, action, focus, child) of every event, in order."""
    with db.sessions() as session:
        return [(e.topic, e.action, f"{e.focus_type}/{e.focus_id}", e.child_ref)
                for e in session.scalars(select(Event).order_by(Event.id))]


def test_one_event_per_change_per_transaction(demo: Database) -> None:
    """Several flushes of one transaction: one event; a rollback: none; each transaction: one."""
    with demo.write_transaction() as session:
        child = session.scalars(select(Child).order_by(Child.id)).first()
        assert child is not None
        child.address_town = "Leeds"
        session.flush()
        child.names[0].given = ["Alex"]
        session.flush()
        child_id = child.resource_id
    assert events(demo) == [("directory-entry-changed", "update", f"Patient/{child_id}",
                             child_id)]
    with pytest.raises(RuntimeError), demo.write_transaction() as session:
        session.get_one(Child, 1).address_town = "York"
        session.flush()
        raise RuntimeError("rolled back")
    assert len(events(demo)) == 1
    with demo.write_transaction() as session:
        assessment = session.scalars(select(Assessment).order_by(Assessment.id)).first()
        assert assessment is not None
        assessment.consent_to_share = not assessment.consent_to_share
        expected = ("ecaf-assessment-changed", "update", f"CareTeam/{assessment.resource_id}",
                    assessment.child.resource_id)
        authority = assessment.child.managing_organisation.resource_id
    assert events(demo)[1:] == [expected]
    with demo.sessions() as session:
        last = session.scalars(select(Event).order_by(Event.id.desc())).first()
        assert last is not None and last.authority_ref == authority


def test_events_raised_by_other_services(db: Database) -> None:
    """Bulk writers add change events; a purge instruction must be a Task with an id."""
    with db.write_transaction() as session:
        assert emit_child_changes(session, [("p1", "o1"), ("p2", None)]) == 2
        with pytest.raises(Invalid):
            emit_purge_instruction(session, "la-one", {"resourceType": "Basic", "id": "x"})
    assert [e[2] for e in events(db)] == ["Patient/p1", "Patient/p2"]


def test_filters() -> None:
    """Filters are AND-ed over parameters, OR-ed within; references become ids."""
    topic = TOPICS["directory-entry-changed"]
    parsed = parse_filter(topic, "Patient?organization=Organization/a,Organization/b&_id=c")
    assert parsed == {"organization": ["a", "b"], "_id": ["c"]}
    assert matches(parsed, {"authority_ref": "b", "child_ref": "c"})
    assert not matches(parsed, {"authority_ref": "b", "child_ref": "d"})
    assert parse_filter(topic, "organization=x&organization=x,y") == {"organization": ["x"]}
    for bad in ("CareTeam?subject=Patient/1", "Patient?gender=male",
                "Patient?organization=Patient/1", "Patient?_id="):
        with pytest.raises(Invalid):
            parse_filter(topic, bad)


def test_backoff_and_retry_after() -> None:
    """Backoff doubles with equal jitter up to its cap; Retry-After takes seconds or a date."""
    policy = Policy(backoff_base=2.0, backoff_max=60.0)
    rng = random.Random(1)  # noqa: S311
    for attempts, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 9: (30, 60)}.items():
        assert all(low <= policy.backoff(attempts, rng) <= high for _ in range(50))
    assert retry_after("120") == 120.0
    assert retry_after("999999") == MAX_RETRY_AFTER
    moment = dt.datetime(2027, 1, 1, 12, 0, 30, tzinfo=dt.UTC)
    now = dt.datetime(2027, 1, 1, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    assert retry_after(format_datetime(moment, usegmt=True), now) == 30.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_signature() -> None:
    """The X-Hub-Signature of a body verifies with its secret only."""
    secret = new_secret()
    body = b'{"resourceType":"Bundle"}'
    header = signature(secret, body)
    assert header.startswith("sha256=") and verify(secret, body, header)
    assert not verify(new_secret(), body, header)
    assert not verify(secret, body + b" ", header)
