"""A worker process: claims jobs with FOR UPDATE SKIP LOCKED, runs them on threads, records the outcome.

Threads and their single duties:
- runners (`concurrency` of them): each claims its own batch of jobs in one statement, runs them one after
  the other, and hands successes to the completer. A runner's batch starts at one job and doubles while its
  jobs stay fast (under FAST_JOB seconds), up to MAX_BATCH; it halves after a slower batch and drops back to
  one after a job slower than HOLD_LIMIT, so tiny jobs cost a fraction of a round trip each and long jobs are
  not claimed ahead of their turn (the supervisor releases whatever waits behind a slow one);
- completer: records successful jobs in batches (one UPDATE per batch);
- listener: LISTENs for new jobs and schedule changes and wakes one idle runner per notification (or per
  poll interval when nothing is notified), so an idle worker sends almost no queries;
- supervisor: no queries; releases jobs a runner claimed but could not start within HOLD_LIMIT (its current
  job turned out slow) and abandons jobs past their timeout;
- heartbeat: refreshes this worker's row (its age is for display only) and delivers cancel requests;
- due timer: a job whose run time is in the future (a retry's backoff, `scheduled_at`, jitter) starts on
  time, not at the next poll: whenever a runner goes idle (after a NOTIFY, a poll, a finished batch) the timer
  reads the earliest future run time of this worker's queues and sleeps until then, then wakes a runner;
  a retry NOTIFYs every worker so that they read it too;
- elector (`leadership.py`) and, while leading, the leader duties (`maintenance.py`: scheduler, rescuer,
  pruner).

Liveness: the worker holds a session advisory lock of its own (key: its worker id) on its lock connection, the
one that carries the leader lock. It registers and takes that lock before it claims anything, and claims only
while it holds it. Postgres frees the lock the instant the session ends, so the leader knows exactly when a
worker is dead (maintenance.py); a worker that reconnects takes its lock back and joins again under the same
id, keeping its running jobs; the outcomes of jobs rescued meanwhile are refused by the database.

Outages: every connection reconnects with a capped backoff and keeps trying for as long as the database is
away (one log line when it starts, one a minute, one when it ends); buffered completions land when it is back.

Shutdown (SIGTERM/SIGINT): stop claiming, step down from leadership at once, give running jobs
`shutdown_grace` seconds, requeue the rest (claimed-but-unstarted jobs included), unregister, and only then
close the lock connection (so the worker is never declared dead while it drains). A second signal skips the
grace period.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb, JsonbLoader
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from pgjobs import __version__, otel, otel_metrics, telemetry
from pgjobs.config import Settings
from pgjobs.leadership import KEEPALIVES, Leadership, pooler_suspected, prepare_session
from pgjobs.logs import Outage
from pgjobs.maintenance import LeaderDuties
from pgjobs.queries import Queries, queries
from pgjobs.rows import one
from pgjobs.storage import PARKED, SegmentCache
from pgjobs.tasks import (
    JobCancelled,
    JobContext,
    SkipJob,
    TaskError,
    ensure_builtins,
    get_task,
    import_modules,
    registered,
)

log = logging.getLogger("pgjobs.worker")

MAX_BATCH = 128          # most jobs one runner claims at once
# A batch whose jobs all ran faster than this may double; a slower one halves, and one past HOLD_LIMIT resets
# to a single job. Well above the GIL's 5 ms switch interval: a no-op job whose thread merely waited for the
# GIL (other runners, the completer, another process on the core) must not count as slow, or busy workers
# fall back to one round trip per job (the drain rate falls to about a third).
FAST_JOB = 0.02
HOLD_LIMIT = 0.25        # claimed jobs waiting behind a slow job longer than this are released
SCHEDULE_NAMES_MAX = 100_000  # schedule names a traced worker keeps
SUPERVISE_EVERY = 0.1
# Reconnecting: the pool tries a lost connection again after 0.1 s, doubling up to POOL_RECONNECT_MAX_DELAY, for
# as long as it takes (an outage of any length); a thread whose statement failed retries after at most
# RETRY_MAX_DELAY. So jobs run again within about a second of Postgres answering.
POOL_RECONNECT_MAX_DELAY = 1.0
RETRY_MAX_DELAY = 0.5
NEVER = 10 * 365 * 86400.0   # the pool's reconnect_timeout: a worker does not give up on its database
FOREIGN_LEADER_CHECK_EVERY = 10.0
SHUTDOWN_WRITE_GRACE = 10.0
# The due timer (on-time future jobs) reads the earliest future run time at most this often, and at least
# every DUE_MAX_SLEEP when nothing wakes it.
DUE_MIN_INTERVAL = 0.02
DUE_MAX_SLEEP = 60.0


class _CappedBackoff(AttemptWithBackoff):
    INITIAL_DELAY = 0.1

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, POOL_RECONNECT_MAX_DELAY)


class EnginePool(ConnectionPool):
    """psycopg_pool's pool, with its reconnect backoff capped at POOL_RECONNECT_MAX_DELAY: left alone it
    doubles without bound (1, 2, 4 ... 64 s), so jobs ran again only tens of seconds after a long outage.
    `_add_connection` is where psycopg_pool (3.2, 3.3) makes the attempt whose delays it then follows."""

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _CappedBackoff(timeout=self.reconnect_timeout), growing)


# The columns a claim returns (queries._claim_jobs' RETURNING), in ClaimedJob's field order.
ClaimRow = tuple[int, str, str, dict[str, Any], int, int, float | None, int | None, datetime | None, datetime,
                 datetime, int, dict[str, str] | None]


@dataclass
class ClaimedJob:
    """A claimed job: the columns of a claim's RETURNING (`ClaimRow`, in order), then this process's own."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout: float | None
    schedule_id: int | None
    slot: datetime | None
    scheduled_at: datetime
    started_at: datetime       # when it was claimed (database clock)
    seg: int = PARKED          # the partition its row is in (storage.py); the leader may move it to parked
    trace_context: dict[str, str] | None = None  # the enqueuer's W3C trace context, if it was traced
    claimed: float = 0.0       # when it was claimed (this process's monotonic clock)
    waited: float = 0.0        # seconds between claim and start, added to started_at when recorded


@dataclass(eq=False)
class Runner:
    """One runner thread's state: the jobs it claimed and has not started yet, and the one it runs."""

    name: str
    pending: deque[ClaimedJob] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: tuple[ClaimedJob, JobContext] | None = None
    current_since: float = 0.0
    batch_since: float = 0.0       # when the runner started on its current batch
    released: bool = False         # the supervisor gave back part of the current batch
    retired: bool = False
    thread: threading.Thread | None = None


def backoff_delay(attempt: int, base: float, cap: float, jitter: float | None = None) -> float:
    """Retry delay after failed attempt `attempt`: base ** attempt seconds, capped, with +-10 % jitter."""
    import random

    delay = min(cap, base ** attempt)
    j = jitter if jitter is not None else random.uniform(-0.1, 0.1)
    return max(0.0, delay * (1 + j))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class Worker:
    """One worker process. `run()` blocks until stopped (signal or `stop()`)."""

    def __init__(self, settings: Settings, *, install_signals: bool = True) -> None:
        self.settings = settings
        self.q: Queries = queries(settings.schema)
        self._claim_sql = self.claim_statement()
        self.segments = SegmentCache(self.q)
        self._schedule_names: dict[int, str] = {}  # traced runs name their schedule (schedule_name)
        self._otel_metrics: otel_metrics.OtelMetrics | None = None
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = f"{self.host}:{self.pid}"
        self.worker_id: int | None = None
        self._install_signals = install_signals
        self._pooled_logged = False
        self._finished_schedules: set[int] = set()  # schedules whose job finished since the last flush
        self.exit_code = 0
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        # Work signal: the listener bumps the generation and wakes one idle runner per notification.
        self._work = threading.Condition()
        self._work_gen = 0
        self._runners: list[Runner] = []
        self._runners_lock = threading.Lock()
        self._running: dict[int, tuple[ClaimedJob, JobContext]] = {}
        self._running_lock = threading.Lock()
        self._done: list[tuple[int, int, int, float, float, Any]] = []
        self._done_lock = threading.Lock()
        self._done_event = threading.Event()
        self._due_recheck = threading.Event()
        self._flush_lock = threading.Lock()
        self.pool: ConnectionPool | None = None
        # Set while this worker holds its liveness lock and its row exists: runners claim only then.
        self.alive = threading.Event()
        self._joined = False
        self._unreleased: list[int] = []  # claimed-but-unstarted jobs whose release failed (database away)
        self._unreleased_lock = threading.Lock()
        self._outage = Outage(log, "database unavailable")
        self._next_foreign_check = 0.0
        self._foreign_reported: int | None = None
        self._foreign_next = 0.0
        self.leadership: Leadership | None = None
        self.duties: LeaderDuties | None = None
        self.ready = threading.Event()
        self._async: Any = None  # async_runner.AsyncRunner, only when an async task is registered

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> None:
        ensure_builtins()
        import_modules(self.settings.imports)
        if otel.configure_from_env():
            log.info("OpenTelemetry tracing on: one span per job attempt")
        self._otel_metrics = otel_metrics.configure_from_env(self)
        if self._otel_metrics is not None:
            log.info("OpenTelemetry metrics on: the Prometheus metrics' twins (pgjobs.*)")
        if self._install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        s = self.settings
        self.pool = EnginePool(
            s.require_database(), min_size=2, max_size=s.concurrency + 4, open=False, name="pgjobs",
            # Autocommit: the engine's statements are single atomic statements (a claim, a batch of
            # completions), so each is one round trip; multi-statement work opens conn.transaction().
            kwargs={"application_name": f"pgjobs worker {self.name}", "autocommit": True, **KEEPALIVES},
            # The worker never gives up on its database: exiting would kill running jobs that can still finish
            # and record their outcome once it is back; an outage is logged once a minute while it lasts, and
            # /readyz fails meanwhile.
            reconnect_timeout=NEVER, timeout=10, configure=self._configure_connection,
        )
        self.pool.open(wait=False)
        self.duties = LeaderDuties(self.pool, self.q, s, worker=self)
        self.leadership = Leadership(s.lock_url, self.q, on_gained=self.duties.start, on_lost=self.duties.stop,
                                     on_connected=self._join, on_disconnected=self._session_lost,
                                     name=f"pgjobs {self.name}")
        self.leadership.start()
        while not self.alive.wait(0.1):  # registered, holding its liveness lock: only now may it claim
            if self._stopping.is_set():
                self._shutdown()
                return
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="pgjobs-heartbeat", daemon=True),
            threading.Thread(target=self._listen_loop, name="pgjobs-listener", daemon=True),
            threading.Thread(target=self._complete_loop, name="pgjobs-completer", daemon=True),
            threading.Thread(target=self._supervise_loop, name="pgjobs-supervisor", daemon=True),
            threading.Thread(target=self._due_loop, name="pgjobs-due-timer", daemon=True),
        ]
        for t in threads:
            t.start()
        if any(t.is_async for t in registered()):  # sync-only workers start no event loop
            from pgjobs.async_runner import AsyncRunner

            self._async = AsyncRunner(self, s.async_concurrency, s.async_lag_warn)
            self._async.start()
        for _ in range(s.concurrency):
            self._start_runner()
        log.info("worker %s started (queues %s, concurrency %d)", self.name, ",".join(s.queues), s.concurrency)
        self.ready.set()
        try:
            self._stopping.wait()
        finally:
            self._shutdown()

    def stop(self, hard: bool = False) -> None:
        self._stopping.set()
        if hard:
            self._hard_stop.set()
        self._signal_work(everyone=True)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._stopping.is_set():
            log.warning("second signal: stopping without waiting for running jobs")
            self.stop(hard=True)
        else:
            log.info("received %s: finishing running jobs (up to %.0fs), then exiting",
                     signal.Signals(signum).name, self.settings.shutdown_grace)
            self.stop()

    def _shutdown(self) -> None:
        if self.leadership:
            self.leadership.stop()  # step down first: the next leader takes over while we drain (still alive)
        deadline = time.monotonic() + self.settings.shutdown_grace
        # With the database away, recording outcomes would wait forever: give up SHUTDOWN_WRITE_GRACE seconds
        # after the grace period; what is not written is rescued (and run again) once this session is gone.
        give_up = threading.Timer(self.settings.shutdown_grace + SHUTDOWN_WRITE_GRACE, self._hard_stop.set)
        give_up.daemon = True
        give_up.start()
        for runner in list(self._runners):
            t = runner.thread
            while t is not None and t.is_alive() and time.monotonic() < deadline and not self._hard_stop.is_set():
                t.join(0.05)
        if self._async is not None:
            self._async.drain(deadline, self._hard_stop)
        for ctx in self._contexts():
            ctx.cancel_reason = ctx.cancel_reason or "shutdown"
            ctx.cancel_event.set()
        if self._async is not None:
            self._async.stop()  # the cancelled async jobs end (outcome `interrupted`) before the requeue
        self._flush_completions()
        if self.worker_id is not None:
            try:
                with self._pool().connection(timeout=5) as conn:
                    requeued = conn.execute(self.q.requeue_worker_jobs, {"worker_id": self.worker_id}).fetchall()
                    conn.execute(self.q.unregister_worker, {"id": self.worker_id})
                if requeued:
                    log.warning("requeued %d unfinished job(s): %s", len(requeued),
                                ", ".join(str(r[0]) for r in requeued))
            except psycopg.Error as exc:
                log.error("could not requeue/unregister on shutdown: %s (the leader will rescue them)",
                          _first_line(exc))
        if self.leadership:
            self.leadership.close()  # the liveness lock goes last: nothing of ours is left to rescue
        self._done_event.set()
        if self._otel_metrics is not None:
            self._otel_metrics.close()  # the last export, while the pool still answers its gauges
        if self.pool:
            self.pool.close(timeout=2)
        log.info("worker %s stopped", self.name)

    def _pool(self) -> ConnectionPool:
        assert self.pool is not None
        return self.pool

    def _configure_connection(self, conn: psycopg.Connection) -> None:
        """Every pool connection: empty job args load without the JSON decoder; behind a transaction pooler
        (PgBouncer < 1.21), server-side prepared statements break, so they are turned off."""
        conn.adapters.register_loader("jsonb", _JsonbLoader)
        reason = pooler_suspected(conn, self.q)
        if reason:
            conn.prepare_threshold = None
            if not self._pooled_logged:
                self._pooled_logged = True
                log.info("database connections go through a pooler or proxy (%s): prepared statements off", reason)
        else:  # a session of our own: a task's SQL ends server-side when this process dies
            prepare_session(conn, self.q)

    # ------------------------------------------------------------------ liveness, registration and heartbeat
    def _worker_params(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "pid": self.pid, "queues": list(self.settings.queues),
                "concurrency": self.settings.concurrency, "version": __version__}

    def _join(self, conn: psycopg.Connection) -> None:
        """On every (re)connection of the lock connection: register (the first time), take this worker's
        liveness lock, and make sure its row exists under the same id."""
        q = self.q
        if self.worker_id is None:
            self.worker_id = one(conn.execute(q.register_worker, self._worker_params()))[0]
        lock = q.worker_lock(self.worker_id)
        if not one(conn.execute(q.try_worker_lock, lock))[0]:
            # Our session from before a network cut, which the server has not noticed yet, still holds it.
            conn.execute(q.end_stale_worker_session, lock)
            deadline = time.monotonic() + 5
            while not one(conn.execute(q.try_worker_lock, lock))[0]:
                if time.monotonic() > deadline:
                    raise psycopg.OperationalError(f"the liveness lock of worker {self.worker_id} is held by "
                                                   "another session")
                time.sleep(0.05)
            log.warning("took the liveness lock of worker %s back from its previous session", self.worker_id)
        if self._joined:
            inserted = one(conn.execute(q.rejoin_worker, {"id": self.worker_id, **self._worker_params()}))[0]
            if inserted:
                dropped = self._forget_pending()
                log.warning("worker %s had been declared dead (its session was gone); joined again under the same "
                            "id: outcomes of its jobs rescued meanwhile are refused, and %d claimed job(s) it had "
                            "not started are left to their new owners", self.worker_id, dropped)
        self._joined = True
        self.alive.set()

    def _forget_pending(self) -> int:
        """Drop every runner's claimed-but-unstarted jobs (they were rescued while this worker was away)."""
        dropped = 0
        for runner in list(self._runners):
            with runner.lock:
                dropped += len(runner.pending)
                runner.pending.clear()
        with self._unreleased_lock:
            dropped += len(self._unreleased)
            self._unreleased = []
        return dropped

    def _session_lost(self) -> None:
        if self.alive.is_set():
            self.alive.clear()
            if not self._stopping.is_set():
                log.warning("lock connection lost: not claiming new jobs until the liveness lock is back "
                            "(running jobs go on)")

    def is_leader(self) -> bool:
        return bool(self.leadership and self.leadership.is_leader.is_set())

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_interval):
            try:
                self.heartbeat()
                self._outage.ok()
            except psycopg.Error as exc:
                self._outage.failed(f"heartbeat: {_first_line(exc)}")

    def heartbeat(self) -> None:
        with self._pool().connection() as conn:
            row = conn.execute(self.q.heartbeat_worker, {
                "id": self.worker_id, "leader": self.is_leader(), "stopping": self._stopping.is_set()}).fetchone()
            if row is None and self.alive.is_set():  # removed while our lock was briefly free: join again
                conn.execute(self.q.rejoin_worker, {"id": self.worker_id, **self._worker_params()})
                log.warning("worker %s had been declared dead; joined again under the same id (%d claimed job(s) "
                            "it had not started are left to their new owners)", self.worker_id, self._forget_pending())
            telemetry.emit("worker.heartbeat")
            if not self.is_leader() and time.monotonic() >= self._next_foreign_check:
                self._next_foreign_check = time.monotonic() + FOREIGN_LEADER_CHECK_EVERY
                self._report_foreign_leader(conn)
            if self._running:
                with self._running_lock:
                    ids = list(self._running)
                for job_id, ours in conn.execute(self.q.cancel_requested_jobs,
                                                 {"worker_id": self.worker_id, "ids": ids}):
                    with self._running_lock:
                        entry = self._running.get(job_id)
                    if entry and not ours:
                        self._disown(*entry)
                    elif entry and not entry[1].cancel_event.is_set():
                        log.info("job %s: cancel requested", job_id)
                        entry[1].cancel_reason = "operator"
                        entry[1].cancel_event.set()

    def _disown(self, job: ClaimedJob, ctx: JobContext) -> None:
        """A running job that is no longer this worker's attempt (cancelled and taken from it by overlap
        terminate_previous): ask it to stop, record nothing for it, and give its runner's place to a new runner, so
        a task that ignores the request (a Python loop) does not hold a slot of this worker's concurrency."""
        with self._running_lock:
            if self._running.pop(job.id, None) is None:
                return
        ctx.cancel_reason = "disowned"
        ctx.cancel_event.set()
        log.warning("job %s (%s): terminated by a newer slot of its schedule; abandoning it",
                    job.id, job.task, extra=_log_fields(job))
        for runner in list(self._runners):
            if runner.current is not None and runner.current[0] is job and not runner.retired:
                runner.retired = True
                self._release_pending(runner, "its runner was retired")
                self._start_runner()
                break

    def _report_foreign_leader(self, conn: psycopg.Connection) -> None:
        """A session that is not a live worker holds the leader lock: no worker can lead until it ends. Say
        which one and how to end it, once per minute and holder (the check runs every few heartbeats)."""
        holder = conn.execute(self.q.leader_backend, self.q.lock).fetchone()
        if holder is None or holder[4] is not None:
            self._foreign_reported = None
            return
        pid, app, client, since = holder[0], holder[1], holder[2], holder[3]
        now = time.monotonic()
        if self._foreign_reported == pid and now < self._foreign_next:
            return
        self._foreign_reported, self._foreign_next = pid, now + 60
        log.error("the leader lock is held by backend %s (application_name %r, client %s, connected since %s), "
                  "which is not a live pgjobs worker: no cron slots are scheduled until it ends; end it with "
                  "SELECT pg_terminate_backend(%s)", pid, app, client or "local socket", since, pid)

    def _contexts(self) -> list[JobContext]:
        with self._running_lock:
            return [ctx for _, ctx in self._running.values()]

    # ------------------------------------------------------------------ supervision (no queries)
    def _supervise_loop(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY):
            try:
                self._supervise()
            except Exception:  # noqa: BLE001 - the supervisor must outlive any surprise
                log.exception("supervisor pass failed")

    def _supervise(self) -> None:
        if self._unreleased and self.alive.is_set():
            with self._unreleased_lock:
                ids, self._unreleased = self._unreleased, []
            self._release(ids, "a release that had failed")
        now = time.monotonic()
        for runner in list(self._runners):
            current = runner.current
            if current is None or runner.retired:
                continue
            job, ctx = current
            if ctx.timeout is not None and now - ctx.started > ctx.timeout + 0.5:
                self._abandon(runner, job, ctx, now)
            elif runner.pending and now - runner.current_since > HOLD_LIMIT:
                runner.released = True
                self._release_pending(runner, f"job {job.id} is slow")
            elif runner.pending and now - runner.batch_since > HOLD_LIMIT:
                # Jobs just under FAST_JOB add up: a batch never keeps others waiting longer than HOLD_LIMIT.
                runner.released = True
                self._release_pending(runner, "its batch outgrew HOLD_LIMIT")

    def _release_pending(self, runner: Runner, why: str) -> None:
        """Give back jobs a runner claimed but has not started, so other runners or workers take them."""
        with runner.lock:
            jobs = list(runner.pending)
            runner.pending.clear()
        if jobs:
            self._release([j.id for j in jobs], why)

    def _release(self, ids: list[int], why: str) -> None:
        """release_jobs, or keep the ids to try again on the next supervisor pass: the jobs are still this
        live worker's in the database, so nobody would rescue them if the release were forgotten."""
        try:
            with self._pool().connection() as conn:
                conn.execute(self.q.release_jobs, {"ids": ids, "worker_id": self.worker_id})
            log.info("released %d claimed job(s) back to the queue (%s)", len(ids), why)
        except psycopg.Error as exc:
            self._outage.failed(f"releasing {len(ids)} claimed job(s): {_first_line(exc)}")
            with self._unreleased_lock:
                self._unreleased.extend(ids)
        self._signal_work()

    def _abandon(self, runner: Runner, job: ClaimedJob, ctx: JobContext, now: float) -> None:
        """A Python task past its timeout: job failed (or retried), runner retired and replaced."""
        with self._running_lock:
            if self._running.pop(job.id, None) is None:
                return
        runner.retired = True
        ctx.cancel_reason = "timeout"  # this thread records the outcome; the runner, if it ever returns, does not
        ctx.cancel_event.set()
        log.error("job %s (%s) timed out after %.1fs; abandoning it", job.id, job.task, ctx.timeout,
                  extra=_log_fields(job))
        self._release_pending(runner, "its runner was retired")
        self._record_failure(job, f"timed out after {ctx.timeout:g}s", "", now - ctx.started, retry=True)
        self._start_runner()  # the abandoned thread ends when (if ever) its task returns

    # ------------------------------------------------------------------ notifications
    def _signal_work(self, everyone: bool = False) -> None:
        with self._work:
            self._work_gen += 1
            if everyone:
                self._work.notify_all()
            else:
                self._work.notify(1)

    def _listen_loop(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                # LISTEN needs a session, like the leader lock: behind a transaction pooler it uses the direct URL.
                with psycopg.connect(self.settings.lock_url, autocommit=True, prepare_threshold=None,
                                     application_name=f"pgjobs listener {self.name}", **KEEPALIVES) as conn:
                    conn.execute(self.q.listen_jobs)
                    conn.execute(self.q.listen_schedules)
                    delay = 0.1
                    self._signal_work(everyone=True)  # we may have missed notifications while disconnected
                    if self.duties:
                        self.duties.scheduler.wake.set()
                    while not self._stopping.is_set():
                        notified = False
                        for note in conn.notifies(timeout=self.settings.poll_interval, stop_after=64):
                            if note.channel == self.q.jobs_channel:
                                notified = True
                                self._signal_work()
                            elif self.duties:
                                self.duties.scheduler.wake.set()
                        if not notified:  # the fallback poll: one runner looks for due work (retries, etc.)
                            self._signal_work()
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                self._outage.failed(f"listener: {_first_line(exc)}")
                self._signal_work(everyone=True)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)

    def _due_loop(self) -> None:
        """Sleep until the earliest future job of this worker's queues is due, then wake a runner. Re-read
        whenever a runner went idle (`_due_recheck`), at most every DUE_MIN_INTERVAL."""
        queues = list(self.settings.queues)
        delay = 0.05
        since: datetime | None = None  # the previous read's clock: nothing due after it goes unseen
        while not self._stopping.is_set():
            self._due_recheck.clear()
            try:
                with self._pool().connection() as conn:
                    row: tuple[float | None, datetime] = one(
                        conn.execute(self.q.next_due_in, {"queues": queues, "since": since}))
                    due_in, since = row  # an aggregate's one row; its clock is never NULL
                delay = 0.05
            except psycopg.Error:
                due_in = None  # the runners' own retries report the outage
                since = None
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
            if due_in is not None and due_in <= 0:  # fell due since the last read, maybe after a runner looked
                self._signal_work()
                continue
            wait = DUE_MAX_SLEEP if due_in is None else min(DUE_MAX_SLEEP, due_in + 0.001)
            if not self._due_recheck.wait(wait):
                if due_in is not None and not self._stopping.is_set():
                    self._signal_work()
            else:
                self._stopping.wait(DUE_MIN_INTERVAL)  # bounds the reads when runners go idle often

    # ------------------------------------------------------------------ claiming and running
    def _start_runner(self) -> None:
        with self._runners_lock:
            runner = Runner(name=f"pgjobs-runner-{len(self._runners)}")
            self._runners.append(runner)
        runner.thread = threading.Thread(target=self._runner_loop, args=(runner,), name=runner.name, daemon=True)
        runner.thread.start()

    def claim_statement(self) -> str:
        """One queue walks ix_jobs_claim in order; by default the claim does not wait for its WAL flush."""
        one = len(self.settings.queues) == 1
        if self.settings.synchronous_claims:
            return self.q.claim_jobs if one else self.q.claim_jobs_any_queue
        return self.q.claim_jobs_async_commit if one else self.q.claim_jobs_any_queue_async_commit

    def _claim(self, limit: int) -> list[ClaimedJob]:
        queues = self.settings.queues
        with self._pool().connection() as conn:
            # Unprepared: the planner sees the segments and prunes (and locks) every other partition away.
            params = {"queue": queues[0], "queues": list(queues), "limit": limit, "segs": self.segments.get(conn),
                      "worker_id": self.worker_id, "worker": self.name}
            try:
                rows: list[ClaimRow] = conn.execute(self._claim_sql, params, prepare=False).fetchall()
            except psycopg.errors.SerializationFailure:  # a row the leader moved out of a closed segment
                rows = conn.execute(self._claim_sql, params, prepare=False).fetchall()
        now = time.monotonic()
        jobs = [ClaimedJob(*r, claimed=now) for r in rows]
        if telemetry.active():
            for job in jobs:
                telemetry.emit("job.claimed", task=job.task, queue=job.queue,
                               # Lateness is the first attempt's: a retry's delay is not lateness.
                               lateness=((job.started_at - job.slot).total_seconds()
                                         if job.slot and job.attempt == 1 else None),
                               wait=(job.started_at - job.scheduled_at).total_seconds())
        return jobs

    def _runner_loop(self, runner: Runner) -> None:
        batch = 1
        delay = 0.05
        while not self._stopping.is_set() and not runner.retired:
            gen = self._work_gen
            if not self.alive.is_set():  # no liveness lock, no claims: the leader may be rescuing our jobs
                self.alive.wait(0.1)
                continue
            try:
                jobs = self._claim(batch)
                delay = 0.05
                self._outage.ok()
            except psycopg.Error as exc:
                self._outage.failed(f"claim: {_first_line(exc)}")
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            if not jobs:
                self._due_recheck.set()  # idle: the due timer reads the next future run time
                with self._work:
                    while gen == self._work_gen and not self._stopping.is_set():
                        self._work.wait()
                batch = 1
                continue
            if len(jobs) == batch:
                self._signal_work()  # a full batch: there may be more, let an idle sibling look too
            with runner.lock:
                runner.pending.extend(jobs)
                runner.batch_since, runner.released = time.monotonic(), False
            slowest = 0.0
            ran = 0
            while not self._stopping.is_set() and not runner.retired and self.alive.is_set():
                with runner.lock:
                    if not runner.pending:
                        break
                    job = runner.pending.popleft()
                if self._async is not None and self._async.owns(job.task):
                    if not self._async.submit(job, runner):  # hands off at once while a slot is free
                        break
                    ran += 1
                    continue
                seconds = self._run_job(job, runner)
                slowest = max(slowest, seconds)
                ran += 1
            if runner.released:  # the batch was too big for HOLD_LIMIT: claim what fit in it next time
                batch = max(1, min(ran, batch // 2))
            elif slowest < FAST_JOB:
                batch = min(batch * 2, MAX_BATCH)
            else:
                batch = 1 if slowest > HOLD_LIMIT else max(1, batch // 2)

    def _connect_for_task(self) -> Any:
        return self._pool().connection()

    def cached_schedule_name(self, schedule_id: int | None) -> str | None:
        return self._schedule_names.get(schedule_id) if schedule_id is not None else None

    def schedule_name(self, schedule_id: int | None) -> str | None:
        """A schedule's name for a traced run's span: read once per schedule id (names never change), None
        when it cannot be read (the span then carries the id alone)."""
        if schedule_id is None:
            return None
        name = self._schedule_names.get(schedule_id)
        if name is None:
            try:
                with self._pool().connection() as conn:
                    row = conn.execute(self.q.schedule_name, {"id": schedule_id}).fetchone()
            except psycopg.Error:
                return None
            if row is None:
                return None
            name = str(row[0])
            if len(self._schedule_names) < SCHEDULE_NAMES_MAX:
                self._schedule_names[schedule_id] = name
        return name

    def _set_backend(self, job_id: int, pid: int | None) -> None:
        try:
            with self._pool().connection() as conn:
                conn.execute(self.q.set_job_backend, {"id": job_id, "pid": pid})
        except psycopg.Error as exc:
            log.warning("job %s: could not record backend pid: %s", job_id, _first_line(exc))

    def _run_job(self, job: ClaimedJob, runner: Runner) -> float:
        """Run one job and record its outcome; returns how long it ran."""
        started = time.monotonic()
        job.waited = max(0.0, started - job.claimed) if job.claimed else 0.0
        ctx = JobContext(
            id=job.id, task=job.task, args=job.args, attempt=job.attempt, max_attempts=job.max_attempts,
            queue=job.queue, schedule_id=job.schedule_id, slot=job.slot, worker=self.name, timeout=job.timeout,
            started=started, queries=self.q, _connect=self._connect_for_task, _on_backend=self._set_backend,
        )
        with self._running_lock:
            self._running[job.id] = (job, ctx)
        runner.current, runner.current_since = (job, ctx), started
        outcome = "completed"
        span = otel.start_attempt(job, self.schedule_name(job.schedule_id)) if otel.enabled else None
        error: BaseException | None = None
        try:
            task = get_task(job.task)
            if task.pass_context:
                result = task.fn(ctx, **job.args)
            else:
                result = task.fn(**job.args)
            if inspect.isawaitable(result):
                raise TaskError(f"task '{job.task}' returned an awaitable: declare it `async def` to run it on "
                                "the worker's event loop")
        except SkipJob as exc:
            outcome = "skipped"
            if ctx.cancel_reason == "disowned":
                outcome = "abandoned"
            else:
                self._finish_special(job, "skipped", str(exc), time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001 - a task's failure is data, not a worker crash
            error = exc
            seconds = time.monotonic() - started
            interrupted = ctx.cancelled and isinstance(exc, JobCancelled | psycopg.errors.QueryCanceled)
            reason = ctx.cancel_reason if ctx.cancelled else None
            if reason == "disowned":
                outcome = "abandoned"  # no longer this worker's attempt: nothing to record
            elif reason == "timeout":
                outcome = "timed out"  # the supervisor recorded it: failed, retried while attempts remain
            elif interrupted and reason == "shutdown":
                outcome = "interrupted"  # the shutdown requeues it, attempt refunded
            elif interrupted and reason == "operator":
                outcome = "cancelled"
                self._record_failure(job, f"cancelled: {_first_line(exc)}", "", seconds, retry=False,
                                     final_state="cancelled")
            else:
                outcome = "failed"
                self._record_failure(job, _first_line(exc), traceback.format_exc(limit=20), seconds, retry=True)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
        else:
            if ctx.cancel_reason == "disowned":
                outcome = "abandoned"
            else:
                self._record_success(job, time.monotonic() - started, result)
        finally:
            if span is not None:
                otel.end_attempt(span, outcome, error)
            runner.current = None
            with self._running_lock:
                self._running.pop(job.id, None)
            seconds = time.monotonic() - started
            telemetry.emit("job.ran", task=job.task, queue=job.queue, outcome=outcome, seconds=seconds)
            if log.isEnabledFor(logging.INFO):
                log.info("job %s %s %s in %.3fs", job.id, job.task, outcome, seconds, extra=_log_fields(job))
        return seconds

    def _job_context(self, job: ClaimedJob, started: float) -> JobContext:
        return JobContext(
            id=job.id, task=job.task, args=job.args, attempt=job.attempt, max_attempts=job.max_attempts,
            queue=job.queue, schedule_id=job.schedule_id, slot=job.slot, worker=self.name, timeout=job.timeout,
            started=started, queries=self.q, _connect=self._connect_for_task, _on_backend=self._set_backend,
        )

    def _record_success(self, job: ClaimedJob, seconds: float, result: Any) -> None:
        """Hand a successful job to the completer, which records it in its next batch (sync and async jobs)."""
        with self._done_lock:
            self._done.append((job.id, job.attempt, job.seg, job.waited, seconds, _jsonable(result)))
            if job.schedule_id is not None:
                self._finished_schedules.add(job.schedule_id)
        self._done_event.set()

    def _job_ran(self, job: ClaimedJob, outcome: str, seconds: float) -> None:
        telemetry.emit("job.ran", task=job.task, queue=job.queue, outcome=outcome, seconds=seconds)
        if log.isEnabledFor(logging.INFO):
            log.info("job %s %s %s in %.3fs", job.id, job.task, outcome, seconds, extra=_log_fields(job))

    def _record_failure(self, job: ClaimedJob, error: str, tb: str, seconds: float, *, retry: bool,
                        final_state: str = "failed") -> None:
        delay = backoff_delay(job.attempt, self.settings.backoff_base, self.settings.backoff_max)
        wait = 0.05
        while True:
            try:
                with self._pool().connection() as conn:
                    row = conn.execute(self.q.fail_job, {
                        "id": job.id, "segs": sorted({job.seg, PARKED}),
                        "attempt": job.attempt, "worker_id": self.worker_id, "retry": retry,
                        "final_state": final_state, "delay": delay, "waited": job.waited, "seconds": seconds,
                        "error": error[:2000],
                        "traceback": tb[-8000:]}, prepare=False).fetchone()
                    if row and job.schedule_id is not None:
                        self._wake_waiting_runs(conn, [job.schedule_id])
                    if row and row[0] == "available":  # a retry: every worker's due timer reads its run time
                        conn.execute(self.q.notify_jobs, {"channel": self.q.jobs_channel})
                self._outage.ok()
                if row is None:
                    log.warning("job %s: the outcome of attempt %d was refused: the job was rescued after this "
                                "worker's session ended, and another attempt owns it now", job.id, job.attempt,
                                extra=_log_fields(job))
                if row:
                    state = row[0]
                    telemetry.emit("job.recorded", task=job.task, queue=job.queue, state=state)
                    if state == "available":
                        log.warning("job %s %s failed (attempt %d/%d): %s; retry in %.1fs", job.id, job.task,
                                    job.attempt, job.max_attempts, error, delay, extra=_log_fields(job))
                    else:
                        log.error("job %s %s %s: %s", job.id, job.task, state, error, extra=_log_fields(job))
                return
            except psycopg.Error as exc:
                # Until it is written, for as long as the database is away: a lost outcome would leave the
                # job running under a live worker, which nobody rescues.
                self._outage.failed(f"job {job.id}: recording its outcome: {_first_line(exc)}")
                if self._hard_stop.wait(wait):
                    return
                wait = min(wait * 2, RETRY_MAX_DELAY)

    def _wake_waiting_runs(self, conn: psycopg.Connection, schedule_ids: list[int]) -> None:
        """A 'skip'/'queue' schedule runs one job at a time: when one ends and another of the same schedule is
        waiting, NOTIFY every worker (not only this one) so the waiting run starts now."""
        conn.execute(self.q.notify_waiting_schedule_runs, {"channel": self.q.jobs_channel, "ids": schedule_ids})

    def _finish_special(self, job: ClaimedJob, state: str, note: str, seconds: float) -> None:
        self._record_failure(job, note, "", seconds, retry=False, final_state=state)

    # ------------------------------------------------------------------ completions
    def _complete_loop(self) -> None:
        while not self._stopping.is_set():
            self._done_event.wait()
            self._done_event.clear()
            self._flush_completions()

    def _flush_completions(self) -> None:
        # One flush at a time: on shutdown, the main thread's flush returns only after a batch the completer
        # had already taken is written, so the requeue that follows never puts a completed job back.
        with self._flush_lock:
            self._flush_completions_locked()

    def _complete(self, conn: psycopg.Connection, batch: list[tuple[int, int, int, float, float, Any]]) -> set[int]:
        """Record a batch of successes; a job the leader moved to parked meanwhile is looked up there."""
        recorded: set[int] = set()
        for attempt in range(3):
            if attempt:  # what was not recorded in its segment: moved to parked, or refused
                batch = [(b[0], b[1], PARKED, *b[3:]) for b in batch if b[0] not in recorded and b[2] != PARKED]
                if not batch:
                    break
            params = {
                "ids": [b[0] for b in batch], "attempts": [b[1] for b in batch], "segs": [b[2] for b in batch],
                "in_segs": sorted({b[2] for b in batch}), "waited": [b[3] for b in batch],
                "seconds": [b[4] for b in batch],
                "results": [Jsonb(b[5]) if b[5] is not None else None for b in batch], "worker_id": self.worker_id,
            }
            try:
                recorded |= {r[0] for r in conn.execute(self.q.complete_jobs, params, prepare=False)}
            except psycopg.errors.SerializationFailure:  # a row moved meanwhile: look again
                continue
        return recorded

    def _flush_completions_locked(self) -> None:
        with self._done_lock:
            batch, self._done = self._done, []
        if not batch:
            return
        delay = 0.05
        while True:
            try:
                with self._pool().connection() as conn:
                    recorded = self._complete(conn, batch)
                    with self._done_lock:
                        finished, self._finished_schedules = self._finished_schedules, set()
                    if finished:
                        self._wake_waiting_runs(conn, sorted(finished))
                self._outage.ok()
                if len(recorded) < len(batch):
                    refused = [b[0] for b in batch if b[0] not in recorded]
                    log.warning("%d completion(s) refused (jobs %s): they were rescued after this worker's "
                                "session ended, and another attempt owns them now", len(refused),
                                ", ".join(map(str, refused[:20])))
                return
            except psycopg.Error as exc:
                self._outage.failed(f"recording {len(batch)} completion(s): {_first_line(exc)}")
                if self._hard_stop.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX_DELAY)


class _JsonbLoader(JsonbLoader):
    """jsonb as psycopg loads it, except that '{}' (the args of most jobs) skips the JSON decoder, about ten
    times cheaper per claimed job. Always a new dict, as json.loads gives."""

    def load(self, data: Any) -> Any:
        if data == b"{}":
            return {}
        return super().load(data)


def _log_fields(job: ClaimedJob) -> dict[str, Any]:
    """The fields every log line about a job carries (see logs.JOB_FIELDS)."""
    return {"job_id": job.id, "task": job.task, "attempt": job.attempt, "schedule_id": job.schedule_id,
            "slot": job.slot.isoformat() if job.slot else None}


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {"repr": repr(value)[:2000]}
