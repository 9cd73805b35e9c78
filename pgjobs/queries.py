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


_JOB_COLUMNS = """id, queue, task, args, state, priority, attempt, max_attempts, timeout_seconds, scheduled_at,
    schedule_id, slot, unique_key, inserted_at, started_at, finished_at, worker_id, worker, last_error,
    cancel_requested"""

_SCHEDULE_COLUMNS = """id, name, task, args, cron, timezone, enabled, queue, priority, max_attempts,
    timeout_seconds, catchup, catchup_max, overlap, description, next_run_at, last_slot_at, created_at,
    updated_at"""


def _claim_jobs(queue_match: str, *, async_commit: bool = False) -> str:
    """Claim up to %(limit)s due jobs in (priority, scheduled_at, id) order, skipping rows others hold.

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
            SELECT id FROM {s}.jobs AS j
            WHERE state = 'available' AND """ + queue_match + """ AND scheduled_at <= now()
              -- Overlap 'skip' and 'queue': a schedule runs one job at a time, oldest first. A queued slot
              -- (or a catch-up backlog) waits here until the run before it has finished. Evaluated only
              -- for rows of a schedule (schedule_id IS NULL short-circuits), through pk_schedules and
              -- ix_jobs_schedule_unfinished.
              AND (schedule_id IS NULL OR NOT EXISTS (
                  SELECT 1 FROM {s}.schedules AS sc JOIN {s}.jobs AS o ON o.schedule_id = sc.id
                  WHERE sc.id = j.schedule_id AND sc.overlap <> 'allow' AND o.id <> j.id
                    AND o.state IN ('available', 'running')
                    AND (o.state = 'running' OR (o.id < j.id AND o.scheduled_at <= now()))))
            ORDER BY priority, scheduled_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {s}.jobs AS j
        SET state = 'running', attempt = j.attempt + 1, started_at = now(), finished_at = NULL,
            worker_id = %(worker_id)s, worker = %(worker)s
        FROM next""" + (", commit_mode" if async_commit else "") + """ WHERE j.id = next.id
        RETURNING j.id, j.queue, j.task, j.args, j.attempt, j.max_attempts, j.timeout_seconds,
                  j.schedule_id, j.slot, j.scheduled_at, j.started_at"""


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
    # (measured: 1-process drain 16,100 -> 10,200 jobs/s beside one such waiter). This DO block waits in
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
    "cancel_requested_jobs": """
        SELECT id FROM {s}.jobs
        WHERE worker_id = %(worker_id)s AND state = 'running' AND cancel_requested""",
    "unregister_worker": "DELETE FROM {s}.workers WHERE id = %(id)s",
    # ---------------------------------------------------------------- job claim / outcome (workers)
    # A worker of one queue (the usual case) claims with `queue = %(queue)s`, which walks ix_jobs_claim
    # (queue, priority, scheduled_at, id) in claim order and stops after %(limit)s rows. `queue = ANY(...)`
    # cannot use that index for the ORDER BY, so with a backlog it read and sorted every available job
    # (~6 ms per claim at 20,000 jobs). Several queues still take that path: `claim_jobs_any_queue`.
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
            finished_at = j.started_at + (d.waited + d.seconds) * interval '1 second',
            result = d.result, backend_pid = NULL
        FROM (SELECT d.*, 'running'::text AS state, %(worker_id)s::bigint AS worker_id
              FROM unnest(%(ids)b::bigint[], %(attempts)b::int[], %(waited)b::float8[], %(seconds)b::float8[],
                          %(results)b::jsonb[]) AS d(id, attempt, waited, seconds, result)
              OFFSET 0) AS d
        WHERE j.id = d.id AND (j.attempt, j.state, j.worker_id) IS NOT DISTINCT FROM (d.attempt, d.state, d.worker_id)
        RETURNING j.id""",
    # A failed attempt is retried while attempts remain, unless an operator asked to cancel it.
    "fail_job": """
        WITH d AS (
            SELECT id, CASE WHEN cancel_requested THEN 'cancelled'
                            WHEN %(retry)s AND attempt < max_attempts THEN 'available'
                            ELSE %(final_state)s END AS next_state
            FROM {s}.jobs
            WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running' AND worker_id = %(worker_id)s
            FOR UPDATE
        )
        UPDATE {s}.jobs AS j
        SET state = d.next_state,
            scheduled_at = CASE WHEN d.next_state = 'available'
                                THEN now() + %(delay)s * interval '1 second' ELSE j.scheduled_at END,
            started_at = j.started_at + %(waited)s * interval '1 second',
            finished_at = CASE WHEN d.next_state = 'available'
                               THEN NULL ELSE j.started_at + (%(waited)s + %(seconds)s) * interval '1 second' END,
            worker_id = CASE WHEN d.next_state = 'available' THEN NULL ELSE j.worker_id END,
            last_error = %(error)s,
            backend_pid = NULL,
            errors = j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempt, 'at', now(), 'error', %(error)s::text, 'traceback', %(traceback)s::text,
                'worker', j.worker))
        FROM d WHERE j.id = d.id
        RETURNING j.state, j.scheduled_at""",
    "set_job_backend": "UPDATE {s}.jobs SET backend_pid = %(pid)s WHERE id = %(id)s AND state = 'running'",
    # Wakes every worker when a finished run leaves another run of the same schedule waiting.
    "notify_waiting_schedule_runs": """
        SELECT pg_notify(%(channel)s, '') FROM (
            SELECT 1 FROM {s}.jobs WHERE schedule_id = ANY(%(ids)s) AND state = 'available' LIMIT 1) AS w""",
    # Jobs a runner claimed but did not start (it got stuck behind a slow job) go back, untouched.
    "release_jobs": """
        UPDATE {s}.jobs
        SET state = 'available', attempt = greatest(attempt - 1, 0), worker_id = NULL, started_at = NULL,
            backend_pid = NULL
        WHERE id = ANY(%(ids)s) AND state = 'running' AND worker_id = %(worker_id)s""",
    # On shutdown: jobs that did not finish within the grace period go back to the queue, attempt refunded.
    "requeue_worker_jobs": """
        UPDATE {s}.jobs
        SET state = 'available', attempt = greatest(attempt - 1, 0), worker_id = NULL, started_at = NULL,
            scheduled_at = now(), backend_pid = NULL,
            errors = errors || jsonb_build_array(jsonb_build_object(
                'attempt', attempt, 'at', now(), 'error', 'requeued: worker shut down', 'worker', worker))
        WHERE worker_id = %(worker_id)s AND state = 'running'
        RETURNING id""",
    # ---------------------------------------------------------------- scheduler (leader only)
    "due_schedules": """
        SELECT id, name, cron, timezone, catchup, catchup_max, overlap, next_run_at, clock_timestamp() AS now
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
        WHERE schedule_id = ANY(%(ids)s) AND state IN ('available', 'running')
        GROUP BY schedule_id""",
    # The unique constraint on (schedule_id, slot) is what makes a slot exactly-once, even for a stale leader.
    # The job's queue, task, args, ... are copied from its schedule row, which this transaction holds locked
    # (due_schedules), so only the planned (schedule, slot, state, note) travel from Python.
    "insert_due_slots": """
        INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, timeout_seconds, schedule_id, slot,
                              scheduled_at, state, finished_at, last_error)
        SELECT sc.queue, sc.task, sc.args, sc.priority, sc.max_attempts, sc.timeout_seconds, sc.id, d.slot,
               d.slot, d.state, CASE WHEN d.state = 'skipped' THEN now() END, d.note
        FROM unnest(%(schedule_id)b::bigint[], %(slot)b::timestamptz[], %(state)b::text[], %(note)b::text[])
             AS d(schedule_id, slot, state, note)
        JOIN {s}.schedules AS sc ON sc.id = d.schedule_id
        ON CONFLICT (schedule_id, slot) DO NOTHING
        RETURNING id, schedule_id, slot, state""",
    "advance_schedules": """
        UPDATE {s}.schedules AS sc
        SET next_run_at = d.next_run_at, last_slot_at = coalesce(d.last_slot_at, sc.last_slot_at)
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
              UNION SELECT worker_id FROM {s}.jobs WHERE state = 'running' AND worker_id IS NOT NULL) AS k""",
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
            SELECT j.id FROM {s}.jobs AS j
            WHERE j.state = 'running'
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
                worker_id = NULL, backend_pid = NULL
            FROM orphans WHERE j.id = orphans.id
            RETURNING j.id, j.state, j.task, j.worker
        )
        SELECT 'job' AS kind, id, state, task, worker FROM rescued
        UNION ALL
        SELECT 'worker', id, NULL, NULL, name FROM dead""",
    "prune_jobs": """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs
            WHERE state = ANY(%(states)s) AND finished_at < now() - %(age)s * interval '1 second'
            LIMIT %(batch)s)""",
    # ---------------------------------------------------------------- enqueue
    "enqueue_job": """
        INSERT INTO {s}.jobs (queue, task, args, priority, max_attempts, timeout_seconds, scheduled_at,
                              unique_key, schedule_id)
        VALUES (%(queue)s, %(task)s, %(args)s, %(priority)s, %(max_attempts)s, %(timeout)s,
                coalesce(%(scheduled_at)s, now()), %(unique_key)s, %(schedule_id)s)
        ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
        DO NOTHING
        RETURNING id""",
    "find_unique_job": """
        SELECT id FROM {s}.jobs
        WHERE unique_key = %(unique_key)s AND state IN ('available', 'running')""",
    "copy_jobs": """
        COPY {s}.jobs (queue, task, args, priority, max_attempts, timeout_seconds, scheduled_at) FROM STDIN""",
    # ---------------------------------------------------------------- admin: schedules
    "insert_schedule": """
        INSERT INTO {s}.schedules (name, task, args, cron, timezone, enabled, queue, priority, max_attempts,
                                   timeout_seconds, catchup, catchup_max, overlap, description, next_run_at)
        VALUES (%(name)s, %(task)s, %(args)s, %(cron)s, %(timezone)s, %(enabled)s, %(queue)s, %(priority)s,
                %(max_attempts)s, %(timeout_seconds)s, %(catchup)s, %(catchup_max)s, %(overlap)s,
                %(description)s, %(next_run_at)s)
        RETURNING """ + _SCHEDULE_COLUMNS,
    "update_schedule": """
        UPDATE {s}.schedules
        SET task = %(task)s, args = %(args)s, cron = %(cron)s, timezone = %(timezone)s, enabled = %(enabled)s,
            queue = %(queue)s, priority = %(priority)s, max_attempts = %(max_attempts)s,
            timeout_seconds = %(timeout_seconds)s, catchup = %(catchup)s, catchup_max = %(catchup_max)s,
            overlap = %(overlap)s, description = %(description)s, next_run_at = %(next_run_at)s,
            updated_at = now()
        WHERE id = %(id)s
        RETURNING """ + _SCHEDULE_COLUMNS,
    "delete_schedule": "DELETE FROM {s}.schedules WHERE id = %(id)s",
    "get_schedule_for_update": "SELECT " + _SCHEDULE_COLUMNS + " FROM {s}.schedules WHERE name = %(name)s FOR UPDATE",
    "get_schedule": "SELECT " + _SCHEDULE_COLUMNS + " FROM {s}.schedules WHERE name = %(name)s",
    "list_schedules": """
        SELECT sc.id, sc.name, sc.task, sc.args, sc.cron, sc.timezone, sc.enabled, sc.queue, sc.priority,
               sc.max_attempts, sc.timeout_seconds, sc.catchup, sc.catchup_max, sc.overlap, sc.description,
               sc.next_run_at, sc.last_slot_at, sc.created_at, sc.updated_at,
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
    "list_audit": """
        SELECT id, at, actor, action, entity, entity_name, before, after FROM {s}.audit
        WHERE (%(entity_name)s::text IS NULL OR entity_name = %(entity_name)s)
          AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
        ORDER BY id DESC LIMIT %(limit)s""",
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
            last_error = CASE WHEN state = 'available' THEN 'cancelled by ' || %(actor)s ELSE last_error END
        WHERE id = ANY(%(ids)s) AND state IN ('available', 'running')
        RETURNING id, state, backend_pid""",
    "retry_jobs": """
        UPDATE {s}.jobs
        SET state = 'available', scheduled_at = now(), finished_at = NULL, cancel_requested = false,
            max_attempts = greatest(max_attempts, attempt + 1), worker_id = NULL
        WHERE id = ANY(%(ids)s) AND state IN ('failed', 'cancelled', 'completed', 'skipped')
        RETURNING id""",
    "delete_jobs": """
        DELETE FROM {s}.jobs WHERE id = ANY(%(ids)s) AND state <> 'running' RETURNING id""",
    "cancel_backend": "SELECT pg_cancel_backend(%(pid)s)",
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
    "job_count_estimate": """
        SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%(table)s)""",
    "unfinished_counts": """
        SELECT 'available' AS state, count(*) FROM {s}.jobs WHERE state = 'available'
        UNION ALL
        SELECT 'running', count(*) FROM {s}.jobs WHERE state = 'running'""",
    "finished_counts_since": """
        SELECT state, count(*) FROM {s}.jobs
        WHERE state = ANY(%(states)s) AND finished_at >= %(since)s GROUP BY state""",
    "schedule_history": """
        SELECT id, state, attempt, slot, scheduled_at, inserted_at, started_at, finished_at,
               extract(epoch FROM finished_at - started_at) AS duration,
               extract(epoch FROM started_at - coalesce(slot, scheduled_at)) AS lateness,
               worker, last_error
        FROM {s}.jobs
        WHERE schedule_id = %(schedule_id)s AND inserted_at >= %(since)s
        ORDER BY inserted_at DESC
        LIMIT %(limit)s""",
    "recent_lateness": """
        SELECT j.id, sc.name AS schedule, j.slot, j.started_at,
               extract(epoch FROM j.started_at - j.slot) AS lateness
        FROM {s}.jobs AS j JOIN {s}.schedules AS sc ON sc.id = j.schedule_id
        WHERE j.slot IS NOT NULL AND j.started_at IS NOT NULL AND j.inserted_at >= %(since)s
        ORDER BY j.inserted_at DESC LIMIT %(limit)s""",
    "next_runs": """
        SELECT name, task, cron, timezone, next_run_at FROM {s}.schedules
        WHERE enabled AND next_run_at IS NOT NULL ORDER BY next_run_at LIMIT %(limit)s""",
    "schema_revision": "SELECT version_num FROM {s}.alembic_version",
    # Health at a glance (status, metrics): reads only unfinished jobs and the schedules, never the history, so it
    # stays cheap however many finished jobs are kept. Available jobs are counted from ix_jobs_claim alone (an
    # index-only scan: queue and scheduled_at are in it), running ones through ix_jobs_running_worker.
    "queue_health": """
        SELECT queue, sum(available)::bigint AS available, sum(scheduled)::bigint AS scheduled,
               sum(running)::bigint AS running, coalesce(max(lag), 0)::float8 AS lag
        FROM (SELECT queue, count(*) FILTER (WHERE scheduled_at <= now()) AS available,
                     count(*) FILTER (WHERE scheduled_at > now()) AS scheduled, 0 AS running,
                     extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now())) AS lag
              FROM {s}.jobs WHERE state = 'available' GROUP BY queue
              UNION ALL
              SELECT queue, 0, 0, count(*), NULL FROM {s}.jobs WHERE state = 'running' GROUP BY queue) AS arms
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
        FROM (SELECT extract(epoch FROM started_at - slot) AS lateness FROM {s}.jobs
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
        SELECT reltuples::bigint AS reltuples, pg_relation_size(oid) AS bytes
        FROM pg_class WHERE oid = to_regclass(%(table)s)""",
    "console_state_estimates": """
        SELECT v.state, round(v.freq * greatest(c.reltuples, 0))::bigint AS count
        FROM pg_class AS c, pg_stats AS st,
             unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS v(state, freq)
        WHERE c.oid = to_regclass(%(table)s) AND st.schemaname = %(schema)s AND st.tablename = 'jobs'
          AND st.attname = 'state'""",
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
                     extract(epoch FROM j.started_at - coalesce(j.slot, j.scheduled_at)) AS lateness
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
                     extract(epoch FROM j.started_at - coalesce(j.slot, j.scheduled_at)) AS lateness
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


def qualified_name(schema: str | None, name: str) -> str:
    """A quoted, possibly schema-qualified name as text, for to_regclass()."""
    if schema:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name)).as_string(None)
    return sql.Identifier(name).as_string(None)


class Queries:
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

    def __getattr__(self, name: str) -> str:  # only reached for unknown names
        raise AttributeError(f"no query named {name!r}")


@lru_cache(maxsize=8)
def queries(schema: str = "pgjobs") -> Queries:
    return Queries(schema)
