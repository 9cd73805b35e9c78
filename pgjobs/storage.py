"""Job storage that a held xmin horizon cannot slow down: a ring of short-lived hot segments, reclaimed by TRUNCATE.

`jobs` is partitioned by `seg` (migration 0010):
- 1..99, `jobs_ring_<n>`: the ring. New jobs go to the one `open` segment. Every ROTATE_EVERY seconds (when it
  holds any job) the leader closes it and opens the `next` one, which was announced ANNOUNCE seconds before,
  so every worker's cached list of live segments (SegmentCache, refreshed every CACHE_TTL) names it already.
- 0, `jobs_parked`: unfinished jobs with a unique key (a unique index of a partitioned table is unique per
  partition, so every one of them lives here), jobs due more than a minute ahead, and leftovers of closed
  segments. Small; vacuumed as before.
- 100000 + day / 200000 + day: finished jobs, by class (completed, skipped / failed, cancelled) and UTC day of
  finished_at. A completion moves its row there. Append-only; retention TRUNCATEs, then DROPs, a whole day.

A closed segment is claimed from like any live one. CLOSE_GRACE seconds after it closed, whatever is left in
it (at most EVACUATE_MAX unfinished jobs, so a backlog is drained by claims where it is and only stragglers move) moves out: unfinished jobs to parked,
finished ones to history. Empty, it becomes `reclaim` and leaves the claimers' lists; RECLAIM_DELAY later the
leader takes it in ACCESS EXCLUSIVE mode with a LOCK_TIMEOUT, moves any row that arrived meanwhile (a
transaction that inserted before the close and committed after), TRUNCATEs it and marks it free.

Why the hot path ignores the horizon: every dead tuple and dead index entry a claim or a completion leaves is
in a ring segment, and a ring segment lives for seconds: a claim walks the garbage of the live segments only,
and TRUNCATE removes a segment's garbage whatever the horizon. Claims are sent unprepared with the live
segments as values, so the planner prunes every other partition and locks none of them: a TRUNCATE waiting
for a long reader (REPEATABLE READ readers hold ACCESS SHARE on what they scanned until they end) never has a
claimer queued behind it. When a segment cannot be reclaimed (such a reader), the ring grows (a new
partition is attached, SHARE UPDATE EXCLUSIVE on jobs, which claims and readers do not conflict with) up to
99 segments, and the open segment stays open only when that limit is reached.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import ConnectionPool

from pgjobs import queries as sqlq
from pgjobs.config import Settings
from pgjobs.queries import Queries
from pgjobs.rows import one

log = logging.getLogger("pgjobs.storage")

PARKED = 0
RING_MAX = 99
HOT_LIMIT = 100
DONE_BASE = 100000
FAILED_BASE = 200000
ROTATE_EVERY = 2.0      # seconds an open segment takes new jobs
ANNOUNCE = 1.0          # seconds a `next` segment is listed to claimers before it opens
CACHE_TTL = 0.25        # a worker's list of live segments is at most this old when it claims
CLOSE_GRACE = 2.0       # a closed segment's jobs are left to finish where they are for this long
EVACUATE_MAX = 200      # a closed segment with more unfinished jobs than this drains by claims first
EVACUATE_BATCH = 5000
RECLAIM_DELAY = 1.0     # a segment off the lists waits this long (>> CACHE_TTL) before its TRUNCATE
LOCK_TIMEOUT_MS = 100   # how long a TRUNCATE waits for a reader before the leader tries again later
DAYS_AHEAD = 7          # history partitions kept ready ahead of today
PASS_EVERY = 0.25
HISTORY_EVERY = 60.0
_HISTORY_NAME = re.compile(r"^jobs_(done|failed)_(\d{8})$")


def ring_name(seg: int) -> str:
    return "jobs_parked" if seg == PARKED else f"jobs_ring_{seg}"


def history_name(cls: str, day: int) -> str:
    return f"jobs_{cls}_{(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)):%Y%m%d}"


def history_day(name: str) -> tuple[str, int] | None:
    m = _HISTORY_NAME.match(name)
    if not m:
        return None
    d = datetime.strptime(m.group(2), "%Y%m%d").replace(tzinfo=UTC)
    return m.group(1), (d - datetime(1970, 1, 1, tzinfo=UTC)).days


class SegmentCache:
    """A worker's list of the segments to claim from (the live ring segments and parked), refreshed at most
    every CACHE_TTL seconds with one small read."""

    def __init__(self, q: Queries) -> None:
        self._q = q
        self._segs: list[int] = []
        self._at = -1e9
        self._lock = threading.Lock()

    def get(self, conn: psycopg.Connection) -> list[int]:
        now = time.monotonic()
        with self._lock:
            if now - self._at < CACHE_TTL:
                return self._segs
        row = conn.execute(self._q.live_segments).fetchone()
        segs = [PARKED, *(row[0] if row else [])]
        with self._lock:
            self._segs, self._at = segs, now
        return segs


class Rotator:
    """The leader's storage duty: rotate, evacuate, reclaim the ring; create and retire history partitions."""

    def __init__(self, pool: ConnectionPool, q: Queries, settings: Settings) -> None:
        self._pool = pool
        self._q = q
        self._settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_history = 0.0
        self.reclaimed = 0
        self.reclaim_skipped = 0
        self.rotations = 0

    # ------------------------------------------------------------------ service
    def start(self) -> None:
        self._stop.clear()
        self._next_history = 0.0
        self._thread = threading.Thread(target=self._loop, name="pgjobs-rotator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(10)

    def _loop(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                self.run_pass()
                delay = PASS_EVERY
            except psycopg.Error as exc:
                log.warning("storage pass failed: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                delay = min(max(delay, 0.05) * 2, 1.0)
            self._stop.wait(delay)

    def run_pass(self) -> None:
        with self._pool.connection() as conn:
            if time.monotonic() >= self._next_history:
                self.maintain_history(conn)
                self._next_history = time.monotonic() + HISTORY_EVERY
            self.rotate(conn)
            self.analyze(conn)
            self.evacuate(conn)
            self.reclaim(conn)

    # ------------------------------------------------------------------ the ring
    def _segments(self, conn: psycopg.Connection) -> list[tuple[int, str, float]]:
        return [tuple(r) for r in conn.execute(self._q.segments_for_update).fetchall()]

    def rotate(self, conn: psycopg.Connection, *, force: bool = False) -> bool:
        """Close the open segment and open the announced one; announce the next (growing the ring if none is
        free). `force` ignores the ages (tests)."""
        rotated = False
        with conn.transaction():
            segs = self._segments(conn)
            by_state: dict[str, list[tuple[int, float]]] = {}
            for seg, state, age in segs:
                by_state.setdefault(state, []).append((seg, age))
            open_ = by_state.get("open", [])
            nxt = by_state.get("next", [])
            if open_ and nxt and (force or (open_[0][1] >= ROTATE_EVERY and nxt[0][1] >= ANNOUNCE)):
                name = sqlq.qualified_name(self._q.schema, ring_name(open_[0][0]))
                if force or one(conn.execute(self._q.segment_used, {"name": name}))[0]:
                    conn.execute(self._q.set_segment_state, {"seg": open_[0][0], "state": "closed"})
                    conn.execute(self._q.set_segment_state, {"seg": nxt[0][0], "state": "open"})
                    nxt = []
                    rotated = True
                    self.rotations += 1
            if not open_ and nxt:  # (not reached in normal operation) make sure one segment is open
                conn.execute(self._q.set_segment_state, {"seg": nxt[0][0], "state": "open"})
                nxt = []
            if not nxt:
                free = by_state.get("free", [])
                if free:
                    conn.execute(self._q.set_segment_state, {"seg": free[0][0], "state": "next"})
                    return rotated
        if not nxt and not by_state.get("free"):
            self._grow(conn, max(seg for seg, _, _ in segs) + 1 if segs else 1)
        return rotated

    def analyze(self, conn: psycopg.Connection) -> None:
        """ANALYZE the live segments that grew past twice the size their statistics describe: claims are planned
        each time (unprepared), and with a fresh segment's "empty" statistics the planner would sort all of a
        backlog's candidates instead of reading the claim indexes in order."""
        live = [ring_name(seg) for seg, state, _ in self._segments_snapshot(conn) if state in ("open", "closed")]
        names = [ring_name(PARKED), *live]
        for (name,) in conn.execute(self._q.segments_to_analyze, {"schema": self._q.schema, "names": names}).fetchall():
            try:
                with conn.transaction():
                    conn.execute(self._q.set_local_lock_timeout, {"ms": str(LOCK_TIMEOUT_MS)})
                    conn.execute(sqlq.analyze_partition(self._q.schema, name))
            except psycopg.errors.LockNotAvailable:
                pass

    def _grow(self, conn: psycopg.Connection, seg: int) -> None:
        if seg > RING_MAX:
            return
        name = ring_name(seg)
        try:
            with conn.transaction():
                conn.execute(self._q.set_local_lock_timeout, {"ms": str(LOCK_TIMEOUT_MS)})
                conn.execute(sqlq.create_partition(self._q.schema, name))
                conn.execute(sqlq.attach_partition(self._q.schema, name, seg, seg + 1))
                conn.execute(self._q.add_segment, {"seg": seg})
            log.info("storage: ring segment %d added (no segment could be reclaimed yet)", seg)
        except psycopg.errors.LockNotAvailable:
            pass

    def _history_bounds(self, conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
        days: dict[str, list[int]] = {"done": [], "failed": []}
        for (name,) in conn.execute(self._q.history_partitions, {"table": f"{self._q.schema}.jobs"}):
            hd = history_day(name)
            if hd:
                days[hd[0]].append(hd[1])
        today = one(conn.execute(self._q.db_day))[0]
        return {cls: (min(d), max(d)) if d else (today, today) for cls, d in days.items()}

    def evacuate(self, conn: psycopg.Connection) -> None:
        """Move what is left in segments closed CLOSE_GRACE ago out of them; an emptied one goes to reclaim."""
        closed = [(seg, age) for seg, state, age in self._segments_snapshot(conn) if state == "closed"]
        if not closed:
            return
        bounds = None
        for seg, age in closed:
            if age < CLOSE_GRACE:
                continue
            unfinished = one(conn.execute(self._q.segment_unfinished, {"seg": seg, "cap": EVACUATE_MAX + 1},
                                          prepare=False))[0]
            if unfinished > EVACUATE_MAX:
                continue
            if bounds is None:
                bounds = self._history_bounds(conn)
            self._move_out(conn, seg, bounds)
            if not one(conn.execute(self._q.segment_has_rows, {"seg": seg}, prepare=False))[0]:
                conn.execute(self._q.set_segment_state, {"seg": seg, "state": "reclaim"})

    def _move_out(self, conn: psycopg.Connection, seg: int, bounds: dict[str, tuple[int, int]]) -> int:
        params = {"seg": seg, "batch": EVACUATE_BATCH, "done_lo": bounds["done"][0], "done_hi": bounds["done"][1],
                  "failed_lo": bounds["failed"][0], "failed_hi": bounds["failed"][1]}
        moved = 0
        for _ in range(4):
            try:
                n = conn.execute(self._q.evacuate_segment, params, prepare=False).rowcount
            except psycopg.errors.SerializationFailure:  # a row moved under us (a claim, a completion): later
                return moved
            moved += n
            if n < EVACUATE_BATCH:
                break
        return moved

    def _segments_snapshot(self, conn: psycopg.Connection) -> list[tuple[int, str, float]]:
        with conn.transaction():
            return self._segments(conn)

    def reclaim(self, conn: psycopg.Connection) -> int:
        """TRUNCATE the segments off the claimers' lists for RECLAIM_DELAY; one that a reader still holds is
        skipped (LOCK_TIMEOUT_MS) and tried again next pass."""
        done = 0
        for seg, state, age in self._segments_snapshot(conn):
            if state != "reclaim" or age < RECLAIM_DELAY:
                continue
            name = ring_name(seg)
            try:
                with conn.transaction():
                    conn.execute(self._q.set_local_lock_timeout, {"ms": str(LOCK_TIMEOUT_MS)})
                    conn.execute(sqlq.lock_partition(self._q.schema, name))
                    if one(conn.execute(self._q.segment_has_rows, {"seg": seg}, prepare=False))[0]:
                        self._move_out(conn, seg, self._history_bounds(conn))
                    conn.execute(sqlq.truncate_partition(self._q.schema, name))
                    conn.execute(self._q.set_segment_state, {"seg": seg, "state": "free"})
                done += 1
                self.reclaimed += 1
            except psycopg.errors.LockNotAvailable:
                self.reclaim_skipped += 1
        return done

    # ------------------------------------------------------------------ history partitions
    def maintain_history(self, conn: psycopg.Connection) -> None:
        """Keep a partition per class for yesterday .. DAYS_AHEAD days ahead; retire the expired ones."""
        existing = set()
        for (name,) in conn.execute(self._q.history_partitions, {"table": f"{self._q.schema}.jobs"}).fetchall():
            hd = history_day(name)
            if hd:
                existing.add(hd)
        today = one(conn.execute(self._q.db_day))[0]
        for cls, base in (("done", DONE_BASE), ("failed", FAILED_BASE)):
            for day in range(today - 1, today + DAYS_AHEAD + 1):
                if (cls, day) in existing:
                    continue
                name = history_name(cls, day)
                try:
                    with conn.transaction():
                        conn.execute(self._q.set_local_lock_timeout, {"ms": str(LOCK_TIMEOUT_MS)})
                        conn.execute(sqlq.create_partition(self._q.schema, name))
                        conn.execute(sqlq.attach_partition(self._q.schema, name, base + day, base + day + 1))
                except psycopg.errors.LockNotAvailable:
                    pass
        s = self._settings
        for cls, day in sorted(existing):
            retention = s.retention_completed if cls == "done" else s.retention_failed
            # Every row of the day [day, day + 1) is past retention once day + 1 is.
            if (day + 1) * 86400 > time.time() - retention:
                continue
            self._retire(conn, history_name(cls, day))

    def _retire(self, conn: psycopg.Connection, name: str) -> None:
        """TRUNCATE an expired history partition (its space is back at once), then DROP it when jobs can be
        locked without waiting (NOWAIT: a DROP never queues in front of claims)."""
        schema = self._q.schema
        try:
            with conn.transaction():
                conn.execute(self._q.set_local_lock_timeout, {"ms": str(LOCK_TIMEOUT_MS)})
                conn.execute(sqlq.lock_partition(schema, name))
                conn.execute(sqlq.truncate_partition(schema, name))
            with conn.transaction():
                conn.execute(sqlq.lock_partition(schema, "jobs", nowait=True))
                conn.execute(sqlq.drop_partition(schema, name))
            log.info("storage: dropped expired history partition %s", name)
        except psycopg.errors.LockNotAvailable:
            pass
