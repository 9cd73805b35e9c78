"""`jobs.trace_context`: the W3C trace context (`traceparent`, `tracestate`) of the code that enqueued the job,
when it was traced (OpenTelemetry); the run's span links to it, across processes. NULL otherwise; nullable, no
default: adding it rewrites no partition.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.add_column('jobs', sa.Column('trace_context', postgresql.JSONB(), nullable=True), schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_column('jobs', 'trace_context', schema=schema)
