"""The tables, as SQLAlchemy metadata: the single source of truth that the Alembic migrations match.

`alembic check` compares this metadata with the migrated database and must report nothing, so every change
here comes with a migration under `alembic/versions/`.

Invariants the database enforces (Python checks first, the schema is the last guard):
- a cron slot becomes at most one job: PRIMARY KEY (schedule_id, slot) of the insert-only job_slots;
- an unfinished job's unique key is held by one job at a time: partial unique index on (unique_key, seg), and
  every unfinished keyed job is in seg 0 (CHECK);
- states, policies and counts are CHECKed, and finished_at is set exactly on finished jobs;
- jobs keep their history when a schedule is removed (SET NULL).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from pgjobs.states import CATCHUP_POLICIES, FINISHED_STATES, JOB_STATES, OVERLAP_POLICIES, SLOT_OUTCOMES

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def build_metadata(schema: str = "pgjobs") -> MetaData:
    """pgjobs' tables in `schema`."""
    md = MetaData(schema=schema, naming_convention=NAMING)
    now = text("now()")
    finished = text("finished_at IS NOT NULL")

    Table(
        "schedules", md,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("name", Text, nullable=False),
        Column("task", Text, nullable=False),
        Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("cron", Text, nullable=False),
        Column("timezone", Text, nullable=False, server_default="UTC"),
        Column("enabled", Boolean, nullable=False, server_default=text("true")),
        Column("queue", Text, nullable=False, server_default="default"),
        Column("priority", SmallInteger, nullable=False, server_default=text("0")),
        Column("max_attempts", Integer, nullable=False, server_default=text("3")),
        Column("timeout_seconds", Double, nullable=True),
        Column("catchup", Text, nullable=False, server_default="latest"),
        Column("catchup_max", Integer, nullable=False, server_default=text("100")),
        Column("overlap", Text, nullable=False, server_default="skip"),
        # Migration 0007: slots older than the window are missed, not run; each slot's job is due at slot + an
        # offset in [0, jitter) derived from (schedule, slot); N consecutive failed slots pause the schedule.
        Column("catchup_window_seconds", Double, nullable=True),
        Column("jitter_seconds", Double, nullable=False, server_default=text("0")),
        Column("pause_after_failures", Integer, nullable=True),
        Column("description", Text, nullable=False, server_default=""),
        Column("next_run_at", DateTime(timezone=True), nullable=True),
        Column("last_slot_at", DateTime(timezone=True), nullable=True),
        # Set when the schedule is paused, cleared by the first scheduling pass after it is resumed: the slots
        # that pass drops are recorded in the ledger as `paused`, not `missed` (migration 0006).
        Column("paused_since", DateTime(timezone=True), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=now),
        # Bumped by every change through the admin API (migration 0008): an edit based on an older version is
        # refused (`Admin.edit_schedule(expected_version=...)`), so a form never overwrites a newer change.
        Column("version", BigInteger, nullable=False, server_default=text("1")),
        UniqueConstraint("name"),
        CheckConstraint(_in("catchup", CATCHUP_POLICIES), name="catchup"),
        CheckConstraint(_in("overlap", OVERLAP_POLICIES), name="overlap"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint("catchup_max >= 1", name="catchup_max"),
        CheckConstraint("timeout_seconds IS NULL OR timeout_seconds > 0", name="timeout"),
        CheckConstraint("jsonb_typeof(args) = 'object'", name="args_object"),
        CheckConstraint("catchup_window_seconds IS NULL OR catchup_window_seconds > 0", name="catchup_window"),
        CheckConstraint("jitter_seconds >= 0", name="jitter"),
        CheckConstraint("pause_after_failures IS NULL OR pause_after_failures >= 1", name="pause_after_failures"),
        Index("ix_schedules_due", "next_run_at", postgresql_where=text("enabled")),
    )

    Table(
        "workers", md,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("name", Text, nullable=False),
        Column("host", Text, nullable=False),
        Column("pid", Integer, nullable=False),
        Column("queues", ARRAY(Text), nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("version", Text, nullable=False, server_default=""),
        Column("started_at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("leader_since", DateTime(timezone=True), nullable=True),
        Column("stopping", Boolean, nullable=False, server_default=text("false")),
    )

    Table(
        "jobs", md,
        # A plain sequence default, not an identity: the table is partitioned (migration 0010).
        Column("id", BigInteger, primary_key=True, server_default=text(f"nextval('{schema}.jobs_id_seq')")),
        Column("queue", Text, nullable=False, server_default="default"),
        Column("task", Text, nullable=False),
        Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("state", Text, nullable=False, server_default="available"),
        Column("priority", SmallInteger, nullable=False, server_default=text("0")),
        Column("attempt", Integer, nullable=False, server_default=text("0")),
        Column("max_attempts", Integer, nullable=False, server_default=text("3")),
        Column("timeout_seconds", Double, nullable=True),
        Column("scheduled_at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("schedule_id", BigInteger, ForeignKey("schedules.id", ondelete="SET NULL"), nullable=True),
        Column("slot", DateTime(timezone=True), nullable=True),
        Column("unique_key", Text, nullable=True),
        Column("inserted_at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("started_at", DateTime(timezone=True), nullable=True),
        # When the first attempt started (migration 0006): a slot's lateness is this minus the slot; retry
        # delays are not lateness.
        Column("first_started_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        Column("worker_id", BigInteger, nullable=True),
        Column("worker", Text, nullable=True),
        Column("backend_pid", Integer, nullable=True),
        Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
        Column("last_error", Text, nullable=True),
        Column("errors", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
        Column("result", JSONB, nullable=True),
        # A backfill's `--overlap` for its jobs (migration 0011): true runs them beside the schedule's other
        # runs, false one at a time; NULL follows the schedule's policy.
        Column("overlap_allow", Boolean, nullable=True),
        # The enqueuer's W3C trace context (migration 0012), when it was traced: the run's span links to it.
        Column("trace_context", JSONB, nullable=True),
        # The partition: 0 parked, 1..99 the ring of hot segments, 100000/200000 + day finished jobs
        # (pgjobs/storage.py). Part of the primary key, as a partitioned table requires.
        Column("seg", Integer, primary_key=True, server_default=text(f"{schema}.open_seg()")),
        CheckConstraint(_in("state", JOB_STATES), name="state"),
        CheckConstraint("attempt >= 0 AND max_attempts >= 1", name="attempts"),
        CheckConstraint("jsonb_typeof(args) = 'object'", name="args_object"),
        CheckConstraint("state <> 'running' OR started_at IS NOT NULL", name="running_started"),
        # A job is finished exactly when finished_at is set (migration 0004): the history indexes below hold
        # finished jobs only, and the console's job list reads finished and unfinished jobs in separate arms.
        CheckConstraint(f"(finished_at IS NOT NULL) = ({_in('state', FINISHED_STATES)})", name="finished"),
        # An unfinished job with a unique key lives in the parked partition, so its key is unique globally.
        CheckConstraint("unique_key IS NULL OR seg = 0 OR NOT (state IN ('available', 'running'))",
                        name="unique_parked"),
        # Claim order: the worker's claim query walks this index and nothing else.
        Index("ix_jobs_claim", "queue", "priority", "scheduled_at", "id",
              postgresql_where=text("state = 'available'")),
        Index("ix_jobs_running_worker", "worker_id", postgresql_where=text("state = 'running'")),
        Index("ix_jobs_unique_key", "unique_key", "seg", unique=True,
              postgresql_where=text("unique_key IS NOT NULL AND state IN ('available', 'running')")),
        # Schedule jobs only (migration 0003): ad-hoc jobs never cost an entry here on insert, claim or completion.
        Index("ix_jobs_schedule_unfinished", "schedule_id",
              postgresql_where=text("schedule_id IS NOT NULL AND state IN ('available', 'running')")),
        Index("ix_jobs_schedule_history", "schedule_id", "inserted_at", postgresql_where=text("schedule_id IS NOT NULL")),
        Index("ix_jobs_inserted", "inserted_at"),
        # History: the pruner and the console's Jobs filters, newest first (0002). Finished jobs only (0004): a
        # job pays one entry in each when it finishes, none when it is enqueued or claimed. The job list reads
        # finished, available and running jobs newest first through ix_jobs_finished_id, ix_jobs_available_id
        # and ix_jobs_running_worker (queries.list_jobs).
        Index("ix_jobs_state_finished", "state", "finished_at", postgresql_where=finished),
        Index("ix_jobs_state_id", "state", "id", postgresql_where=finished),
        Index("ix_jobs_queue_id", "queue", "id", postgresql_where=finished),
        Index("ix_jobs_task_id", "task", "id", postgresql_where=finished),
        Index("ix_jobs_finished_id", "id", postgresql_where=finished),
        Index("ix_jobs_available_id", "id", postgresql_where=text("state = 'available'")),
        postgresql_partition_by="RANGE (seg)",
    )

    # The cron fence (migration 0010): a slot becomes at most one job. Insert-only; pruned with the history.
    Table(
        "job_slots", md,
        Column("schedule_id", BigInteger, ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
        Column("slot", DateTime(timezone=True), primary_key=True),
    )

    # The ring of hot segments (pgjobs/storage.py): which one takes new jobs, which is announced next, which
    # are closed (still claimed from), being reclaimed, or free.
    Table(
        "segments", md,
        Column("seg", Integer, primary_key=True, autoincrement=False),
        Column("state", Text, nullable=False),
        Column("since", DateTime(timezone=True), nullable=False, server_default=now),
        CheckConstraint("seg BETWEEN 1 AND 99", name="seg"),
        CheckConstraint("state IN ('free', 'next', 'open', 'closed', 'reclaim')", name="state"),
        Index("ix_segments_one_open", "state", unique=True, postgresql_where=text("state IN ('open', 'next')")),
    )

    # The slot ledger (migration 0006): what happened to every slot of a schedule, kept apart from the jobs so
    # that pruning job history does not erase it. Compact and low-churn: one row inserted per slot (with its
    # job, in the scheduler's transaction), one outcome write when the job has finished (`settle_slots`, by
    # the leader, in batches), and a run of missed or paused slots is ONE row (slot = the first, last_slot,
    # slot_count). job_id is not a foreign key: the job may be pruned, the row stays.
    Table(
        "slots", md,
        Column("schedule_id", BigInteger, ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
        Column("slot", DateTime(timezone=True), primary_key=True),
        Column("last_slot", DateTime(timezone=True), nullable=True),
        Column("slot_count", Integer, nullable=True, server_default=text("1")),  # NULL: too many to count
        Column("outcome", Text, nullable=True),
        Column("backfilled", Boolean, nullable=False, server_default=text("false")),
        Column("job_id", BigInteger, nullable=True),
        Column("started_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        Column("reason", Text, nullable=True),
        Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=now),
        CheckConstraint(f"outcome IS NULL OR {_in('outcome', SLOT_OUTCOMES)}", name="outcome"),
        CheckConstraint("(slot_count IS NULL OR slot_count >= 1) AND (last_slot IS NULL OR last_slot >= slot)",
                        name="range"),
        CheckConstraint("outcome IS NOT NULL OR job_id IS NOT NULL", name="pending_job"),
        # The slots whose outcome is still to be read from their job: few (the unfinished jobs).
        Index("ix_slots_pending", "job_id", postgresql_where=text("outcome IS NULL")),
        # The ranges (missed, paused: rare), for a backfill to find the ones it overlaps (migration 0007).
        Index("ix_slots_ranges", "schedule_id", "last_slot", postgresql_where=text("last_slot IS NOT NULL")),
    )

    Table(
        "audit", md,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("actor", Text, nullable=False),
        Column("action", Text, nullable=False),
        Column("entity", Text, nullable=False),
        Column("entity_name", Text, nullable=False),
        Column("before", JSONB, nullable=True),
        Column("after", JSONB, nullable=True),
        Index("ix_audit_at", "at"),
        Index("ix_audit_entity_name_id", "entity_name", "id"),  # the audit log's name filter (0002)
    )

    # Console sign-in attempts (migration 0007): the failure limits per user and per client address hold
    # across browser sessions and console processes. Rows older than a day are deleted as new ones arrive.
    Table(
        "signin_attempts", md,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("at", DateTime(timezone=True), nullable=False, server_default=now),
        Column("username", Text, nullable=False),
        Column("client", Text, nullable=False),
        Column("result", Text, nullable=False),
        CheckConstraint("result IN ('pending', 'ok', 'failed', 'blocked')", name="result"),
        CheckConstraint("length(username) <= 64 AND length(client) <= 64", name="sizes"),
        Index("ix_signin_attempts_user", "username", "at"),
        Index("ix_signin_attempts_client", "client", "at"),
        Index("ix_signin_attempts_at", "at"),
    )
    return md
