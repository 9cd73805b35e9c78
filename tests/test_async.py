"""Async (`async def`) tasks with real worker processes: throughput on one event loop, retries, timeouts,
operator cancel, SIGTERM grace and requeue, the loop-lag warning, and no loop for sync-only workers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import async_tasks_for_tests  # noqa: F401 - registers the async test tasks in this process too
import pytest
import tasks_for_tests  # noqa: F401

from conftest import ROOT, wait_for
from conftest import job_row as _job
from conftest import job_state as _state
from pgjobs.admin import Admin
from pgjobs.config import ConfigError, Settings

ASYNC = ("--import", "async_tasks_for_tests")


def _count(db, state: str) -> int:
    return db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = %s", (state,)).fetchone()[0]


def _started(db, workers, *extra: str, **kw):
    proc = workers.start(*ASYNC, *extra, **kw)
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.workers WHERE pid = %s", (proc.pid,)).fetchone()[0],
             15, "the worker to register")
    return proc


def test_one_worker_with_defaults_runs_200_async_sleep_jobs_in_under_5_s(admin: Admin, db, workers) -> None:
    _started(db, workers)
    t0 = time.monotonic()
    admin.enqueue_many("atests.sleep", [{"seconds": 1}] * 200)
    wait_for(lambda: _count(db, "completed") == 200, 15, "200 async jobs to complete")
    elapsed = time.monotonic() - t0
    print(f"\n200 async jobs of asyncio.sleep(1) on one worker (defaults): {elapsed:.2f} s")
    assert elapsed < 5, f"200 async jobs took {elapsed:.2f}s"
    rows = db.execute("SELECT attempt, result FROM pgjobs.jobs").fetchall()
    assert {(a, r["slept"]) for a, r in rows} == {(1, 1)}, "each ran once and its result was recorded"
    assert "async loop started (async concurrency 100)" in workers.logs()


def test_async_concurrency_bounds_the_jobs_running_at_once(admin: Admin, db, workers) -> None:
    _started(db, workers, env={"PGJOBS_ASYNC_CONCURRENCY": "5"})
    admin.enqueue_many("atests.span", [{"seconds": 0.3}] * 20)
    wait_for(lambda: _count(db, "completed") == 20, 20, "20 async jobs to complete")
    spans = [r[0] for r in db.execute("SELECT result FROM pgjobs.jobs").fetchall()]
    peak = max(sum(1 for o in spans if o["start"] <= s["start"] < o["end"]) for s in spans)
    assert peak == 5, f"{peak} async jobs ran at once with async concurrency 5"


def test_a_failing_async_job_is_retried_with_its_traceback(admin: Admin, db, workers) -> None:
    _started(db, workers, env={"PGJOBS_BACKOFF_BASE": "1.1"})
    job_id = admin.enqueue("atests.fail_until", {"succeed_on": 2}, max_attempts=3)
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the async job to succeed on attempt 2")
    job = _job(db, job_id)
    assert job["attempt"] == 2 and job["result"] == {"attempt": 2}
    assert "planned async failure on attempt 1" in job["errors"][0]["error"]
    assert "Traceback" in job["errors"][0]["traceback"]


def test_a_timed_out_async_job_is_cancelled_and_retried(admin: Admin, db, workers) -> None:
    _started(db, workers, env={"PGJOBS_BACKOFF_BASE": "1.1"})
    job_id = admin.enqueue("atests.slow_first", {"seconds": 30}, max_attempts=3, timeout=1)
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the timed-out async job to succeed when retried")
    job = _job(db, job_id)
    assert job["attempt"] == 2
    assert job["errors"][0]["error"] == "timed out after 1s"


def test_an_operator_cancels_a_running_async_job(admin: Admin, db, workers) -> None:
    _started(db, workers)
    job_id = admin.enqueue("atests.sleep", {"seconds": 30}, max_attempts=3)
    wait_for(lambda: _state(db, job_id) == "running", 10, "the async job to run")
    t0 = time.monotonic()
    assert admin.cancel_jobs([job_id])["requested"] == [job_id]
    wait_for(lambda: _state(db, job_id) == "cancelled", 5, "the running async job to be cancelled")
    print(f"\ncancel of a running async job took {time.monotonic() - t0:.2f} s (heartbeat 0.5 s)")
    assert _job(db, job_id)["attempt"] == 1, "a cancelled job is not retried"
    after = admin.enqueue("atests.sleep", {"seconds": 0})
    wait_for(lambda: _state(db, after) == "completed", 10, "an async job after the cancel")


def test_sigterm_lets_async_jobs_finish_in_the_grace_then_requeues_the_rest(admin: Admin, db, workers) -> None:
    proc = _started(db, workers, env={"PGJOBS_SHUTDOWN_GRACE": "1.5"})
    short = admin.enqueue("atests.sleep", {"seconds": 0.5})
    long = admin.enqueue("atests.sleep", {"seconds": 30}, max_attempts=2)
    wait_for(lambda: _state(db, short) == "running" and _state(db, long) == "running", 10, "both jobs to run")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert _state(db, short) == "completed", "the short job finished within the grace period"
    job = _job(db, long)
    assert job["state"] == "available" and job["attempt"] == 0, "requeued with its attempt refunded"
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0] == 0


def test_a_task_blocking_the_loop_is_named_in_a_warning(admin: Admin, db, workers) -> None:
    _started(db, workers, env={"PGJOBS_ASYNC_LAG_WARN": "0.3"})
    job_id = admin.enqueue("atests.block_loop", {"seconds": 1.2})
    wait_for(lambda: _state(db, job_id) == "completed", 10, "the blocking job to complete")
    wait_for(lambda: "blocked" in workers.logs(), 5, "the lag warning")
    line = next(ln for ln in workers.logs().splitlines() if "async loop has been blocked" in ln)
    assert f"job {job_id}, task atests.block_loop" in line


def test_a_sync_only_worker_starts_no_event_loop(admin: Admin, db, workers) -> None:
    workers.start("--import", "tasks_for_tests")
    job_id = admin.enqueue("pgjobs.noop")
    wait_for(lambda: _state(db, job_id) == "completed", 10, "a sync job")
    assert "async loop" not in workers.logs()


@pytest.mark.parametrize("env, message", [
    ({"PGJOBS_ASYNC_CONCURRENCY": "0"}, "async_concurrency (PGJOBS_ASYNC_CONCURRENCY) 0: must be between 1 and 10000"),
    ({"PGJOBS_ASYNC_CONCURRENCY": "many"}, "PGJOBS_ASYNC_CONCURRENCY='many': expected a whole number"),
    ({"PGJOBS_ASYNC_LAG_WARN": "0"}, "async_lag_warn (PGJOBS_ASYNC_LAG_WARN) 0.0: must be finite, at least 0.01 and at most 3600"),
])
def test_bad_async_settings_are_refused_with_one_line(monkeypatch, env, message) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.load(database_url="postgresql://x@localhost/x")


def test_the_cli_refuses_a_bad_async_concurrency_with_exit_2(db_url: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, "worker",
                          "--async-concurrency", "0"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["pgjobs: error: async_concurrency (PGJOBS_ASYNC_CONCURRENCY) 0: must be between 1 and 10000"], out.stderr


def test_an_async_tasks_connection_carries_the_jobs_statement_timeout(admin: Admin, db, workers) -> None:
    _started(db, workers)
    job_id = admin.enqueue("atests.statement_timeout", timeout=30)
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the async SQL job to complete")
    result = _job(db, job_id)["result"]
    assert result["pid_recorded"], "the backend pid was recorded on the job while its SQL ran"
    setting = result["statement_timeout"]
    ms = int(setting[:-2]) if setting.endswith("ms") else int(setting[:-1]) * 1000
    assert 25_000 < ms <= 30_000, f"statement_timeout {setting} is not the job's remaining time"


def test_cancelling_an_async_job_stops_its_running_sql(admin: Admin, db, workers) -> None:
    _started(db, workers)
    job_id = admin.enqueue("atests.sql_sleep", {"seconds": 60}, max_attempts=3)
    sleeping = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'SELECT pg_sleep%%' AND state = 'active'")
    wait_for(lambda: db.execute(sleeping).fetchone()[0] == 1, 15, "the async job's SQL to run")
    admin.cancel_jobs([job_id])
    wait_for(lambda: _state(db, job_id) == "cancelled", 5, "the async SQL job to be cancelled")
    wait_for(lambda: db.execute(sleeping).fetchone()[0] == 0, 2, "its statement to end in Postgres")
    assert _job(db, job_id)["attempt"] == 1
