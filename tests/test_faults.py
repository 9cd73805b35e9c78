"""Faults of Postgres itself, on throwaway servers (tests/pgserver.py), with real worker processes.

- a clean restart: nothing lost or doubled, jobs again within seconds;
- outages of 10 s and 90 s (the second is `slow`): jobs run again within 2 s of Postgres answering, no
  slot doubled, a job that was running through the outage is recorded once, by the worker that ran it, and
  no live worker is declared dead;
- a primary failover to a streaming standby promoted for real: the schedule runs on the new primary within
  10 s of the promotion, through a multi-host URL with target_session_attrs=read-write.

Each test prints its figures (`pytest -s`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import psycopg
import pytest

from conftest import WorkerProcs, migrated_database, wait_for
from pgjobs.admin import Admin
from pgjobs.config import Settings
from pgserver import PgServer


def _connect(url: str, timeout: float = 30) -> psycopg.Connection:
    def attempt() -> psycopg.Connection | None:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=2)
        except psycopg.OperationalError:
            return None
    return wait_for(attempt, timeout, f"a connection to {url}")


def _db_now(db: psycopg.Connection) -> datetime:
    return db.execute("SELECT clock_timestamp()").fetchone()[0]


def _slot_counts(db: psycopg.Connection, schedule: str, start: datetime, end: datetime) -> list[tuple]:
    """Slots of the window whose job count is not exactly one."""
    return db.execute(
        """SELECT s.slot, count(j.id)
           FROM pgjobs.schedules sc
           CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz, interval '1 second') AS s(slot)
           LEFT JOIN pgjobs.jobs j ON j.schedule_id = sc.id AND j.slot = s.slot
           WHERE sc.name = %s GROUP BY 1 HAVING count(j.id) <> 1 ORDER BY 1""", (start, end, schedule)).fetchall()


def _settled(db: psycopg.Connection, end: datetime) -> bool:
    return db.execute("SELECT count(*) = 0 FROM pgjobs.jobs WHERE slot <= %s AND state <> 'completed'",
                      (end,)).fetchone()[0]


def _first_start_after(db: psycopg.Connection, t: datetime) -> datetime | None:
    return db.execute("SELECT min(started_at) FROM pgjobs.jobs WHERE started_at >= %s", (t,)).fetchone()[0]


@pytest.fixture
def server_workers(pg_server: PgServer, tmp_path):
    url = migrated_database(pg_server)
    procs = WorkerProcs(url, tmp_path)
    yield url, procs
    procs.stop_all()


def test_workers_recover_from_a_postgres_restart_without_losing_or_doubling_slots(pg_server, server_workers):
    url, workers = server_workers
    Admin(Settings.load(database_url=url), actor="test").add_schedule(
        "through-restart", cron="1 seconds", task="pgjobs.noop", overlap="allow", catchup="all")
    for _ in range(3):
        workers.start()
    with psycopg.connect(url, autocommit=True) as db:
        wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'completed'").fetchone()[0] >= 2,
                 30, "jobs before the restart")
        start = _db_now(db).replace(microsecond=0) + timedelta(seconds=1)
    pg_server.restart()
    with _connect(url) as db:
        up = db.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        first = wait_for(lambda: _first_start_after(db, up), 20, "a job after the restart")
        end = _db_now(db).replace(microsecond=0) + timedelta(seconds=3)
        wait_for(lambda: _db_now(db) > end + timedelta(seconds=1), 10, "slots after the restart")
        wait_for(lambda: _settled(db, end), 20, "every slot's job to complete")
        assert _slot_counts(db, "through-restart", start, end) == []
        recovery = (first - up).total_seconds()
        print(f"\nPostgres restart: first job claimed {recovery:.2f}s after the server started")
        assert recovery < 2.0


@pytest.mark.parametrize("outage", [10, pytest.param(90, marks=pytest.mark.slow)])
def test_an_outage_loses_doubles_and_kills_nothing(pg_server, server_workers, outage):
    """Postgres down for `outage` seconds while workers run a 1-second schedule and a job longer than the
    outage: after it, jobs run within 2 s, every slot has one job, the long job is recorded once, at
    attempt 1, and no worker was declared dead."""
    url, workers = server_workers
    admin = Admin(Settings.load(database_url=url), actor="test")
    admin.add_schedule("every-second", cron="1 seconds", task="pgjobs.noop", overlap="allow", catchup="all",
                       catchup_max=1000)
    procs = [workers.start() for _ in range(2)]
    with psycopg.connect(url, autocommit=True) as db:
        wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'completed'").fetchone()[0] >= 2,
                 30, "jobs before the outage")
        long_job = admin.enqueue("pgjobs.sleep", {"seconds": outage + 4}, max_attempts=3)
        wait_for(lambda: db.execute("SELECT state = 'running' FROM pgjobs.jobs WHERE id = %s",
                                    (long_job,)).fetchone()[0], 20, "the long job to start")
        workers_before = {r[0] for r in db.execute("SELECT id FROM pgjobs.workers")}
        start = _db_now(db).replace(microsecond=0) + timedelta(seconds=1)
    pg_server.stop("fast")
    down_at = time.monotonic()
    time.sleep(outage)  # the fault itself: Postgres stays down this long (nothing to wait for)
    pg_server.start()
    with _connect(url) as db:
        up = db.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        first = wait_for(lambda: _first_start_after(db, up), 30, "a job after the outage")
        recovery = (first - up).total_seconds()
        end = _db_now(db).replace(microsecond=0) + timedelta(seconds=3)
        wait_for(lambda: _db_now(db) > end + timedelta(seconds=1), 15, "slots after the outage")
        wait_for(lambda: _settled(db, end), 60, "every slot's job to complete")
        wait_for(lambda: db.execute("SELECT state = 'completed' FROM pgjobs.jobs WHERE id = %s",
                                    (long_job,)).fetchone()[0], 30, "the long job to complete")
        bad_slots = _slot_counts(db, "every-second", start, end)
        attempt = db.execute("SELECT attempt FROM pgjobs.jobs WHERE id = %s", (long_job,)).fetchone()[0]
        workers_after = {r[0] for r in db.execute("SELECT id FROM pgjobs.workers")}
        # Slots after `end` keep coming (the workers still run): only a job of the outage window may not run.
        stuck = db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'running' AND (slot IS NULL OR slot <= %s)",
                           (end,)).fetchone()[0]
    logs = workers.logs()
    print(f"\noutage of {outage}s (down {time.monotonic() - down_at:.0f}s in all): first job claimed "
          f"{recovery:.2f}s after Postgres started; long job at attempt {attempt}; "
          f"workers kept {len(workers_before & workers_after)}/{len(workers_before)}")
    assert bad_slots == [], f"slots without exactly one job: {bad_slots[:10]}"
    assert attempt == 1, "the job that ran through the outage was rescued and run again"
    assert "removed dead worker" not in logs, "a live worker was declared dead"
    assert workers_before <= workers_after, "a live worker's row was removed"
    assert all(p.poll() is None for p in procs), "a worker exited during the outage"
    assert stuck == 0, "a job of the outage window is still running"
    assert recovery < 2.0, f"jobs ran again only {recovery:.2f}s after Postgres answered"


def test_primary_failover_to_a_promoted_standby(pg_server: PgServer, tmp_path):
    """Workers on a multi-host URL follow `pg_ctl promote` of a real streaming standby after the primary
    stops: the schedule runs on the new primary within 10 s of the promotion, each slot once."""
    migrated_database(pg_server)
    standby = pg_server.standby()
    try:
        hosts = f"127.0.0.1:{pg_server.port},127.0.0.1:{standby.port}"
        url = f"postgresql://postgres@{hosts}/pgjobs?target_session_attrs=read-write&connect_timeout=2"
        Admin(Settings.load(database_url=url), actor="test").add_schedule(
            "across-failover", cron="1 seconds", task="pgjobs.noop", overlap="allow", catchup="all")
        workers = WorkerProcs(url, tmp_path)
        try:
            procs = [workers.start() for _ in range(2)]
            with psycopg.connect(pg_server.url("pgjobs"), autocommit=True) as db:
                wait_for(lambda: db.execute(
                    "SELECT count(*) FROM pgjobs.jobs WHERE state = 'completed'").fetchone()[0] >= 3, 30,
                    "jobs on the old primary")
            pg_server.stop("fast")  # a switchover: a clean stop ships every commit to the standby first
            standby.promote()
            with psycopg.connect(standby.url("pgjobs"), autocommit=True) as db:
                promoted = _db_now(db)
                first = wait_for(lambda: db.execute(
                    "SELECT min(started_at) FROM pgjobs.jobs WHERE state = 'completed' AND started_at > %s",
                    (promoted,)).fetchone()[0], 20, "a job completed on the new primary")
                delay = (first - promoted).total_seconds()
                start = db.execute("SELECT min(slot) FROM pgjobs.jobs").fetchone()[0]
                end = _db_now(db).replace(microsecond=0) + timedelta(seconds=2)
                wait_for(lambda: _db_now(db) > end + timedelta(seconds=1), 10, "slots after the promotion")
                wait_for(lambda: _settled(db, end), 30, "every slot's job to complete")
                bad = _slot_counts(db, "across-failover", start, end)
            print(f"\nfailover: first job on the new primary {delay:.2f}s after the promotion")
            assert bad == [], f"slots without exactly one job across the failover: {bad[:10]}"
            assert all(p.poll() is None for p in procs), "a worker exited during the failover"
            assert delay < 10.0
        finally:
            workers.stop_all()
    finally:
        standby.close()
