"""Observability of a real worker process: Prometheus metrics, /healthz, /readyz, and JSON log lines."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from pgjobs.admin import Admin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""  # not listening yet


def samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_worker_serves_metrics_health_and_readiness(workers, admin: Admin, db: psycopg.Connection) -> None:
    port = free_port()
    proc = workers.start("--metrics-port", str(port), env={"PGJOBS_LOG_FORMAT": "json"})
    wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=15, what="/healthz to answer 200")
    status, body = wait_for(lambda: (r := get(port, "/readyz"))[0] == 200 and r, timeout=15, what="/readyz 200")
    assert body.startswith("ok")

    admin.add_schedule("tick", cron="1 seconds", task="pgjobs.noop")
    admin.enqueue("pgjobs.sleep", {"seconds": 0, "fail": True}, max_attempts=2)

    def scraped_everything() -> dict | None:
        m = samples(port)
        done = (value(m, "pgjobs_job_runs_total", task="pgjobs.noop", queue="default", outcome="completed") >= 2
                and value(m, "pgjobs_job_runs_total", task="pgjobs.sleep", queue="default", outcome="failed") == 2
                and value(m, "pgjobs_job_retries_total", task="pgjobs.sleep") == 1
                and value(m, "pgjobs_slot_lateness_seconds_count") >= 2
                and value(m, "pgjobs_leader") == 1)
        return m if done else None

    m = wait_for(scraped_everything, timeout=20, what="runs, a retry, slot lateness and leadership in /metrics")
    assert value(m, "pgjobs_job_duration_seconds_count", task="pgjobs.noop") >= 2
    assert value(m, "pgjobs_database_up") == 1
    assert ("pgjobs_jobs", frozenset({("queue", "default"), ("state", "available")})) in m
    assert ("pgjobs_queue_lag_seconds", frozenset({("queue", "default")})) in m
    assert value(m, "pgjobs_schedules_overdue") == 0
    assert 0 <= value(m, "pgjobs_heartbeat_age_seconds") < 5
    # Lateness is measured from the slot: a 1-second cron on an idle worker starts well within a second.
    assert value(m, "pgjobs_slot_lateness_seconds_sum") / value(m, "pgjobs_slot_lateness_seconds_count") < 1.0

    # Readiness follows the schema: no version row = not migrated = 503 with the reason; an unknown (newer)
    # revision is still ready (old workers keep running during a rolling deploy), and says so.
    with db.transaction():
        db.execute("DELETE FROM pgjobs.alembic_version")
    status, body = get(port, "/readyz")
    assert status == 503 and "not migrated" in body and "pgjobs migrate" in body
    db.execute("INSERT INTO pgjobs.alembic_version VALUES ('ffff_from_the_future')")
    status, body = get(port, "/readyz")
    assert status == 200 and "ahead of this code" in body
    assert get(port, "/nope")[0] == 404

    # Every log line is one JSON object; every line about a job names the job, its task and attempt, and
    # cron jobs also their schedule and slot.
    workers.kill(proc, signal.SIGTERM)
    lines = [json.loads(line) for line in workers.logs().splitlines() if line.strip()]
    job_lines = [r for r in lines if r["msg"].startswith("job ")]
    assert any(r["msg"].startswith("job ") and "failed (attempt 1/2)" in r["msg"] for r in job_lines)
    assert any(r["level"] == "error" and r["task"] == "pgjobs.sleep" for r in job_lines)
    for r in job_lines:
        assert {"ts", "level", "logger", "job_id", "task", "attempt"} <= r.keys(), r
    cron_lines = [r for r in job_lines if r["task"] == "pgjobs.noop"]
    assert cron_lines and all("schedule_id" in r and "slot" in r for r in cron_lines)
