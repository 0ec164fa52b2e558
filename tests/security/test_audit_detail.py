"""An audit detail longer than its column is kept cut and marked, never failing the access it
records (PostgreSQL refuses an overlong value; SQLite would keep it whole)."""

from __future__ import annotations

from sqlalchemy import select

from adapter.db import Database
from adapter.models import AuditRecord
from adapter.security import audit


def test_an_overlong_detail_is_cut_and_marked(db: Database) -> None:
    """A 2,000-character detail is stored as its first 499 characters and an ellipsis."""
    with db.write_transaction() as session:
        audit.record(session, "decommission-destroy", detail="x" * 2000)
    with db.sessions() as session:
        stored = session.scalar(select(AuditRecord.detail))
    assert stored == "x" * 499 + "…"
