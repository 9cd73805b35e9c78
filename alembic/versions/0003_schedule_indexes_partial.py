"""Schedule indexes only hold schedule jobs: ix_jobs_schedule_history and ix_jobs_schedule_unfinished become
partial (WHERE schedule_id IS NOT NULL).

Why: a job update that changes `state` cannot be a HOT update, so every claim and every completion adds an
entry to every index whose predicate the new row matches. Ad-hoc jobs (schedule_id NULL) were indexed in both
schedule indexes although no query looks them up there (every reader filters `schedule_id = ...`, which
implies IS NOT NULL, so the planner still uses these indexes). Two index insertions fewer per claim and per
completion of an ad-hoc job, and fewer for every enqueue.

Like 0002, a plain CREATE INDEX inside the migration's transaction: it blocks writes to jobs while it builds
(about a second per million rows).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_index('ix_jobs_schedule_history', table_name='jobs', schema=schema)
    op.drop_index('ix_jobs_schedule_unfinished', table_name='jobs', schema=schema)
    op.create_index('ix_jobs_schedule_history', 'jobs', ['schedule_id', 'inserted_at'], unique=False, schema=schema,
                    postgresql_where=sa.text('schedule_id IS NOT NULL'))
    op.create_index('ix_jobs_schedule_unfinished', 'jobs', ['schedule_id'], unique=False, schema=schema,
                    postgresql_where=sa.text("schedule_id IS NOT NULL AND state IN ('available', 'running')"))


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_index('ix_jobs_schedule_history', table_name='jobs', schema=schema)
    op.drop_index('ix_jobs_schedule_unfinished', table_name='jobs', schema=schema)
    op.create_index('ix_jobs_schedule_history', 'jobs', ['schedule_id', 'inserted_at'], unique=False, schema=schema)
    op.create_index('ix_jobs_schedule_unfinished', 'jobs', ['schedule_id'], unique=False, schema=schema,
                    postgresql_where=sa.text("state IN ('available', 'running')"))
