"""The leader's scheduling duty: turn every due cron slot into exactly one job row.

One pass, in one transaction:
1. take the due schedules with `SELECT ... FOR UPDATE SKIP LOCKED` (a second scheduler skips rows this one holds);
2. plan the slots due since each schedule's `next_run_at` (`plan_slots`, pure), applying the catch-up and
   overlap policies;
3. insert one job per planned slot, fenced by job_slots (`ON CONFLICT (schedule_id, slot) DO NOTHING`);
4. advance `next_run_at` to the first slot after now.

Exactly-once rests on the database, not on leadership alone: a stale or second leader re-reads
`next_run_at` under the row lock, and the unique constraint drops any slot that was already inserted.

Between passes the scheduler sleeps until the earliest `next_run_at` (measured on the database clock, so a
skewed host clock does not make it late), or until a schedule change is notified.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from pgjobs import cron, telemetry
from pgjobs.queries import Queries
from pgjobs.rows import one

log = logging.getLogger("pgjobs.scheduler")

# Schedules per transaction. Big on purpose: the jobs of a pass race the workers that run them for the same
# CPUs, so many small passes cost more in all than few big ones. 10,000 schedules due in one second, with a
# worker running their jobs meanwhile (bench/schedules_due.py, 2 cores): 1,000 per pass 0.59 s until all jobs
# existed, 10,000 per pass 0.21 s; the jobs' start lateness was the same at the median (0.33 s) and lower at
# the worst (0.45-0.53 s against 0.58-0.61 s). A pass holds its schedule rows locked for its ~0.2 s.
PASS_BATCH = 10_000
MAX_SLEEP = 60.0           # re-check at least this often even when nothing is due
RECENT_LIMIT = 10_000      # slots enumerated inside the catch-up grace window, per schedule and pass
# A run of missed cron slots is counted up to this many (enumerating them bounds the pass's time); beyond it the
# ledger row says "more than" (slot_count NULL). An interval schedule ('N seconds') is always counted exactly.
MISSED_COUNT_CAP = 20_000


@dataclass(frozen=True)
class PlannedSlot:
    slot: datetime
    state: str              # 'available' or 'skipped'
    note: str | None = None


@dataclass(frozen=True)
class Plan:
    slots: list[PlannedSlot]
    next_run_at: datetime
    dropped: int = 0        # missed slots the catch-up policy chose not to run
    replace: bool = False   # cancel/terminate the unfinished runs (overlap cancel_previous/terminate_previous)
    # The due slots that were not planned, as one range: (first, last, count; None = more than MISSED_COUNT_CAP).
    missed: tuple[datetime, datetime, int | None] | None = None
    windowed: bool = False  # some due slots were older than the catch-up window


def last_slots(spec: cron.CronSpec, tz: Any, first: datetime, until: datetime, count: int) -> list[datetime]:
    """The last `count` slots s with first <= s <= until, found without enumerating years of seconds."""
    lower = first - timedelta(microseconds=1)
    for window in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(days=32),
                   timedelta(days=367), timedelta(days=366 * 30)):
        start = max(lower, until - window)
        found = cron.slots_between(spec, tz, start, until)
        if len(found) >= count or start == lower:
            return found[-count:]
    return cron.slots_between(spec, tz, lower, until)[-count:]


def slot_range(spec: cron.CronSpec, tz: Any, start: datetime,
               until: datetime) -> tuple[datetime, datetime, int | None] | None:
    """The slots s with start <= s <= until as one ledger range (first, last, count; None = more than
    MISSED_COUNT_CAP), or None when there is none. Pure."""
    first = cron.slots_between(spec, tz, start - timedelta(microseconds=1), until, limit=1)
    if not first:
        return None
    last = last_slots(spec, tz, first[0], until, 1)[0]
    return first[0], last, cron.count_slots(spec, tz, first[0], last, MISSED_COUNT_CAP)


def plan_slots(
    spec: cron.CronSpec,
    tz: Any,
    next_run_at: datetime | None,
    now: datetime,
    *,
    catchup: str = "latest",
    catchup_max: int = 100,
    grace: float = 60.0,
    overlap: str = "skip",
    running: int = 0,
    waiting: int = 0,
    window: float | None = None,
) -> Plan:
    """Which slots become jobs now, and the schedule's next run time. Pure: no clock, no database.

    - On cadence (the oldest due slot is at most `grace` seconds old) every due slot is planned: a leader
      change or a slow pass loses nothing.
    - Behind (the oldest due slot is older than `grace`: workers were down, or the schedule was paused) the
      catch-up policy decides among all due slots: `latest` plans only the most recent one, `all` the most
      recent `catchup_max`, `none` none; then the schedule is back on cadence.
    - A catch-up `window` (seconds) comes first: due slots older than now - window are never run (missed),
      whether on cadence or behind; the rules above apply to the younger ones.
    - Overlap compares with jobs of this schedule that were unfinished before this pass: `skip` records every
      planned slot as skipped while one is unfinished; the other policies are in `overlap_states`. Running
      one job of a non-`allow` schedule at a time, oldest first, is the claim query's part (`claim_jobs`):
      slots planned in one pass (a catch-up backlog) run one after another.
    """
    if next_run_at is None:  # never planned (new schedule written by SQL): start from the next slot
        return Plan([], cron.next_slot(spec, tz, now))
    upcoming = cron.next_slot(spec, tz, now)
    if next_run_at > now:
        return Plan([], next_run_at)

    before_first = next_run_at - timedelta(microseconds=1)
    dropped = 0
    missed = None
    start = next_run_at
    windowed = False
    if window is not None and now - next_run_at > timedelta(seconds=window):
        windowed, start = True, now - timedelta(seconds=window)
    behind = now - start > timedelta(seconds=grace)
    if not behind:
        slots = cron.slots_between(spec, tz, start - timedelta(microseconds=1), now, limit=RECENT_LIMIT)
    else:
        keep = {"latest": 1, "all": max(1, catchup_max), "none": 0}[catchup]
        slots = last_slots(spec, tz, start, now, keep) if keep else []
    if behind or windowed:
        # Was any due slot left out? (-1 = "some"; `missed` says which and how many, counted up to a cap)
        first_kept = slots[0] if slots else now + timedelta(microseconds=1)
        first_missed = cron.slots_between(spec, tz, before_first, first_kept - timedelta(microseconds=1), limit=1)
        if first_missed:
            dropped = -1
            last_missed = last_slots(spec, tz, next_run_at, first_kept - timedelta(microseconds=1), 1)[0]
            missed = (first_missed[0], last_missed,
                      cron.count_slots(spec, tz, first_missed[0], last_missed, MISSED_COUNT_CAP))

    planned = overlap_states(slots, overlap, running, waiting)
    replace = (overlap in REPLACING and bool(running or waiting)
               and any(p.state == "available" for p in planned))
    return Plan(planned, upcoming, dropped, replace, missed, windowed)


REPLACING = ("cancel_previous", "terminate_previous")


def jitter_offset(schedule_id: int, slot: datetime, jitter: float) -> float:
    """The slot's start offset in [0, jitter) seconds. Pure and derived from (schedule, slot) alone, so every
    leader (a new one, a stale one) computes the same offset; the slot itself is unchanged."""
    if jitter <= 0:
        return 0.0
    micros = round(slot.timestamp() * 1_000_000)
    digest = hashlib.blake2b(f"{schedule_id}:{micros}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * jitter


def overlap_states(slots: list[datetime], overlap: str, running: int, waiting: int) -> list[PlannedSlot]:
    """The overlap policy over slots planned together, given the runs unfinished before them. Pure.

    `skip`: every slot is skipped while a run is unfinished. `buffer_one`: at most one run waits (the first
    slot while one runs; none while one already waits). `buffer_all`: every slot waits its turn.
    `cancel_previous` / `terminate_previous`: the latest slot replaces the unfinished runs (`Plan.replace`),
    earlier slots of the same pass are skipped as replaced. `allow`: all run. Only `allow` runs two at once:
    the claim query runs one job of any other schedule at a time, oldest first.
    """
    planned: list[PlannedSlot] = []
    for i, slot in enumerate(slots):
        if overlap == "skip" and (running or waiting):
            planned.append(PlannedSlot(slot, "skipped", "skipped: the previous run is still unfinished"))
        elif overlap == "buffer_one" and (waiting or (running and i > 0)):
            planned.append(PlannedSlot(slot, "skipped", "skipped: a run is already waiting"))
        elif overlap in REPLACING and i < len(slots) - 1:
            planned.append(PlannedSlot(slot, "skipped", "skipped: replaced by a later slot of the same pass"))
        else:
            planned.append(PlannedSlot(slot, "available"))
    return planned


def _count_skipped(cols: dict[str, list[Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for sid, state in zip(cols["schedule_id"], cols["state"], strict=True):
        if state == "skipped":
            counts[sid] = counts.get(sid, 0) + 1
    return counts


def _missed_reason(paused: bool, catchup: str, kept: int, window: float | None = None) -> str:
    why = "the schedule was paused" if paused else "no worker was leading (downtime)"
    if window is not None:
        why += f"; slots older than the catch-up window ({window:g}s) are not run"
    policy = {"latest": "catch-up 'latest' ran only the latest due slot",
              "all": f"catch-up 'all' ran the latest {kept} (catchup_max)",
              "none": "catch-up 'none' ran none of them"}.get(catchup, f"catch-up '{catchup}'")
    return f"{why}; {policy}"


class Scheduler:
    """Runs scheduling passes while this process leads. `wake` is set on schedule-change notifications."""

    def __init__(self, pool: ConnectionPool, queries: Queries, *, grace: float, batch: int = PASS_BATCH) -> None:
        self._pool = pool
        self._batch = batch
        self._q = queries
        self._grace = grace
        self.wake = threading.Event()
        self.inserted_total = 0
        # Slots this scheduler planned that the unique constraint turned away: zero unless a second or stale
        # scheduler raced it. A non-zero value is worth a look (it is also a metric).
        self.duplicates_dropped = 0

    def run_pass(self) -> int:
        """Schedule every due slot; returns the number of job rows inserted (skipped slots included)."""
        inserted = 0
        while True:
            count, more = self._pass_batch()
            inserted += count
            if not more:
                break
        self.inserted_total += inserted
        return inserted

    def _pass_batch(self) -> tuple[int, bool]:
        q = self._q
        with self._pool.connection() as conn, conn.transaction():
            rows = conn.execute(q.due_schedules, {"limit": self._batch}).fetchall()
            if not rows:
                return 0, False
            ids = [r[0] for r in rows]
            unfinished = {r[0]: (r[1], r[2]) for r in conn.execute(q.unfinished_by_schedule, {"ids": ids})}
            cols: dict[str, list[Any]] = {k: [] for k in ("schedule_id", "slot", "due", "state", "note")}
            adv_ids: list[int] = []
            adv_next: list[datetime] = []
            adv_last: list[datetime | None] = []
            replace_ids: list[int] = []
            ranges: dict[str, list[Any]] = {k: [] for k in ("schedule_id", "first", "last", "count", "outcome",
                                                               "reason")}
            replace_terminate: list[bool] = []
            # One `now` for the batch: the latest row's clock, so every row's next_run_at <= now. Schedules with
            # the same cron, time zone, due time, policies and unfinished counts get the same plan, computed
            # once (10,000 schedules due in the same minute are usually a handful of distinct crons).
            now = max(r[-1] for r in rows)
            plans: dict[tuple[Any, ...], Plan | ValueError] = {}
            for (sid, name, expr, tzname, catchup, catchup_max, overlap, next_run_at, paused_since, window, jitter,
                 _row_now) in rows:
                running, waiting = unfinished.get(sid, (0, 0))
                key = (expr, tzname, next_run_at, catchup, catchup_max, overlap, running, waiting, window)
                plan = plans.get(key)
                if plan is None:
                    try:
                        plan = plan_slots(cron.parse_cron(expr), cron.load_timezone(tzname), next_run_at, now,
                                          catchup=catchup, catchup_max=catchup_max, grace=self._grace,
                                          overlap=overlap, running=running, waiting=waiting, window=window)
                    except ValueError as exc:
                        plan = exc
                    plans[key] = plan
                if isinstance(plan, ValueError):
                    log.error("schedule %s: %s; retrying in 60 s", name, plan)
                    adv_ids.append(sid)
                    adv_next.append(now + timedelta(seconds=60))
                    adv_last.append(None)
                    continue
                if plan.missed:
                    first, last, count = plan.missed
                    paused = paused_since is not None
                    log.warning("schedule %s: %s slot(s) from %s to %s %s, not run (catch-up policy '%s')",
                                name, count if count is not None else f"more than {MISSED_COUNT_CAP}", first,
                                last, "passed while it was paused" if paused else "missed (no leader ran them)",
                                catchup)
                    for column, value in (("schedule_id", sid), ("first", first), ("last", last),
                                          ("count", count), ("outcome", "paused" if paused else "missed"),
                                          ("reason", _missed_reason(paused, catchup, len(plan.slots),
                                                                    window if plan.windowed else None))):
                        ranges[column].append(value)
                if plan.replace:
                    replace_ids.append(sid)
                    replace_terminate.append(overlap == "terminate_previous")
                for p in plan.slots:
                    cols["schedule_id"].append(sid)
                    cols["slot"].append(p.slot)
                    cols["due"].append(p.slot + timedelta(seconds=jitter_offset(sid, p.slot, jitter)) if jitter
                                       else p.slot)
                    cols["state"].append(p.state)
                    cols["note"].append(p.note)
                adv_ids.append(sid)
                adv_next.append(plan.next_run_at)
                adv_last.append(plan.slots[-1].slot if plan.slots else None)
            inserted = 0
            new_ids: list[int] = []
            if cols["slot"]:
                new_ids = [r[0] for r in conn.execute(q.insert_due_slots, {**cols, "backfilled": False,
                                                                             "overlap_allow": None}).fetchall()]
                inserted = len(new_ids)
                if inserted < len(cols["slot"]):
                    self.duplicates_dropped += len(cols["slot"]) - inserted
                    log.warning("%d slot(s) were already scheduled (another scheduler ran them): dropped",
                                len(cols["slot"]) - inserted)
            conn.execute(q.advance_schedules, {"ids": adv_ids, "next": adv_next, "last": adv_last})
            if ranges["first"]:
                conn.execute(q.insert_slot_ranges, ranges)
            names = {r[0]: r[1] for r in rows}
            replaced = []
            if replace_ids:
                replaced = conn.execute(q.replace_previous_runs, {
                    "ids": replace_ids, "terminate": replace_terminate, "new": new_ids}).fetchall()
        if telemetry.active():
            for sid, count in _count_skipped(cols).items():
                telemetry.emit("slot.recorded", schedule=names[sid], outcome="skipped", count=count, lateness=None)
            for sid, outcome, count in zip(ranges["schedule_id"], ranges["outcome"], ranges["count"], strict=True):
                telemetry.emit("slot.recorded", schedule=names[sid], outcome=outcome, count=count or 1,
                               lateness=None)
        if replaced:
            self._signal_replaced(replaced)
        if inserted:
            log.debug("inserted %d slot job(s) for %d schedule(s)", inserted, len(rows))
        return inserted, len(rows) == self._batch

    def _signal_replaced(self, replaced: list[Any]) -> None:
        """After the replacement committed: stop the SQL of the replaced runs that were running.
        `cancel_previous` cancels the statement (the worker records the run `cancelled`, as an operator's
        cancel); `terminate_previous` ends its session (the run is already `cancelled` and no longer the
        worker's: its outcome is refused, and a Python task is abandoned by its worker at its next heartbeat)."""
        for job_id, old_state, pid, terminate in replaced:
            log.warning("job %s (%s): %s by a newer slot of its schedule", job_id, old_state,
                        "terminated" if terminate else "cancelled")
            if old_state == "running" and pid:
                try:
                    with self._pool.connection() as conn:
                        conn.execute(self._q.terminate_backend if terminate else self._q.cancel_backend,
                                     {"pid": pid})
                except Exception as exc:  # noqa: BLE001 - the run is replaced in the database either way
                    log.warning("job %s: could not signal backend %s: %s", job_id, pid, exc)

    def seconds_until_due(self) -> float:
        """Seconds until the earliest enabled schedule is due, on the database's clock (0 if one is due)."""
        with self._pool.connection() as conn:
            row: tuple[datetime | None, bool | None, datetime] = one(conn.execute(self._q.next_wakeup))
            next_run_at, unplanned, now = row
            conn.rollback()
        if unplanned:
            return 0.0
        if next_run_at is None:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, (next_run_at - now).total_seconds()))
