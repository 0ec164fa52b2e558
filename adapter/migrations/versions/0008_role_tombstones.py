"""role tombstones: record_version kind 'role'

A deleted PractitionerRole leaves a deletion tombstone (kind ``role``), so that reading it
answers 410 Gone like every other deleted resource (FHIR R4 http.html#read).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('child', 'assessment', 'organisation', 'practitioner')"
KINDS_AFTER = "kind IN ('child', 'assessment', 'organisation', 'practitioner', 'role')"


def _kinds(condition: str) -> None:
    """Replace the check constraint on ``record_version.kind`` with ``condition``."""
    with op.batch_alter_table("record_version", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_record_version_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_record_version_kind"), condition)


def upgrade() -> None:
    """Apply this revision."""
    _kinds(KINDS_AFTER)


def downgrade() -> None:
    """Revert this revision (role tombstones are dropped: they are only answers of 410)."""
    op.execute("DELETE FROM record_version WHERE kind = 'role'")
    _kinds(KINDS_BEFORE)
