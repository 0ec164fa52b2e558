"""decommission holders: a drill flag on the plan, the holder's registered contact, and the
purge Task's organisation name and first delivery; the operator's exports


A plan with past dates or a short purge window is allowed only as a drill, which the plan
records; a client may register a contact (MESH mailbox or rest-hook) where it is told its
purge instruction without subscribing; a purge Task keeps its owner's organisation name (the
directory's organisations are destroyed) and when it first reached its owner; files an
operator exported without acting as a client are recorded so that destruction removes them;
purge instruction events are indexed by their Task (a partial index) to tell whether a Task
reached its holder.

Revision ID: 0009_decom
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_decom"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("decommission_plan", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drill", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table("decommission_plan", schema=None) as batch_op:
        batch_op.alter_column("drill", server_default=None)
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contact", sa.String(length=500), nullable=True))
    with op.batch_alter_table("purge_task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organisation_name", sa.String(length=200),
                                      nullable=True))
        batch_op.add_column(sa.Column("delivered", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "operator_export",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("authority", sa.String(length=9), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("removed", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_export")),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_purge_focus", ["focus_id"], unique=False,
                              postgresql_where=sa.text("topic = 'purge-instruction'"),
                              sqlite_where=sa.text("topic = 'purge-instruction'"))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_purge_focus")
    op.drop_table("operator_export")
    with op.batch_alter_table("purge_task", schema=None) as batch_op:
        batch_op.drop_column("delivered")
        batch_op.drop_column("organisation_name")
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.drop_column("contact")
    with op.batch_alter_table("decommission_plan", schema=None) as batch_op:
        batch_op.drop_column("drill")
