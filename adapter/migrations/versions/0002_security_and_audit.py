"""security and audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    
    op.create_table(
        "audit_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("organisation_code", sa.String(length=9), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=True),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("child_ref", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("override", sa.Boolean(), nullable=False),
        sa.Column("purpose_of_use", sa.String(length=100), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('0', '4', '8', '12')", name=op.f("ck_audit_record_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_record")),
    )
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_record_action"), ["action"], unique=False)
        batch_op.create_index(
            "ix_audit_record_child_ref_recorded", ["child_ref", "recorded"], unique=False
        )
        batch_op.create_index(
            "ix_audit_record_client_recorded", ["client_id", "recorded"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_record_recorded"), ["recorded"], unique=False)

    op.create_table(
        "client",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("organisation_code", sa.String(length=9), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("rights", sa.JSON(), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=False),
        sa.Column("harvest_ceiling_per_hour", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_client_status")),
        sa.CheckConstraint(
            "harvest_ceiling_per_hour > 0", name=op.f("ck_client_harvest_ceiling_positive")
        ),
        sa.CheckConstraint("rate_limit_per_minute > 0", name=op.f("ck_client_rate_limit_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client")),
        sa.UniqueConstraint("client_id", name=op.f("uq_client_client_id")),
    )
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_client_organisation_code"), ["organisation_code"], unique=False
        )

    op.create_table(
        "used_assertion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_used_assertion")),
        sa.UniqueConstraint("client_id", "jti", name=op.f("uq_used_assertion_client_id_jti")),
    )
    with op.batch_alter_table("used_assertion", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_assertion_expires_at"), ["expires_at"], unique=False
        )

    


def downgrade() -> None:
    """Revert this revision."""
    
    with op.batch_alter_table("used_assertion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_assertion_expires_at"))

    op.drop_table("used_assertion")
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_organisation_code"))

    op.drop_table("client")
    with op.batch_alter_table("audit_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_record_recorded"))
        batch_op.drop_index("ix_audit_record_client_recorded")
        batch_op.drop_index("ix_audit_record_child_ref_recorded")
        batch_op.drop_index(batch_op.f("ix_audit_record_action"))

    op.drop_table("audit_record")
    
