"""A held xmin horizon under steady load, on a throwaway server with autovacuum on (as in production).

Per 10 s window: jobs completed vs offered, pickup wait p99 (started_at - scheduled_at of the jobs started in
the window), and the hot partitions' (ring + parked) total size and dead tuples. Long (about 100 s each):
marked `long`, deselected by default; run with `-m long -s` to see the windows.

    PGJOBS_PRESSURE_RATE=1000 PGJOBS_PRESSURE_HOLD=60 pytest -m long -s tests/test_storage_pressure.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, migrated_database
from pgjobs import Admin, Settings
from pgserver import PgServer

pytestmark = [pytest.mark.long, pytest.mark.slow]

RATE = int(os.environ.get("PGJOBS_PRESSURE_RATE", "500"))
HOLD = float(os.environ.get("PGJOBS_PRESSURE_HOLD", "60"))
BEFORE = 20.0
AFTER = 20.0
WINDOW = 10.0
PRODUCTION = {"autovacuum": "on", "autovacuum_naptime": "10s", "fsync": "on", "synchronous_commit": "on",
              "shared_buffers": "128MB"}


@pytest.fixture
def server() -> Iterator[PgServer]:
    with PgServer(settings=PRODUCTION) as pg:
        pg.start()
        yield pg


def sample(mon: psycopg.Connection, since, now) -> dict:
    done, p99 = mon.execute(
        """SELECT count(*) FILTER (WHERE finished_at > %(since)s AND finished_at <= %(now)s),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_at))
                      FILTER (WHERE started_at > %(since)s AND started_at <= %(now)s)
           FROM pgjobs.jobs WHERE finished_at > %(since)s OR state = 'running'""",
        {"since": since, "now": now}).fetchone()
    size, dead = mon.execute(
        """SELECT coalesce(sum(pg_total_relation_size(relid)), 0), coalesce(sum(n_dead_tup), 0)
           FROM pg_stat_user_tables
           WHERE schemaname = 'pgjobs' AND (relname LIKE 'jobs\\_ring\\_%%' OR relname = 'jobs_parked')""").fetchone()
    return {"completed": done, "p99_ms": round((p99 or 0) * 1000, 1), "hot_mb": round(size / 2**20, 2),
            "dead": int(dead)}


def run_pressure(server: PgServer, tmp_path: Path, holder: str) -> list[dict]:
    url = migrated_database(server)
    settings = Settings.load(database_url=url)
    env = {**os.environ, "PGJOBS_DATABASE_URL": url, "PGJOBS_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    logs = [open(tmp_path / f"worker-{i}.log", "wb") for i in range(2)]  # noqa: SIM115 - closed below
    workers = [subprocess.Popen([sys.executable, "-m", "pgjobs", "worker", "--concurrency", "4"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT) for log in logs]
    stop = threading.Event()
    offered = [0]

    def produce() -> None:
        admin = Admin(settings, actor="pressure")
        next_at = time.monotonic()
        while not stop.is_set():
            offered[0] += admin.enqueue_many("pgjobs.noop", [{}] * max(1, RATE // 10))
            next_at += 0.1
            stop.wait(max(0.0, next_at - time.monotonic()))

    hold_stop = threading.Event()
    holders: list[psycopg.Connection] = []

    def start_holder() -> list[threading.Thread]:
        if holder == "idle":
            conn = psycopg.connect(url, application_name="pressure idle in transaction")
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT txid_current(), count(*) FROM pgjobs.schedules")
            holders.append(conn)
            return []

        def read(i: int) -> None:
            with psycopg.connect(url, application_name=f"pressure reader {i}") as conn:
                while not hold_stop.is_set():  # analytics: REPEATABLE READ transactions of a few scans each
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        for _ in range(5):
                            conn.execute("SELECT state, count(*) FROM pgjobs.jobs GROUP BY state").fetchall()
                            if hold_stop.wait(0.5):
                                break
        threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        return threads

    windows: list[dict] = []
    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        with psycopg.connect(url, autocommit=True) as mon:
            last = mon.execute("SELECT clock_timestamp()").fetchone()[0]
            last_offered = 0
            readers: list[threading.Thread] = []
            for phase, seconds in (("before", BEFORE), ("hold", HOLD), ("after", AFTER)):
                if phase == "hold":
                    readers = start_holder()
                if phase == "after":
                    hold_stop.set()
                    for t in readers:
                        t.join(30)
                    for conn in holders:
                        conn.close()
                end = time.monotonic() + seconds
                while time.monotonic() < end - 1:
                    time.sleep(min(WINDOW, end - time.monotonic()))
                    now = mon.execute("SELECT clock_timestamp()").fetchone()[0]
                    row = {"phase": phase, "offered": offered[0] - last_offered, **sample(mon, last, now)}
                    last, last_offered = now, offered[0]
                    windows.append(row)
                    print(row, flush=True)
    finally:
        stop.set()
        hold_stop.set()
        for conn in holders:
            conn.close()
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        for log in logs:
            log.close()
    return windows


def check(windows: list[dict]) -> None:
    before = [w for w in windows if w["phase"] == "before"]
    hold = [w for w in windows if w["phase"] == "hold"]
    after = [w for w in windows if w["phase"] == "after"]
    baseline_p99 = max(statistics.median(w["p99_ms"] for w in before), 50.0)
    for w in hold:
        assert w["completed"] >= 0.9 * w["offered"], f"fell behind while the horizon was held: {w}"
        assert w["p99_ms"] <= max(4 * baseline_p99, 250.0), f"pickup slowed while the horizon was held: {w}"
    # Bounded: the hot partitions do not grow with the length of the hold.
    first, last = hold[: len(hold) // 2], hold[len(hold) // 2:]
    assert max(w["hot_mb"] for w in last) <= 2 * max(w["hot_mb"] for w in first) + 2, hold
    assert max(w["dead"] for w in last) <= 2 * max(w["dead"] for w in first) + 5 * RATE, hold
    assert after[0]["completed"] >= 0.9 * after[0]["offered"] and after[0]["p99_ms"] <= max(4 * baseline_p99, 250.0)


def test_an_idle_in_transaction_horizon_does_not_slow_the_hot_path(server: PgServer, tmp_path: Path) -> None:
    check(run_pressure(server, tmp_path, "idle"))


def test_repeatable_read_readers_scanning_jobs_do_not_slow_the_hot_path(server: PgServer, tmp_path: Path) -> None:
    check(run_pressure(server, tmp_path, "readers"))
