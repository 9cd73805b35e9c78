"""Faults of Postgres itself, on throwaway servers (tests/pgserver.py), with real worker processes.

- a clean restart: nothing lost or doubled, jobs again within seconds;
- outages of 10 s and 90 s: jobs run again within 2 s of Postgres answering, no slot doubled, a job that
  was running through the outage is recorded once, by the worker that ran it, and no live worker is
  declared dead;
- a primary failover to a streaming standby promoted for real: the schedule runs on the new primary within
  10 s of the promotion, through a multi-host URL with target_session_attrs=read-write.

Each test prints its figures (`pytest -s`).
"""

from __future__ import annotations

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
