"""Console sign-in attempts, so the failure limits hold across browser sessions and console processes.

One row per attempt: the user name typed (at most 64 characters), the client address, and the result
(`pending` while the password is checked, then `ok`, `failed`, or `blocked` for one refused by a limit
without a check). Rows older than a day are deleted as new ones arrive, so the table stays small.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        'signin_attempts',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('username', sa.Text(), nullable=False),
        sa.Column('client', sa.Text(), nullable=False),
        sa.Column('result', sa.Text(), nullable=False),
        sa.CheckConstraint("result IN ('pending', 'ok', 'failed', 'blocked')",
                           name=op.f('ck_signin_attempts_result')),
        sa.CheckConstraint("length(username) <= 64 AND length(client) <= 64",
                           name=op.f('ck_signin_attempts_sizes')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_signin_attempts')),
        schema=schema,
    )
    op.create_index('ix_signin_attempts_user', 'signin_attempts', ['username', 'at'], schema=schema)
    op.create_index('ix_signin_attempts_client', 'signin_attempts', ['client', 'at'], schema=schema)
    op.create_index('ix_signin_attempts_at', 'signin_attempts', ['at'], schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table('signin_attempts', schema=schema)
