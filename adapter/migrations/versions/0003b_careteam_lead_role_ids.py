"""careteam and lead role ids

The FHIR ids of a child's team CareTeam and of an eCAF lead professional's PractitionerRole are
uuid5 values derived from natural keys; they are stored so that a read by id finds the record.

Revision ID: 0003b
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from adapter.identifiers import RESOURCE_NAMESPACE

revision = "0003b"
down_revision = "0003"
branch_labels = None
depends_on = None

BATCH = 5000


def _derive(kind: str, key: str) -> str:
    """Return the UUIDv5 id of (kind, key) (adapter.identifiers, fixed at this revision)."""
    return str(uuid.uuid5(RESOURCE_NAMESPACE, f"{kind}/{key}"))


def _backfill(table: str, source: str, target: str, kind: str, template: str) -> None:
    """Fill ``target`` of every row from ``source`` in batches (keyset on id)."""
    connection = op.get_bind()
    rows = sa.table(table, sa.column("id", sa.Integer), sa.column(source, sa.String),
                    sa.column(target, sa.String))
    last = 0
    while True:
        batch = connection.execute(sa.select(rows.c.id, rows.c[source]).where(rows.c.id > last)
                                   .order_by(rows.c.id).limit(BATCH)).all()
        if not batch:
            return
        connection.execute(rows.update().where(rows.c.id == sa.bindparam("row_id"))
                           .values({target: sa.bindparam("value")}),
                           [{"row_id": row_id, "value": _derive(kind, template.format(key))}
                            for row_id, key in batch])
        last = batch[-1][0]


def upgrade() -> None:
    """Apply this revision (columns added without rebuilding the tables)."""
    op.add_column("child", sa.Column("careteam_id", sa.String(length=64), nullable=True))
    op.add_column("assessment", sa.Column("lead_role_id", sa.String(length=64), nullable=True))
    _backfill("child", "contactpoint_id", "careteam_id", "CareTeam", "team/{}")
    _backfill("assessment", "assessment_id", "lead_role_id", "PractitionerRole", "ecaf/{}/lead")
    op.create_index("ix_child_careteam_id", "child", ["careteam_id"])
    op.create_index("ix_assessment_lead_role_id", "assessment", ["lead_role_id"])


def downgrade() -> None:
    """Revert this revision (SQLite 3.35+ drops a column in place: no table rebuild, which
    with foreign keys on would cascade the rebuilt table's DROP to its parts)."""
    op.drop_index("ix_assessment_lead_role_id", table_name="assessment")
    op.drop_index("ix_child_careteam_id", table_name="child")
    op.drop_column("assessment", "lead_role_id")
    op.drop_column("child", "careteam_id")
