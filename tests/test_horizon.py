"""What holds the xmin horizon is reported: `status`, /metrics, the console and the leader's log name the
transaction (pid, application, client, since when) or replication slot, and say how to end it."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from conftest import ROOT, migrated_database, wait_for
from pgjobs.admin import Admin
from pgjobs.config import ConfigError, Settings
from pgjobs.metrics import DatabaseGauges
from pgserver import PgServer


def _hold_snapshot(db_url: str, application: str) -> psycopg.Connection:
    """A REPEATABLE READ transaction that read something and then sits idle: it pins the horizon."""
    conn = psycopg.connect(db_url, application_name=application)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    conn.execute("SELECT count(*) FROM pgjobs.jobs")
    return conn


def _holders(admin: Admin) -> list[dict]:
    return admin.health()["horizon_holders"]


def test_an_idle_transaction_holding_a_snapshot_is_named_until_it_ends(db_url: str) -> None:
    admin = Admin(Settings.load(database_url=db_url, horizon_warn_age=0.3), actor="test")
    assert _holders(admin) == []
    holder = _hold_snapshot(db_url, "nightly-analytics")
    try:
        pid = holder.info.backend_pid
        found = wait_for(lambda: [h for h in _holders(admin) if h["pid"] == pid], 10, "the holder to be reported")
        h = found[0]
        assert h["kind"] == "transaction" and h["name"] == "nightly-analytics"
        assert h["state"] == "idle in transaction" and h["age_seconds"] >= 0.3
        assert "SELECT count(*) FROM pgjobs.jobs" in h["query"]
        assert admin.health()["horizon_oldest_seconds"] >= 0.3
        text = subprocess.run([sys.executable, "-m", "pgjobs", "status"], capture_output=True, text=True,
                              env={**os.environ, "PGJOBS_DATABASE_URL": db_url, "PGJOBS_HORIZON_WARN_AGE": "0.3"},
                              cwd=ROOT, timeout=60)
        assert text.returncode == 0, text.stderr
        line = next(x for x in text.stdout.splitlines() if x.startswith("horizon:"))
        assert f"pid {pid}" in line and "nightly-analytics" in line and f"pg_terminate_backend({pid})" in line
    finally:
        holder.close()
    wait_for(lambda: _holders(admin) == [], 10, "the report to clear once the transaction ended")


def test_a_young_transaction_is_not_reported(db_url: str) -> None:
    admin = Admin(Settings.load(database_url=db_url, horizon_warn_age=3600), actor="test")
    holder = _hold_snapshot(db_url, "short-report")
    try:
        assert _holders(admin) == []
        assert admin.health()["horizon_oldest_seconds"] > 0
    finally:
        holder.close()


def test_metrics_expose_the_horizon_age_and_holders(db_url: str) -> None:
    settings = Settings.load(database_url=db_url, horizon_warn_age=0.3)
    holder = _hold_snapshot(db_url, "bi-tool")
    try:
        wait_for(lambda: _holders(Admin(settings, actor="test")), 10, "the holder")
        families = {f.name: f for f in DatabaseGauges(settings, refresh=0).collect()}
        assert families["pgjobs_xmin_horizon_age_seconds"].samples[0].value >= 0.3
        by_kind = {s.labels["kind"]: s.value for s in families["pgjobs_xmin_horizon_holders"].samples}
        assert by_kind["transaction"] >= 1 and by_kind["replication slot"] == 0
    finally:
        holder.close()


def test_the_leader_logs_who_holds_the_horizon(db_url: str, workers) -> None:
    holder = _hold_snapshot(db_url, "stuck-session")
    try:
        workers.start(env={"PGJOBS_HORIZON_WARN_AGE": "0.5"})
        wait_for(lambda: "holds the xmin horizon" in workers.logs(), 30, "the leader's warning")
        line = next(x for x in workers.logs().splitlines() if "holds the xmin horizon" in x)
        assert f"pid {holder.info.backend_pid}" in line and "stuck-session" in line
    finally:
        holder.close()


def test_an_abandoned_replication_slot_is_reported(tmp_path) -> None:
    with PgServer(settings={"wal_level": "logical"}) as server:
        server.start()
        url = migrated_database(server)
        admin = Admin(Settings.load(database_url=url), actor="test")
        assert _holders(admin) == []
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot('forgotten_cdc', 'test_decoding')")
        slots = [h for h in _holders(admin) if h["kind"] == "replication slot"]
        assert [s["name"] for s in slots] == ["forgotten_cdc"] and slots[0]["state"] == "inactive"
        from pgjobs.admin import describe_horizon_holder
        assert "pg_drop_replication_slot('forgotten_cdc')" in describe_horizon_holder(slots[0])


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_horizon_warn_age_that_could_never_or_always_warn_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="horizon_warn_age"):
        Settings.load(database_url="postgresql://x@localhost/db", horizon_warn_age=bad)
