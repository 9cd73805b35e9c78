"""`jobs.overlap_allow`: a job's own answer to "may it run beside other runs of its schedule?", for a backfill
given `--overlap`: true (allow) lets its runs go at once even on a one-at-a-time schedule, false makes them
wait their turn even on an `allow` schedule; NULL (every other job) follows the schedule's policy. Nullable,
no default: adding it rewrites no partition.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.add_column('jobs', sa.Column('overlap_allow', sa.Boolean(), nullable=True), schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_column('jobs', 'overlap_allow', schema=schema)
