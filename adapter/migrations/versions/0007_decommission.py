"""decommission: the plan and its phase, purge Tasks and the children each names

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('decommission_plan',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=20), nullable=False),
    sa.Column('last_use', sa.Date(), nullable=False),
    sa.Column('run_down_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('switch_off_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('destroy_by_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time_zone', sa.String(length=40), nullable=False),
    sa.Column('reminder_days', sa.Integer(), nullable=False),
    sa.Column('escalate_days', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('planned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_down_started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('switched_off', sa.DateTime(timezone=True), nullable=True),
    sa.Column('destroyed', sa.DateTime(timezone=True), nullable=True),
    sa.Column('certificate', sa.JSON(), nullable=True),
    sa.Column('certificate_xml', sa.Text(), nullable=True),
    sa.CheckConstraint('id = 1', name=op.f('ck_decommission_plan_singleton')),
    sa.CheckConstraint("phase IN ('live', 'run-down', 'switched-off', 'destroyed')", name=op.f('ck_decommission_plan_phase')),
    sa.CheckConstraint('run_down_at < switch_off_at AND switch_off_at < destroy_by_at', name=op.f('ck_decommission_plan_timetable_order')),
    sa.CheckConstraint('reminder_days > 0 AND escalate_days >= 0', name=op.f('ck_decommission_plan_intervals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decommission_plan'))
    )
    op.create_table('purge_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('organisation_code', sa.String(length=9), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('status_reason', sa.String(length=500), nullable=True),
    sa.Column('children', sa.Integer(), nullable=False),
    sa.Column('purged', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('issued', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reminders', sa.Integer(), nullable=False),
    sa.Column('last_reminded', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalated', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('requested', 'received', 'accepted', 'rejected', 'in-progress', 'completed', 'failed')", name=op.f('ck_purge_task_status')),
    sa.CheckConstraint('children >= 0 AND reminders >= 0', name=op.f('ck_purge_task_counts')),
    sa.CheckConstraint('purged IS NULL OR purged >= 0', name=op.f('ck_purge_task_purged')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purge_task')),
    sa.UniqueConstraint('client_id', name=op.f('uq_purge_task_client_id')),
    sa.UniqueConstraint('resource_id', name=op.f('uq_purge_task_resource_id'))
    )
    op.create_index('ix_purge_task_status', 'purge_task', ['status'], unique=False)
    op.create_table('purge_task_item',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('child_ref', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['purge_task.id'], name=op.f('fk_purge_task_item_task_id_purge_task'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', 'child_ref', name=op.f('pk_purge_task_item'))
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table('purge_task_item')
    op.drop_index('ix_purge_task_status', table_name='purge_task')
    op.drop_table('purge_task')
    op.drop_table('decommission_plan')
