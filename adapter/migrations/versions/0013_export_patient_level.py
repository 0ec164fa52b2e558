"""patient-level exports: export_job level 'patient' and the job's ``patient`` restriction

FHIR Bulk Data Access IG v2 (export.html "Bulk Data Kick-off Request"): ``[base]/Patient/$export``
exports the patient compartments of every Patient the client may see; its POST ``patient``
parameter restricts an export to some Patients, kept with the job as their logical ids (no
personal data: the files hold that).

Revision ID: 0013_bulk
Revises: 0012_practitioner_ids
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0013_bulk"
down_revision = "0012_practitioner_ids"
branch_labels = None
depends_on = None

LEVELS_BEFORE = "level IN ('system', 'group')"
LEVELS_AFTER = "level IN ('system', 'group', 'patient')"


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_export_job_level"), type_="check")
        batch_op.alter_column("level", existing_type=sa.String(length=6),
                              type_=sa.String(length=7), existing_nullable=False)
        batch_op.create_check_constraint(op.f("ck_export_job_level"), LEVELS_AFTER)
        batch_op.add_column(sa.Column("patients", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert this revision (patient-level jobs are dropped with their files' records; the
    sweep removes their orphaned folders)."""
    op.execute("DELETE FROM export_job WHERE level = 'patient'")
    with op.batch_alter_table("export_job", schema=None) as batch_op:
        batch_op.drop_column("patients")
        batch_op.drop_constraint(op.f("ck_export_job_level"), type_="check")
        batch_op.alter_column("level", existing_type=sa.String(length=7),
                              type_=sa.String(length=6), existing_nullable=False)
        batch_op.create_check_constraint(op.f("ck_export_job_level"), LEVELS_BEFORE)
