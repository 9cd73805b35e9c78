"""The slot ledger, and the first attempt's start time.

- `slots`: what happened to every slot of a schedule, kept apart from the jobs so that pruning job history
  does not erase it. One row per slot, inserted with its job; its outcome is written once, when the job has
  finished (the leader's `settle_slots`); a run of missed or paused slots is one row (first slot, last slot,
  count). Existing schedule jobs are copied in, so the ledger starts with the history still kept.
- `jobs.first_started_at`: when the first attempt started; lateness is this minus the slot (retry delays
  are not lateness). Filled from `started_at` for jobs whose only attempt is their first.
- `schedules.paused_since`: the slots dropped after a pause are recorded as `paused`, not `missed`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OUTCOMES = "('completed', 'failed', 'cancelled', 'skipped', 'missed', 'paused')"


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    tz = sa.DateTime(timezone=True)
    op.add_column('jobs', sa.Column('first_started_at', tz, nullable=True), schema=schema)
    op.add_column('schedules', sa.Column('paused_since', tz, nullable=True), schema=schema)
    op.create_table(
        'slots',
        sa.Column('schedule_id', sa.BigInteger(), nullable=False),
        sa.Column('slot', tz, nullable=False),
        sa.Column('last_slot', tz, nullable=True),
        sa.Column('slot_count', sa.Integer(), server_default=sa.text('1'), nullable=True),
        sa.Column('outcome', sa.Text(), nullable=True),
        sa.Column('backfilled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('job_id', sa.BigInteger(), nullable=True),
        sa.Column('started_at', tz, nullable=True),
        sa.Column('finished_at', tz, nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('recorded_at', tz, server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint(f"outcome IS NULL OR outcome IN {OUTCOMES}", name=op.f('ck_slots_outcome')),
        sa.CheckConstraint('(slot_count IS NULL OR slot_count >= 1) AND (last_slot IS NULL OR last_slot >= slot)',
                           name=op.f('ck_slots_range')),
        sa.CheckConstraint('outcome IS NOT NULL OR job_id IS NOT NULL', name=op.f('ck_slots_pending_job')),
        sa.ForeignKeyConstraint(['schedule_id'], [f'{schema}.schedules.id'],
                                name=op.f('fk_slots_schedule_id_schedules'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('schedule_id', 'slot', name=op.f('pk_slots')),
        schema=schema,
    )
    op.create_index('ix_slots_pending', 'slots', ['job_id'], unique=False, schema=schema,
                    postgresql_where=sa.text('outcome IS NULL'))
    cols = ('schedule_id', 'slot', 'state', 'id', 'attempt', 'started_at', 'first_started_at', 'finished_at',
            'last_error')
    jobs = sa.table('jobs', *(sa.column(c) for c in cols), schema=schema)
    op.execute(jobs.update().where(jobs.c.attempt == 1, jobs.c.started_at.is_not(None))
               .values(first_started_at=jobs.c.started_at))
    slots = sa.table('slots', *(sa.column(c) for c in ('schedule_id', 'slot', 'outcome', 'job_id', 'started_at',
                                                        'finished_at', 'reason')), schema=schema)
    history = sa.select(
        jobs.c.schedule_id, jobs.c.slot, sa.case((jobs.c.finished_at.is_not(None), jobs.c.state)), jobs.c.id,
        jobs.c.first_started_at, jobs.c.finished_at,
        sa.case((jobs.c.state.in_(['failed', 'cancelled', 'skipped']), sa.func.left(jobs.c.last_error, 500))),
    ).where(jobs.c.schedule_id.is_not(None), jobs.c.slot.is_not(None))
    op.execute(slots.insert().from_select(
        ['schedule_id', 'slot', 'outcome', 'job_id', 'started_at', 'finished_at', 'reason'], history))


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_index('ix_slots_pending', table_name='slots', schema=schema)
    op.drop_table('slots', schema=schema)
    op.drop_column('schedules', 'paused_since', schema=schema)
    op.drop_column('jobs', 'first_started_at', schema=schema)
