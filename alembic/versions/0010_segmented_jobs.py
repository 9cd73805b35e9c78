"""Segmented job storage: `jobs` becomes a table partitioned by `seg`, so that a held xmin horizon cannot slow
the hot path and its garbage is reclaimed by TRUNCATE instead of VACUUM.

Partitions of `jobs` (RANGE on `seg`, see pgjobs/storage.py):
- seg 1..99, `jobs_ring_<n>`: the ring of hot segments. New jobs go to the one `open` segment
  (`segments` says which; the column default `open_seg()` reads it). The leader rotates every few seconds:
  the open segment closes, its leftovers (jobs not finished after a grace period) move to `jobs_parked`, and
  the empty segment is TRUNCATEd and reused. Claims name the live segments, so they lock nothing else.
- seg 0, `jobs_parked`: unfinished jobs with a unique key (their partial unique index is global only inside one
  partition), jobs scheduled well ahead, and the leftovers of closed segments. Vacuumed as before; small.
- seg 100000 + day / 200000 + day, `jobs_done_<date>` / `jobs_failed_<date>`: finished jobs (completed and
  skipped / failed and cancelled), append-only, one partition per UTC day of finished_at; retention TRUNCATEs
  and then DROPs a whole partition.

The cron fence moves to an insert-only table, `job_slots` (PRIMARY KEY (schedule_id, slot)): a unique
constraint of a partitioned table must contain the partition key. The unique-key index becomes
(unique_key, seg) WHERE unfinished, and a CHECK keeps every unfinished keyed job in seg 0, so it stays global.

Locks, per million rows: the whole upgrade is one transaction holding ACCESS EXCLUSIVE on `jobs` (no job
is enqueued, claimed or finished, and no reader reads it, meanwhile) while it copies the rows into the
partitions and builds the indexes: about 40 s per million jobs (measured: 400,000 jobs, 300,000 of them
finished over 3 days, upgraded in 16.4 s on a shared 2-core machine). `schedules` is locked (SHARE ROW
EXCLUSIVE, by the foreign keys) for the same time: schedule edits wait. The downgrade is the same copy back
(not measured; expect the same order). Views of your own on pgjobs.jobs must be dropped first (the old table is dropped).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
# ruff: noqa: S608 - DDL text: the schema is quoted by the dialect (`_q`), in string literals too (`_lit`).
from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

RING = 16           # ring segments created by the migration (the leader adds more while some cannot be reclaimed)
DONE_BASE = 100000  # mirrored in pgjobs/storage.py
FAILED_BASE = 200000
UNFINISHED = "state IN ('available', 'running')"
INDEXES = [  # (name, columns, predicate, unique) - mirrored in pgjobs/schema.py build_metadata
    ('ix_jobs_claim', 'queue, priority, scheduled_at, id', "state = 'available'", False),
    ('ix_jobs_running_worker', 'worker_id', "state = 'running'", False),
    ('ix_jobs_unique_key', 'unique_key, seg', f"unique_key IS NOT NULL AND {UNFINISHED}", True),
    ('ix_jobs_schedule_unfinished', 'schedule_id', f"schedule_id IS NOT NULL AND {UNFINISHED}", False),
    ('ix_jobs_schedule_history', 'schedule_id, inserted_at', 'schedule_id IS NOT NULL', False),
    ('ix_jobs_inserted', 'inserted_at', None, False),
    ('ix_jobs_state_finished', 'state, finished_at', 'finished_at IS NOT NULL', False),
    ('ix_jobs_state_id', 'state, id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_queue_id', 'queue, id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_task_id', 'task, id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_finished_id', 'id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_available_id', 'id', "state = 'available'", False),
]
OLD_INDEXES = [  # 0004's set
    ('ix_jobs_claim', 'queue, priority, scheduled_at, id', "state = 'available'", False),
    ('ix_jobs_running_worker', 'worker_id', "state = 'running'", False),
    ('ix_jobs_unique_key', 'unique_key', f"unique_key IS NOT NULL AND {UNFINISHED}", True),
    ('ix_jobs_schedule_unfinished', 'schedule_id', f"schedule_id IS NOT NULL AND {UNFINISHED}", False),
    ('ix_jobs_schedule_history', 'schedule_id, inserted_at', 'schedule_id IS NOT NULL', False),
    ('ix_jobs_inserted', 'inserted_at', None, False),
    ('ix_jobs_state_finished', 'state, finished_at', 'finished_at IS NOT NULL', False),
    ('ix_jobs_state_id', 'state, id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_queue_id', 'queue, id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_task_id', 'task, id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_finished_id', 'id', 'finished_at IS NOT NULL', False),
    ('ix_jobs_available_id', 'id', "state = 'available'", False),
]


def _q() -> tuple[str, str]:
    schema = op.get_context().version_table_schema
    assert schema is not None  # env.py always sets it: pgjobs' tables and history live in their own schema
    return schema, op.get_bind().dialect.identifier_preparer.quote_schema(schema)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _x(statement: str) -> None:
    op.execute(sa.text(statement))


def _indexes(q: str, indexes: list[tuple[str, str, str | None, bool]]) -> None:
    for name, columns, predicate, unique in indexes:
        where = f" WHERE {predicate}" if predicate else ""
        _x(f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {q}.jobs ({columns}){where}")


def _notify_trigger(q: str) -> None:
    _x(f"""CREATE TRIGGER jobs_inserted AFTER INSERT ON {q}.jobs
           FOR EACH STATEMENT EXECUTE FUNCTION {q}.notify_jobs_inserted()""")


def upgrade() -> None:
    schema, q = _q()
    _x(f"LOCK TABLE {q}.jobs IN ACCESS EXCLUSIVE MODE")
    # The ring's state: which segment takes new jobs (open), which comes next (announced to claimers ahead),
    # which are closed (still claimed from), being reclaimed, or free.
    _x(f"""CREATE TABLE {q}.segments (
            seg integer CONSTRAINT pk_segments PRIMARY KEY CONSTRAINT ck_segments_seg CHECK (seg BETWEEN 1 AND 99),
            state text NOT NULL
                CONSTRAINT ck_segments_state CHECK (state IN ('free', 'next', 'open', 'closed', 'reclaim')),
            since timestamptz NOT NULL DEFAULT now())""")
    _x(f"CREATE UNIQUE INDEX ix_segments_one_open ON {q}.segments (state) WHERE state IN ('open', 'next')")
    _x(f"""INSERT INTO {q}.segments (seg, state)
           SELECT g, CASE g WHEN 1 THEN 'open' WHEN 2 THEN 'next' ELSE 'free' END FROM generate_series(1, {RING}) g""")
    _x(f"""CREATE FUNCTION {q}.open_seg() RETURNS integer LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT coalesce((SELECT seg FROM {q}.segments WHERE state = 'open'), 0) $$""")
    _x(f"""CREATE FUNCTION {q}.history_seg(state text, finished_at timestamptz) RETURNS integer
           LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN state IN ('completed', 'skipped') THEN {DONE_BASE} ELSE {FAILED_BASE} END
                   + floor(extract(epoch FROM finished_at) / 86400)::integer $$""")
    # The cron fence, insert-only.
    _x(f"""CREATE TABLE {q}.job_slots (
            schedule_id bigint NOT NULL
                CONSTRAINT fk_job_slots_schedule_id_schedules REFERENCES {q}.schedules (id) ON DELETE CASCADE,
            slot timestamptz NOT NULL,
            CONSTRAINT pk_job_slots PRIMARY KEY (schedule_id, slot))""")
    _x(f"""INSERT INTO {q}.job_slots (schedule_id, slot)
           SELECT schedule_id, slot FROM {q}.jobs WHERE schedule_id IS NOT NULL AND slot IS NOT NULL""")

    # The new table: every column of the old one (other migrations' too), plus seg.
    _x(f"""CREATE TABLE {q}.jobs_v5 (LIKE {q}.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                                      seg integer NOT NULL DEFAULT {q}.open_seg())
           PARTITION BY RANGE (seg)""")
    _x(f"CREATE SEQUENCE {q}.jobs_v5_id_seq AS bigint")
    _x(f"SELECT setval({_lit(q + '.jobs_v5_id_seq')}, coalesce((SELECT max(id) FROM {q}.jobs), 0) + 1, false)")
    _x(f"ALTER TABLE {q}.jobs_v5 ALTER COLUMN id SET DEFAULT nextval({_lit(q + '.jobs_v5_id_seq')})")
    _x(f"""ALTER TABLE {q}.jobs_v5 ADD CONSTRAINT ck_jobs_unique_parked
           CHECK (unique_key IS NULL OR seg = 0 OR NOT ({UNFINISHED}))""")
    _x(f"""CREATE TABLE {q}.jobs_parked PARTITION OF {q}.jobs_v5 FOR VALUES FROM (0) TO (1)
           WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000)""")
    for n in range(1, RING + 1):
        _x(f"CREATE TABLE {q}.jobs_ring_{n} PARTITION OF {q}.jobs_v5 FOR VALUES FROM ({n}) TO ({n + 1})")
    # History: one partition per class and UTC day, for every day that has finished jobs and the next week.
    _x(f"""DO $$
        DECLARE d integer; base integer; name text;
        BEGIN
            FOR d IN SELECT DISTINCT floor(extract(epoch FROM finished_at) / 86400)::integer FROM {q}.jobs
                     WHERE finished_at IS NOT NULL
                     UNION SELECT floor(extract(epoch FROM now()) / 86400)::integer + g FROM generate_series(-1, 7) g
            LOOP
                FOREACH base IN ARRAY ARRAY[{DONE_BASE}, {FAILED_BASE}] LOOP
                    name := CASE base WHEN {DONE_BASE} THEN 'jobs_done_' ELSE 'jobs_failed_' END
                            || to_char(to_timestamp(d::float8 * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD');
                    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.jobs_v5 FOR VALUES FROM (%s) TO (%s)',
                                   {_lit(schema)}, name, {_lit(schema)}, base + d, base + d + 1);
                END LOOP;
            END LOOP;
        END $$""")
    _x(f"""INSERT INTO {q}.jobs_v5
           SELECT j.*, CASE WHEN j.finished_at IS NOT NULL THEN {q}.history_seg(j.state, j.finished_at)
                            WHEN j.unique_key IS NOT NULL THEN 0 ELSE 1 END
           FROM {q}.jobs AS j""")
    _x(f"DROP TABLE {q}.jobs")
    _x(f"ALTER TABLE {q}.jobs_v5 RENAME TO jobs")
    _x(f"ALTER SEQUENCE {q}.jobs_v5_id_seq RENAME TO jobs_id_seq")
    _x(f"ALTER SEQUENCE {q}.jobs_id_seq OWNED BY {q}.jobs.id")
    _x(f"ALTER TABLE {q}.jobs ALTER COLUMN id SET DEFAULT nextval({_lit(q + '.jobs_id_seq')})")
    _x(f"ALTER TABLE {q}.jobs ADD CONSTRAINT pk_jobs PRIMARY KEY (id, seg)")
    _x(f"""ALTER TABLE {q}.jobs ADD CONSTRAINT fk_jobs_schedule_id_schedules FOREIGN KEY (schedule_id)
           REFERENCES {q}.schedules (id) ON DELETE SET NULL""")
    _indexes(q, INDEXES)
    _notify_trigger(q)
    _x(f"ANALYZE {q}.jobs")


def downgrade() -> None:
    schema, q = _q()
    _x(f"LOCK TABLE {q}.jobs IN ACCESS EXCLUSIVE MODE")
    _x(f"CREATE TABLE {q}.jobs_v4 (LIKE {q}.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    _x(f"ALTER TABLE {q}.jobs_v4 DROP CONSTRAINT ck_jobs_unique_parked")
    _x(f"ALTER TABLE {q}.jobs_v4 DROP COLUMN seg")
    _x(f"ALTER TABLE {q}.jobs_v4 ALTER COLUMN id DROP DEFAULT")
    columns = [r[0] for r in op.get_bind().execute(sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum"), {"t": f"{q}.jobs_v4"})]
    listed = ", ".join(f'"{c}"' for c in columns)
    _x(f"INSERT INTO {q}.jobs_v4 ({listed}) SELECT {listed} FROM {q}.jobs")
    _x(f"DROP TABLE {q}.jobs")
    _x(f"ALTER TABLE {q}.jobs_v4 RENAME TO jobs")
    _x(f"ALTER TABLE {q}.jobs ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    _x(f"SELECT setval(pg_get_serial_sequence({_lit(q + '.jobs')}, 'id'), coalesce((SELECT max(id) FROM {q}.jobs), 0) + 1, false)")
    _x(f"ALTER TABLE {q}.jobs ADD CONSTRAINT pk_jobs PRIMARY KEY (id)")
    _x(f"""ALTER TABLE {q}.jobs ADD CONSTRAINT fk_jobs_schedule_id_schedules FOREIGN KEY (schedule_id)
           REFERENCES {q}.schedules (id) ON DELETE SET NULL""")
    _x(f"ALTER TABLE {q}.jobs ADD CONSTRAINT uq_jobs_schedule_id_slot UNIQUE (schedule_id, slot)")
    _indexes(q, OLD_INDEXES)
    _notify_trigger(q)
    _x(f"DROP TABLE {q}.job_slots")
    _x(f"DROP FUNCTION {q}.history_seg(text, timestamptz)")
    _x(f"DROP FUNCTION {q}.open_seg()")
    _x(f"DROP TABLE {q}.segments")
