"""notifications: subscriptions, outbox events, notification queue, delivery attempts, ledger

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('delivery_ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('child_ref', sa.String(length=64), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_via', sa.String(length=20), nullable=False),
    sa.Column('deliveries', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_ledger')),
    sa.UniqueConstraint('client_id', 'child_ref', name=op.f('uq_delivery_ledger_client_id_child_ref'))
    )
    op.create_index(op.f('ix_delivery_ledger_child_ref'), 'delivery_ledger', ['child_ref'], unique=False)
    op.create_table('event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=10), nullable=False),
    sa.Column('focus_type', sa.String(length=40), nullable=False),
    sa.Column('focus_id', sa.String(length=64), nullable=False),
    sa.Column('child_ref', sa.String(length=64), nullable=True),
    sa.Column('authority_ref', sa.String(length=64), nullable=True),
    sa.Column('addressee', sa.String(length=100), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('fanned_out', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("topic IN ('directory-entry-changed', 'ecaf-assessment-changed', 'decommission-notice', 'purge-instruction')", name=op.f('ck_event_topic')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event'))
    )
    op.create_index('ix_event_fanned_out_id', 'event', ['fanned_out', 'id'], unique=False)
    op.create_table('subscription',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('topic', sa.String(length=40), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('filter_text', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('endpoint', sa.String(length=500), nullable=False),
    sa.Column('payload', sa.String(length=40), nullable=False),
    sa.Column('content', sa.String(length=20), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('heartbeat_period', sa.Integer(), nullable=True),
    sa.Column('timeout', sa.Integer(), nullable=True),
    sa.Column('max_count', sa.Integer(), nullable=True),
    sa.Column('end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('start_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('events_since_start', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_updated', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("channel IN ('rest-hook', 'mesh')", name=op.f('ck_subscription_channel')),
    sa.CheckConstraint("content IN ('empty', 'id-only', 'full-resource')", name=op.f('ck_subscription_content')),
    sa.CheckConstraint("status IN ('requested', 'active', 'error', 'off')", name=op.f('ck_subscription_status')),
    sa.CheckConstraint("topic IN ('directory-entry-changed', 'ecaf-assessment-changed', 'decommission-notice', 'purge-instruction')", name=op.f('ck_subscription_topic')),
    sa.ForeignKeyConstraint(['client_id'], ['client.client_id'], name=op.f('fk_subscription_client_id_client')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscription')),
    sa.UniqueConstraint('resource_id', name=op.f('uq_subscription_resource_id'))
    )
    op.create_index(op.f('ix_subscription_client_id'), 'subscription', ['client_id'], unique=False)
    op.create_index('ix_subscription_topic_status', 'subscription', ['topic', 'status'], unique=False)
    op.create_table('delivery_attempt',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('first_event_number', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('last_event_number', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('delivered', sa.Boolean(), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], name=op.f('fk_delivery_attempt_subscription_id_subscription')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempt'))
    )
    op.create_index('ix_delivery_attempt_subscription_at', 'delivery_attempt', ['subscription_id', 'attempted_at'], unique=False)
    op.create_table('notification',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('event_number', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('content', sa.JSON(), nullable=True),
    sa.Column('discloses', sa.JSON(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind <> 'event' OR (event_number IS NOT NULL AND event_id IS NOT NULL)", name=op.f('ck_notification_event_numbered')),
    sa.CheckConstraint("kind IN ('handshake', 'heartbeat', 'event')", name=op.f('ck_notification_kind')),
    sa.CheckConstraint("state IN ('pending', 'delivered', 'dead')", name=op.f('ck_notification_state')),
    sa.ForeignKeyConstraint(['event_id'], ['event.id'], name=op.f('fk_notification_event_id_event')),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], name=op.f('fk_notification_subscription_id_subscription')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    sa.UniqueConstraint('subscription_id', 'event_number', name=op.f('uq_notification_subscription_id_event_number'))
    )
    op.create_index(op.f('ix_notification_event_id'), 'notification', ['event_id'], unique=False)
    op.create_index('ix_notification_queued', 'notification', ['subscription_id', 'id'], unique=False, postgresql_where=sa.text("state IN ('pending', 'dead')"), sqlite_where=sa.text("state IN ('pending', 'dead')"))
    op.create_table('subscription_lane',
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], name=op.f('fk_subscription_lane_subscription_id_subscription')),
    sa.PrimaryKeyConstraint('subscription_id', name=op.f('pk_subscription_lane'))
    )
    op.create_index(op.f('ix_subscription_lane_next_attempt_at'), 'subscription_lane', ['next_attempt_at'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(op.f('ix_subscription_lane_next_attempt_at'), table_name='subscription_lane')
    op.drop_table('subscription_lane')
    op.drop_index('ix_notification_queued', table_name='notification', postgresql_where=sa.text("state IN ('pending', 'dead')"), sqlite_where=sa.text("state IN ('pending', 'dead')"))
    op.drop_index(op.f('ix_notification_event_id'), table_name='notification')
    op.drop_table('notification')
    op.drop_index('ix_delivery_attempt_subscription_at', table_name='delivery_attempt')
    op.drop_table('delivery_attempt')
    op.drop_index('ix_subscription_topic_status', table_name='subscription')
    op.drop_index(op.f('ix_subscription_client_id'), table_name='subscription')
    op.drop_table('subscription')
    op.drop_index('ix_event_fanned_out_id', table_name='event')
    op.drop_table('event')
    op.drop_index(op.f('ix_delivery_ledger_child_ref'), table_name='delivery_ledger')
    op.drop_table('delivery_ledger')
