"""Six overlap policies (Temporal's): skip, buffer_one, buffer_all, cancel_previous, terminate_previous, allow.

The old `queue` becomes `buffer_all` (the input `queue` stays accepted as its alias). Stored rows are
converted before the CHECK constraint is replaced, so the new constraint cannot fail the deploy.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

NEW = "overlap IN ('skip', 'buffer_one', 'buffer_all', 'cancel_previous', 'terminate_previous', 'allow')"
OLD = "overlap IN ('skip', 'queue', 'allow')"


def _set(schema: str | None, old: str, new: str) -> None:
    schedules = sa.table('schedules', sa.column('overlap'), schema=schema)
    op.execute(schedules.update().where(schedules.c.overlap == old).values(overlap=new))


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_constraint(op.f('ck_schedules_overlap'), 'schedules', type_='check', schema=schema)
    _set(schema, 'queue', 'buffer_all')
    op.create_check_constraint(op.f('ck_schedules_overlap'), 'schedules', NEW, schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_constraint(op.f('ck_schedules_overlap'), 'schedules', type_='check', schema=schema)
    for new in ('buffer_one', 'buffer_all', 'cancel_previous', 'terminate_previous'):
        _set(schema, new, 'queue')  # the closest old policy: one run at a time
    op.create_check_constraint(op.f('ck_schedules_overlap'), 'schedules', OLD, schema=schema)
