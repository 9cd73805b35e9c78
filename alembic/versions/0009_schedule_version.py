"""`schedules.version`: bumped by every change made through the admin API, so an edit made from a form that
was opened on an older version is refused instead of overwriting the change made since.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.add_column('schedules', sa.Column('version', sa.BigInteger(), server_default=sa.text('1'), nullable=False),
                  schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_column('schedules', 'version', schema=schema)
