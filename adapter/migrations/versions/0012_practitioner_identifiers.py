"""practitioner identifiers: practitioners known by national numbers (GMC, GMP, NMC, HCPC,
GPhC, SDS user id) as well as, or instead of, an employer's staff id

Other systems identify a UK Core Practitioner by its regulator's number or its Spine SDS user
id (adapter/systems.py PRACTITIONER_SYSTEMS); such a practitioner need not have an
employer here, so the staff id and its employer become optional together.

Revision ID: 0012_practitioner_ids
Revises: 0011_live_nhs
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0012_practitioner_ids"
down_revision = "0011_live_nhs"
branch_labels = None
depends_on = None

STAFF_ID_HAS_EMPLOYER = ("(organisation_id IS NULL AND local_id IS NULL) OR "
                         "(organisation_id IS NOT NULL AND local_id IS NOT NULL)")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "practitioner_identifier",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=False),
        sa.Column("system", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["practitioner_id"], ["practitioner.id"],
            name=op.f("fk_practitioner_identifier_practitioner_id_practitioner"),
            ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practitioner_identifier")),
        sa.UniqueConstraint("system", "value",
                            name=op.f("uq_practitioner_identifier_system_value")),
    )
    with op.batch_alter_table("practitioner_identifier", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_practitioner_identifier_practitioner_id"),
                              ["practitioner_id"], unique=False)
    with op.batch_alter_table("practitioner", schema=None) as batch_op:
        batch_op.alter_column("local_id", existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column("organisation_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_check_constraint(op.f("ck_practitioner_staff_id_has_employer"),
                                         STAFF_ID_HAS_EMPLOYER)


def downgrade() -> None:
    """Revert this revision (practitioners without a staff id cannot stay: it fails then)."""
    with op.batch_alter_table("practitioner", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_practitioner_staff_id_has_employer"), type_="check")
        batch_op.alter_column("organisation_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("local_id", existing_type=sa.String(length=64), nullable=False)
    with op.batch_alter_table("practitioner_identifier", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_practitioner_identifier_practitioner_id"))
    op.drop_table("practitioner_identifier")
