"""What the leader does while it leads, in one thread: schedule due slots, rescue orphans, prune history.

- Scheduler (`scheduler.py`): every due slot becomes one job; sleeps until the next slot or a change.
- Rescuer: a worker is dead exactly when Postgres says its session is gone: its liveness lock (held on its
  lock connection, see worker.py) is not in pg_locks. The leader looks every `maintenance_interval` seconds
  (one pg_locks read); a worker seen without its lock, and still without it `rescue_after` seconds later, is
  dead: its running jobs go back to `available` (or to `failed` when out of attempts) and its row is removed.
  Heartbeat age plays no part. A leader whose own lock session is younger than SETTLE seconds (it reconnected
  just now: after an outage, everyone did) declares nobody dead until its session is that old, so that every
  live worker has reconnected and taken its lock back first. A follower that had been connected all along and
  takes over from a killed leader rescues that leader's jobs at once.
- Ledger: every SETTLE_EVERY seconds the slots whose job has finished take its outcome (`settle_slots`, one
  write per slot), and the settled outcomes are emitted (`slot.recorded`: metrics). A schedule with
  `pause_after_failures` N whose last N slots that ran all failed is paused (audited as actor `pgjobs`).
- Pruner: retention is mostly the storage duty's (`storage.Rotator`, its own thread): it TRUNCATEs and DROPs
  whole days of history. The pruner deletes what is left older than its retention (rows of a day not yet
  expired as a whole, rows written by hand) in batches of `PRUNE_BATCH`, and the cron fence of old slots. The ledger is settled first, so pruning a job
  never loses what happened to its slot; ledger rows go after `retention_slots`.
- Storage (`storage.py`): rotates the ring of hot segments and reclaims them by TRUNCATE.

The duties start when leadership is gained and stop when it is lost; before each scheduling pass the
leader confirms it still holds the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from pgjobs import telemetry
from pgjobs.config import Settings
from pgjobs.queries import Queries
from pgjobs.rows import one
from pgjobs.scheduler import Scheduler
from pgjobs.storage import Rotator

if TYPE_CHECKING:
    from pgjobs.worker import Worker

log = logging.getLogger("pgjobs.maintenance")

PRUNE_BATCH = 5000
PRUNE_EVERY = 60.0
# How old the leader's own lock session must be before it declares a worker dead: several times the lock
# connection's longest reconnect pause (leadership.RECONNECT_MAX_DELAY), so that after an outage (which renewed
# every session, the leader's too) every live worker has its lock back first.
SETTLE = 3.0
HORIZON_LOG_EVERY = 60.0   # one warning a minute per holder while it holds the xmin horizon
HORIZON_EVERY = 5.0        # the horizon check's own cadence (the liveness check runs several times a second)
SETTLE_EVERY = 1.0         # the slot ledger takes the outcomes of finished slot jobs this often, while some are
SETTLE_IDLE_EVERY = 10.0   # pending (or the scheduler inserted slots); with none pending, this often
SETTLE_BATCH = 5000


class LeaderDuties:
    def __init__(self, pool: ConnectionPool, queries: Queries, settings: Settings, worker: Worker | None = None) -> None:
        self._pool = pool
        self._q = queries
        self._settings = settings
        self._worker = worker
        self.scheduler = Scheduler(pool, queries, grace=settings.catchup_grace)
        self.rotator = Rotator(pool, queries, settings)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._settled_at = time.monotonic() + SETTLE
        self._free_since: dict[int, float] = {}  # worker id -> when this leader first saw its lock free
        self._horizon_logged: dict[tuple[Any, ...], float] = {}
        self.pending = True  # slots may wait for their outcome (settle() knows)

    def start(self) -> None:
        self._stop.clear()
        leadership = getattr(self._worker, "leadership", None)
        session_start = getattr(leadership, "session_started", None) or time.monotonic()
        self._settled_at = session_start + SETTLE
        self._free_since.clear()
        if self._worker is not None:
            try:
                with self._pool.connection() as conn:
                    conn.execute(self._q.claim_leadership_row, {"id": self._worker.worker_id})
            except psycopg.Error as exc:
                log.warning("could not mark this worker as leader: %s", exc)
        self.rotator.start()
        self._thread = threading.Thread(target=self._loop, name="pgjobs-leader", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "") -> None:
        self._stop.set()
        self.scheduler.wake.set()
        self.rotator.stop()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(10)

    def _leading(self) -> bool:
        worker = self._worker
        if self._stop.is_set():
            return False
        if worker is None or worker.leadership is None:
            return True
        return worker.leadership.confirm()

    def _loop(self) -> None:
        """Wake for the next slot, a schedule change, or the next rescue/prune round, whichever is first.

        Idle cost: one scheduling check per MAX_SLEEP (or per change) and one rescue statement per
        maintenance interval; no query runs just because the loop woke up.
        """
        next_pass = 0.0
        next_maintenance = 0.0
        next_prune = time.monotonic() + 5.0
        next_horizon = 0.0
        next_settle = 0.0
        settled_at_inserts = -1
        delay = 0.05
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if self.scheduler.wake.is_set() or now >= next_pass:
                    if not self._leading():  # confirm the lock before every scheduling pass
                        return
                    self.scheduler.wake.clear()
                    self.scheduler.run_pass()
                    next_pass = time.monotonic() + self.scheduler.seconds_until_due()
                if now >= next_maintenance:
                    self.rescue()
                    next_maintenance = now + self._settings.maintenance_interval
                if now >= next_horizon:
                    self.watch_horizon()
                    next_horizon = now + HORIZON_EVERY
                if now >= next_settle or settled_at_inserts != self.scheduler.inserted_total:
                    settled_at_inserts = self.scheduler.inserted_total
                    self.settle()
                    # An idle leader reads the ledger every SETTLE_IDLE_EVERY only (a backfill's slots, from
                    # another process, are settled then); new slots or pending ones make it every second.
                    next_settle = now + (SETTLE_EVERY if self.pending else SETTLE_IDLE_EVERY)
                if now >= next_prune:
                    self.prune()
                    next_prune = now + PRUNE_EVERY
                wait = min(next_pass, next_maintenance, next_prune, next_horizon, next_settle) - time.monotonic()
                delay = 0.05
            except psycopg.Error as exc:
                log.warning("leader pass failed: %s; retrying in %.2fs", str(exc).strip().splitlines()[0], delay)
                next_pass = 0.0
                wait = delay
                delay = min(delay * 2, 1.0)
            if wait > 0:
                self.scheduler.wake.wait(wait)

    def dead_workers(self, conn: Any, now: float) -> list[int]:
        """Worker ids whose liveness lock this leader has seen free for `rescue_after` seconds, once its own
        lock session is SETTLE seconds old. One read of pg_locks; a lock seen held again forgets the worker's
        free time."""
        sessions = conn.execute(self._q.worker_sessions, self._q.lock).fetchall()
        known = set()
        for worker_id, alive in sessions:
            known.add(worker_id)
            if alive:
                self._free_since.pop(worker_id, None)
            else:
                self._free_since.setdefault(worker_id, now)
        for worker_id in list(self._free_since):
            if worker_id not in known:
                del self._free_since[worker_id]
        if now < self._settled_at:
            return []
        grace = self._settings.rescue_after
        return sorted(w for w, since in self._free_since.items() if now - since >= grace)

    def rescue(self) -> int:
        """Rescue the running jobs of dead workers and remove their rows, in one statement."""
        with self._pool.connection() as conn:
            dead = self.dead_workers(conn, time.monotonic())
            if not dead:
                return 0
            rows = conn.execute(self._q.rescue_orphans, {**self._q.lock, "ids": dead}).fetchall()
        rescued = 0
        for kind, ident, state, task, worker in rows:
            if kind == "worker":
                log.warning("removed dead worker %s (%s): its session ended", ident, worker)
                continue
            rescued += 1
            log.warning("rescued job %s (%s) from %s: now %s", ident, task, worker, state,
                        extra={"job_id": ident, "task": task})
            telemetry.emit("job.rescued", task=task, state=state, worker=worker)
        return rescued

    def watch_horizon(self) -> list[dict[str, Any]]:
        """Warn about whatever holds the xmin horizon back past `horizon_warn_age`: while it does, dead job
        rows pile up and every claim walks them. One line per holder, at most once per HORIZON_LOG_EVERY."""
        from pgjobs.admin import HORIZON_LIMIT, SLOT_XID_AGE, describe_horizon_holder

        with self._pool.connection() as conn:
            rows = conn.execute(self._q.horizon_holders, {
                "min_age": self._settings.horizon_warn_age, "slot_xid_age": SLOT_XID_AGE,
                "limit": HORIZON_LIMIT, "query_chars": 200}).fetchall()
        holders = [dict(zip(("kind", "pid", "name", "client_addr", "since", "age_seconds", "xid_age", "state",
                             "query"), r, strict=True)) for r in rows]
        now = time.monotonic()
        seen = set()
        for h in holders:
            key = (h["kind"], h["pid"], h["name"], h["since"])
            seen.add(key)
            if now - self._horizon_logged.get(key, -HORIZON_LOG_EVERY) >= HORIZON_LOG_EVERY:
                self._horizon_logged[key] = now
                log.warning("%s", describe_horizon_holder(h))
        self._horizon_logged = {k: v for k, v in self._horizon_logged.items() if k in seen}
        return holders

    def settle(self) -> int:
        """Write the outcome of every slot whose job has finished into the ledger; returns how many. Sets
        `pending`: whether slots still wait for their job's outcome."""
        total = 0
        while True:
            with self._pool.connection() as conn:
                rows = conn.execute(self._q.settle_slots, {"limit": SETTLE_BATCH}).fetchall()
            for _schedule_id, _slot, outcome, lateness, name in rows:
                telemetry.emit("slot.recorded", schedule=name, outcome=outcome, count=1, lateness=lateness)
            total += len(rows)
            failed = sorted({r[0] for r in rows if r[2] == "failed"})
            if failed:
                self.pause_failing(failed)
            if len(rows) < SETTLE_BATCH:
                with self._pool.connection() as conn:
                    self.pending = bool(one(conn.execute(self._q.pending_slots_exist))[0])
                return total

    def pause_failing(self, schedule_ids: list[int]) -> list[str]:
        """Pause the schedules whose last `pause_after_failures` slots all failed: through the admin API, so
        the pause is audited (actor `pgjobs`) and notified like an operator's; logged at ERROR."""
        from pgjobs.admin import Admin, AdminError

        with self._pool.connection() as conn:
            failing = conn.execute(self._q.failing_schedules, {"ids": schedule_ids}).fetchall()
        paused = []
        for _sid, name, count in failing:
            try:
                Admin(self._settings, actor="pgjobs", pool=self._pool).pause_for_failures(name, count)
            except AdminError as exc:  # removed meanwhile
                log.warning("schedule %s: could not pause it after %d failed slots: %s", name, count, exc)
                continue
            log.error("schedule %s paused: its last %d slots failed (pause_after_failures); resume it with "
                      "`pgjobs schedule resume %s`", name, count, name)
            telemetry.emit("schedule.paused", schedule=name, reason="failures")
            paused.append(name)
        return paused

    def prune(self) -> int:
        s = self._settings
        self.settle()  # a job's outcome is in the ledger before the job can go
        with self._pool.connection() as conn:
            slots = conn.execute(self._q.prune_slots, {"age": s.retention_slots, "batch": PRUNE_BATCH}).rowcount
        if slots:
            log.info("pruned %d slot ledger row(s) older than %.0f s", slots, s.retention_slots)
        total = 0
        for states, age in ((["completed", "skipped"], s.retention_completed),
                            (["failed", "cancelled"], s.retention_failed)):
            for _ in range(10):  # bounded work per round; the next round continues
                with self._pool.connection() as conn:
                    n = conn.execute(self._q.prune_jobs, {"states": states, "age": age, "batch": PRUNE_BATCH}).rowcount
                total += n
                if n < PRUNE_BATCH:
                    break
        # The cron fence of slots whose jobs are past every retention (a slot that old is never planned again).
        with self._pool.connection() as conn:
            conn.execute(self._q.prune_job_slots, {"age": max(s.retention_completed, s.retention_failed, s.retention_slots),
                                                   "batch": PRUNE_BATCH})
        if total:
            log.info("pruned %d finished job(s)", total)
        return total
