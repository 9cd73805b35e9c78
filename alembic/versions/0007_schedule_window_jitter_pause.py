"""Schedules: a catch-up window, jitter, and pause after N consecutive failed slots.

- `catchup_window_seconds` (NULL: none): due slots older than this are not run (recorded as missed); the
  catch-up policy chooses among the younger ones.
- `jitter_seconds` (0: none): each slot's job is due at slot + an offset in [0, jitter) derived from
  (schedule, slot), so every leader computes the same one; the slot (its identity and the unique fence)
  is unchanged.
- `pause_after_failures` (NULL: never): after that many consecutive failed slots the schedule pauses itself.
- `ix_slots_ranges`: the ledger's ranges (missed, paused; few), for a backfill to split the ones it overlaps.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.add_column('schedules', sa.Column('catchup_window_seconds', sa.Double(), nullable=True), schema=schema)
    op.add_column('schedules', sa.Column('jitter_seconds', sa.Double(), server_default=sa.text('0'),
                                         nullable=False), schema=schema)
    op.add_column('schedules', sa.Column('pause_after_failures', sa.Integer(), nullable=True), schema=schema)
    op.create_check_constraint(op.f('ck_schedules_catchup_window'), 'schedules',
                               'catchup_window_seconds IS NULL OR catchup_window_seconds > 0', schema=schema)
    op.create_check_constraint(op.f('ck_schedules_jitter'), 'schedules', 'jitter_seconds >= 0', schema=schema)
    op.create_check_constraint(op.f('ck_schedules_pause_after_failures'), 'schedules',
                               'pause_after_failures IS NULL OR pause_after_failures >= 1', schema=schema)
    op.create_index('ix_slots_ranges', 'slots', ['schedule_id', 'last_slot'], unique=False, schema=schema,
                    postgresql_where=sa.text('last_slot IS NOT NULL'))


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_index('ix_slots_ranges', table_name='slots', schema=schema)
    for name in ('ck_schedules_pause_after_failures', 'ck_schedules_jitter', 'ck_schedules_catchup_window'):
        op.drop_constraint(op.f(name), 'schedules', type_='check', schema=schema)
    for column in ('pause_after_failures', 'jitter_seconds', 'catchup_window_seconds'):
        op.drop_column('schedules', column, schema=schema)
