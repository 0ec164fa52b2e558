"""export jobs

Revision ID: 0004
Revises: 0003b
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0004"
down_revision = "0003b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "export_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("organisation_code", sa.String(length=9), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("rights", sa.JSON(), nullable=False),
        sa.Column("purpose_of_use", sa.String(length=100), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=6), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("authority_id", sa.Integer(), nullable=True),
        sa.Column("types", sa.JSON(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("output_format", sa.String(length=40), nullable=False),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("children_total", sa.Integer(), nullable=False),
        sa.Column("children_done", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=60), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("error_files", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("failure", sa.String(length=500), nullable=True),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("level IN ('system', 'group')", name=op.f("ck_export_job_level")),
        sa.CheckConstraint(
            "state IN ('accepted', 'in-progress', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_export_job_state"),
        ),
        sa.CheckConstraint(
            "children_done >= 0 AND children_total >= 0", name=op.f("ck_export_job_progress")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_job")),
        sa.UniqueConstraint("job_id", name=op.f("uq_export_job_job_id")),
    )
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_export_job_client_id"), ["client_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_export_job_expires"), ["expires"], unique=False)
        batch_op.create_index("ix_export_job_state_heartbeat", ["state", "heartbeat"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.drop_index("ix_export_job_state_heartbeat")
        batch_op.drop_index(batch_op.f("ix_export_job_expires"))
        batch_op.drop_index(batch_op.f("ix_export_job_client_id"))

    op.drop_table("export_job")
