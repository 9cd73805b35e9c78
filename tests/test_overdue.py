"""The dead man's switch and per-schedule metrics, with real workers: `schedule overdue` (exit 1 when any
enabled schedule has had no success for N of its intervals) and the /metrics series labelled by schedule."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
from test_metrics import free_port, samples, value

from conftest import ROOT, wait_for
from pgjobs.admin import Admin

FAST = {"PGJOBS_CATCHUP_GRACE": "2"}


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def completed(db: psycopg.Connection, name: str, outcome: str = "completed") -> int:
    return db.execute("SELECT count(*) FROM pgjobs.slots l JOIN pgjobs.schedules s ON s.id = l.schedule_id "
                      "WHERE s.name = %s AND l.outcome = %s", (name, outcome)).fetchone()[0]


def test_schedule_overdue_names_the_schedules_without_success_and_exits_1(admin: Admin, db, workers, db_url):
    admin.add_schedule("healthy", cron="1 second", task="pgjobs.noop", overlap="allow")
    admin.add_schedule("broken", cron="1 second", task="pgjobs.sleep", args={"seconds": 0, "fail": True},
                       max_attempts=1, overlap="allow")
    admin.add_schedule("hourly", cron="0 * * * *", task="pgjobs.noop")  # created after its last slots: not yet due
    admin.add_schedule("paused", cron="1 second", task="pgjobs.noop", enabled=False)
    workers.start(env=FAST)
    wait_for(lambda: completed(db, "healthy") >= 2 and completed(db, "broken", "failed") >= 4, 20,
             "successes of one schedule and four failed slots of the other")
    out = cli(db_url, "schedule", "overdue", "--json")
    assert out.returncode == 1, (out.stdout, out.stderr)
    report = json.loads(out.stdout)
    assert [s["name"] for s in report["overdue"]] == ["broken"]
    assert report["overdue"][0]["last_success_at"] is None and report["overdue"][0]["overdue_seconds"] > 0
    text = cli(db_url, "schedule", "overdue")
    assert text.returncode == 1 and "broken" in text.stdout and "healthy" not in text.stdout
    relaxed = cli(db_url, "schedule", "overdue", "--intervals", "1000")  # longer ago than it exists
    assert relaxed.returncode == 0 and "no schedule is overdue" in relaxed.stdout
    bad = cli(db_url, "schedule", "overdue", "--intervals", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("pgjobs: error: intervals") and bad.stderr.count("\n") == 1
    admin.pause_schedule("broken")
    assert cli(db_url, "schedule", "overdue").returncode == 0  # a paused schedule is not overdue


def test_metrics_carry_the_schedule_label(admin: Admin, db, workers):
    admin.add_schedule("ok", cron="1 second", task="pgjobs.noop", overlap="allow")
    admin.add_schedule("bad", cron="1 second", task="pgjobs.sleep", args={"seconds": 0, "fail": True},
                       max_attempts=1, overlap="allow", pause_after_failures=2)
    admin.add_schedule("slow", cron="1 second", task="pgjobs.sleep", args={"seconds": 2.5}, overlap="skip")
    port = free_port()
    workers.start("--metrics-port", str(port), env=FAST)

    def scraped():
        try:
            m = samples(port)
        except AssertionError:
            return None
        done = (value(m, "pgjobs_schedule_slots_total", schedule="ok", outcome="completed") >= 2
                and value(m, "pgjobs_schedule_auto_pauses_total", schedule="bad") == 1
                and value(m, "pgjobs_schedule_slots_total", schedule="slow", outcome="skipped") >= 1
                and value(m, "pgjobs_schedule_last_success_timestamp_seconds", schedule="ok") > 0)
        return m if done else None

    m = wait_for(scraped, 30, "per-schedule metrics")
    assert value(m, "pgjobs_schedule_slots_total", schedule="bad", outcome="failed") >= 2
    assert value(m, "pgjobs_schedule_lateness_seconds_count", schedule="ok") >= 2
    assert abs(value(m, "pgjobs_schedule_last_success_timestamp_seconds", schedule="ok") - time.time()) < 30
    assert value(m, "pgjobs_schedule_overdue", schedule="ok") == 0
    assert not admin.get_schedule("bad")["enabled"]
