"""The built-in refresh task, as the first customer uses it: otel_trace_summaries refreshed on a schedule."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import wait_for
from pgjobs.admin import Admin, AdminError

SPANS = """
CREATE TABLE spans (trace_id text NOT NULL, span_id text NOT NULL, service text NOT NULL,
                    duration_ms double precision NOT NULL, PRIMARY KEY (trace_id, span_id));
INSERT INTO spans SELECT 't' || (g % 50), 's' || g, 'svc' || (g % 3), g % 97 FROM generate_series(1, 2000) g;
CREATE MATERIALIZED VIEW otel_trace_summaries AS
    SELECT trace_id, count(*) AS spans, max(duration_ms) AS max_ms FROM spans GROUP BY trace_id;
CREATE UNIQUE INDEX ON otel_trace_summaries (trace_id);
"""


def _job(db: psycopg.Connection, job_id: int) -> tuple:
    return db.execute("SELECT state, last_error, result FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()


def _finished(db: psycopg.Connection, job_id: int) -> tuple | None:
    row = _job(db, job_id)
    return row if row[0] in ("completed", "failed", "skipped", "cancelled") else None


def test_scheduled_refresh_fills_the_view_without_pg_cron(admin: Admin, db, workers) -> None:
    db.execute(SPANS)
    db.execute("INSERT INTO spans VALUES ('new-trace', 'x', 'svc', 5)")
    admin.add_schedule("otel-trace-summaries", cron="1 seconds", task="pgjobs.refresh_materialized_view",
                       args={"view": "otel_trace_summaries"})
    workers.start()
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'completed'").fetchone()[0] >= 2,
             20, "two completed refreshes")
    assert db.execute("SELECT spans FROM otel_trace_summaries WHERE trace_id = 'new-trace'").fetchone() == (1,)
    result = db.execute("SELECT result FROM pgjobs.jobs WHERE state = 'completed' LIMIT 1").fetchone()[0]
    assert result["view"] == "public.otel_trace_summaries" and result["mode"] == "concurrent"


def test_reads_during_a_concurrent_refresh_do_not_wait_and_a_second_refresh_skips(admin: Admin, db, workers) -> None:
    # A view whose refresh takes ~2 s (pg_sleep per row) but always has rows to read.
    db.execute("""
        CREATE MATERIALIZED VIEW slow_view AS
            SELECT g AS id, (SELECT pg_sleep(0.5))::text AS pause FROM generate_series(1, 4) g;
        CREATE UNIQUE INDEX ON slow_view (id);""")
    workers.start(concurrency=4)
    first = admin.enqueue("pgjobs.refresh_materialized_view", {"view": "slow_view"}, max_attempts=1)
    wait_for(lambda: db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'REFRESH MATERIALIZED VIEW CONCURRENTLY%%'"
    ).fetchone()[0], 10, "the refresh to be running")

    t0 = time.monotonic()
    assert db.execute("SELECT count(*) FROM slow_view").fetchone()[0] == 4
    read_seconds = time.monotonic() - t0
    assert read_seconds < 0.5, f"a read waited {read_seconds:.3f}s behind the refresh"

    second = admin.enqueue("pgjobs.refresh_materialized_view", {"view": "slow_view"}, max_attempts=1)
    state, error, _ = wait_for(lambda: _finished(db, second), 10, "the second refresh to end")
    assert state == "skipped" and "already running" in error
    assert _job(db, first)[0] == "running", "the second refresh ended while the first was still running"
    assert wait_for(lambda: _finished(db, first), 15, "the first refresh")[0] == "completed"


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        ("", {"view": "nope"}, "materialized view 'nope' does not exist"),
        ("CREATE TABLE plain_table (id int)", {"view": "plain_table"}, "is a table, not a materialized view"),
        ("CREATE MATERIALIZED VIEW no_index AS SELECT 1 AS id", {"view": "no_index"}, "has no unique index"),
        ("CREATE SCHEMA other; CREATE MATERIALIZED VIEW other.v AS SELECT 1 AS id",
         {"view": "v", "schema": "nope"}, "materialized view 'nope.v' does not exist"),
    ],
)
def test_refresh_errors_are_recorded_on_the_job(admin: Admin, db, workers, setup, args, expected) -> None:
    if setup:
        db.execute(setup)
    workers.start()
    job_id = admin.enqueue("pgjobs.refresh_materialized_view", args, max_attempts=1)
    state, error, _ = wait_for(lambda: _finished(db, job_id), 15, "the job to fail")
    assert state == "failed"
    assert expected in error


def test_a_never_populated_view_gets_a_plain_first_refresh(admin: Admin, db, workers) -> None:
    db.execute("""CREATE MATERIALIZED VIEW cold AS SELECT 1 AS id WITH NO DATA;
                  CREATE UNIQUE INDEX ON cold (id);""")
    workers.start()
    job_id = admin.enqueue("pgjobs.refresh_materialized_view", {"view": "cold"}, max_attempts=1)
    state, _, result = wait_for(lambda: _finished(db, job_id), 15, "the refresh")
    assert state == "completed"
    assert result["mode"] == "plain" and "never populated" in result["note"]
    assert db.execute("SELECT count(*) FROM cold").fetchone()[0] == 1


def test_identifiers_are_quoted_not_pasted(admin: Admin, db, workers) -> None:
    db.execute('CREATE SCHEMA "Odd Schema"; CREATE MATERIALIZED VIEW "Odd Schema"."view; DROP TABLE x" AS '
               "SELECT 1 AS id; CREATE UNIQUE INDEX ON \"Odd Schema\".\"view; DROP TABLE x\" (id)")
    db.execute("CREATE TABLE x (id int)")
    workers.start()
    job_id = admin.enqueue("pgjobs.refresh_materialized_view",
                           {"view": "view; DROP TABLE x", "schema": "Odd Schema"}, max_attempts=1)
    assert wait_for(lambda: _finished(db, job_id), 15, "the refresh")[0] == "completed"
    assert db.execute("SELECT to_regclass('public.x')").fetchone()[0] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, 'missing "view"'),
        ({"view": ""}, "view must be a non-empty string"),
        ({"view": "x" * 64}, "longer than 63 bytes"),
        ({"view": "v", "concurrently": "yes"}, '"concurrently" must be true or false'),
        ({"view": "v", "colour": "red"}, "unknown argument(s) colour"),
    ],
)
def test_bad_refresh_arguments_are_refused_before_anything_is_written(admin: Admin, db, args, message) -> None:
    with pytest.raises(AdminError, match="task 'pgjobs.refresh_materialized_view'") as err:
        admin.add_schedule("bad", cron="*/2 * * * *", task="pgjobs.refresh_materialized_view", args=args)
    assert message in str(err.value)
    assert db.execute("SELECT count(*) FROM pgjobs.schedules").fetchone()[0] == 0


def test_concurrent_reads_keep_flowing_during_a_long_refresh(admin: Admin, db_url: str, db, workers) -> None:
    """Readers hammering the view during a refresh never block for long."""
    db.execute("""
        CREATE MATERIALIZED VIEW busy AS SELECT g AS id, (SELECT pg_sleep(0.3))::text AS p FROM generate_series(1, 5) g;
        CREATE UNIQUE INDEX ON busy (id);""")
    workers.start()
    job_id = admin.enqueue("pgjobs.refresh_materialized_view", {"view": "busy"}, max_attempts=1)
    worst = 0.0
    stop = threading.Event()

    def read() -> None:
        nonlocal worst
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                t = time.monotonic()
                conn.execute("SELECT count(*) FROM busy").fetchone()
                worst = max(worst, time.monotonic() - t)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert wait_for(lambda: _finished(db, job_id), 20, "the refresh")[0] == "completed"
    finally:
        stop.set()
        reader.join(5)
    assert worst < 0.5, f"slowest read during the refresh: {worst:.3f}s"
