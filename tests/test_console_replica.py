"""PGJOBS_CONSOLE_READ_URL: the console's reads go to a streaming standby, its writes (and everything that
must be the primary's: leadership, workers' liveness, sign-in limits, a schedule read for an edit) to the
primary. Proven with a real standby whose replay is paused: what the console shows is the standby's."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import streamlit as st
from test_console_apptest import USERS, frames, sign_in

from conftest import migrated_database, wait_for
from console import run
from pgjobs.admin import Admin
from pgjobs.config import Settings
from pgserver import PgServer


@pytest.fixture
def replica(pg_server: PgServer) -> Iterator[tuple[str, PgServer]]:
    url = migrated_database(pg_server)
    standby = pg_server.standby()
    try:
        yield url, standby
    finally:
        st.cache_resource.clear()  # the console's pools, before the servers go
        standby.close()


def _on_standby(standby: PgServer, job_id: int) -> bool:
    with psycopg.connect(standby.url("pgjobs"), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()[0] == 1


def _replay(standby: PgServer, action: str) -> None:
    with psycopg.connect(standby.url(), autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{action}()")


def test_admin_reads_from_the_replica_and_writes_to_the_primary(replica) -> None:
    url, standby = replica
    primary = Admin(Settings.load(database_url=url), actor="test")
    primary.add_schedule("rep", cron="* * * * *", task="pgjobs.noop")
    first = primary.enqueue("pgjobs.noop")
    wait_for(lambda: _on_standby(standby, first), 20, "the first job on the standby")
    _replay(standby, "pause")
    second = primary.enqueue("pgjobs.noop")
    console = Admin(Settings.load(database_url=url), actor="console:alice", read_url=standby.url("pgjobs"))
    try:
        shown = {j["id"] for j in console.list_jobs(limit=50)}
        assert first in shown and second not in shown, "the list came from the paused standby"
        assert [r["name"] for r in console.console_schedules()] == ["rep"]
        # Writes go to the primary, and so do the reads they depend on.
        console.pause_schedule("rep")
        assert primary.get_schedule("rep")["enabled"] is False
        assert console.get_schedule("rep")["enabled"] is False, "an edit reads the primary's version"
        third = console.enqueue("pgjobs.noop")
        assert primary.get_job(third)["state"] == "available"
        # Leadership and liveness are the primary's (advisory locks do not replicate).
        assert console.status()["counts"]["available"] == 3, "status counts the primary's jobs"
        _replay(standby, "resume")
        wait_for(lambda: {second, third} <= {j["id"] for j in console.list_jobs(limit=50)}, 20,
                 "the replica to catch up")
    finally:
        _replay(standby, "resume")


def test_the_console_shows_the_replicas_data_when_read_url_is_set(replica, monkeypatch) -> None:
    url, standby = replica
    monkeypatch.setenv("PGJOBS_DATABASE_URL", url)
    monkeypatch.setenv("PGJOBS_CONSOLE_READ_URL", standby.url("pgjobs"))
    monkeypatch.setenv("PGJOBS_CONSOLE_USERS", USERS)
    for var in ("PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH", "PGJOBS_CONSOLE_VIEWER_PASSWORD_HASH", run.INSECURE_ENV):
        monkeypatch.delenv(var, raising=False)
    primary = Admin(Settings.load(database_url=url), actor="test")
    seen = primary.add_schedule("seen-on-replica", cron="* * * * *", task="pgjobs.noop")
    probe = primary.enqueue("pgjobs.noop")
    wait_for(lambda: _on_standby(standby, probe), 20, "the standby to have the schedule")
    _replay(standby, "pause")
    primary.add_schedule("not-replayed-yet", cron="* * * * *", task="pgjobs.noop")
    at = sign_in(page="views/schedules.py")  # sign-in limits are written on the primary
    table = frames(at)
    assert seen["name"] in table and "not-replayed-yet" not in table, table
    _replay(standby, "resume")


def test_the_launcher_refuses_a_bad_read_url_with_one_line() -> None:
    with pytest.raises(SystemExit) as err:
        run.plan([], {"PGJOBS_DATABASE_URL": "postgresql://u@h/d", "PGJOBS_CONSOLE_READ_URL": "mysql://replica/d"})
    assert str(err.value).startswith("pgjobs console: error: PGJOBS_CONSOLE_READ_URL: ") and "\n" not in str(err.value)
