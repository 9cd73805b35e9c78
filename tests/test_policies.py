"""Catch-up and overlap policies: pure `plan_slots` cases, then the same policies with real worker processes.

Catch-up (`plan_slots` docstring): on cadence (the oldest due slot is within the grace) every due slot is
planned; behind (after downtime or a pause) the policy picks among the due slots: `latest` (the most recent
one), `all` (the most recent `catchup_max`) or `none`. Overlap (`scheduler.overlap_states`): `skip` records a
slot as skipped while a run is unfinished, `buffer_one` keeps at most one waiting run, `buffer_all` keeps them
all, `cancel_previous` / `terminate_previous` stop the unfinished run for the new one, `allow` runs them in
parallel; all but `allow` run one at a time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import tasks_for_tests  # noqa: F401 - registers the tests.* tasks the schedules below name

from conftest import ROOT, wait_for
from pgjobs import cron
from pgjobs.scheduler import plan_slots
from pgjobs.states import OVERLAP_POLICIES

SECOND = timedelta(seconds=1)
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVERY_SECOND = cron.parse_cron("1 second")
UTC_TZ = cron.load_timezone("UTC")


def plan(next_run_at: datetime | None, now: datetime, **kw: Any):
    kw.setdefault("grace", 1.0)
    return plan_slots(EVERY_SECOND, UTC_TZ, next_run_at, now, **kw)


def secs(p) -> list[int]:
    """Planned slots as whole seconds after T0."""
    return [int((s.slot - T0).total_seconds()) for s in p.slots]


def states(p) -> list[str]:
    return [s.state for s in p.slots]


# ---------------------------------------------------------------------------------------------- pure: timing
def test_a_new_schedule_starts_at_the_next_slot():
    p = plan(None, T0 + timedelta(milliseconds=300))
    assert p.slots == [] and p.next_run_at == T0 + SECOND


def test_nothing_is_due_before_next_run_at():
    p = plan(T0 + SECOND, T0 + timedelta(milliseconds=999))
    assert p.slots == [] and p.next_run_at == T0 + SECOND


def test_an_on_time_pass_plans_exactly_the_due_slot():
    p = plan(T0, T0 + timedelta(milliseconds=3))
    assert secs(p) == [0] and states(p) == ["available"] and p.next_run_at == T0 + SECOND and p.dropped == 0


def test_a_late_pass_inside_the_grace_plans_every_slot_whatever_the_policy():
    # A leader change that took 30 s with the default 60 s grace: nothing is lost, even with catch-up 'none'.
    for catchup in ("latest", "all", "none"):
        p = plan(T0, T0 + timedelta(seconds=30, milliseconds=5), grace=60, catchup=catchup)
        assert secs(p) == list(range(0, 31)), catchup
        assert p.dropped == 0 and p.next_run_at == T0 + 31 * SECOND


# ---------------------------------------------------------------------------------------------- pure: catch-up
DOWN_UNTIL = T0 + timedelta(seconds=10, milliseconds=500)  # next_run_at = T0, pass at +10.5 s, grace 1 s


def test_catchup_latest_runs_one_job_for_the_missed_period_then_back_on_cadence():
    p = plan(T0, DOWN_UNTIL, catchup="latest")
    assert secs(p) == [10]  # one job: the most recent due slot
    assert p.next_run_at == T0 + 11 * SECOND and p.dropped == -1


def test_catchup_all_runs_missed_slots_bounded_by_catchup_max():
    p = plan(T0, DOWN_UNTIL, catchup="all", catchup_max=3)
    assert secs(p) == [8, 9, 10] and p.dropped == -1
    p = plan(T0, DOWN_UNTIL, catchup="all", catchup_max=100)
    assert secs(p) == list(range(0, 11)) and p.dropped == 0  # nothing dropped: no warning


def test_catchup_none_skips_to_the_next_slot():
    p = plan(T0, DOWN_UNTIL, catchup="none")
    assert secs(p) == [] and p.next_run_at == T0 + 11 * SECOND and p.dropped == -1


def test_on_cadence_the_policy_does_not_apply_and_nothing_is_dropped():
    p = plan(T0 + 10 * SECOND, DOWN_UNTIL, catchup="none")
    assert secs(p) == [10] and p.dropped == 0


def test_catchup_after_a_year_of_downtime_is_cheap_and_exact():
    hourly = cron.parse_cron("0 * * * *")
    now = T0 + timedelta(days=365, minutes=30)
    p = plan_slots(hourly, UTC_TZ, T0, now, catchup="all", catchup_max=3, grace=60)
    assert [s.slot for s in p.slots] == [now.replace(minute=0) - timedelta(hours=h) for h in (2, 1, 0)]
    p = plan_slots(hourly, UTC_TZ, T0, now, catchup="latest", grace=60)
    assert [s.slot for s in p.slots] == [now.replace(minute=0)]
    assert p.next_run_at == now.replace(minute=0) + timedelta(hours=1)


def test_catchup_in_the_schedules_timezone():
    berlin = cron.load_timezone("Europe/Berlin")
    daily_9 = cron.parse_cron("0 9 * * *")
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 09:00 Berlin (CET)
    now = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
    p = plan_slots(daily_9, berlin, start, now, catchup="all", catchup_max=10, grace=60)
    assert [s.slot.astimezone(berlin).strftime("%m-%d %H:%M") for s in p.slots] == [
        "03-02 09:00", "03-03 09:00", "03-04 09:00", "03-05 09:00"]


# ---------------------------------------------------------------------------------------------- pure: overlap
@pytest.mark.parametrize(("overlap", "running", "waiting", "expected"), [
    ("skip", 0, 0, ["available", "available"]),
    ("skip", 1, 0, ["skipped", "skipped"]),
    ("skip", 0, 1, ["skipped", "skipped"]),
    ("buffer_one", 0, 0, ["available", "available"]),
    ("buffer_one", 1, 0, ["available", "skipped"]),
    ("buffer_one", 1, 1, ["skipped", "skipped"]),
    ("buffer_one", 0, 1, ["skipped", "skipped"]),
    ("buffer_all", 0, 0, ["available", "available"]),
    ("buffer_all", 1, 3, ["available", "available"]),
    ("cancel_previous", 0, 0, ["skipped", "available"]),
    ("cancel_previous", 1, 0, ["skipped", "available"]),
    ("terminate_previous", 1, 1, ["skipped", "available"]),
    ("allow", 0, 0, ["available", "available"]),
    ("allow", 3, 2, ["available", "available"]),
])
def test_overlap_policy_against_unfinished_runs(overlap, running, waiting, expected):
    # Two slots due in one pass (1.5 s late, inside the grace). Overlap compares with runs unfinished before
    # the pass; slots planned in one pass are not "overlapping" each other (the claim runs them in order).
    p = plan(T0, T0 + timedelta(milliseconds=1500), grace=60, overlap=overlap, running=running, waiting=waiting)
    assert secs(p) == [0, 1]
    assert states(p) == expected
    for s in p.slots:
        assert (s.note is not None) == (s.state == "skipped")
    assert p.replace == (overlap in ("cancel_previous", "terminate_previous") and bool(running or waiting))


@pytest.mark.parametrize("catchup", ["latest", "all", "none"])
@pytest.mark.parametrize("overlap", OVERLAP_POLICIES)
def test_every_policy_combination_after_downtime(catchup, overlap):
    p = plan(T0, DOWN_UNTIL, catchup=catchup, catchup_max=3, overlap=overlap, running=1)
    expected_slots = {"latest": [10], "all": [8, 9, 10], "none": []}[catchup]
    assert secs(p) == expected_slots
    n = len(expected_slots)
    replaced = (["skipped"] * (n - 1) + ["available"]) if n else []
    expected_states = {"skip": ["skipped"] * n, "buffer_one": (["available"] + ["skipped"] * (n - 1)) if n else [],
                       "buffer_all": ["available"] * n, "cancel_previous": replaced, "terminate_previous": replaced,
                       "allow": ["available"] * n}[overlap]
    assert states(p) == expected_states
    assert p.next_run_at == T0 + 11 * SECOND


# ---------------------------------------------------------------------------------------------- real processes
FAST = {"PGJOBS_CATCHUP_GRACE": "2"}  # short, yet a 2 s stall of a loaded CI machine loses nothing


def db_now(db: psycopg.Connection) -> datetime:
    return db.execute("SELECT clock_timestamp()").fetchone()[0]


def slots_of(db: psycopg.Connection, name: str) -> list[tuple[datetime, str, datetime]]:
    return db.execute(
        "SELECT j.slot, j.state, j.inserted_at FROM pgjobs.jobs j JOIN pgjobs.schedules s ON s.id = j.schedule_id "
        "WHERE s.name = %s ORDER BY j.slot", (name,)).fetchall()


def stop_all(workers) -> None:
    """SIGTERM every worker and wait for it to exit: no process is left to schedule anything."""
    for p in workers.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in workers.procs:
        p.wait(timeout=20)


def test_catchup_policies_after_all_workers_were_down(admin, db, workers):
    for policy in ("latest", "all", "none"):
        admin.add_schedule(f"cu-{policy}", cron="1 second", task="pgjobs.noop", catchup=policy, catchup_max=3,
                           overlap="allow")
    workers.start(env=FAST)
    for policy in ("latest", "all", "none"):
        wait_for(lambda p=policy: len(slots_of(db, f"cu-{p}")) >= 2, 15, f"cu-{policy} on cadence")
    stop_all(workers)
    before = {p: slots_of(db, f"cu-{p}") for p in ("latest", "all", "none")}
    next_run = {p: admin.get_schedule(f"cu-{p}")["next_run_at"] for p in before}
    for p, rows in before.items():  # on cadence before the stop: one job per slot, none missing
        got = [r[0] for r in rows]
        assert got == [got[0] + i * SECOND for i in range(len(got))], p
        assert next_run[p] == got[-1] + SECOND

    down_until = max(next_run.values()) + 8 * SECOND  # at least eight slots pass with no worker at all
    wait_for(lambda: db_now(db) > down_until, 15, "the database clock to pass eight slots of downtime")
    workers.start(env=FAST)

    kept = {"latest": 1, "all": 3, "none": 0}  # one job for the downtime / the 3 latest / none
    for policy, count in kept.items():
        name = f"cu-{policy}"
        old = len(before[policy])
        wait_for(lambda n=name, o=old, c=count: len(slots_of(db, n)) >= o + c + 2, 15, f"{name} caught up")
        rows = slots_of(db, name)[old:]
        new_slots = [r[0] for r in rows]
        # Everything after the stop up to the kept slots was dropped; from there on: one job per second.
        assert new_slots[0] - next_run[policy] >= (9 - max(count, 1)) * SECOND, (policy, new_slots)
        assert new_slots == [new_slots[0] + i * SECOND for i in range(len(new_slots))], (policy, new_slots)
        first_pass_at = min(r[2] for r in rows)
        batch = [r[0] for r in rows if r[2] == first_pass_at]
        restart_second = first_pass_at.replace(microsecond=0)
        if count:  # the catch-up pass: exactly `count` slots, the last one the restart's own second
            assert len(batch) == count, (policy, batch)
            assert batch[-1] in (restart_second - SECOND, restart_second, restart_second + SECOND), (policy, batch)
        else:  # 'none': the first job is simply the next slot on cadence, inserted on time
            assert len(batch) == 1 and first_pass_at - batch[0] < SECOND, (policy, batch, first_pass_at)
        assert all(r[1] in ("available", "running", "completed") for r in rows)


def _runs(db: psycopg.Connection, name: str) -> list[tuple[datetime, datetime | None, str]]:
    return db.execute(
        "SELECT j.started_at, j.finished_at, j.state FROM pgjobs.jobs j JOIN pgjobs.schedules s "
        "ON s.id = j.schedule_id WHERE s.name = %s AND j.started_at IS NOT NULL ORDER BY j.started_at",
        (name,)).fetchall()


def _max_parallel(runs: list[tuple[datetime, datetime | None, str]], until: datetime) -> int:
    events = []
    for started, finished, _ in runs:
        events += [(started, 1), (finished or until, -1)]
    best = cur = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        cur += delta
        best = max(best, cur)
    return best


def _unfinished(db: psycopg.Connection, name: str) -> tuple[int, int]:
    return db.execute(
        "SELECT count(*) FILTER (WHERE j.state = 'running'), count(*) FILTER (WHERE j.state = 'available') "
        "FROM pgjobs.jobs j JOIN pgjobs.schedules s ON s.id = j.schedule_id WHERE s.name = %s", (name,)).fetchone()


def test_overlap_policies_with_a_slow_task(admin, db, workers, db_url):
    # Every second, a job that takes 2.5 s; one worker with room for 8 jobs at once.
    for policy in ("skip", "buffer_one", "buffer_all", "allow"):
        admin.add_schedule(f"ov-{policy}", cron="1 second", task="pgjobs.sleep", args={"seconds": 2.5},
                           overlap=policy, catchup="none")
    workers.start(env=FAST, concurrency=8)
    seen_waiting = {"buffer_one": 0, "buffer_all": 0}

    def enough() -> bool:
        for p in seen_waiting:
            seen_waiting[p] = max(seen_waiting[p], _unfinished(db, f"ov-{p}")[1])
        assert seen_waiting["buffer_one"] <= 1, f"buffer_one policy: {seen_waiting['buffer_one']} jobs waiting"
        return all(sum(1 for r in _runs(db, f"ov-{p}") if r[2] == "completed") >= 2
                   for p in ("skip", "buffer_one", "buffer_all"))

    wait_for(enough, 20, "two completed runs of the skip and queue schedules")
    now = db_now(db)

    # skip: never two at once; the slots that came meanwhile are recorded as skipped, with the reason.
    assert _max_parallel(_runs(db, "ov-skip"), now) == 1
    skipped = admin.list_jobs(schedule="ov-skip", state="skipped")
    assert len(skipped) >= 2 and all("still unfinished" in j["last_error"] for j in skipped)
    out = subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, "jobs", "list", "--state",
                          "skipped", "--schedule", "ov-skip", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert {j["id"] for j in listed} >= {j["id"] for j in skipped}
    assert all(j["state"] == "skipped" and j["schedule"] == "ov-skip" and j["error"] for j in listed)

    # buffer_one: never two at once, at most one waiting (checked at every poll above), extra slots skipped.
    assert _max_parallel(_runs(db, "ov-buffer_one"), now) == 1
    assert seen_waiting["buffer_one"] == 1
    assert admin.list_jobs(schedule="ov-buffer_one", state="skipped")

    # buffer_all: never two at once, nothing skipped: every slot waits its turn (the backlog grows).
    assert _max_parallel(_runs(db, "ov-buffer_all"), now) == 1
    assert seen_waiting["buffer_all"] >= 2
    assert admin.list_jobs(schedule="ov-buffer_all", state="skipped") == []

    # allow: runs overlap, nothing is skipped.
    assert _max_parallel(_runs(db, "ov-allow"), now) >= 2
    assert admin.list_jobs(schedule="ov-allow", state="skipped") == []


def test_a_queued_run_starts_as_soon_as_the_previous_one_finishes(admin, db, workers):
    # `queue`, the old name, is accepted as buffer_all.
    admin.add_schedule("q", cron="3 seconds", task="pgjobs.sleep", args={"seconds": 3.5}, overlap="queue")
    assert admin.get_schedule("q")["overlap"] == "buffer_all"
    workers.start(env={"PGJOBS_POLL_INTERVAL": "5"})

    def two_started():
        rows = _runs(db, "q")
        return rows if len(rows) >= 2 and rows[0][1] is not None else None

    first, second = wait_for(two_started, 15, "the queued second run to start")[:2]
    assert second[0] - first[1] < timedelta(milliseconds=500), (first, second)


def test_cancel_previous_stops_the_running_python_job_for_the_new_slot(admin, db, workers):
    # A 3-second schedule whose run would take 30 s: each slot cancels the previous run (cooperatively: the
    # task sees its cancel event) and then runs; never two at once.
    admin.add_schedule("cp", cron="3 seconds", task="tests.python_loop", args={"seconds": 30},
                       overlap="cancel_previous", max_attempts=1)
    workers.start("--import", "tasks_for_tests", env=FAST, concurrency=4)

    def two_cancelled():
        rows = db.execute(
            "SELECT j.state, j.last_error, j.finished_at, j.slot FROM pgjobs.jobs j JOIN pgjobs.schedules s "
            "ON s.id = j.schedule_id WHERE s.name = 'cp' ORDER BY j.slot").fetchall()
        return rows if sum(1 for r in rows if r[0] == "cancelled") >= 2 else None

    rows = wait_for(two_cancelled, 20, "two runs cancelled by their successors")
    cancelled = [r for r in rows if r[0] == "cancelled"]
    assert all("cancel" in (r[1] or "") for r in cancelled), cancelled
    for r in cancelled:  # each run ended within a few heartbeats after the next slot came
        assert r[2] - (r[3] + 3 * SECOND) < 2 * SECOND, r
    assert _max_parallel(_runs(db, "cp"), db_now(db)) == 1
    assert not [r for r in rows if r[0] in ("failed", "skipped")], rows


def test_terminate_previous_ends_the_running_sql_at_once(admin, db, workers):
    # The previous run's SQL (pg_sleep 30 s) is ended by pg_terminate_backend when the next slot comes; the
    # run is recorded cancelled at once and the new slot starts without waiting for it.
    admin.add_schedule("tp", cron="3 seconds", task="tests.sql_sleep", args={"seconds": 30},
                       overlap="terminate_previous", max_attempts=1)
    workers.start("--import", "tasks_for_tests", env=FAST, concurrency=4)

    def terminated():
        rows = db.execute(
            "SELECT j.id, j.state, j.slot, j.finished_at, j.last_error FROM pgjobs.jobs j JOIN pgjobs.schedules s "
            "ON s.id = j.schedule_id WHERE s.name = 'tp' ORDER BY j.slot").fetchall()
        done = [r for r in rows if r[1] == "cancelled"]
        return (rows, done) if len(done) >= 2 else None

    rows, done = wait_for(terminated, 20, "two runs terminated by their successors")
    assert all("terminate_previous" in r[4] for r in done), done
    for r in done:  # recorded at the next slot's pass
        assert r[3] - (r[2] + 3 * SECOND) < SECOND, r
    # No pg_sleep of a terminated run is left in Postgres: only the current run's (at most one) sleeps.
    sleeping = db.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                          "AND state = 'active' AND datname = current_database()").fetchone()[0]
    assert sleeping <= 1
    assert not [r for r in rows if r[1] == "failed"], rows


def test_cancel_previous_cancels_the_running_sql_with_pg_cancel_backend(admin, db, workers):
    # The running pg_sleep is cancelled by the next slot's pass (pg_cancel_backend), well before a heartbeat
    # (10 s here) could have delivered a cooperative cancel; the run ends `cancelled`, the new one runs next.
    admin.add_schedule("cps", cron="3 seconds", task="tests.sql_sleep", args={"seconds": 30},
                       overlap="cancel_previous", max_attempts=1)
    workers.start("--import", "tasks_for_tests", env={**FAST, "PGJOBS_HEARTBEAT_INTERVAL": "10"})

    def cancelled():
        rows = db.execute(
            "SELECT j.state, j.slot, j.finished_at FROM pgjobs.jobs j JOIN pgjobs.schedules s "
            "ON s.id = j.schedule_id WHERE s.name = 'cps' ORDER BY j.slot").fetchall()
        done = [r for r in rows if r[0] == "cancelled"]
        return (rows, done) if len(done) >= 2 else None

    rows, done = wait_for(cancelled, 20, "two SQL runs cancelled by their successors")
    for r in done:
        assert r[2] - (r[1] + 3 * SECOND) < SECOND, r
    assert not [r for r in rows if r[0] in ("failed", "skipped")], rows
    runs = db.execute(
        "SELECT j.id, j.slot, j.state, j.attempt, j.started_at, j.finished_at, j.last_error FROM pgjobs.jobs j "
        "JOIN pgjobs.schedules s ON s.id = j.schedule_id WHERE s.name = 'cps' ORDER BY j.slot").fetchall()
    assert _max_parallel(_runs(db, "cps"), db_now(db)) == 1, "\n".join(map(str, runs))
