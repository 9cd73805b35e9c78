"""Console indexes: the Jobs page's filters (state, queue, task) and the audit log's name filter walk an index
in id order, so a filter that matches few rows, or none, reads a page of index entries instead of the
whole jobs table (see bench/console_queries.py: 'list_jobs(task=unknown)' and friends).

Each is an ordinary CREATE INDEX inside the migration's transaction: on a large jobs table it blocks writes
to the table while it builds (about a second per million rows). To avoid that, create them beforehand with
CREATE INDEX CONCURRENTLY under the same names; this migration then finds them (IF NOT EXISTS).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

INDEXES = [  # (name, table, columns) - mirrored in pgjobs/schema.py build_metadata
    ('ix_jobs_state_id', 'jobs', ['state', 'id']),
    ('ix_jobs_queue_id', 'jobs', ['queue', 'id']),
    ('ix_jobs_task_id', 'jobs', ['task', 'id']),
    ('ix_audit_entity_name_id', 'audit', ['entity_name', 'id']),
]


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False, schema=schema, if_not_exists=True)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table, schema=schema, if_exists=True)
