"""Initial schema: schedules, jobs, workers, audit, and the NOTIFY trigger that wakes idle workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    assert schema is not None  # env.py always sets it: pgjobs' tables and history live in their own schema
    op.create_table('audit',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('entity', sa.Text(), nullable=False),
    sa.Column('entity_name', sa.Text(), nullable=False),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit')),
    schema=schema
    )
    op.create_index('ix_audit_at', 'audit', ['at'], unique=False, schema=schema)
    op.create_table('schedules',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('task', sa.Text(), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('cron', sa.Text(), nullable=False),
    sa.Column('timezone', sa.Text(), server_default='UTC', nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('queue', sa.Text(), server_default='default', nullable=False),
    sa.Column('priority', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('max_attempts', sa.Integer(), server_default=sa.text('3'), nullable=False),
    sa.Column('timeout_seconds', sa.Double(), nullable=True),
    sa.Column('catchup', sa.Text(), server_default='latest', nullable=False),
    sa.Column('catchup_max', sa.Integer(), server_default=sa.text('100'), nullable=False),
    sa.Column('overlap', sa.Text(), server_default='skip', nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_slot_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("catchup IN ('latest', 'all', 'none')", name=op.f('ck_schedules_catchup')),
    sa.CheckConstraint("jsonb_typeof(args) = 'object'", name=op.f('ck_schedules_args_object')),
    sa.CheckConstraint("overlap IN ('skip', 'queue', 'allow')", name=op.f('ck_schedules_overlap')),
    sa.CheckConstraint('catchup_max >= 1', name=op.f('ck_schedules_catchup_max')),
    sa.CheckConstraint('max_attempts >= 1', name=op.f('ck_schedules_max_attempts')),
    sa.CheckConstraint('timeout_seconds IS NULL OR timeout_seconds > 0', name=op.f('ck_schedules_timeout')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules')),
    sa.UniqueConstraint('name', name=op.f('uq_schedules_name')),
    schema=schema
    )
    op.create_index('ix_schedules_due', 'schedules', ['next_run_at'], unique=False, schema=schema, postgresql_where=sa.text('enabled'))
    op.create_table('workers',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('queues', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('version', sa.Text(), server_default='', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('leader_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopping', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers')),
    schema=schema
    )
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('queue', sa.Text(), server_default='default', nullable=False),
    sa.Column('task', sa.Text(), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('state', sa.Text(), server_default='available', nullable=False),
    sa.Column('priority', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('max_attempts', sa.Integer(), server_default=sa.text('3'), nullable=False),
    sa.Column('timeout_seconds', sa.Double(), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('schedule_id', sa.BigInteger(), nullable=True),
    sa.Column('slot', sa.DateTime(timezone=True), nullable=True),
    sa.Column('unique_key', sa.Text(), nullable=True),
    sa.Column('inserted_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker_id', sa.BigInteger(), nullable=True),
    sa.Column('worker', sa.Text(), nullable=True),
    sa.Column('backend_pid', sa.Integer(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('errors', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.CheckConstraint("jsonb_typeof(args) = 'object'", name=op.f('ck_jobs_args_object')),
    sa.CheckConstraint("state <> 'running' OR started_at IS NOT NULL", name=op.f('ck_jobs_running_started')),
    sa.CheckConstraint("state IN ('available', 'running', 'completed', 'failed', 'cancelled', 'skipped')", name=op.f('ck_jobs_state')),
    sa.CheckConstraint('attempt >= 0 AND max_attempts >= 1', name=op.f('ck_jobs_attempts')),
    sa.ForeignKeyConstraint(['schedule_id'], [f'{schema}.schedules.id'], name=op.f('fk_jobs_schedule_id_schedules'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('schedule_id', 'slot', name=op.f('uq_jobs_schedule_id_slot')),
    schema=schema
    )
    op.create_index('ix_jobs_claim', 'jobs', ['queue', 'priority', 'scheduled_at', 'id'], unique=False, schema=schema, postgresql_where=sa.text("state = 'available'"))
    op.create_index('ix_jobs_inserted', 'jobs', ['inserted_at'], unique=False, schema=schema)
    op.create_index('ix_jobs_running_worker', 'jobs', ['worker_id'], unique=False, schema=schema, postgresql_where=sa.text("state = 'running'"))
    op.create_index('ix_jobs_schedule_history', 'jobs', ['schedule_id', 'inserted_at'], unique=False, schema=schema)
    op.create_index('ix_jobs_schedule_unfinished', 'jobs', ['schedule_id'], unique=False, schema=schema, postgresql_where=sa.text("state IN ('available', 'running')"))
    op.create_index('ix_jobs_state_finished', 'jobs', ['state', 'finished_at'], unique=False, schema=schema)
    op.create_index('ix_jobs_unique_key', 'jobs', ['unique_key'], unique=True, schema=schema, postgresql_where=sa.text("unique_key IS NOT NULL AND state IN ('available', 'running')"))
    _create_notify_trigger(schema)


def _quoted(schema: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote_schema(schema)


def _create_notify_trigger(schema: str) -> None:
    """One NOTIFY per inserting statement wakes idle workers, whoever inserts (pgjobs, SQL, a host app)."""
    q = _quoted(schema)
    channel = f"{schema}_jobs"
    op.execute(sa.text(f"""
        CREATE FUNCTION {q}.notify_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{channel}', '');
            RETURN NULL;
        END $$"""))
    op.execute(sa.text(f"""
        CREATE TRIGGER jobs_inserted AFTER INSERT ON {q}.jobs
        FOR EACH STATEMENT EXECUTE FUNCTION {q}.notify_jobs_inserted()"""))


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    assert schema is not None  # env.py always sets it
    op.drop_index('ix_jobs_unique_key', table_name='jobs', schema=schema, postgresql_where=sa.text("unique_key IS NOT NULL AND state IN ('available', 'running')"))
    op.drop_index('ix_jobs_state_finished', table_name='jobs', schema=schema)
    op.drop_index('ix_jobs_schedule_unfinished', table_name='jobs', schema=schema, postgresql_where=sa.text("state IN ('available', 'running')"))
    op.drop_index('ix_jobs_schedule_history', table_name='jobs', schema=schema)
    op.drop_index('ix_jobs_running_worker', table_name='jobs', schema=schema, postgresql_where=sa.text("state = 'running'"))
    op.drop_index('ix_jobs_inserted', table_name='jobs', schema=schema)
    op.drop_index('ix_jobs_claim', table_name='jobs', schema=schema, postgresql_where=sa.text("state = 'available'"))
    op.execute(sa.text(f"DROP TRIGGER IF EXISTS jobs_inserted ON {_quoted(schema)}.jobs"))
    op.execute(sa.text(f"DROP FUNCTION IF EXISTS {_quoted(schema)}.notify_jobs_inserted()"))
    op.drop_table('jobs', schema=schema)
    op.drop_table('workers', schema=schema)
    op.drop_index('ix_schedules_due', table_name='schedules', schema=schema, postgresql_where=sa.text('enabled'))
    op.drop_table('schedules', schema=schema)
    op.drop_index('ix_audit_at', table_name='audit', schema=schema)
    op.drop_table('audit', schema=schema)
