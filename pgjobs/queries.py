"""Every SQL statement pgjobs runs, in one place, each named after what it does.

Statements are templates over the pgjobs schema (`{s}`), rendered once per schema with
`psycopg.sql.Identifier`, so no other module holds SQL text or formats identifiers. Values always travel as
parameters. Durations are passed as seconds and multiplied by `interval '1 second'` (a parameter inside a
string literal would be a bug, see the anchors' oban-py lease story).
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from psycopg import sql

from pgjobs.states import FINISHED_STATES

# Leadership: session advisory lock (classid, objid). classid 0x706a ('pj'); objid derives from the schema,
# so two pgjobs installations in one database (different schemas) elect separate leaders.
LOCK_CLASS = 0x706A


def lock_key(schema: str) -> int:
    return zlib.crc32(schema.encode()) & 0x7FFFFFFF


# Liveness: every worker holds a session advisory lock (worker_lock_class(schema), worker id) on its lock
# connection while it lives. The class derives from the schema because worker ids of two installations in one
# database overlap; ids are taken modulo 2**31 (the key is an int4).
def worker_lock_class(schema: str) -> int:
    return zlib.crc32(f"pgjobs.workers:{schema}".encode()) & 0x7FFFFFFF


def worker_lock_key(worker_id: int) -> int:
    return worker_id % 2**31


# The worker locks of this installation held in this database, as worker-id keys. A CTE of the statements that
# decide liveness (`worker_sessions`, `rescue_orphans`), so both read pg_locks the same way.
_HELD_WORKER_LOCKS = """held AS MATERIALIZED (
            SELECT l.objid::bigint AS key FROM pg_locks AS l
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(wcls)s AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""


# The slot ledger as `schedule slots` shows it (list_slots_since, list_slots_latest).
_LEDGER_COLUMNS = """l.slot, l.last_slot, l.slot_count,
                   coalesce(l.outcome, CASE j.state WHEN 'running' THEN 'running' WHEN 'available' THEN 'waiting'
                                              ELSE j.state END) AS outcome,
                   l.backfilled, l.job_id, coalesce(l.started_at, j.first_started_at) AS started_at,
                   coalesce(l.finished_at, j.finished_at) AS finished_at,
                   extract(epoch FROM coalesce(l.started_at, j.first_started_at) - l.slot)::float8 AS lateness,
                   coalesce(l.reason, CASE WHEN j.state NOT IN ('completed', 'running', 'available')
                                           THEN left(j.last_error, 500) END) AS reason
            FROM {s}.slots AS l LEFT JOIN {s}.jobs AS j ON l.outcome IS NULL AND j.id = l.job_id"""

_JOB_COLUMNS = """id, queue, task, args, state, priority, attempt, max_attempts, timeout_seconds, scheduled_at,
    schedule_id, slot, unique_key, inserted_at, started_at, finished_at, worker_id, worker, last_error,
    cancel_requested"""

_SCHEDULE_COLUMNS = """id, name, task, args, cron, timezone, enabled, queue, priority, max_attempts,
    timeout_seconds, catchup, catchup_max, overlap, description, next_run_at, last_slot_at, created_at,
    updated_at, paused_since, catchup_window_seconds, jitter_seconds, pause_after_failures, version"""


def _claim_jobs(queue_match: str, *, async_commit: bool = False) -> str:
    """Claim up to %(limit)s due jobs in (priority, scheduled_at, id) order, skipping rows others hold.

    started_at is the clock when the row is claimed, not now(): the statement's start, which can precede its
    snapshot by a lock wait (a segment the leader is reclaiming). A job gated behind a schedule's running job
    would otherwise get a started_at earlier than the finish it waited for (two runs of a non-`allow`
    schedule overlapping on paper).

    Only the segments in %(segs)s are read (the live ones, `storage.SegmentCache`): the worker sends the claim
    unprepared, so the planner prunes the other partitions and never locks them, and the leader can TRUNCATE
    a drained segment while claims go on.

    With `async_commit` the claim's own transaction commits with synchronous_commit = off (set_config(...,
    true) lasts until the end of the statement's transaction): the worker does not wait for the WAL flush
    of a claim. A Postgres crash before the WAL writer flushes it (within 3 x wal_writer_delay) returns the
    job to the queue, so it may run again: the at-least-once outcome a worker crash has too. Enqueues,
    slot inserts and outcomes stay synchronous; `Settings.synchronous_claims` picks the durable variant.
    """
    commit_mode = """commit_mode AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),
        """ if async_commit else ""
    return """
        WITH """ + commit_mode + """next AS (
            SELECT id, seg, clock_timestamp() AS claimed_at FROM {s}.jobs AS j
            WHERE seg = ANY(%(segs)s) AND state = 'available' AND """ + queue_match + """ AND scheduled_at <= now()
              -- Every overlap but 'allow': a schedule runs one job at a time, oldest first. A buffered slot
              -- (or a catch-up backlog) waits here until the run before it has finished. A backfill's own
              -- --overlap (jobs.overlap_allow) overrides the schedule's for its jobs. Evaluated only
              -- for rows of a schedule (schedule_id IS NULL short-circuits), through pk_schedules and
              -- ix_jobs_schedule_unfinished.
              AND (schedule_id IS NULL OR NOT EXISTS (
                  SELECT 1 FROM {s}.schedules AS sc JOIN {s}.jobs AS o ON o.schedule_id = sc.id
                  WHERE sc.id = j.schedule_id AND NOT coalesce(j.overlap_allow, sc.overlap = 'allow')
                    AND o.id <> j.id AND o.seg = ANY(%(segs)s)
                    AND o.state IN ('available', 'running')
                    AND (o.state = 'running' OR (o.id < j.id AND o.scheduled_at <= now()))))
            ORDER BY priority, scheduled_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {s}.jobs AS j
        SET state = 'running', attempt = j.attempt + 1, started_at = next.claimed_at, finished_at = NULL,
            first_started_at = coalesce(j.first_started_at, next.claimed_at),
            worker_id = %(worker_id)s, worker = %(worker)s
        FROM next""" + (", commit_mode" if async_commit else "") + """
        WHERE j.seg = ANY(%(segs)s) AND j.id = next.id AND j.seg = next.seg
        RETURNING j.id, j.queue, j.task, j.args, j.attempt, j.max_attempts, j.timeout_seconds,
                  j.schedule_id, j.slot, j.scheduled_at, j.started_at, j.seg, j.trace_context"""


def _list_jobs_arm(rows: str, states: tuple[str, ...], *, read_all: bool = False) -> str:
    """One arm of `list_jobs`: the newest %(limit)s jobs among `rows` that pass the filters.

    `read_all`: read every row of the arm and sort them (a MATERIALIZED CTE keeps the planner from walking
    another index in id order instead), for an arm that is small by nature: running jobs.
    """
    array = "ARRAY[" + ", ".join(f"'{state}'" for state in states) + "]"
    select = """SELECT j.id, j.queue, j.task, j.args, j.state, j.priority, j.attempt, j.max_attempts,
                     j.scheduled_at, j.schedule_id, j.slot, j.unique_key, j.inserted_at, j.started_at,
                     j.finished_at, j.worker, j.last_error
              FROM {s}.jobs AS j
              WHERE """ + rows + """
                AND (%(states)s::text[] IS NULL OR %(states)s::text[] && """ + array + """)
                AND (%(states)s::text[] IS NULL OR j.state = ANY(%(states)s))
                AND (%(schedule_id)s::bigint IS NULL OR j.schedule_id = %(schedule_id)s)
                AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
                AND (%(task)s::text IS NULL OR j.task = %(task)s)
                AND (%(since)s::timestamptz IS NULL OR j.inserted_at >= %(since)s)
                AND (%(until)s::timestamptz IS NULL OR j.inserted_at < %(until)s)
                AND (%(before_id)s::bigint IS NULL OR j.id < %(before_id)s)"""
    if read_all:
        return "(WITH arm AS MATERIALIZED (" + select + ") SELECT * FROM arm ORDER BY id DESC LIMIT %(limit)s)"
    return "(" + select + " ORDER BY j.id DESC LIMIT %(limit)s)"


# The console's schedule list order: by name, or by task, next run or last slot first (then name).
_CONSOLE_SCHEDULE_ORDER = """CASE WHEN %(sort)s = 'task' THEN task END,
            CASE WHEN %(sort)s = 'next_run' THEN next_run_at END NULLS LAST,
            CASE WHEN %(sort)s = 'last_slot' THEN last_slot_at END DESC NULLS LAST,
            name"""

TEMPLATES: dict[str, str] = {
    # ---------------------------------------------------------------- connection housekeeping
    "ping": "SELECT 1",
    "backend_pid": "SELECT pg_backend_pid()",
    "server_port": "SELECT inet_server_port()",
    "db_now": "SELECT clock_timestamp() AS now",
    # The server side of the lock connection's socket: a leader host that vanishes without closing it is
    # noticed by Postgres within about 5 + 2 * 3 seconds, and its lock released.
    "set_server_keepalives": """
        SELECT set_config('tcp_keepalives_idle', '5', false), set_config('tcp_keepalives_interval', '2', false),
               set_config('tcp_keepalives_count', '3', false)""",
    # PostgreSQL 14+: while a statement runs, its backend checks every %(ms)s ms that the client is still
    # there and ends the session when it is not. A killed worker's REFRESH, pg_sleep or lock wait stops within
    # that time instead of running on (and holding its locks) until it would next write to the socket.
    "set_client_connection_check": "SELECT set_config('client_connection_check_interval', %(ms)s, false)",
    "set_statement_timeout": "SELECT set_config('statement_timeout', %(ms)s, false)",
    "reset_statement_timeout": "RESET statement_timeout",
    # ---------------------------------------------------------------- leadership (lock connection)
    "try_leader_lock": "SELECT pg_try_advisory_lock(%(cls)s, %(key)s)",
    # A follower waits for the lock without holding a snapshot for long: a plain `SELECT pg_advisory_lock()`
    # keeps its statement's snapshot while it blocks (hours, on a follower), which holds back the xmin horizon
    # of the whole database: vacuum keeps every dead row, and the claim scan walks every job claimed since
    # (the drain slows by about a third beside one such waiter). This DO block waits in
    # slices of `pgjobs.lock_slice` and COMMITs between them (a top-level DO may), so the snapshot it holds
    # is never older than one slice; a lock released mid-slice is still granted at once. The values travel
    # as session settings (a DO block takes no parameters): set them with `wait_leader_lock_settings` first.
    "wait_leader_lock_settings": """
        SELECT set_config('pgjobs.lock_class', %(cls)s::text, false),
               set_config('pgjobs.lock_key', %(key)s::text, false),
               set_config('pgjobs.lock_slice', %(slice_ms)s::text || 'ms', false)""",
    "wait_leader_lock": """
        DO $$
        DECLARE
            cls int := current_setting('pgjobs.lock_class')::int;
            key int := current_setting('pgjobs.lock_key')::int;
        BEGIN
            LOOP
                BEGIN
                    PERFORM set_config('lock_timeout', current_setting('pgjobs.lock_slice'), true);
                    PERFORM pg_advisory_lock(cls, key);
                    RETURN;
                EXCEPTION WHEN lock_not_available THEN
                    NULL;  -- the slice ended: commit (dropping the snapshot) and wait again
                END;
                COMMIT;
            END LOOP;
        END $$""",
    "release_leader_lock": "SELECT pg_advisory_unlock(%(cls)s, %(key)s)",
    "holds_leader_lock": """
        SELECT EXISTS (
            SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
              AND classid = %(cls)s AND objid = %(key)s AND objsubid = 2)""",
    # The session holding the leader lock, and the worker whose liveness lock the same session holds (NULL:
    # the holder is not a live pgjobs worker, e.g. a leftover pooler server connection or a manual session).
    "leader_backend": """
        SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.backend_start,
               (SELECT w.objid::bigint FROM pg_locks AS w
                WHERE w.pid = l.pid AND w.locktype = 'advisory' AND w.granted AND w.classid = %(wcls)s
                  AND w.objsubid = 2 LIMIT 1) AS worker_key
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(cls)s AND l.objid = %(key)s
          AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
    # ---------------------------------------------------------------- liveness (lock connection)
    "try_worker_lock": "SELECT pg_try_advisory_lock(%(wcls)s, %(wkey)s)",
    # Our own session from before a network cut can still hold our lock (the server has not noticed yet):
    # end it, so this session can take the lock back. Only this process uses its worker id.
    "end_stale_worker_session": """
        SELECT pg_terminate_backend(l.pid) FROM pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(wcls)s AND l.objid = %(wkey)s
          AND l.objsubid = 2 AND l.pid <> pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
    # ---------------------------------------------------------------- workers
    "register_worker": """
        INSERT INTO {s}.workers (name, host, pid, queues, concurrency, version)
        VALUES (%(name)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(version)s)
        RETURNING id""",
    # A worker whose row was removed while its session was gone (its jobs rescued) joins again under the same
    # id, so its lock key and its running jobs' worker_id stay its own.
    "rejoin_worker": """
        INSERT INTO {s}.workers (id, name, host, pid, queues, concurrency, version)
        VALUES (%(id)s, %(name)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(version)s)
        ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopping = false
        RETURNING (xmax = 0) AS inserted""",
    "heartbeat_worker": """
        UPDATE {s}.workers
        SET heartbeat_at = now(),
            leader_since = CASE WHEN %(leader)s THEN coalesce(leader_since, now()) END,
            stopping = %(stopping)s
        WHERE id = %(id)s
        RETURNING id""",
    "claim_leadership_row": """
        UPDATE {s}.workers SET leader_since = CASE WHEN id = %(id)s THEN now() END
        WHERE id = %(id)s OR leader_since IS NOT NULL""",
    # The jobs this worker runs that it must stop: an operator (or overlap cancel_previous) asked to cancel
    # them (`ours`: the worker stops them and records `cancelled`), or they were cancelled and taken from it
    # (overlap terminate_previous; not `ours`: their outcome would be refused, the worker abandons them).
    "cancel_requested_jobs": """
        SELECT id, state = 'running' AS ours FROM {s}.jobs
        WHERE id = ANY(%(ids)s) AND cancel_requested
          AND ((state = 'running' AND worker_id = %(worker_id)s) OR (state = 'cancelled' AND worker_id IS NULL))""",
    "unregister_worker": "DELETE FROM {s}.workers WHERE id = %(id)s",
    # ---------------------------------------------------------------- job claim / outcome (workers)
    # A worker of one queue (the usual case) claims with `queue = %(queue)s`, which walks ix_jobs_claim
    # (queue, priority, scheduled_at, id) in claim order and stops after %(limit)s rows. `queue = ANY(...)`
    # cannot use that index for the ORDER BY, so with a backlog it reads and sorts every available job on each
    # claim (milliseconds per claim with a large backlog). Several queues still take that path:
    # `claim_jobs_any_queue`.
    "claim_jobs": _claim_jobs("queue = %(queue)s"),
    "claim_jobs_any_queue": _claim_jobs("queue = ANY(%(queues)s)"),
    # The same claims without waiting for their WAL flush (the default; see _claim_jobs).
    "claim_jobs_async_commit": _claim_jobs("queue = %(queue)s", async_commit=True),
    "claim_jobs_any_queue_async_commit": _claim_jobs("queue = ANY(%(queues)s)", async_commit=True),
    # Only the worker that holds the attempt may record its outcome: a job rescued and re-claimed elsewhere
    # is not overwritten by a late completion.
    # The batch drives the update, one primary-key probe per job, whatever the statistics say. They usually
    # say almost no job is running (taken while none were), and with the ownership test on the jobs scan
    # (state = 'running' AND worker_id = ...) the planner put the jobs table outside a nested loop and
    # rescanned the batch for each running job: 5,000 running x 1,600 completed = 8 million comparisons,
    # 3.6 s (a drain stalled for over a second). So the test compares with columns of the batch (a subquery
    # kept whole by OFFSET 0), using IS NOT DISTINCT FROM, which no index serves: the only condition on jobs
    # is the join on id. (No value here is NULL on a running job, so it is plain equality.)
    "complete_jobs": """
        UPDATE {s}.jobs AS j
        SET state = 'completed', started_at = j.started_at + d.waited * interval '1 second',
            first_started_at = CASE WHEN j.attempt = 1 THEN j.started_at + d.waited * interval '1 second'
                                    ELSE j.first_started_at END,
            finished_at = j.started_at + (d.waited + d.seconds) * interval '1 second',
            result = d.result, backend_pid = NULL,
            seg = {s}.history_seg('completed', j.started_at + (d.waited + d.seconds) * interval '1 second')
        FROM (SELECT d.*, 'running'::text AS state, %(worker_id)s::bigint AS worker_id
              FROM unnest(%(ids)b::bigint[], %(attempts)b::int[], %(segs)b::int[], %(waited)b::float8[],
                          %(seconds)b::float8[], %(results)b::jsonb[]) AS d(id, attempt, seg, waited, seconds, result)
              OFFSET 0) AS d
        WHERE j.seg = ANY(%(in_segs)s) AND j.id = d.id AND j.seg = d.seg AND (j.attempt, j.state, j.worker_id) IS NOT DISTINCT FROM (d.attempt, d.state, d.worker_id)
        RETURNING j.id""",
    # A failed attempt is retried while attempts remain, unless an operator asked to cancel it.
    "fail_job": """
        WITH d AS (
            SELECT id, CASE WHEN cancel_requested THEN 'cancelled'
                            WHEN %(retry)s AND attempt < max_attempts THEN 'available'
                            ELSE %(final_state)s END AS next_state
            FROM {s}.jobs
            WHERE seg = ANY(%(segs)s) AND id = %(id)s AND attempt = %(attempt)s AND state = 'running'
              AND worker_id = %(worker_id)s
            FOR UPDATE
        )
        UPDATE {s}.jobs AS j
        SET state = d.next_state,
            scheduled_at = CASE WHEN d.next_state = 'available'
                                THEN now() + %(delay)s * interval '1 second' ELSE j.scheduled_at END,
            started_at = j.started_at + %(waited)s * interval '1 second',
            first_started_at = CASE WHEN j.attempt = 1 THEN j.started_at + %(waited)s * interval '1 second'
                                    ELSE j.first_started_at END,
            finished_at = CASE WHEN d.next_state = 'available'
                               THEN NULL ELSE j.started_at + (%(waited)s + %(seconds)s) * interval '1 second' END,
            worker_id = CASE WHEN d.next_state = 'available' THEN NULL ELSE j.worker_id END,
            last_error = %(error)s,
            backend_pid = NULL,
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'error', %(error)s::text, 'traceback', %(traceback)s::text,
                'worker', j.worker)),
            seg = CASE WHEN d.next_state = 'available' THEN j.seg
                       ELSE {s}.history_seg(d.next_state,
                                            j.started_at + (%(waited)s + %(seconds)s) * interval '1 second') END
        FROM d WHERE j.seg = ANY(%(segs)s) AND j.id = d.id
        RETURNING j.state, j.scheduled_at""",
    # On-time future jobs: seconds (database clock) until the earliest future job of these queues is due; the
    # worker's due timer sleeps that long, then wakes a runner. Read from ix_jobs_claim.
    # The due timer's read: the earliest run time after its previous read (`since`, that read's clock), so a
    # job that fell due between a runner's empty claim and this read is seen (due_in <= 0) rather than skipped.
    "next_due_in": """
        SELECT extract(epoch FROM min(scheduled_at) - clock_timestamp())::float8, clock_timestamp() FROM {s}.jobs
        WHERE seg < 100 AND state = 'available' AND queue = ANY(%(queues)s)
          AND scheduled_at > coalesce(%(since)s::timestamptz, now())""",
    "notify_jobs": "SELECT pg_notify(%(channel)s, '')",
    "set_job_backend": """
        UPDATE {s}.jobs SET backend_pid = %(pid)s WHERE seg < 100 AND id = %(id)s AND state = 'running'""",
    # Wakes every worker when a finished run leaves another run of the same schedule waiting.
    "notify_waiting_schedule_runs": """
        SELECT pg_notify(%(channel)s, '') FROM (
            SELECT 1 FROM {s}.jobs WHERE seg < 100 AND schedule_id = ANY(%(ids)s) AND state = 'available'
            LIMIT 1) AS w""",
    # Jobs a runner claimed but did not start (it got stuck behind a slow job) go back, untouched.
    "release_jobs": """
        UPDATE {s}.jobs
        SET state = 'available', attempt = greatest(attempt - 1, 0), worker_id = NULL, started_at = NULL,
            backend_pid = NULL, first_started_at = CASE WHEN attempt <= 1 THEN NULL ELSE first_started_at END
        WHERE seg < 100 AND id = ANY(%(ids)s) AND state = 'running' AND worker_id = %(worker_id)s""",
    # On shutdown: jobs that did not finish within the grace period go back to the queue, attempt refunded.
    "requeue_worker_jobs": """
        UPDATE {s}.jobs
        SET state = 'available', attempt = greatest(attempt - 1, 0), worker_id = NULL, started_at = NULL,
            scheduled_at = now(), backend_pid = NULL,
            first_started_at = CASE WHEN attempt <= 1 THEN NULL ELSE first_started_at END,
            errors = errors || jsonb_build_array(jsonb_build_object(
                'attempt', attempt, 'at', now(), 'error', 'requeued: worker shut down', 'worker', worker))
        WHERE seg < 100 AND worker_id = %(worker_id)s AND state = 'running'
        RETURNING id""",
    # ---------------------------------------------------------------- scheduler (leader only)
    "due_schedules": """
        SELECT id, name, cron, timezone, catchup, catchup_max, overlap, next_run_at, paused_since,
               catchup_window_seconds, jitter_seconds, clock_timestamp() AS now
        FROM {s}.schedules
        -- statement_timestamp(), not clock_timestamp(): a volatile function cannot be an index condition,
        -- and with it this read every schedule (Seq Scan) on each pass. The rows' `now` stays the clock.
        WHERE enabled AND (next_run_at <= statement_timestamp() OR next_run_at IS NULL)
        ORDER BY next_run_at NULLS FIRST
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED""",
    "unfinished_by_schedule": """
        SELECT schedule_id,
               count(*) FILTER (WHERE state = 'running') AS running,
               count(*) FILTER (WHERE state = 'available') AS waiting,
               min(id) AS oldest
        FROM {s}.jobs
        WHERE seg < 100 AND schedule_id = ANY(%(ids)s) AND state IN ('available', 'running')
        GROUP BY schedule_id""",
    # The primary key of job_slots (schedule_id, slot) is what makes a slot exactly-once, even for a stale
    # leader. The job's queue, task, args, ... are copied from its schedule row, which this transaction holds locked
    # (due_schedules), so only the planned (schedule, slot, state, note) travel from Python.
    # The fence is job_slots' primary key (insert-only; a unique constraint of the partitioned jobs cannot
    # hold it): the slot row, its job and its ledger row are written by one statement, so a slot already taken
    # (by this leader earlier, or by a stale one right now) inserts none of them. A skipped slot gets its
    # outcome in the ledger at once, a job to run none yet (settle_slots writes it when the job has finished).
    "insert_due_slots": """
        WITH d AS (
            SELECT * FROM unnest(%(schedule_id)b::bigint[], %(slot)b::timestamptz[], %(due)b::timestamptz[],
                                 %(state)b::text[], %(note)b::text[]) AS d(schedule_id, slot, due, state, note)
        ), fenced AS (
            INSERT INTO {s}.job_slots (schedule_id, slot)
            SELECT d.schedule_id, d.slot FROM d JOIN {s}.schedules AS sc ON sc.id = d.schedule_id
            ON CONFLICT (schedule_id, slot) DO NOTHING
            RETURNING schedule_id, slot
        ), ins AS (
            INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, timeout_seconds, schedule_id, slot,
                                  scheduled_at, state, finished_at, last_error, overlap_allow, seg)
            SELECT sc.queue, sc.task, sc.args, sc.priority, sc.max_attempts, sc.timeout_seconds, sc.id, d.slot,
                   d.due, d.state, CASE WHEN d.state = 'skipped' THEN now() END, d.note, %(overlap_allow)s::bool,
                   CASE WHEN d.state = 'skipped' THEN {s}.history_seg('skipped', now()) ELSE {s}.open_seg() END
            FROM fenced JOIN d ON d.schedule_id = fenced.schedule_id AND d.slot = fenced.slot
            JOIN {s}.schedules AS sc ON sc.id = d.schedule_id
            RETURNING id, schedule_id, slot, state, last_error, finished_at
        ), ledger AS (
            INSERT INTO {s}.slots (schedule_id, slot, job_id, outcome, reason, finished_at, backfilled)
            SELECT schedule_id, slot, id, CASE WHEN state = 'skipped' THEN 'skipped' END,
                   CASE WHEN state = 'skipped' THEN last_error END, finished_at, %(backfilled)s::bool
            FROM ins
            ON CONFLICT (schedule_id, slot) DO NOTHING
        )
        SELECT id, schedule_id, slot, state FROM ins""",
    # A run of slots that never became jobs (downtime, a pause, the catch-up policy): one ledger row.
    "insert_slot_ranges": """
        INSERT INTO {s}.slots (schedule_id, slot, last_slot, slot_count, outcome, reason)
        SELECT * FROM unnest(%(schedule_id)s::bigint[], %(first)s::timestamptz[], %(last)s::timestamptz[],
                             %(count)s::int[], %(outcome)s::text[], %(reason)s::text[])
        ON CONFLICT (schedule_id, slot) DO NOTHING""",
    # Overlap cancel_previous / terminate_previous: a new slot replaces its schedule's unfinished runs. A
    # waiting run is cancelled outright; a running one is asked to stop (cancel: the worker records it
    # `cancelled`) or is cancelled now and taken from its worker (terminate: worker_id cleared, so its late
    # outcome is refused). Returns the old state and backend pid, to signal the run's SQL after the commit.
    "replace_previous_runs": """
        WITH old AS (
            SELECT j.id, j.state, j.backend_pid, d.terminate
            FROM {s}.jobs AS j JOIN unnest(%(ids)s::bigint[], %(terminate)s::bool[]) AS d(schedule_id, terminate)
                 ON j.schedule_id = d.schedule_id
            WHERE j.seg < 100 AND j.state IN ('available', 'running') AND NOT (j.id = ANY(%(new)s::bigint[]))
            FOR UPDATE OF j
        )
        UPDATE {s}.jobs AS j
        SET state = CASE WHEN old.state = 'available' OR old.terminate THEN 'cancelled' ELSE j.state END,
            finished_at = CASE WHEN old.state = 'available' OR old.terminate THEN now() END,
            cancel_requested = true,
            worker_id = CASE WHEN old.terminate THEN NULL ELSE j.worker_id END,
            backend_pid = CASE WHEN old.terminate THEN NULL ELSE j.backend_pid END,
            last_error = CASE WHEN old.state = 'available' OR old.terminate
                              THEN 'cancelled: replaced by a newer slot (overlap '
                                   || CASE WHEN old.terminate THEN 'terminate_previous' ELSE 'cancel_previous' END
                                   || ')'
                              ELSE j.last_error END,
            seg = CASE WHEN old.state = 'available' OR old.terminate THEN {s}.history_seg('cancelled', now())
                       ELSE j.seg END
        FROM old WHERE j.seg < 100 AND j.id = old.id
        RETURNING j.id, old.state, old.backend_pid, old.terminate""",
    "advance_schedules": """
        UPDATE {s}.schedules AS sc
        SET next_run_at = d.next_run_at, last_slot_at = coalesce(d.last_slot_at, sc.last_slot_at),
            paused_since = CASE WHEN sc.enabled THEN NULL ELSE sc.paused_since END
        FROM unnest(%(ids)b::bigint[], %(next)b::timestamptz[], %(last)b::timestamptz[])
             AS d(id, next_run_at, last_slot_at)
        WHERE sc.id = d.id""",
    "next_wakeup": """
        SELECT (SELECT min(next_run_at) FROM {s}.schedules WHERE enabled) AS next_run_at,
               (SELECT bool_or(next_run_at IS NULL) FROM {s}.schedules WHERE enabled) AS unplanned,
               clock_timestamp() AS now""",
    # ---------------------------------------------------------------- maintenance (leader only)
    # Liveness: every worker id known here (rows, and the owners of running jobs), and whether its session
    # still holds its worker lock. Postgres releases the lock the moment the session ends, so a free lock is
    # the one exact sign of death; heartbeat_at is for display only.
    "worker_sessions": """
        WITH """ + _HELD_WORKER_LOCKS + """
        SELECT k.id, mod(k.id, 2147483648) IN (SELECT key FROM held) AS alive
        FROM (SELECT id FROM {s}.workers
              UNION SELECT worker_id FROM {s}.jobs
                    WHERE seg < 100 AND state = 'running' AND worker_id IS NOT NULL) AS k""",
    # Rescue: the running jobs of workers the leader has seen without a session for the grace period go back
    # to the queue, or fail when out of attempts (cancelled when an operator asked); their rows are removed.
    # The lock is read again here, so a worker that took its lock back just now keeps its jobs and its row.
    # A rescued job's worker_id is cleared, so the old attempt's outcome no longer matches (complete_jobs,
    # fail_job): the database refuses it.
    "rescue_orphans": """
        WITH """ + _HELD_WORKER_LOCKS + """, dead AS (
            DELETE FROM {s}.workers
            WHERE id = ANY(%(ids)s) AND mod(id, 2147483648) NOT IN (SELECT key FROM held)
            RETURNING id, name
        ), orphans AS (
            SELECT j.id, j.seg FROM {s}.jobs AS j
            WHERE j.seg < 100 AND j.state = 'running'
              AND (j.worker_id IS NULL
                   OR (j.worker_id = ANY(%(ids)s) AND mod(j.worker_id, 2147483648) NOT IN (SELECT key FROM held)))
            FOR UPDATE OF j SKIP LOCKED
        ), rescued AS (
            UPDATE {s}.jobs AS j
            SET state = CASE WHEN j.attempt < j.max_attempts AND NOT j.cancel_requested THEN 'available'
                             WHEN j.cancel_requested THEN 'cancelled' ELSE 'failed' END,
                scheduled_at = now(),
                finished_at = CASE WHEN j.attempt < j.max_attempts AND NOT j.cancel_requested
                                   THEN NULL ELSE now() END,
                last_error = 'rescued: the session of worker ' || coalesce(j.worker, '?') || ' ended',
                errors = j.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', j.attempt, 'at', now(), 'error',
                    'rescued: the session of worker ' || coalesce(j.worker, '?') || ' ended', 'worker', j.worker)),
                worker_id = NULL, backend_pid = NULL,
                seg = CASE WHEN j.attempt < j.max_attempts AND NOT j.cancel_requested THEN j.seg
                           ELSE {s}.history_seg(CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'failed' END,
                                                now()) END
            FROM orphans WHERE j.seg < 100 AND j.id = orphans.id AND j.seg = orphans.seg
            RETURNING j.id, j.state, j.task, j.worker
        )
        SELECT 'job' AS kind, id, state, task, worker FROM rescued
        UNION ALL
        SELECT 'worker', id, NULL, NULL, name FROM dead""",
    # The ledger's outcome write, once per slot: the slots whose job has finished (or is gone) take its outcome,
    # its first attempt's start and its error. Driven by ix_slots_pending (the few slots still pending) and
    # the jobs' primary key. The leader runs it every second and before pruning jobs.
    "settle_slots": """
        WITH done AS (
            SELECT l.schedule_id, l.slot, j.state, j.first_started_at, j.started_at, j.finished_at, j.last_error,
                   j.id IS NULL AS gone
            FROM {s}.slots AS l LEFT JOIN {s}.jobs AS j ON j.id = l.job_id
            WHERE l.outcome IS NULL AND (j.id IS NULL OR j.finished_at IS NOT NULL)
            LIMIT %(limit)s
            FOR UPDATE OF l SKIP LOCKED
        )
        UPDATE {s}.slots AS l
        SET outcome = CASE WHEN done.gone THEN 'cancelled' ELSE done.state END,
            started_at = coalesce(done.first_started_at, done.started_at),
            finished_at = coalesce(done.finished_at, now()),
            reason = CASE WHEN done.gone THEN 'its job was deleted before it finished'
                          WHEN done.state <> 'completed' THEN left(done.last_error, 500) END
        FROM done WHERE l.schedule_id = done.schedule_id AND l.slot = done.slot
        RETURNING l.schedule_id, l.slot, l.outcome, extract(epoch FROM l.started_at - l.slot)::float8 AS lateness,
                  (SELECT name FROM {s}.schedules WHERE id = l.schedule_id) AS name""",
    # Pause after failures: the enabled schedules among %(ids)s whose last pause_after_failures slots that ran
    # (completed, failed or cancelled; skipped and missed slots do not break a streak) all failed. Reads the
    # newest ledger rows of each through the primary key.
    "failing_schedules": """
        SELECT sc.id, sc.name, sc.pause_after_failures FROM {s}.schedules AS sc
        WHERE sc.id = ANY(%(ids)s) AND sc.enabled AND sc.pause_after_failures IS NOT NULL
          AND (SELECT count(*) FILTER (WHERE r.outcome = 'failed') FROM (
                   SELECT l.outcome FROM {s}.slots AS l
                   WHERE l.schedule_id = sc.id AND l.outcome IN ('completed', 'failed', 'cancelled')
                   ORDER BY l.slot DESC LIMIT sc.pause_after_failures) AS r) = sc.pause_after_failures""",
    "pending_slots_exist": "SELECT EXISTS (SELECT 1 FROM {s}.slots WHERE outcome IS NULL)",
    # Ledger retention: per schedule through the primary key, the oldest first, bounded per round.
    "prune_slots": """
        DELETE FROM {s}.slots AS l USING (
            SELECT x.schedule_id, x.slot FROM {s}.schedules AS sc
            CROSS JOIN LATERAL (
                SELECT schedule_id, slot FROM {s}.slots
                WHERE schedule_id = sc.id AND slot < now() - %(age)s * interval '1 second'
                  AND outcome IS NOT NULL
                ORDER BY slot LIMIT %(batch)s) AS x
            LIMIT %(batch)s) AS old
        WHERE l.schedule_id = old.schedule_id AND l.slot = old.slot""",
    "prune_jobs": """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs
            WHERE state = ANY(%(states)s) AND finished_at < now() - %(age)s * interval '1 second'
            LIMIT %(batch)s)""",
    # ---------------------------------------------------------------- storage: the ring of hot segments (storage.py)
    # What a claimer reads: the segments that may hold available jobs. `next` is announced before it opens, so a
    # worker's cached list already names it when new jobs start to land there.
    "live_segments": """
        SELECT coalesce(array_agg(seg ORDER BY seg), '{{}}') FROM {s}.segments
        WHERE state IN ('next', 'open', 'closed')""",
    "segments_for_update": """
        SELECT seg, state, extract(epoch FROM now() - since)::float8 AS age FROM {s}.segments
        ORDER BY seg FOR UPDATE""",
    "set_segment_state": "UPDATE {s}.segments SET state = %(state)s, since = now() WHERE seg = %(seg)s",
    "add_segment": "INSERT INTO {s}.segments (seg, state) VALUES (%(seg)s, 'free')",
    # Sent unprepared with the segment as a value, so only that partition is read and locked.
    "segment_has_rows": "SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE seg = %(seg)s)",
    # Whether a segment ever took a row since it was last truncated (its file is not empty): no scan.
    "segment_used": "SELECT pg_relation_size(to_regclass(%(name)s)) > 0",
    "segment_unfinished": """
        SELECT count(*) FROM (SELECT 1 FROM {s}.jobs WHERE seg = %(seg)s AND finished_at IS NULL LIMIT %(cap)s) AS u""",
    # A closed segment's leftovers leave it: unfinished jobs to the parked partition, finished ones to their
    # history partition (a day outside the partitions that exist goes to the nearest one).
    "evacuate_segment": """
        WITH m AS (SELECT id FROM {s}.jobs WHERE seg = %(seg)s LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
        UPDATE {s}.jobs AS j
        SET seg = CASE WHEN j.finished_at IS NULL THEN 0
                       WHEN j.state IN ('completed', 'skipped')
                       THEN 100000 + least(greatest(floor(extract(epoch FROM j.finished_at) / 86400)::integer,
                                                    %(done_lo)s), %(done_hi)s)
                       ELSE 200000 + least(greatest(floor(extract(epoch FROM j.finished_at) / 86400)::integer,
                                                    %(failed_lo)s), %(failed_hi)s) END
        FROM m WHERE j.seg = %(seg)s AND j.id = m.id""",
    # Live segments whose statistics lag their size (a segment fills within seconds; autovacuum's analyze comes
    # a minute later, and with "empty" statistics the planner sorts a claim's candidates instead of merging the
    # segments' claim indexes in order, reading a whole backlog per claim).
    "segments_to_analyze": """
        SELECT c.relname FROM pg_class AS c
        WHERE c.relnamespace = to_regnamespace(%(schema)s) AND c.relname = ANY(%(names)s)
          AND pg_relation_size(c.oid) > 2 * greatest(c.relpages, 0)::bigint * current_setting('block_size')::bigint
                                        + 65536""",
    "history_partitions": """
        SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%(table)s) ORDER BY c.relname""",
    "db_day": "SELECT floor(extract(epoch FROM now()) / 86400)::integer",
    "prune_job_slots": """
        DELETE FROM {s}.job_slots WHERE (schedule_id, slot) IN (
            SELECT schedule_id, slot FROM {s}.job_slots WHERE slot < now() - %(age)s * interval '1 second'
            LIMIT %(batch)s)""",
    # ---------------------------------------------------------------- enqueue
    # A job with a unique key, or due only later, is parked (seg 0: see storage.py); the others go to the
    # ring's open segment.
    "enqueue_job": """
        INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, timeout_seconds, scheduled_at,
                              unique_key, schedule_id, trace_context, seg)
        VALUES (%(queue)s, %(task)s, %(args)s, %(priority)s, %(max_attempts)s, %(timeout)s,
                coalesce(%(scheduled_at)s, now()), %(unique_key)s, %(schedule_id)s, %(trace)s,
                CASE WHEN %(unique_key)s::text IS NOT NULL
                       OR %(scheduled_at)s::timestamptz > now() + 60 * interval '1 second'
                     THEN 0 ELSE {s}.open_seg() END)
        ON CONFLICT (unique_key, seg) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
        DO NOTHING
        RETURNING id""",
    "find_unique_job": """
        SELECT id FROM {s}.jobs
        WHERE seg = 0 AND unique_key = %(unique_key)s AND state IN ('available', 'running')""",
    "copy_jobs": """
        COPY {s}.jobs (queue, task, args, priority, max_attempts, scheduled_at, timeout_seconds, trace_context)
        FROM STDIN""",
    # ---------------------------------------------------------------- admin: schedules
    "insert_schedule": """
        INSERT INTO {s}.schedules (name, task, args, cron, timezone, enabled, queue, priority, max_attempts,
                                   timeout_seconds, catchup, catchup_max, overlap, description, next_run_at,
                                   catchup_window_seconds, jitter_seconds, pause_after_failures, paused_since)
        VALUES (%(name)s, %(task)s, %(args)s, %(cron)s, %(timezone)s, %(enabled)s, %(queue)s, %(priority)s,
                %(max_attempts)s, %(timeout_seconds)s, %(catchup)s, %(catchup_max)s, %(overlap)s,
                %(description)s, %(next_run_at)s, %(catchup_window_seconds)s, %(jitter_seconds)s,
                %(pause_after_failures)s, CASE WHEN %(enabled)s THEN NULL ELSE now() END)
        RETURNING """ + _SCHEDULE_COLUMNS,
    "update_schedule": """
        UPDATE {s}.schedules
        SET task = %(task)s, args = %(args)s, cron = %(cron)s, timezone = %(timezone)s, enabled = %(enabled)s,
            queue = %(queue)s, priority = %(priority)s, max_attempts = %(max_attempts)s,
            timeout_seconds = %(timeout_seconds)s, catchup = %(catchup)s, catchup_max = %(catchup_max)s,
            overlap = %(overlap)s, description = %(description)s, next_run_at = %(next_run_at)s,
            catchup_window_seconds = %(catchup_window_seconds)s, jitter_seconds = %(jitter_seconds)s,
            pause_after_failures = %(pause_after_failures)s,
            paused_since = CASE WHEN NOT %(enabled)s THEN coalesce(paused_since, now()) ELSE paused_since END,
            updated_at = now(), version = version + 1
        WHERE id = %(id)s
        RETURNING """ + _SCHEDULE_COLUMNS,
    # Who made a schedule's newest change, and when (the edit conflict message).
    "last_schedule_change": """
        SELECT actor, at FROM {s}.audit WHERE entity_name = %(name)s AND entity = 'schedule'
        ORDER BY id DESC LIMIT 1""",
    # Every timezone the server knows (the console's list; names without a '/' like CET or Japan too).
    "list_timezones": "SELECT name FROM pg_timezone_names ORDER BY name",
    "delete_schedule": "DELETE FROM {s}.schedules WHERE id = %(id)s",
    "get_schedule_for_update": "SELECT " + _SCHEDULE_COLUMNS + " FROM {s}.schedules WHERE name = %(name)s FOR UPDATE",
    "get_schedule": "SELECT " + _SCHEDULE_COLUMNS + " FROM {s}.schedules WHERE name = %(name)s",
    # A traced worker names a cron-born run's schedule in its span (cached per schedule id).
    "schedule_name": "SELECT name FROM {s}.schedules WHERE id = %(id)s",
    "list_schedules": """
        SELECT sc.id, sc.name, sc.task, sc.args, sc.cron, sc.timezone, sc.enabled, sc.queue, sc.priority,
               sc.max_attempts, sc.timeout_seconds, sc.catchup, sc.catchup_max, sc.overlap, sc.description,
               sc.next_run_at, sc.last_slot_at, sc.created_at, sc.updated_at, sc.catchup_window_seconds,
               sc.jitter_seconds, sc.pause_after_failures,
               last.id AS last_job_id, last.state AS last_state, last.inserted_at AS last_run_at,
               last.finished_at AS last_finished_at
        FROM {s}.schedules AS sc
        LEFT JOIN LATERAL (
            SELECT j.id, j.state, j.inserted_at, j.finished_at FROM {s}.jobs AS j
            WHERE j.schedule_id = sc.id ORDER BY j.inserted_at DESC LIMIT 1
        ) AS last ON true
        WHERE (%(search)s::text IS NULL OR sc.name ILIKE %(search)s OR sc.task ILIKE %(search)s)
        ORDER BY sc.name
        LIMIT %(limit)s OFFSET %(offset)s""",
    "count_schedules": """
        SELECT count(*) FROM {s}.schedules
        WHERE (%(search)s::text IS NULL OR name ILIKE %(search)s OR task ILIKE %(search)s)""",
    "notify_schedules_changed": "SELECT pg_notify(%(channel)s, %(payload)s)",
    "insert_audit": """
        INSERT INTO {s}.audit (actor, action, entity, entity_name, before, after)
        VALUES (%(actor)s, %(action)s, %(entity)s, %(entity_name)s, %(before)s, %(after)s)""",
    # ---------------------------------------------------------------- console sign-in limits
    # The attempt is recorded (committed) before the password is checked, so parallel tries count each other.
    "insert_signin_attempt": """
        INSERT INTO {s}.signin_attempts (username, client, result) VALUES (%(username)s, %(client)s, 'pending')
        RETURNING id""",
    # Failures (and attempts still being checked) in the window: for the user since its last success, for the
    # client address all of them. `retry_at` is when the oldest counted one leaves the window.
    "signin_failures": """
        SELECT count(*) FILTER (WHERE username = %(username)s AND at > coalesce((
                   SELECT max(at) FROM {s}.signin_attempts
                   WHERE username = %(username)s AND result = 'ok' AND at > now() - %(window)s), '-infinity'))
                   AS user_failures,
               count(*) FILTER (WHERE client = %(client)s) AS client_failures,
               min(at) FILTER (WHERE username = %(username)s) + %(window)s AS user_retry_at,
               min(at) FILTER (WHERE client = %(client)s) + %(window)s AS client_retry_at
        FROM {s}.signin_attempts
        WHERE at > now() - %(window)s AND result IN ('pending', 'failed') AND id <> %(id)s
          AND (username = %(username)s OR client = %(client)s)""",
    "set_signin_result": "UPDATE {s}.signin_attempts SET result = %(result)s WHERE id = %(id)s",
    "prune_signin_attempts": "DELETE FROM {s}.signin_attempts WHERE at < now() - interval '1 day'",
    "list_audit": """
        SELECT id, at, actor, action, entity, entity_name, before, after FROM {s}.audit
        WHERE (%(entity_name)s::text IS NULL OR entity_name = %(entity_name)s)
          AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
        ORDER BY id DESC LIMIT %(limit)s""",
    # ---------------------------------------------------------------- admin: the slot ledger
    # A slot's outcome: the stored one, else its job's live state (running, waiting = available).
    "list_slots_since": """
        SELECT """ + _LEDGER_COLUMNS + """
        WHERE l.schedule_id = %(schedule_id)s AND l.slot >= %(since)s
        ORDER BY l.slot LIMIT %(limit)s""",
    "list_slots_latest": """
        SELECT * FROM (
            SELECT """ + _LEDGER_COLUMNS + """
            WHERE l.schedule_id = %(schedule_id)s
            ORDER BY l.slot DESC LIMIT %(limit)s) AS latest
        ORDER BY slot""",
    # Backfill: the slots of [from, to) that already have a job or a ledger row of their own, and the ledger
    # ranges (missed, paused) that overlap it (a backfill splits them around the slots it creates).
    "slots_taken_between": """
        SELECT slot FROM {s}.jobs WHERE schedule_id = %(schedule_id)s AND slot >= %(start)s AND slot < %(end)s
        UNION
        SELECT slot FROM {s}.slots
        WHERE schedule_id = %(schedule_id)s AND slot >= %(start)s AND slot < %(end)s AND last_slot IS NULL""",
    "slot_ranges_overlapping": """
        DELETE FROM {s}.slots
        WHERE schedule_id = %(schedule_id)s AND last_slot IS NOT NULL AND last_slot >= %(start)s AND slot < %(end)s
        RETURNING slot, last_slot, slot_count, outcome, reason""",
    # The dead man's switch: every enabled schedule with its last successful slot (the newest completed
    # ledger row, through the primary key), for `schedule overdue`, the console and /metrics.
    "schedule_successes": """
        SELECT sc.name, sc.cron, sc.timezone, sc.created_at, sc.updated_at, last.slot AS last_success_slot,
               last.finished_at AS last_success_at
        FROM {s}.schedules AS sc
        LEFT JOIN LATERAL (
            SELECT l.slot, l.finished_at FROM {s}.slots AS l
            WHERE l.schedule_id = sc.id AND l.outcome = 'completed' ORDER BY l.slot DESC LIMIT 1
        ) AS last ON true
        WHERE sc.enabled
        ORDER BY sc.name LIMIT %(limit)s""",
    # ---------------------------------------------------------------- admin: jobs
    "get_job": "SELECT " + _JOB_COLUMNS + ", errors, result, backend_pid FROM {s}.jobs WHERE id = %(id)s",
    # Newest first, in three arms that partition the table (ck_jobs_finished), so that no arm walks another's
    # rows (an empty queue beside a long history, a long backlog beside the running jobs):
    # - finished jobs, in id order through ix_jobs_finished_id or the history index of the filtered column;
    # - available jobs, in id order through ix_jobs_available_id (or ix_jobs_claim / ix_jobs_schedule_unfinished
    #   for a queue or schedule filter, as the planner sees fit);
    # - running jobs, all of them (no more than the workers' total concurrency) through ix_jobs_running_worker,
    #   then sorted.
    # A state filter that names none of an arm's states switches the arm off (a one-time filter: it reads
    # nothing). The cost left: a queue or task filter that matches none of a long backlog reads the backlog
    # (about 0.1 s per million available jobs). Full-table indexes answered that at once, but charged every
    # job an entry in each at enqueue, claim and completion (migration 0004).
    "list_jobs": """
        SELECT j.id, j.queue, j.task, j.args, j.state, j.priority, j.attempt, j.max_attempts, j.scheduled_at,
               j.schedule_id, sc.name AS schedule, j.slot, j.unique_key, j.inserted_at, j.started_at,
               j.finished_at, j.worker, j.last_error
        FROM (""" + _list_jobs_arm("j.finished_at IS NOT NULL", FINISHED_STATES) + """
              UNION ALL """ + _list_jobs_arm("j.state = 'available'", ("available",)) + """
              UNION ALL """ + _list_jobs_arm("j.state = 'running'", ("running",), read_all=True) + """) AS j
        LEFT JOIN {s}.schedules AS sc ON sc.id = j.schedule_id
        ORDER BY j.id DESC
        LIMIT %(limit)s""",
    "cancel_jobs": """
        UPDATE {s}.jobs
        SET state = CASE WHEN state = 'available' THEN 'cancelled' ELSE state END,
            finished_at = CASE WHEN state = 'available' THEN now() ELSE finished_at END,
            cancel_requested = true,
            last_error = CASE WHEN state = 'available' THEN 'cancelled by ' || %(actor)s ELSE last_error END,
            seg = CASE WHEN state = 'available' THEN {s}.history_seg('cancelled', now()) ELSE seg END
        WHERE seg < 100 AND id = ANY(%(ids)s) AND state IN ('available', 'running')
        RETURNING id, state, backend_pid""",
    # A retried slot's ledger row is pending again (its new outcome is settled when it finishes).
    "retry_jobs": """
        WITH retried AS (
            UPDATE {s}.jobs
            SET state = 'available', scheduled_at = now(), finished_at = NULL, cancel_requested = false,
                max_attempts = greatest(max_attempts, attempt + 1), worker_id = NULL,
                seg = CASE WHEN unique_key IS NOT NULL THEN 0 ELSE {s}.open_seg() END
            WHERE id = ANY(%(ids)s) AND state IN ('failed', 'cancelled', 'completed', 'skipped')
            RETURNING id, schedule_id, slot
        ), ledger AS (
            UPDATE {s}.slots AS l SET outcome = NULL, finished_at = NULL, job_id = r.id
            FROM retried AS r WHERE l.schedule_id = r.schedule_id AND l.slot = r.slot
        )
        SELECT id FROM retried""",
    "delete_jobs": """
        DELETE FROM {s}.jobs WHERE id = ANY(%(ids)s) AND state <> 'running' RETURNING id""",
    "cancel_backend": "SELECT pg_cancel_backend(%(pid)s)",
    "terminate_backend": "SELECT pg_terminate_backend(%(pid)s)",
    # ---------------------------------------------------------------- admin: status and stats
    # `alive`: the worker's session holds its liveness lock (what the leader decides on); heartbeat_age is shown.
    "list_workers": """
        WITH """ + _HELD_WORKER_LOCKS + """
        SELECT w.id, w.name, w.host, w.pid, w.queues, w.concurrency, w.version, w.started_at, w.heartbeat_at,
               w.leader_since, w.stopping, extract(epoch FROM now() - w.heartbeat_at) AS heartbeat_age,
               mod(w.id, 2147483648) IN (SELECT key FROM held) AS alive,
               (SELECT count(*) FROM {s}.jobs AS j WHERE j.worker_id = w.id AND j.state = 'running') AS running
        FROM {s}.workers AS w
        ORDER BY w.started_at""",
    "job_counts": """
        SELECT state, count(*) FROM {s}.jobs GROUP BY state""",
    # jobs is partitioned: its size and row estimate are its partitions' sums.
    "job_count_estimate": """
        SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS reltuples
        FROM pg_partition_tree(to_regclass(%(table)s)) AS t JOIN pg_class AS c ON c.oid = t.relid
        WHERE t.isleaf""",
    "unfinished_counts": """
        SELECT 'available' AS state, count(*) FROM {s}.jobs WHERE seg < 100 AND state = 'available'
        UNION ALL
        SELECT 'running', count(*) FROM {s}.jobs WHERE seg < 100 AND state = 'running'""",
    "finished_counts_since": """
        SELECT state, count(*) FROM {s}.jobs
        WHERE state = ANY(%(states)s) AND finished_at >= %(since)s GROUP BY state""",
    "schedule_history": """
        SELECT id, state, attempt, max_attempts, slot, scheduled_at, inserted_at, started_at, finished_at,
               extract(epoch FROM finished_at - started_at) AS duration,
               extract(epoch FROM coalesce(first_started_at, started_at) - coalesce(slot, scheduled_at)) AS lateness,
               worker, last_error
        FROM {s}.jobs
        WHERE schedule_id = %(schedule_id)s AND inserted_at >= %(since)s
        ORDER BY inserted_at DESC
        LIMIT %(limit)s""",
    "recent_lateness": """
        SELECT j.id, sc.name AS schedule, j.slot, coalesce(j.first_started_at, j.started_at) AS started_at,
               extract(epoch FROM coalesce(j.first_started_at, j.started_at) - j.slot) AS lateness
        FROM {s}.jobs AS j JOIN {s}.schedules AS sc ON sc.id = j.schedule_id
        WHERE j.slot IS NOT NULL AND j.started_at IS NOT NULL AND j.inserted_at >= %(since)s
        ORDER BY j.inserted_at DESC LIMIT %(limit)s""",
    "next_runs": """
        SELECT name, task, cron, timezone, next_run_at FROM {s}.schedules
        WHERE enabled AND next_run_at IS NOT NULL ORDER BY next_run_at LIMIT %(limit)s""",
    "schema_revision": "SELECT version_num FROM {s}.alembic_version",
    # Health at a glance (status, metrics): reads only unfinished jobs and the schedules, never the history, so it
    # stays cheap however many finished jobs are kept (seg < 100: the hot partitions only). Available jobs are
    # counted from ix_jobs_claim alone (an index-only scan: queue and scheduled_at are in it), running ones
    # through ix_jobs_running_worker.
    "queue_health": """
        SELECT queue, sum(available)::bigint AS available, sum(scheduled)::bigint AS scheduled,
               sum(running)::bigint AS running, coalesce(max(lag), 0)::float8 AS lag
        FROM (SELECT queue, count(*) FILTER (WHERE scheduled_at <= now()) AS available,
                     count(*) FILTER (WHERE scheduled_at > now()) AS scheduled, 0 AS running,
                     extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now())) AS lag
              FROM {s}.jobs WHERE seg < 100 AND state = 'available' GROUP BY queue
              UNION ALL
              SELECT queue, 0, 0, count(*), NULL FROM {s}.jobs WHERE seg < 100 AND state = 'running' GROUP BY queue
             ) AS arms
        GROUP BY queue ORDER BY queue""",
    "schedules_overdue": """
        SELECT count(*) AS overdue,
               coalesce(extract(epoch FROM now() - min(next_run_at)), 0)::float8 AS max_overdue
        FROM {s}.schedules WHERE enabled AND next_run_at < now() - %(grace)s * interval '1 second'""",
    # What holds back this database's xmin horizon: vacuum cannot remove a dead row (a claimed or finished
    # job's old version) that any of these can still see. Transactions of this database with a snapshot or
    # an xid (vacuum ignores other vacuums), prepared transactions, and replication slots: physical ones and
    # this database's logical ones. Oldest first by transaction age; time ages where Postgres has them.
    "horizon_holders": """
        SELECT kind, pid, name, client_addr, since, age_seconds, xid_age, state, query FROM (
            SELECT 'transaction' AS kind, a.pid, a.application_name AS name, a.client_addr::text AS client_addr,
                   a.xact_start AS since,
                   extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS age_seconds,
                   greatest(age(a.backend_xmin), age(a.backend_xid))::bigint AS xid_age, a.state,
                   left(a.query, %(query_chars)s) AS query
            FROM pg_stat_activity a
            WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
              AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
              AND a.backend_type NOT IN ('autovacuum worker', 'walsender')
              AND a.xact_start <= clock_timestamp() - %(min_age)s * interval '1 second'
            UNION ALL
            SELECT 'prepared transaction', NULL, p.gid, NULL, p.prepared,
                   extract(epoch FROM clock_timestamp() - p.prepared)::float8, age(p.transaction)::bigint,
                   'prepared', NULL
            FROM pg_prepared_xacts p
            WHERE p.database = current_database()
              AND p.prepared <= clock_timestamp() - %(min_age)s * interval '1 second'
            UNION ALL
            SELECT 'replication slot', r.active_pid, r.slot_name, NULL, NULL, NULL,
                   greatest(age(r.xmin), age(r.catalog_xmin))::bigint,
                   CASE WHEN r.active THEN 'active' ELSE 'inactive' END, NULL
            FROM pg_replication_slots r
            WHERE (r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL)
              AND (r.database IS NULL OR r.database = current_database())
              AND (NOT r.active OR greatest(age(r.xmin), age(r.catalog_xmin)) >= %(slot_xid_age)s)
        ) AS holders
        ORDER BY xid_age DESC NULLS LAST, age_seconds DESC NULLS LAST LIMIT %(limit)s""",
    "recent_slot_lateness": """
        SELECT count(*) AS runs,
               coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lateness), 0)::float8 AS p50,
               coalesce(max(lateness), 0)::float8 AS max
        FROM (SELECT extract(epoch FROM coalesce(first_started_at, started_at) - slot) AS lateness FROM {s}.jobs
              WHERE inserted_at >= %(since)s AND slot IS NOT NULL AND started_at IS NOT NULL
              ORDER BY inserted_at DESC LIMIT 1000) AS recent""",
    # ---------------------------------------------------------------- console
    # The console's reads. Each one is bounded: a page of schedules, a LIMIT on jobs, a window plus a cap on
    # history, and estimates (pg_class / pg_stats) instead of counting a big table.
    # A page of schedules with their last run and a success rate over their last runs in a window; the
    # LATERAL lookups walk ix_jobs_schedule_history (schedule_id, inserted_at) and stop at %(runs)s rows.
    "console_schedules": """
        WITH page AS (
            SELECT """ + _SCHEDULE_COLUMNS + """
            FROM {s}.schedules
            WHERE (%(search)s::text IS NULL OR name ILIKE %(search)s OR task ILIKE %(search)s)
              AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s)
            ORDER BY """ + _CONSOLE_SCHEDULE_ORDER + """
            LIMIT %(limit)s OFFSET %(offset)s
        )
        SELECT page.*, last.id AS last_job_id, last.state AS last_state, last.inserted_at AS last_run_at,
               last.finished_at AS last_finished_at, stats.runs, stats.completed, stats.failed
        FROM page
        LEFT JOIN LATERAL (
            SELECT j.id, j.state, j.inserted_at, j.finished_at FROM {s}.jobs AS j
            WHERE j.schedule_id = page.id ORDER BY j.inserted_at DESC LIMIT 1
        ) AS last ON true
        LEFT JOIN LATERAL (
            SELECT count(*) AS runs, count(*) FILTER (WHERE r.state = 'completed') AS completed,
                   count(*) FILTER (WHERE r.state = 'failed') AS failed
            FROM (SELECT j.state FROM {s}.jobs AS j
                  WHERE j.schedule_id = page.id AND j.inserted_at >= %(since)s
                  ORDER BY j.inserted_at DESC LIMIT %(runs)s) AS r
            WHERE r.state IN ('completed', 'failed')
        ) AS stats ON true
        ORDER BY """ + _CONSOLE_SCHEDULE_ORDER,
    "console_schedule_names": """
        SELECT name FROM {s}.schedules
        WHERE (%(search)s::text IS NULL OR name ILIKE %(search)s)
        ORDER BY name LIMIT %(limit)s""",
    # Counts by state without counting: reltuples times pg_stats' frequency of each state. The size lets
    # the caller count exactly when the table is small (or was never analyzed).
    "console_jobs_size": """
        SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS reltuples,
               coalesce(sum(pg_relation_size(c.oid)), 0)::bigint AS bytes
        FROM pg_partition_tree(to_regclass(%(table)s)) AS t JOIN pg_class AS c ON c.oid = t.relid
        WHERE t.isleaf""",
    "console_state_estimates": """
        SELECT v.state, round(sum(v.freq * greatest(c.reltuples, 0)))::bigint AS count
        FROM pg_partition_tree(to_regclass(%(table)s)) AS t JOIN pg_class AS c ON c.oid = t.relid
        JOIN pg_stats AS st ON st.schemaname = %(schema)s AND st.tablename = c.relname AND st.attname = 'state',
             unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS v(state, freq)
        WHERE t.isleaf
        GROUP BY v.state""",
    "console_recent_failures": """
        SELECT j.id, j.task, sc.name AS schedule, j.queue, j.attempt, j.max_attempts, j.finished_at,
               j.worker, j.last_error
        FROM {s}.jobs AS j LEFT JOIN {s}.schedules AS sc ON sc.id = j.schedule_id
        WHERE j.state = 'failed' AND j.finished_at >= %(since)s
        ORDER BY j.finished_at DESC LIMIT %(limit)s""",
    # Runs of one schedule in time buckets (the history chart): the newest %(cap)s runs of the window at most.
    "console_schedule_buckets": """
        SELECT date_bin(%(bucket)s * interval '1 second', r.at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               count(*) AS runs,
               count(*) FILTER (WHERE r.state = 'completed') AS completed,
               count(*) FILTER (WHERE r.state = 'failed') AS failed,
               count(*) FILTER (WHERE r.state = 'skipped') AS skipped,
               count(*) FILTER (WHERE r.state = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE r.state IN ('available', 'running')) AS unfinished,
               avg(r.duration)::float8 AS avg_duration,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration)::float8 AS p95_duration,
               avg(r.lateness)::float8 AS avg_lateness,
               max(r.lateness)::float8 AS max_lateness
        FROM (SELECT j.state, coalesce(j.slot, j.inserted_at) AS at,
                     extract(epoch FROM j.finished_at - j.started_at) AS duration,
                     extract(epoch FROM coalesce(j.first_started_at, j.started_at) - coalesce(j.slot, j.scheduled_at)) AS lateness
              FROM {s}.jobs AS j
              WHERE j.schedule_id = %(schedule_id)s AND j.inserted_at >= %(since)s
              ORDER BY j.inserted_at DESC LIMIT %(cap)s) AS r
        GROUP BY 1 ORDER BY 1""",
    "console_schedule_stats": """
        SELECT count(*) AS total,
               count(*) FILTER (WHERE r.state = 'completed') AS completed,
               count(*) FILTER (WHERE r.state = 'failed') AS failed,
               count(*) FILTER (WHERE r.state = 'skipped') AS skipped,
               count(*) FILTER (WHERE r.state = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE r.state IN ('available', 'running')) AS unfinished,
               count(*) FILTER (WHERE r.attempt > 1) AS retried,
               avg(r.duration)::float8 AS avg_duration,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration)::float8 AS p95_duration,
               avg(r.lateness)::float8 AS avg_lateness
        FROM (SELECT j.state, j.attempt, extract(epoch FROM j.finished_at - j.started_at) AS duration,
                     extract(epoch FROM coalesce(j.first_started_at, j.started_at) - coalesce(j.slot, j.scheduled_at)) AS lateness
              FROM {s}.jobs AS j
              WHERE j.schedule_id = %(schedule_id)s AND j.inserted_at >= %(since)s
              ORDER BY j.inserted_at DESC LIMIT %(cap)s) AS r""",
    # ---------------------------------------------------------------- built-in task: refresh a materialized view
    "matview_info": """
        SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name, c.relkind, c.relispopulated,
               EXISTS (
                   SELECT 1 FROM pg_index AS i
                   WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                     AND i.indpred IS NULL AND i.indexprs IS NULL
               ) AS has_unique_index
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass(%(qualified)s)""",
    # Two refreshes of one view never pile up: the second one finds this lock taken and skips.
    "try_view_lock": "SELECT pg_try_advisory_xact_lock(%(cls)s, %(oid)s::int)",
    "set_local_lock_timeout": "SELECT set_config('lock_timeout', %(ms)s, true)",
    # ---------------------------------------------------------------- import from pg_cron (its own `cron` schema)
    "pg_cron_present": "SELECT to_regclass('cron.job') IS NOT NULL, current_database(), current_user",
    "pg_cron_jobs": """
        SELECT jobid, schedule, command, database, username, active, jobname FROM cron.job ORDER BY jobid""",
}


def refresh_matview(schema: str, view: str, concurrently: bool) -> sql.Composed:
    """REFRESH MATERIALIZED VIEW [CONCURRENTLY] "schema"."view", identifiers quoted by psycopg."""
    return sql.SQL("REFRESH MATERIALIZED VIEW {}{}.{}").format(
        sql.SQL("CONCURRENTLY ") if concurrently else sql.SQL(""), sql.Identifier(schema), sql.Identifier(view)
    )


def lock_partition(schema: str, name: str, *, nowait: bool = False) -> sql.Composed:
    """LOCK TABLE "schema"."name" IN ACCESS EXCLUSIVE MODE [NOWAIT] (storage.py, with a short lock_timeout)."""
    return sql.SQL("LOCK TABLE {}.{} IN ACCESS EXCLUSIVE MODE{}").format(
        sql.Identifier(schema), sql.Identifier(name), sql.SQL(" NOWAIT" if nowait else ""))


def analyze_partition(schema: str, name: str) -> sql.Composed:
    return sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def truncate_partition(schema: str, name: str) -> sql.Composed:
    return sql.SQL("TRUNCATE {}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def drop_partition(schema: str, name: str) -> sql.Composed:
    return sql.SQL("DROP TABLE {}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def create_partition(schema: str, name: str) -> sql.Composed:
    """A table shaped like jobs, to be attached as a partition (ATTACH takes SHARE UPDATE EXCLUSIVE on jobs,
    which neither claims nor readers conflict with; CREATE TABLE ... PARTITION OF would take ACCESS
    EXCLUSIVE)."""
    return sql.SQL("CREATE TABLE {}.{} (LIKE {}.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
        sql.Identifier(schema), sql.Identifier(name), sql.Identifier(schema))


def attach_partition(schema: str, name: str, low: int, high: int) -> sql.Composed:
    return sql.SQL("ALTER TABLE {}.jobs ATTACH PARTITION {}.{} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(schema), sql.Identifier(schema), sql.Identifier(name), sql.Literal(low), sql.Literal(high))


def qualified_name(schema: str | None, name: str) -> str:
    """A quoted, possibly schema-qualified name as text, for to_regclass()."""
    if schema:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name)).as_string(None)
    return sql.Identifier(name).as_string(None)


class Statements:
    """One `str` attribute per statement of `TEMPLATES`, so type checkers and editors see every name
    (`tests/test_queries.py` checks that the two sets are equal: a statement added to one only fails there)."""

    ping: str
    backend_pid: str
    server_port: str
    db_now: str
    set_server_keepalives: str
    set_client_connection_check: str
    set_statement_timeout: str
    reset_statement_timeout: str
    try_leader_lock: str
    wait_leader_lock_settings: str
    wait_leader_lock: str
    release_leader_lock: str
    holds_leader_lock: str
    leader_backend: str
    try_worker_lock: str
    end_stale_worker_session: str
    register_worker: str
    rejoin_worker: str
    heartbeat_worker: str
    claim_leadership_row: str
    cancel_requested_jobs: str
    unregister_worker: str
    claim_jobs: str
    claim_jobs_any_queue: str
    claim_jobs_async_commit: str
    claim_jobs_any_queue_async_commit: str
    complete_jobs: str
    fail_job: str
    next_due_in: str
    notify_jobs: str
    set_job_backend: str
    notify_waiting_schedule_runs: str
    release_jobs: str
    requeue_worker_jobs: str
    due_schedules: str
    unfinished_by_schedule: str
    insert_due_slots: str
    insert_slot_ranges: str
    replace_previous_runs: str
    advance_schedules: str
    next_wakeup: str
    worker_sessions: str
    rescue_orphans: str
    settle_slots: str
    failing_schedules: str
    pending_slots_exist: str
    prune_slots: str
    prune_jobs: str
    live_segments: str
    segments_for_update: str
    set_segment_state: str
    add_segment: str
    segment_has_rows: str
    segment_used: str
    segment_unfinished: str
    evacuate_segment: str
    segments_to_analyze: str
    history_partitions: str
    db_day: str
    prune_job_slots: str
    enqueue_job: str
    find_unique_job: str
    copy_jobs: str
    insert_schedule: str
    update_schedule: str
    last_schedule_change: str
    list_timezones: str
    delete_schedule: str
    get_schedule_for_update: str
    get_schedule: str
    schedule_name: str
    list_schedules: str
    count_schedules: str
    notify_schedules_changed: str
    insert_audit: str
    insert_signin_attempt: str
    signin_failures: str
    set_signin_result: str
    prune_signin_attempts: str
    list_audit: str
    list_slots_since: str
    list_slots_latest: str
    slots_taken_between: str
    slot_ranges_overlapping: str
    schedule_successes: str
    get_job: str
    list_jobs: str
    cancel_jobs: str
    retry_jobs: str
    delete_jobs: str
    cancel_backend: str
    terminate_backend: str
    list_workers: str
    job_counts: str
    job_count_estimate: str
    unfinished_counts: str
    finished_counts_since: str
    schedule_history: str
    recent_lateness: str
    next_runs: str
    schema_revision: str
    queue_health: str
    schedules_overdue: str
    horizon_holders: str
    recent_slot_lateness: str
    console_schedules: str
    console_schedule_names: str
    console_jobs_size: str
    console_state_estimates: str
    console_recent_failures: str
    console_schedule_buckets: str
    console_schedule_stats: str
    matview_info: str
    try_view_lock: str
    set_local_lock_timeout: str
    pg_cron_present: str
    pg_cron_jobs: str


class Queries(Statements):
    """The statements of `TEMPLATES`, rendered for one schema. Access them as attributes: `q.claim_jobs`."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.jobs_channel = f"{schema}_jobs"
        self.schedules_channel = f"{schema}_schedules"
        self.worker_lock_class = worker_lock_class(schema)
        # Parameters of the leader lock; `wcls` is there too, for the statements that tell a worker's session.
        self.lock = {"cls": LOCK_CLASS, "key": lock_key(schema), "wcls": self.worker_lock_class}
        ident = sql.Identifier(schema)
        for name, template in TEMPLATES.items():
            rendered = sql.SQL(template).format(s=ident).as_string(None)
            setattr(self, name, rendered)
        self.listen_jobs = sql.SQL("LISTEN {}").format(sql.Identifier(self.jobs_channel)).as_string(None)
        self.listen_schedules = sql.SQL("LISTEN {}").format(sql.Identifier(self.schedules_channel)).as_string(None)

    def worker_lock(self, worker_id: int) -> dict[str, int]:
        """Parameters of one worker's liveness lock."""
        return {"wcls": self.worker_lock_class, "wkey": worker_lock_key(worker_id)}


@lru_cache(maxsize=8)
def queries(schema: str = "pgjobs") -> Queries:
    return Queries(schema)
