"""record history

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    
    op.create_table(
        "record_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('child', 'assessment', 'organisation', 'practitioner')",
            name=op.f("ck_record_version_kind"),
        ),
        sa.CheckConstraint(
            "deleted OR snapshot IS NOT NULL",
            name=op.f("ck_record_version_snapshot_unless_deleted"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_version")),
        sa.UniqueConstraint(
            "kind",
            "resource_id",
            "version",
            name=op.f("uq_record_version_kind_resource_id_version"),
        ),
    )
    


def downgrade() -> None:
    """Revert this revision."""
    
    op.drop_table("record_version")
    
