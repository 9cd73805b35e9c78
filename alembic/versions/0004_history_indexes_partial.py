"""History indexes only hold finished jobs: ix_jobs_state_finished, ix_jobs_state_id, ix_jobs_queue_id and
ix_jobs_task_id become partial (WHERE finished_at IS NOT NULL); the job list gets one id index per arm
(ix_jobs_finished_id, ix_jobs_available_id); a CHECK ties finished_at to the state.

Why: a job's claim and its completion change `state`, so neither is a HOT update, and each adds an entry to
every index whose predicate the new row matches. The four history indexes serve the console's filters and
the pruner, which read finished jobs only, yet every job paid an entry in each of them when it was enqueued,
when it was claimed and when it finished: 12 of the 23 index insertions of an ad-hoc job's life, and costly
ones (text keys). Now it pays 4, at completion, plus 2 bigint entries in the list indexes (one when it is
enqueued, one when it finishes): 17 in all.

The console's job list (queries.list_jobs) reads finished, available and running jobs in separate arms, each
newest first through an index that holds exactly its rows (running jobs: ix_jobs_running_worker), so no arm
walks another's rows (an empty queue beside a long history, or a long backlog beside the running jobs).
That is exact only if a job is finished precisely when finished_at is set: ck_jobs_finished makes the
database keep that. Rows that break it (pgjobs writes none) are repaired first, so the constraint cannot fail the deploy.

Like 0002 and 0003, plain CREATE INDEX inside the migration's transaction: it blocks writes to jobs while it
builds (about a second per million rows).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

HISTORY_INDEXES = [  # (name, columns) - mirrored in pgjobs/schema.py build_metadata
    ('ix_jobs_state_finished', ['state', 'finished_at']),
    ('ix_jobs_state_id', ['state', 'id']),
    ('ix_jobs_queue_id', ['queue', 'id']),
    ('ix_jobs_task_id', ['task', 'id']),
]
LIST_INDEXES = [  # (name, predicate): the job list's two arms, newest first
    ('ix_jobs_finished_id', 'finished_at IS NOT NULL'),
    ('ix_jobs_available_id', "state = 'available'"),
]
FINISHED_STATES = ('completed', 'failed', 'cancelled', 'skipped')
FINISHED = "state IN ('completed', 'failed', 'cancelled', 'skipped')"


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    jobs = sa.table('jobs', sa.column('state'), sa.column('finished_at'), sa.column('started_at'),
                    sa.column('inserted_at'), schema=schema)
    op.execute(jobs.update().where(jobs.c.state.in_(FINISHED_STATES), jobs.c.finished_at.is_(None))
               .values(finished_at=sa.func.coalesce(jobs.c.started_at, jobs.c.inserted_at)))
    op.execute(jobs.update().where(jobs.c.state.not_in(FINISHED_STATES), jobs.c.finished_at.is_not(None))
               .values(finished_at=None))
    op.create_check_constraint(op.f('ck_jobs_finished'), 'jobs', f"(finished_at IS NOT NULL) = ({FINISHED})",
                               schema=schema)
    for name, columns in HISTORY_INDEXES:
        op.drop_index(name, table_name='jobs', schema=schema)
        op.create_index(name, 'jobs', columns, unique=False, schema=schema,
                        postgresql_where=sa.text('finished_at IS NOT NULL'))
    for name, predicate in LIST_INDEXES:
        op.create_index(name, 'jobs', ['id'], unique=False, schema=schema, postgresql_where=sa.text(predicate))


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    for name, _ in reversed(LIST_INDEXES):
        op.drop_index(name, table_name='jobs', schema=schema)
    for name, columns in reversed(HISTORY_INDEXES):
        op.drop_index(name, table_name='jobs', schema=schema)
        op.create_index(name, 'jobs', columns, unique=False, schema=schema)
    op.drop_constraint(op.f('ck_jobs_finished'), 'jobs', type_='check', schema=schema)
