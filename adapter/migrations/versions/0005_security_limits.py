"""security limits: rate windows, harvesting alert, audit activity index

Per-client request counters (``rate_window``), the time of a client's last harvesting alert,
and an index on a client's audit activity that answers the harvesting check by itself.

Revision ID: 0005
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "rate_window",
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "minute", name=op.f("pk_rate_window")),
    )
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.add_column(sa.Column("harvest_alerted_at", sa.DateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_record_client_recorded")
        batch_op.create_index("ix_audit_record_client_activity",
                              ["client_id", "recorded", "child_ref", "action"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_record_client_activity")
        batch_op.create_index("ix_audit_record_client_recorded", ["client_id", "recorded"],
                              unique=False)
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.drop_column("harvest_alerted_at")
    op.drop_table("rate_window")
