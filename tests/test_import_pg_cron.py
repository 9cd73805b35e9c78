"""`pgjobs schedule import-pg-cron` against a stand-in `cron.job` table (the pg_cron extension is absent here),
and the opt-in `pgjobs.sql` task that carries pg_cron commands which are not view refreshes."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from conftest import ROOT, wait_for
from pgjobs.declarative import parse_refresh

STAND_IN = """
    CREATE SCHEMA cron;
    CREATE TABLE cron.job (
        jobid bigserial PRIMARY KEY, schedule text NOT NULL, command text NOT NULL,
        nodename text NOT NULL DEFAULT 'localhost', nodeport int NOT NULL DEFAULT 5432,
        database text NOT NULL DEFAULT current_database(), username text NOT NULL DEFAULT current_user,
        active boolean NOT NULL DEFAULT true, jobname text);
"""

JOBS = [  # (schedule, command, jobname, active, database)
    ("*/2 * * * *", "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries", "refresh-traces", True, None),
    ("0 * * * *", '  refresh  materialized\n view "Analytics"."Daily Stats" ; ', None, True, None),
    ("0 3 * * *", "VACUUM ANALYZE events", "nightly-vacuum", True, None),
    ("30 seconds", "REFRESH MATERIALIZED VIEW public.live_counts;", "live-counts", False, None),
    ("0 0 $ * *", "refresh materialized view monthly", "month-end", True, None),
    ("@reboot", "REFRESH MATERIALIZED VIEW boot_view", "at-boot", True, None),
    ("*/5 * * * *", "REFRESH MATERIALIZED VIEW taken", "already-here", True, None),
    ("*/5 * * * *", "REFRESH MATERIALIZED VIEW elsewhere", "other-db", True, "another_db"),
]


@pytest.fixture
def pg_cron(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(STAND_IN)
    for schedule, command, name, active, database in JOBS:
        db.execute("INSERT INTO cron.job (schedule, command, jobname, active, database) "
                   "VALUES (%s, %s, %s, %s, coalesce(%s, current_database()))",
                   (schedule, command, name, active, database))
    return db


def cli(db_url: str, *args: str, sql_tasks: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGJOBS_SQL_TASKS": "1" if sql_tasks else "0"}
    return subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, "schedule", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30, env=env)


@pytest.mark.parametrize(("command", "args"), [
    ("REFRESH MATERIALIZED VIEW x", {"view": "x", "concurrently": False}),
    ("refresh materialized view concurrently Public.X;", {"view": "x", "schema": "public", "concurrently": True}),
    ('REFRESH MATERIALIZED VIEW "My ""Odd"" View" WITH DATA', {"view": 'My "Odd" View', "concurrently": False}),
    ('\tREFRESH MATERIALIZED VIEW CONCURRENTLY "S" . v ;\n', {"view": "v", "schema": "S", "concurrently": True}),
    ("REFRESH MATERIALIZED VIEW x; DELETE FROM y", None),
    ("REFRESH MATERIALIZED VIEW x WITH NO DATA", None),
    ("SELECT 1", None),
])
def test_refresh_commands_are_recognized(command, args):
    assert parse_refresh(command) == args


def test_import_without_sql_tasks(admin, pg_cron, db_url):
    admin.add_schedule("already-here", cron="@daily", task="pgjobs.noop")

    dry = cli(db_url, "import-pg-cron", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run, nothing written: 4 would import, 1 already existed, 3 not imported" in dry.stdout
    assert [s["name"] for s in admin.list_schedules()] == ["already-here"]

    out = cli(db_url, "import-pg-cron")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "4 imported, 1 already existed, 3 not imported" in text
    assert "pg_cron job 3 'nightly-vacuum': not a REFRESH MATERIALIZED VIEW and SQL tasks are disabled" in text
    assert "pg_cron job 6 'at-boot': cron '@reboot'" in text
    assert "pg_cron job 7 'already-here': a schedule named 'already-here' already exists" in text
    assert "pg_cron job 8 'other-db': runs in database 'another_db'" in text
    unschedule = [line.strip() for line in text.splitlines() if line.strip().startswith("SELECT cron.unschedule")]
    assert unschedule == [f"SELECT cron.unschedule({i});" for i in (1, 2, 4, 5)]

    by_name = {s["name"]: s for s in admin.list_schedules()}
    assert set(by_name) == {"already-here", "refresh-traces", "pg_cron-2", "live-counts", "month-end"}
    traces = by_name["refresh-traces"]
    assert (traces["task"], traces["cron"], traces["timezone"], traces["enabled"], traces["overlap"]) == (
        "pgjobs.refresh_materialized_view", "*/2 * * * *", "UTC", True, "skip")
    assert traces["args"] == {"view": "otel_trace_summaries", "concurrently": True}
    assert by_name["pg_cron-2"]["args"] == {"view": "Daily Stats", "schema": "Analytics", "concurrently": False}
    assert by_name["live-counts"]["enabled"] is False and by_name["live-counts"]["cron"] == "30 seconds"
    assert by_name["month-end"]["cron"] == "0 0 $ * *"
    assert by_name["already-here"]["task"] == "pgjobs.noop"  # untouched
    assert [a["actor"] for a in admin.audit(entity_name="refresh-traces")][0].startswith("os:")

    again = cli(db_url, "import-pg-cron")  # idempotent: everything imported now exists
    assert "0 imported, 5 already existed, 3 not imported" in again.stdout


def test_import_with_sql_tasks_and_run_them(admin, pg_cron, db_url, db, workers):
    db.execute("""
        CREATE TABLE events (id int PRIMARY KEY, kind text);
        INSERT INTO events SELECT g, 'k' || (g % 3) FROM generate_series(1, 30) g;
        CREATE MATERIALIZED VIEW otel_trace_summaries AS SELECT kind, count(*) AS n FROM events GROUP BY kind
            WITH NO DATA;
        CREATE UNIQUE INDEX ON otel_trace_summaries (kind);""")
    out = cli(db_url, "import-pg-cron", sql_tasks=True)
    assert out.returncode == 0, out.stderr
    assert "imported     pg_cron job 3 'nightly-vacuum' -> schedule 'nightly-vacuum' (pgjobs.sql" in out.stdout
    vacuum = admin.get_schedule("nightly-vacuum")
    assert vacuum["args"] == {"sql": "VACUUM ANALYZE events"} and vacuum["overlap"] == "buffer_one"

    sql_env = {"PGJOBS_SQL_TASKS": "1"}
    workers.start(env=sql_env)
    jobs = [admin.run_now("nightly-vacuum"), admin.run_now("refresh-traces")]

    def finished():
        rows = [admin.get_job(j) for j in jobs]
        return rows if all(r["state"] not in ("available", "running") for r in rows) else None

    vac, refresh = wait_for(finished, 20, "the imported SQL and refresh jobs")
    assert vac["state"] == "completed", vac["last_error"]
    assert vac["result"]["status"] == "VACUUM"  # VACUUM runs: the SQL task is autocommit, like pg_cron
    assert refresh["state"] == "completed", refresh["last_error"]
    assert db.execute("SELECT count(*) FROM otel_trace_summaries").fetchone()[0] == 3  # the view has rows


def test_sql_task_is_bounded_by_the_job_timeout(admin, db_url, workers, monkeypatch):
    monkeypatch.setenv("PGJOBS_SQL_TASKS", "1")
    from pgjobs.builtin import enable_sql_task

    enable_sql_task()
    admin.add_schedule("slow-sql", cron="@yearly", task="pgjobs.sql", args={"sql": "SELECT pg_sleep(10)"},
                       timeout_seconds=0.5, max_attempts=1)
    workers.start(env={"PGJOBS_SQL_TASKS": "1"})
    job_id = admin.run_now("slow-sql")
    job = wait_for(lambda: (j := admin.get_job(job_id))["state"] == "failed" and j, 15, "the slow SQL job to fail")
    assert "statement timeout" in job["last_error"]
    assert (job["finished_at"] - job["started_at"]).total_seconds() < 3


def test_sql_task_is_unknown_unless_enabled(admin, monkeypatch):
    from pgjobs.admin import AdminError
    from pgjobs.tasks import _registry

    monkeypatch.delitem(_registry, "pgjobs.sql", raising=False)  # an earlier test may have enabled it here
    with pytest.raises(AdminError, match="task 'pgjobs.sql' is not registered"):
        admin.add_schedule("sql", cron="@daily", task="pgjobs.sql", args={"sql": "SELECT 1"})


def test_no_cron_job_table_is_a_one_line_error(db_url):
    out = cli(db_url, "import-pg-cron")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("pgjobs: error: no pg_cron job table here: cron.job does not exist")
