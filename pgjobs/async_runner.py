"""Async tasks: one asyncio event loop per worker process, in a thread of its own, next to the sync runners.

How a job gets here: the sync runners claim jobs in batches as always (one claim statement for every task); a
runner that meets a job of an `async def` task hands it to this loop (`submit`) instead of running it, and goes
on with its batch at once, so async jobs are claimed in batches that grow like those of fast sync jobs.

Invariants:
- At most `async_concurrency` async jobs run at once: a hand-off takes a slot of a semaphore and waits while every
  slot is taken; a runner that waits longer than HOLD_LIMIT gives back the rest of its batch to the queue.
- Outcomes are those of the sync path, written by the same Worker code: a success joins the completer's batch
  (fenced by attempt and worker id); a failure, skip or cancel is written by `Worker._record_failure` on a
  thread of this runner's executor, never on the loop, so a slow database does not stall other async jobs.
- Timeouts and cancel requests cancel the job's asyncio task: the timeout (`asyncio.timeout`) ends it `failed`
  and retried while attempts remain; an operator cancel (delivered by the heartbeat, seen by the loop's tick
  within TICK seconds) ends it `cancelled`; on shutdown, jobs get the grace period, then are cancelled and
  requeued by the worker; a job no longer this worker's attempt (`disowned`) is cancelled and nothing recorded.
- `ctx.aconnection()` (pass_context=True) draws from an AsyncConnectionPool of this loop, opened on first use
  and sized ASYNC_POOL_MAX: a task waiting for a connection waits within its own timeout.
- A task that blocks the loop (sync work inside `async def`) is named in a warning: the loop's tick stamps the
  time every TICK seconds; a watchdog thread that sees no stamp for more than `async_lag_warn` seconds logs the
  job and task the loop is running at that moment.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pgjobs import otel
from pgjobs.tasks import JobContext, SkipJob, TaskError, get_task

if TYPE_CHECKING:
    from pgjobs.worker import ClaimedJob, Runner, Worker

log = logging.getLogger("pgjobs.worker")

TICK = 0.05            # seconds between the loop's stamps and its look at cancel requests
STOP_WAIT = 2.0        # seconds the loop gets to end cancelled tasks on shutdown
ASYNC_POOL_MAX = 20    # most connections ctx.aconnection() holds at once in one worker


class AsyncRunner:
    """The event loop thread of one worker, its slots and its lag watchdog."""

    def __init__(self, worker: Worker, concurrency: int, lag_warn: float) -> None:
        self.worker = worker
        self.concurrency = concurrency
        self.lag_warn = lag_warn
        self.slots = threading.BoundedSemaphore(concurrency)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, name="pgjobs-async-loop", daemon=True)
        self._watchdog_thread = threading.Thread(target=self._watchdog, name="pgjobs-async-watchdog", daemon=True)
        self._stopped = threading.Event()
        self._tasks: dict[asyncio.Task[None], tuple[ClaimedJob, JobContext]] = {}  # touched on the loop only
        self._count = 0                      # running async jobs (any thread reads it)
        self._count_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._beat = time.monotonic()
        # Outcomes other than success block on the database: written on these threads, never on the loop.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pgjobs-async-record")
        self._apool: Any = None          # psycopg_pool.AsyncConnectionPool, opened on first aconnection()
        self._apool_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.thread.start()
        self._watchdog_thread.start()
        log.info("async loop started (async concurrency %d)", self.concurrency)

    def running(self) -> int:
        return self._count

    def drain(self, deadline: float, hard_stop: threading.Event) -> None:
        """Shutdown: wait until no async job runs, the deadline passes, or a hard stop."""
        while not self._idle.wait(0.05):
            if time.monotonic() >= deadline or hard_stop.is_set():
                return

    def stop(self) -> None:
        """Give the loop STOP_WAIT seconds to end the tasks the shutdown cancelled, then stop it."""
        self._idle.wait(STOP_WAIT)
        self._stopped.set()
        if self._apool is not None and self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._apool.close(timeout=1), self.loop).result(STOP_WAIT)
            except Exception as exc:  # noqa: BLE001 - closing on shutdown: the process ends anyway
                log.warning("closing the async connection pool: %s", exc)
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_WAIT)
        self._executor.shutdown(wait=False, cancel_futures=False)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._tick())
        try:
            self.loop.run_forever()
        finally:
            for t in list(self._tasks):
                t.cancel()

    # ------------------------------------------------------------------ hand-off (runner threads)
    @staticmethod
    def owns(task_name: str) -> bool:
        """Is `task_name` a registered async task? (An unknown task fails on the sync path, as always.)"""
        try:
            return get_task(task_name).is_async
        except TaskError:
            return False

    def submit(self, job: ClaimedJob, runner: Runner) -> bool:
        """Start `job` on the loop once a slot is free; False when the worker stops first (the job stays
        claimed, and the shutdown requeues it)."""
        from pgjobs.worker import HOLD_LIMIT

        w = self.worker
        waited_since = time.monotonic()
        released = False
        while not self.slots.acquire(timeout=0.05):
            if w._stopping.is_set():
                return False
            if not released and time.monotonic() - waited_since > HOLD_LIMIT:
                released = runner.released = True  # the rest of the batch goes back to the queue
                w._release_pending(runner, "every async slot is taken")
        with self._count_lock:
            self._count += 1
            self._idle.clear()
        started = time.monotonic()
        job.waited = max(0.0, started - job.claimed) if job.claimed else 0.0
        ctx = w._job_context(job, started)
        ctx._aconnect = self._aconnect
        with w._running_lock:
            w._running[job.id] = (job, ctx)
        self.loop.call_soon_threadsafe(self._start, job, ctx)
        return True

    def _start(self, job: ClaimedJob, ctx: JobContext) -> None:
        t = self.loop.create_task(self._run(job, ctx), name=f"pgjobs job {job.id} {job.task}")
        self._tasks[t] = (job, ctx)

    # ------------------------------------------------------------------ connections for tasks (on the loop)
    @asynccontextmanager
    async def _aconnect(self) -> AsyncIterator[Any]:
        pool = self._apool or await self._open_pool()
        async with pool.connection() as conn:
            yield conn

    async def _open_pool(self) -> Any:
        from psycopg_pool import AsyncConnectionPool

        from pgjobs.leadership import CLIENT_CHECK_MS, KEEPALIVES, pooler_suspected

        if self._apool_lock is None:
            self._apool_lock = asyncio.Lock()
        async with self._apool_lock:
            if self._apool is not None:
                return self._apool
            w = self.worker
            q = w.q

            def probe() -> bool:
                with w._pool().connection() as conn:
                    return pooler_suspected(conn, q) is not None

            pooled = await asyncio.to_thread(probe)

            async def configure(conn: Any) -> None:
                if pooled:  # behind a transaction pooler: no server-side prepared statements
                    conn.prepare_threshold = None
                else:  # a session of our own: a task's SQL ends server-side when this process dies
                    await conn.execute(q.set_server_keepalives)
                    if conn.info.server_version >= 140000:
                        await conn.execute(q.set_client_connection_check, {"ms": str(CLIENT_CHECK_MS)})

            pool = AsyncConnectionPool(
                w.settings.require_database(), min_size=1, max_size=max(1, min(self.concurrency, ASYNC_POOL_MAX)),
                open=False, name="pgjobs-async", configure=configure, timeout=30,
                kwargs={"application_name": f"pgjobs worker {w.name} async", "autocommit": True, **KEEPALIVES})
            await pool.open(wait=True, timeout=30)
            self._apool = pool
            return pool

    # ------------------------------------------------------------------ running (on the loop)
    async def _record(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        await self.loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _run(self, job: ClaimedJob, ctx: JobContext) -> None:
        from pgjobs.worker import _first_line

        w = self.worker
        started = ctx.started
        outcome = "completed"
        deadline: asyncio.Timeout | None = None
        span = None
        if otel.enabled:  # current in this job's own task context; a schedule's name is read once, off the loop
            name = w.cached_schedule_name(job.schedule_id)
            if name is None and job.schedule_id is not None:
                name = await asyncio.to_thread(w.schedule_name, job.schedule_id)
            span = otel.start_attempt(job, name)
        error: BaseException | None = None
        try:
            try:
                task = get_task(job.task)
                coro = task.fn(ctx, **job.args) if task.pass_context else task.fn(**job.args)
                if job.timeout is not None:
                    deadline = asyncio.timeout(job.timeout)
                    async with deadline:
                        result = await coro
                else:
                    result = await coro
            except SkipJob as exc:
                outcome = "skipped"
                if ctx.cancel_reason == "disowned":
                    outcome = "abandoned"
                else:
                    await self._record(w._finish_special, job, "skipped", str(exc), time.monotonic() - started)
            except (Exception, asyncio.CancelledError) as exc:  # a task's failure is data, not a worker crash
                error = exc
                seconds = time.monotonic() - started
                reason = ctx.cancel_reason if ctx.cancelled else None
                if deadline is not None and deadline.expired() and reason is None:
                    outcome = "timed out"
                    ctx.cancel_reason = "timeout"
                    with w._running_lock:
                        w._running.pop(job.id, None)
                    log.error("job %s (%s) timed out after %gs; its task was cancelled", job.id, job.task,
                              job.timeout, extra=_fields(job))
                    await self._record(w._record_failure, job, f"timed out after {job.timeout:g}s", "", seconds,
                                       retry=True)
                elif reason == "disowned":
                    outcome = "abandoned"
                elif reason == "shutdown" or (isinstance(exc, asyncio.CancelledError) and reason is None):
                    outcome = "interrupted"  # the shutdown requeues it, attempt refunded
                elif reason == "operator":
                    outcome = "cancelled"
                    await self._record(w._record_failure, job, f"cancelled: {_first_line(exc)}", "", seconds,
                                       retry=False, final_state="cancelled")
                else:
                    outcome = "failed"
                    await self._record(w._record_failure, job, _first_line(exc), traceback.format_exc(limit=20),
                                       seconds, retry=True)
            else:
                if ctx.cancel_reason == "disowned":
                    outcome = "abandoned"
                else:
                    w._record_success(job, time.monotonic() - started, result)
        finally:
            if span is not None:
                otel.end_attempt(span, outcome, error)
            with w._running_lock:
                w._running.pop(job.id, None)
            self._tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            w._job_ran(job, outcome, time.monotonic() - started)
            with self._count_lock:
                self._count -= 1
                if self._count == 0:
                    self._idle.set()
            self.slots.release()
            w._signal_work()  # a slot is free: an idle runner may claim again

    async def _tick(self) -> None:
        """Stamp the time for the watchdog and pass cancel requests (operator, shutdown, disowned) on to the
        tasks, every TICK seconds."""
        while True:
            self._beat = time.monotonic()
            for t, (_job, ctx) in list(self._tasks.items()):
                if ctx.cancelled and ctx.cancel_reason != "timeout" and not t.done() and not t.cancelling():
                    t.cancel()
            await asyncio.sleep(TICK)

    # ------------------------------------------------------------------ lag watchdog (its own thread)
    def _watchdog(self) -> None:
        warned_beat = None
        while not self._stopped.wait(min(TICK, self.lag_warn / 2)):
            beat = self._beat
            lag = time.monotonic() - beat - TICK
            if lag <= self.lag_warn or beat == warned_beat or self.worker._stopping.is_set():
                continue
            warned_beat = beat  # one warning per stall
            current = asyncio.current_task(self.loop) if self.loop.is_running() else None
            job = self._tasks.get(current)[0] if current in self._tasks else None  # type: ignore[index]
            if job is not None:
                log.warning("the async loop has been blocked for %.1fs by job %s, task %s: it runs blocking code "
                            "inside async def (use await, or asyncio.to_thread for sync work); every other async "
                            "job waits meanwhile", lag, job.id, job.task, extra=_fields(job))
            else:
                log.warning("the async loop has been blocked for %.1fs (not inside a job)", lag)


def _fields(job: ClaimedJob) -> dict[str, Any]:
    from pgjobs.worker import _log_fields

    return _log_fields(job)
