"""Time every admin read the console's pages make, on 1,000,000 jobs and 1,000 schedules.

    PGJOBS_BENCH_SERVER=postgresql://postgres@127.0.0.1:5432 .venv/bin/python bench/console_queries.py
        [--jobs 1000000] [--schedules 1000] [--repeat 7] [--keep] [--explain] [--reuse]

Seeds a fresh database (`pgjobs_bench_console`, migrated with Alembic) with generate_series: cron runs of
every schedule spread over 30 days (completed, failed, retried, skipped, cancelled), ad-hoc jobs on two
queues, a backlog of available and running jobs, workers and audit rows; then VACUUM ANALYZE, like a database
that has been running for a while. Each call goes through `pgjobs.admin.Admin` with a connection pool, as the
console does; the median and worst of `--repeat` runs are printed per page, and the script exits 1 if a
median is over the budget (300 ms). `--explain` prints the plans of the console's own statements.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgjobs import migrations  # noqa: E402
from pgjobs.admin import Admin  # noqa: E402
from pgjobs.config import Settings  # noqa: E402

DB = "pgjobs_bench_console"
BUDGET_MS = 300.0

# Seed data (bench fixture only; the product's SQL lives in pgjobs/queries.py).
SEED = [
    """INSERT INTO pgjobs.schedules (name, task, args, cron, timezone, queue, next_run_at, last_slot_at)
       SELECT format('sched-%s', lpad(i::text, 5, '0')), CASE WHEN i % 10 = 0 THEN 'pgjobs.refresh_materialized_view'
              ELSE 'pgjobs.noop' END, CASE WHEN i % 10 = 0 THEN '{"view": "v"}'::jsonb ELSE '{}'::jsonb END,
              CASE i % 4 WHEN 0 THEN '*/2 * * * *' WHEN 1 THEN '0 * * * *' WHEN 2 THEN '*/15 * * * *'
              ELSE '30 2 * * *' END,
              CASE WHEN i % 3 = 0 THEN 'Europe/Paris' ELSE 'UTC' END, 'default',
              now() + (i % 600) * interval '1 second', now() - (i % 600) * interval '1 second'
       FROM generate_series(1, %(schedules)s) AS i""",
    # Cron runs: each schedule's slots spread evenly over 30 days, oldest first (ids follow time).
    """INSERT INTO pgjobs.jobs (queue, task, args, state, attempt, max_attempts, scheduled_at, schedule_id, slot,
                               inserted_at, started_at, finished_at, worker, last_error)
       SELECT 'default', 'pgjobs.noop', '{}'::jsonb, st.state, CASE WHEN r % 50 = 0 THEN 2 ELSE 1 END, 3, t.slot,
              s.id, t.slot, t.slot, t.slot + (r % 7) * interval '10 milliseconds',
              t.slot + (r % 7) * interval '10 milliseconds' + (r % 13) * interval '100 milliseconds',
              'bench-host:1', CASE WHEN st.state = 'failed' THEN 'RuntimeError: boom ' || r END
       FROM generate_series(1, %(runs)s) AS g(r)
       JOIN pgjobs.schedules AS s ON s.id = 1 + (g.r % %(schedules)s)
       CROSS JOIN LATERAL (SELECT date_trunc('second', now() - interval '30 days'
                                  + (g.r::float8 / %(runs)s) * interval '30 days') AS slot) AS t
       CROSS JOIN LATERAL (SELECT CASE WHEN r % 20 = 0 THEN 'failed' WHEN r % 33 = 0 THEN 'skipped'
                                       WHEN r % 97 = 0 THEN 'cancelled' ELSE 'completed' END AS state) AS st
       ORDER BY g.r""",
    # Ad-hoc jobs on two queues, finished, over the same 30 days.
    """INSERT INTO pgjobs.jobs (queue, task, args, state, attempt, scheduled_at, inserted_at, started_at, finished_at,
                               worker, last_error)
       SELECT CASE WHEN r % 5 = 0 THEN 'reports' ELSE 'default' END,
              CASE WHEN r % 1000 = 0 THEN 'app.rare' ELSE 'app.work' END, jsonb_build_object('n', r),
              CASE WHEN r % 25 = 0 THEN 'failed' ELSE 'completed' END, 1, t.at, t.at, t.at, t.at + interval '1 second',
              'bench-host:2', CASE WHEN r % 25 = 0 THEN 'ValueError: bad ' || r END
       FROM generate_series(1, %(adhoc)s) AS r
       CROSS JOIN LATERAL (SELECT now() - interval '30 days' + (r::float8 / %(adhoc)s) * interval '30 days' AS at) t""",
    # A backlog: available (some due, some later) and running.
    """INSERT INTO pgjobs.jobs (queue, task, args, state, attempt, scheduled_at, started_at, worker_id, worker)
       SELECT 'default', 'app.work', '{}'::jsonb, CASE WHEN r % 10 = 0 THEN 'running' ELSE 'available' END,
              CASE WHEN r % 10 = 0 THEN 1 ELSE 0 END, now() + (r % 3 - 1) * interval '1 minute',
              CASE WHEN r % 10 = 0 THEN now() END, CASE WHEN r % 10 = 0 THEN 1 + r % 4 END,
              CASE WHEN r % 10 = 0 THEN 'bench-host:' || (1 + r % 4) END
       FROM generate_series(1, %(backlog)s) AS r""",
    """INSERT INTO pgjobs.workers (name, host, pid, queues, concurrency, leader_since)
       SELECT 'bench-host:' || i, 'bench-host', i, ARRAY['default', 'reports'], 8,
              CASE WHEN i = 1 THEN now() END FROM generate_series(1, 4) AS i""",
    """INSERT INTO pgjobs.audit (at, actor, action, entity, entity_name, before, after)
       SELECT now() - r * interval '1 minute', 'console:ops', 'edit', 'schedule', format('sched-%s', lpad((1 + r % 1000)::text, 5, '0')),
              '{"cron": "*/2 * * * *"}'::jsonb, '{"cron": "*/5 * * * *"}'::jsonb
       FROM generate_series(1, 20000) AS r""",
]


def seed(server: str, jobs: int, schedules: int) -> str:
    url = f"{server}/{DB}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    migrations.upgrade(Settings.load(database_url=url))
    backlog = jobs // 50
    adhoc = jobs // 20
    runs = jobs - backlog - adhoc
    params = {"schedules": schedules, "runs": runs, "adhoc": adhoc, "backlog": backlog}
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SEED:  # '%' is modulo in the text; only %(name)s are parameters
            conn.execute(statement.replace("%", "%%").replace("%%(", "%("), params)
        conn.execute("VACUUM ANALYZE")
        total = conn.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0]
    print(f"seeded {total:,} jobs, {schedules:,} schedules in {time.monotonic() - started:.1f} s")
    return url


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm: pool connection, plan, cache
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples)


def calls(admin: Admin) -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    now = datetime.now(UTC)
    day, week, month = now - timedelta(days=1), now - timedelta(days=7), now - timedelta(days=30)
    name = "sched-00500"
    some_job = admin.list_jobs(limit=1)[0]["id"] // 2
    return {
        "Overview": [
            ("status()", admin.status),
            ("job_state_counts()", admin.job_state_counts),
            ("next_runs(10)", lambda: admin.next_runs(10)),
            ("recent_lateness(24h, 200)", lambda: admin.recent_lateness(since=day, limit=200)),
            ("recent_failures(24h, 20)", lambda: admin.recent_failures(since=day, limit=20)),
        ],
        "Schedules": [
            ("console_schedules(name, 51)", lambda: admin.console_schedules(limit=51)),
            ("console_schedules(next_run, 51)", lambda: admin.console_schedules(sort="next_run", limit=51)),
            ("console_schedules(last_slot, p10)", lambda: admin.console_schedules(sort="last_slot", limit=51,
                                                                                  offset=500)),
            ("console_schedules(search)", lambda: admin.console_schedules(search="sched-009", limit=51)),
            ("console_schedules(200 rows)", lambda: admin.console_schedules(limit=201)),
            ("count_schedules()", admin.count_schedules),
        ],
        "Schedule detail": [
            ("schedule_names(1000)", lambda: admin.schedule_names(None, 1000)),
            ("get_schedule", lambda: admin.get_schedule(name)),
            ("schedule_stats(30 d)", lambda: admin.schedule_stats(name, since=month)),
            ("schedule_buckets(30 d, 12 h)", lambda: admin.schedule_buckets(name, since=month, bucket_seconds=43200)),
            ("schedule_buckets(6 h, 5 min)", lambda: admin.schedule_buckets(
                name, since=now - timedelta(hours=6), bucket_seconds=300)),
            ("schedule_history(30 d, 50)", lambda: admin.schedule_history(name, since=month, limit=50)),
        ],
        "Jobs": [
            ("list_jobs()", lambda: admin.list_jobs(limit=51)),
            ("list_jobs(older page)", lambda: admin.list_jobs(limit=51, before_id=some_job)),
            ("list_jobs(state=failed)", lambda: admin.list_jobs(state="failed", limit=51)),
            ("list_jobs(state=cancelled)", lambda: admin.list_jobs(state="cancelled", limit=51)),
            ("list_jobs(state=available)", lambda: admin.list_jobs(state="available", limit=51)),
            ("list_jobs(queue=reports)", lambda: admin.list_jobs(queue="reports", limit=51)),
            ("list_jobs(task=app.rare)", lambda: admin.list_jobs(task="app.rare", limit=51)),
            ("list_jobs(schedule)", lambda: admin.list_jobs(schedule=name, limit=51)),
            ("list_jobs(failed, last 24 h)", lambda: admin.list_jobs(state="failed", since=day, limit=51)),
            ("list_jobs(queue, 7 d)", lambda: admin.list_jobs(queue="reports", since=week, limit=51)),
            # worst cases: a filter that matches nothing must not walk the whole table
            ("list_jobs(task=unknown)", lambda: admin.list_jobs(task="no.such.task", limit=51)),
            ("list_jobs(queue=unknown)", lambda: admin.list_jobs(queue="no-such-queue", limit=51)),
            ("list_jobs(cancelled, reports)", lambda: admin.list_jobs(state="cancelled", queue="reports", limit=51)),
            ("list_jobs(schedule, failed)", lambda: admin.list_jobs(schedule=name, state="failed", limit=51)),
            ("get_job", lambda: admin.get_job(some_job)),
        ],
        "Workers": [("status()", admin.status)],
        "Audit log": [
            ("audit(51)", lambda: admin.audit(limit=51)),
            ("audit(entity)", lambda: admin.audit(limit=51, entity_name=name)),
            ("audit(unknown entity)", lambda: admin.audit(limit=51, entity_name="no such thing")),
        ],
    }


def explain(url: str) -> None:
    from pgjobs.queries import queries

    q = queries("pgjobs")
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        sid = conn.execute("SELECT id FROM pgjobs.schedules WHERE name = 'sched-00500'").fetchone()[0]
        plans = {
            "console_schedules": (q.console_schedules, {"search": None, "enabled": None, "sort": "name", "limit": 51,
                                                        "offset": 0, "since": now - timedelta(days=7), "runs": 200}),
            "console_schedule_stats": (q.console_schedule_stats, {"schedule_id": sid, "since": now - timedelta(days=30),
                                                                  "cap": 20000}),
            "console_recent_failures": (q.console_recent_failures, {"since": now - timedelta(days=1), "limit": 20}),
            "recent_lateness": (q.recent_lateness, {"since": now - timedelta(days=1), "limit": 200}),
            "list_jobs(task)": (q.list_jobs, {"schedule_id": None, "states": None, "queue": None, "task": "app.rare",
                                              "since": None, "until": None, "before_id": None, "limit": 51}),
            "list_jobs(state=cancelled)": (q.list_jobs, {"schedule_id": None, "states": ["cancelled"], "queue": None,
                                                         "task": None, "since": None, "until": None,
                                                         "before_id": None, "limit": 51}),
        }
        for label, (text, params) in plans.items():
            print(f"\n--- {label}")
            for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + text, params):
                print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="use the already seeded database")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    server = os.environ.get("PGJOBS_BENCH_SERVER", os.environ.get("PGJOBS_TEST_SERVER",
                                                                  "postgresql://postgres@127.0.0.1:5432"))
    url = f"{server}/{DB}" if args.reuse else seed(server, args.jobs, args.schedules)
    settings = Settings.load(database_url=url)
    worst_median = 0.0
    over = []
    with ConnectionPool(url, min_size=1, max_size=2, open=True) as pool:
        admin = Admin(settings, actor="bench", role="viewer", pool=pool)
        for page, items in calls(admin).items():
            print(f"\n{page}")
            page_total = 0.0
            for label, fn in items:
                median, worst = timed(fn, args.repeat)
                page_total += median
                worst_median = max(worst_median, median)
                flag = "  OVER BUDGET" if median > BUDGET_MS else ""
                if flag:
                    over.append(f"{page}: {label}")
                print(f"  {label:<36} median {median:7.1f} ms   max {worst:7.1f} ms{flag}")
            print(f"  {'(page total, medians)':<36}        {page_total:7.1f} ms")
    if args.explain:
        explain(url)
    if not args.keep and not args.reuse:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
    print(f"\nslowest median {worst_median:.1f} ms (budget {BUDGET_MS:.0f} ms per call)")
    if over:
        print("over budget: " + "; ".join(over))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
