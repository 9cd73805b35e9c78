"""Job lifecycle with real worker processes: retries, timeouts, cancel, rescue, unique keys, shutdown, pruning."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import tasks_for_tests  # noqa: F401 - registers the test tasks in this process too

from conftest import job_row as _job
from conftest import job_state as _state
from conftest import lock_holder_backend, wait_for, worker_pid_of_leader
from pgjobs.admin import Admin, AdminError
from pgjobs.config import Settings
from pgjobs.maintenance import LeaderDuties
from pgjobs.queries import queries
from pgjobs.worker import backoff_delay

IMPORT = ("--import", "tasks_for_tests")




def _in_state(db, job_id, *states):
    return _state(db, job_id) in states


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    assert backoff_delay(1, 2, 3600, jitter=0) == 2
    assert backoff_delay(5, 2, 3600, jitter=0) == 32
    assert backoff_delay(30, 2, 3600, jitter=0) == 3600
    samples = {backoff_delay(4, 2, 3600) for _ in range(50)}
    assert all(16 * 0.9 <= s <= 16 * 1.1 for s in samples) and len(samples) > 1


def test_failures_retry_with_backoff_then_succeed_and_keep_each_error(admin: Admin, db, workers) -> None:
    workers.start(*IMPORT, env={"PGJOBS_BACKOFF_BASE": "1.2"})
    job_id = admin.enqueue("tests.fail_until", {"succeed_on": 3}, max_attempts=5)
    wait_for(lambda: _in_state(db, job_id, "completed"), 20, "the job to succeed on attempt 3")
    job = _job(db, job_id)
    assert job["attempt"] == 3
    assert [e["attempt"] for e in job["errors"]] == [1, 2]
    assert "planned failure on attempt 2" in job["errors"][1]["error"]
    assert "Traceback" in job["errors"][0]["traceback"]


def test_a_job_that_exhausts_its_attempts_ends_failed(admin: Admin, db, workers) -> None:
    workers.start(*IMPORT, env={"PGJOBS_BACKOFF_BASE": "1.1"})
    job_id = admin.enqueue("tests.fail_until", {}, max_attempts=2)
    wait_for(lambda: _in_state(db, job_id, "failed"), 20, "the job to fail")
    job = _job(db, job_id)
    assert job["attempt"] == 2 and len(job["errors"]) == 2 and job["finished_at"] is not None


def test_python_task_past_its_timeout_is_abandoned_and_failed(admin: Admin, db, workers) -> None:
    workers.start(*IMPORT, concurrency=1)
    hung = admin.enqueue("tests.hang", {"seconds": 20}, max_attempts=1, timeout=1)
    wait_for(lambda: _in_state(db, hung, "failed"), 10, "the hung job to time out")
    assert "timed out after 1s" in _job(db, hung)["last_error"]
    # The runner was replaced: the single-concurrency worker still runs new jobs while the old thread hangs.
    after = admin.enqueue("pgjobs.noop")
    wait_for(lambda: _in_state(db, after, "completed"), 10, "a job after the timeout")


def test_sql_task_is_bounded_by_statement_timeout(admin: Admin, db, workers) -> None:
    workers.start(*IMPORT)
    job_id = admin.enqueue("tests.sql_sleep", {"seconds": 30}, max_attempts=1, timeout=1)
    wait_for(lambda: _in_state(db, job_id, "failed"), 10, "the SQL job to time out")
    assert "statement timeout" in _job(db, job_id)["last_error"]


def test_cancel_waiting_running_python_and_running_sql_jobs(admin: Admin, db, workers) -> None:
    waiting = admin.enqueue("pgjobs.noop", queue="nobody-listens")
    workers.start(*IMPORT)
    py_job = admin.enqueue("tests.python_loop", {"seconds": 60}, max_attempts=3)
    sql_job = admin.enqueue("tests.sql_sleep", {"seconds": 60}, max_attempts=3)
    wait_for(lambda: _in_state(db, py_job, "running") and _in_state(db, sql_job, "running"), 10, "both running")
    wait_for(lambda: db.execute("SELECT backend_pid FROM pgjobs.jobs WHERE id = %s", (sql_job,)).fetchone()[0],
             10, "the SQL job's backend pid")
    result = admin.cancel_jobs([waiting, py_job, sql_job])
    assert result["cancelled"] == [waiting]
    assert sorted(result["requested"]) == sorted([py_job, sql_job])
    wait_for(lambda: _in_state(db, py_job, "cancelled") and _in_state(db, sql_job, "cancelled"), 10,
             "running jobs to be cancelled")
    assert _job(db, py_job)["attempt"] == 1, "a cancelled job is not retried"
    assert "cancel" in _job(db, sql_job)["last_error"]


def test_retry_and_delete_finished_jobs(admin: Admin, db, workers) -> None:
    workers.start(*IMPORT)
    failed = admin.enqueue("tests.fail_until", {"succeed_on": 2}, max_attempts=1)
    wait_for(lambda: _in_state(db, failed, "failed"), 10, "failure")
    assert admin.retry_jobs([failed]) == [failed]
    wait_for(lambda: _in_state(db, failed, "completed"), 10, "the retried job to succeed")
    assert admin.delete_jobs([failed]) == [failed]
    assert db.execute("SELECT count(*) FROM pgjobs.jobs WHERE id = %s", (failed,)).fetchone()[0] == 0


def test_unique_key_is_enforced_across_racing_enqueues(admin: Admin, db) -> None:
    ids: list[int] = []
    barrier = threading.Barrier(8)

    def enqueue() -> None:
        barrier.wait()
        ids.append(admin.enqueue("pgjobs.noop", queue="idle", unique_key="report:2026-11-28"))

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0] == 1
    # Once finished, the key is free again.
    db.execute("UPDATE pgjobs.jobs SET state = 'completed', finished_at = now()")
    assert admin.enqueue("pgjobs.noop", queue="idle", unique_key="report:2026-11-28") != ids[0]


def test_bulk_enqueue_stores_args_exactly_and_a_bad_row_writes_nothing(admin: Admin, db) -> None:
    """COPY carries each job's args as JSON text: characters COPY escapes arrive unchanged."""
    tricky = [{"tab": "a\tb", "newline": "x\ny\r\n", "backslash": "C:\\dir\\N", "quote": '"', "nul-ish": "\\0",
               "unicode": "Zoë ☃ 日本", "nested": {"list": [1, 2.5, None, True]}}, {}, {"n": 10**18}]
    assert admin.enqueue_many("pgjobs.noop", tricky) == 3
    stored = [r[0] for r in db.execute("SELECT args FROM pgjobs.jobs ORDER BY id")]
    assert stored == tricky
    with pytest.raises(AdminError, match="job 101: args.*nan is not a JSON number"):
        admin.enqueue_many("pgjobs.noop", [{"ok": 1}] * 100 + [{"bad": float("nan")}])
    with pytest.raises(AdminError, match="args: must be a JSON object"):
        admin.enqueue_many("pgjobs.noop", [{"ok": 1}, [1, 2]])
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0] == 3, "a refused batch inserts nothing"


def test_kill_9_mid_job_is_rescued_from_heartbeats_in_seconds(admin: Admin, db, workers) -> None:
    victim = workers.start(*IMPORT, concurrency=1)
    job_id = admin.enqueue("tests.python_loop", {"seconds": 2}, max_attempts=3)
    wait_for(lambda: _in_state(db, job_id, "running"), 10, "the job to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    killed = time.monotonic()
    workers.start(*IMPORT)
    wait_for(lambda: _in_state(db, job_id, "completed"), 20, "rescue and completion")
    rescued_in = time.monotonic() - killed
    job = _job(db, job_id)
    assert job["attempt"] == 2 and "rescued" in job["errors"][0]["error"]
    assert rescued_in < 3 + 2 + 3, f"rescue took {rescued_in:.1f}s with rescue_after=3s"
    assert db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'running'").fetchone()[0] == 0


def test_sigterm_finishes_running_jobs_hands_over_leadership_and_unregisters(admin: Admin, db, workers) -> None:
    first = workers.start(*IMPORT)
    wait_for(lambda: worker_pid_of_leader(db) == first.pid, 10, "the first worker to lead")
    second = workers.start(*IMPORT)
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0] == 2, 10, "two workers")
    job_id = admin.enqueue("tests.python_loop", {"seconds": 1.5}, max_attempts=1, queue="default")
    wait_for(lambda: db.execute("SELECT worker FROM pgjobs.jobs WHERE id = %s AND state = 'running'",
                                (job_id,)).fetchone(), 10, "the job to run")
    runner_pid = int(db.execute("SELECT worker FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()[0]
                     .rsplit(":", 1)[1])
    old_backend = lock_holder_backend(db)
    stopping = first if runner_pid == first.pid else second
    stopping.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    if stopping is first:
        wait_for(lambda: (b := lock_holder_backend(db)) and b != old_backend, 2, "the other worker to lead")
        handover = time.monotonic() - t0
        assert handover < 1.0, f"leadership handover took {handover:.3f}s"
    assert stopping.wait(15) == 0
    assert _state(db, job_id) == "completed", "the running job finished within the grace period"
    assert _job(db, job_id)["attempt"] == 1 and "requeued" not in workers.logs(), "a finished job is not put back"
    assert db.execute("SELECT count(*) FROM pgjobs.workers WHERE pid = %s", (stopping.pid,)).fetchone()[0] == 0


def test_sigterm_requeues_jobs_that_outlive_the_grace_period(admin: Admin, db, workers) -> None:
    proc = workers.start(*IMPORT, env={"PGJOBS_SHUTDOWN_GRACE": "0.5"})
    job_id = admin.enqueue("tests.hang", {"seconds": 30}, max_attempts=2)
    wait_for(lambda: _in_state(db, job_id, "running"), 10, "the job to run")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    job = _job(db, job_id)
    assert job["state"] == "available" and job["attempt"] == 0, "requeued with its attempt refunded"


def test_pruning_deletes_old_finished_jobs_in_batches(admin: Admin, settings: Settings, db) -> None:
    db.execute("""INSERT INTO pgjobs.jobs (task, state, started_at, finished_at)
                  SELECT 'pgjobs.noop', 'completed', now() - interval '9 days', now() - interval '8 days'
                  FROM generate_series(1, 12000)""")
    db.execute("""INSERT INTO pgjobs.jobs (task, state, started_at, finished_at)
                  SELECT 'pgjobs.noop', 'completed', now(), now() FROM generate_series(1, 10)""")
    db.execute("""INSERT INTO pgjobs.jobs (task, state, started_at, finished_at)
                  SELECT 'pgjobs.noop', 'failed', now() - interval '9 days', now() - interval '8 days'
                  FROM generate_series(1, 10)""")
    from psycopg_pool import ConnectionPool

    with ConnectionPool(settings.database_url, min_size=1, max_size=2) as pool:
        duties = LeaderDuties(pool, queries("pgjobs"), settings)
        assert duties.prune() == 12000
    left = dict(db.execute("SELECT state, count(*) FROM pgjobs.jobs GROUP BY state").fetchall())
    assert left == {"completed": 10, "failed": 10}, "recent completed and 8-day-old failed (30 d retention) stay"


@pytest.mark.parametrize("bad", ["pgjobs.missing_task"])
def test_a_job_for_a_task_this_worker_does_not_know_fails_with_a_clear_error(db, workers, bad) -> None:
    db.execute("INSERT INTO pgjobs.jobs (task, max_attempts) VALUES (%s, 1)", (bad,))
    workers.start()
    wait_for(lambda: db.execute("SELECT state = 'failed' FROM pgjobs.jobs").fetchone()[0], 10, "failure")
    error = db.execute("SELECT last_error FROM pgjobs.jobs").fetchone()[0]
    assert "not registered" in error and "--import" in error


def test_jobs_claimed_behind_a_slow_job_are_released_to_other_runners(admin: Admin, db, workers) -> None:
    """Runners claim growing batches of fast jobs; when one job turns out slow, the jobs claimed behind it
    go back to the queue within HOLD_LIMIT instead of waiting for it."""
    admin.enqueue_many("pgjobs.noop", [{}] * 2000)
    slow = admin.enqueue("tests.python_loop", {"seconds": 3}, max_attempts=1)
    admin.enqueue_many("pgjobs.noop", [{}] * 300)
    first = workers.start(*IMPORT, concurrency=1)
    wait_for(lambda: _in_state(db, slow, "running"), 20, "the slow job to start")
    held = db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'running' AND id <> %s", (slow,)).fetchone()[0]
    workers.start(*IMPORT, concurrency=1)
    wait_for(lambda: _in_state(db, slow, "completed"), 20, "the slow job")
    slow_end = db.execute("SELECT finished_at FROM pgjobs.jobs WHERE id = %s", (slow,)).fetchone()[0]
    wait_for(lambda: db.execute("SELECT count(*) = 0 FROM pgjobs.jobs WHERE state <> 'completed'").fetchone()[0],
             20, "all jobs")
    late = db.execute("SELECT count(*) FROM pgjobs.jobs WHERE id <> %s AND finished_at > %s",
                      (slow, slow_end)).fetchone()[0]
    assert late == 0, f"{late} fast job(s) waited behind the slow one"
    assert db.execute("SELECT max(attempt) FROM pgjobs.jobs").fetchone()[0] == 1, "released jobs keep their attempt"
    if held:  # the slow job was claimed mid-batch (the usual case): the jobs behind it were handed back
        first.send_signal(signal.SIGTERM)
        first.wait(15)
        assert "released" in workers.logs()


def test_a_batch_of_almost_fast_jobs_never_holds_others_back_for_long(admin: Admin, db, workers) -> None:
    """Jobs just under FAST_JOB grow a runner's batch; the supervisor hands back what the batch cannot start
    within HOLD_LIMIT (0.25 s), so one runner never sits on more than about 0.25-0.5 s of claimed work."""
    admin.enqueue_many("tests.hang", [{"seconds": 0.01}] * 800)
    workers.start(*IMPORT, concurrency=1)
    held = []

    def drained() -> bool:
        running, left = db.execute("SELECT count(*) FILTER (WHERE state = 'running'), "
                                   "count(*) FILTER (WHERE state <> 'completed') FROM pgjobs.jobs").fetchone()
        held.append(running)
        return left == 0

    wait_for(drained, 60, "the backlog to drain")
    # 10 ms jobs: HOLD_LIMIT fits ~25, and the supervisor looks every 0.1 s, so a claim stops growing at 32-64
    # jobs and what the runner cannot start in time goes back. Without that bound it claims 128 at a time.
    assert max(held) <= 64, max(held)
    assert db.execute("SELECT max(attempt) FROM pgjobs.jobs").fetchone()[0] == 1
