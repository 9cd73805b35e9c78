"""Exactly-once cron slots with real worker processes, a real kill -9 of the leader, and real schedulers racing."""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta

import psycopg
from psycopg_pool import ConnectionPool

from conftest import lock_holder_backend, wait_for, worker_pid_of_leader
from pgjobs.admin import Admin
from pgjobs.queries import queries
from pgjobs.scheduler import Scheduler


def _leader_lock_backend(db: psycopg.Connection) -> int | None:
    return lock_holder_backend(db)


def test_four_workers_one_job_per_slot_and_fast_takeover_after_kill_9(admin: Admin, db, workers) -> None:
    admin.add_schedule("every-second", cron="1 seconds", task="pgjobs.noop", overlap="allow")
    procs = [workers.start() for _ in range(4)]
    by_pid = {p.pid: p for p in procs}
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0] == 4, 20, "4 workers")
    leader_pid = wait_for(lambda: worker_pid_of_leader(db), 10, "a leader")
    first_backend = wait_for(lambda: _leader_lock_backend(db), 10, "the leader's lock")
    start = db.execute("SELECT date_trunc('second', clock_timestamp()) + interval '1 second'").fetchone()[0]

    # Half-way through a 20 s window, kill the leader for real.
    wait_for(lambda: db.execute("SELECT clock_timestamp()").fetchone()[0] >= start + timedelta(seconds=10), 20,
             "10 s of slots")
    killed_at = time.monotonic()
    by_pid[leader_pid].send_signal(signal.SIGKILL)
    new_backend = wait_for(lambda: (b := _leader_lock_backend(db)) and b != first_backend and b, 5,
                           "another worker to take the leader lock")
    takeover = time.monotonic() - killed_at
    by_pid[leader_pid].wait(10)
    assert new_backend != first_backend
    assert takeover < 2.0, f"takeover took {takeover:.3f}s"

    end = start + timedelta(seconds=20)
    wait_for(lambda: db.execute("SELECT clock_timestamp()").fetchone()[0] >= end + timedelta(seconds=1), 30,
             "the end of the 20 s window")
    wait_for(lambda: db.execute(
        "SELECT count(*) = 0 FROM pgjobs.jobs WHERE slot <= %s AND state NOT IN ('completed')", (end,)
    ).fetchone()[0], 15, "every slot's job to complete (rescue included)")

    rows = db.execute(
        "SELECT s.slot, count(j.id), min(j.state), max(j.attempt) "
        "FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 second') AS s(slot) "
        "LEFT JOIN pgjobs.jobs j ON j.slot = s.slot GROUP BY s.slot ORDER BY s.slot",
        (start, end)).fetchall()
    assert len(rows) == 21
    missing = [r[0] for r in rows if r[1] == 0]
    doubled = [r[0] for r in rows if r[1] > 1]
    assert not missing, f"slots without a job: {missing}"
    assert not doubled, f"slots with more than one job: {doubled}"
    assert all(r[2] == "completed" for r in rows)
    # A job only runs twice if the killed leader was running it; then it was rescued and completed once.
    reruns = [r for r in rows if r[3] > 1]
    assert len(reruns) <= 1, reruns


def test_two_schedulers_without_leadership_never_double_a_slot(admin: Admin, db_url: str, db) -> None:
    """Leadership switched off. Each scheduler counts the slots the unique constraint turned away, so this
    shows SKIP LOCKED + advancing next_run_at alone keep two racing schedulers from planning a slot twice."""
    for i in range(20):
        admin.add_schedule(f"s{i:02}", cron="1 seconds", task="pgjobs.noop", overlap="allow")
    stop = threading.Event()
    errors: list[BaseException] = []
    schedulers: list[Scheduler] = []

    def race(pool: ConnectionPool) -> None:
        scheduler = Scheduler(pool, queries("pgjobs"), grace=60, batch=3)  # small batches: both get rows
        schedulers.append(scheduler)
        try:
            while not stop.is_set():
                scheduler.run_pass()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pools = [ConnectionPool(db_url, min_size=1, max_size=2, open=True) for _ in range(2)]
    threads = [threading.Thread(target=race, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    t0 = db.execute("SELECT clock_timestamp()").fetchone()[0]
    wait_for(lambda: db.execute("SELECT clock_timestamp()").fetchone()[0] > t0 + timedelta(seconds=4), 10, "4 s")
    stop.set()
    for t in threads:
        t.join(10)
    for p in pools:
        p.close()
    assert not errors, errors
    assert [s.duplicates_dropped for s in schedulers] == [0, 0]
    assert all(s.inserted_total > 0 for s in schedulers), "both schedulers did real work"
    doubled = db.execute(
        "SELECT schedule_id, slot, count(*) FROM pgjobs.jobs GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
    assert doubled == []
    per_schedule = db.execute(
        "SELECT schedule_id, count(*), extract(epoch FROM max(slot) - min(slot))::int + 1 "
        "FROM pgjobs.jobs GROUP BY 1").fetchall()
    assert len(per_schedule) == 20
    for _, count, span in per_schedule:
        assert count == span, "each schedule has one job for every second between its first and last slot"


def test_a_stale_leader_pass_inserts_nothing_thanks_to_the_unique_constraint(admin: Admin, db_url: str, db) -> None:
    admin.add_schedule("stale", cron="1 seconds", task="pgjobs.noop", overlap="allow")
    wait_for(lambda: db.execute(
        "SELECT next_run_at < clock_timestamp() - interval '2 seconds' FROM pgjobs.schedules").fetchone()[0],
        10, "three slots to be due")
    old_next = db.execute("SELECT next_run_at FROM pgjobs.schedules").fetchone()[0]
    with ConnectionPool(db_url, min_size=1, max_size=2) as pool:
        scheduler = Scheduler(pool, queries("pgjobs"), grace=60)
        first = scheduler.run_pass()
        assert first >= 3
        # A leader that read next_run_at before the first pass committed replays the same slots.
        db.execute("UPDATE pgjobs.schedules SET next_run_at = %s", (old_next,))
        replayed = db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0]
        second = scheduler.run_pass()
    after = db.execute("SELECT count(*), count(DISTINCT slot) FROM pgjobs.jobs").fetchone()
    assert after[0] == after[1], "no slot has two jobs"
    assert second == after[0] - replayed, "only slots that came due since were inserted"
    assert scheduler.duplicates_dropped >= first, "the replayed slots were turned away by the constraint"


def test_a_waiting_follower_does_not_hold_back_vacuum(db, workers) -> None:
    """A follower blocks for the leader lock for hours; its snapshot must not pin the database's xmin horizon.

    A plain `SELECT pg_advisory_lock()` keeps the snapshot it started with while it waits: vacuum could then
    remove no dead row anywhere in the database (the claim scan slows down with every job done, and the
    application's own tables bloat). The follower's wait commits every slice, so its xmin keeps moving.
    """
    workers.start()
    workers.start()
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0] == 2, 20, "2 workers")
    follower = wait_for(lambda: db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND wait_event = 'advisory' AND application_name LIKE '%leader-lock'").fetchone(), 10,
        "a follower waiting for the leader lock")[0]
    db.execute("CREATE TABLE churn (x int)")
    db.execute("INSERT INTO churn SELECT generate_series(1, 1000)")
    db.execute("DELETE FROM churn")
    after = db.execute("SELECT txid_current() % 4294967296").fetchone()[0]  # newer than the delete

    def follower_xmin_is_newer() -> bool:
        xmin = db.execute("SELECT backend_xmin::text::bigint FROM pg_stat_activity WHERE pid = %s",
                          (follower,)).fetchone()
        return xmin is not None and (xmin[0] is None or xmin[0] > after)

    wait_for(follower_xmin_is_newer, 5, "the waiting follower's snapshot to move past the delete")
    db.execute("VACUUM churn")  # removes the deleted rows and truncates the emptied table
    assert db.execute("SELECT relpages FROM pg_class WHERE relname = 'churn'").fetchone()[0] == 0, \
        "vacuum kept the deleted rows: something holds back the xmin horizon"
