"""Migrations under deploy conditions: two deploys migrating at once, a database ahead of the code, a worker
started on a schema it cannot run on."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from conftest import ROOT, wait_for
from pgjobs.config import Settings
from pgjobs.migrations import head_revision, schema_problem

MIGRATION_LOCK = (28778, 0)  # alembic/env.py: pg_advisory_xact_lock(28778, 0)


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "PGJOBS_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}


def _waiting_on_migration_lock(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s AND objid = %s"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", MIGRATION_LOCK,
    ).fetchone()[0]


def test_two_deploys_migrating_an_empty_database_at_once_take_turns(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as holder, psycopg.connect(empty_db_url, autocommit=True) as watch:
        # Hold the migration lock so both deploys are provably inside `alembic upgrade head` at the same time.
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        procs = [subprocess.Popen([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT,
                                  env=_env(empty_db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        try:
            wait_for(lambda: _waiting_on_migration_lock(watch) == 2, timeout=20,
                     what="both `alembic upgrade head` to wait on the migration lock")
            holder.rollback()  # release: one migrates, the other then finds the schema at head
            results = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (_, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err.decode()
        # Both succeeded, so the second one cannot have re-run the migration (its CREATE TABLEs would have
        # failed): it read the version table after the first committed and found the head.
        head = head_revision(Settings.load(database_url=empty_db_url))
        assert watch.execute("SELECT version_num FROM pgjobs.alembic_version").fetchall() == [(head,)]
        assert watch.execute("SELECT to_regclass('pgjobs.jobs') IS NOT NULL").fetchone()[0]


def test_migrate_on_a_database_ahead_of_the_code_fails_with_one_line(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs.alembic_version SET version_num = '9999_from_newer_pgjobs'")
    proc = subprocess.run([sys.executable, "-m", "pgjobs", "migrate"], cwd=ROOT, env=_env(db_url),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pgjobs: error: the database is migrated to a revision this pgjobs does not know")
    assert "9999_from_newer_pgjobs" in lines[0] and "newer code" in lines[0]


def test_a_worker_refuses_to_start_on_an_unmigrated_database(empty_db_url: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pgjobs", "worker"], cwd=ROOT, env=_env(empty_db_url),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "pgjobs: error: schema 'pgjobs' is not migrated: run `pgjobs migrate` (or `alembic upgrade head`)"]


@pytest.mark.parametrize(("revision", "problem"), [
    (None, "is not migrated"),
    ("0001", "is at revision 0001, this pgjobs needs 0002"),
    ("0002", None),
    ("0003", None),  # newer code migrated it: old workers keep running through a rolling deploy
])
def test_which_schemas_a_worker_runs_on(revision: str | None, problem: str | None) -> None:
    got = schema_problem("pgjobs", revision, head="0002", known={"0001", "0002"})
    assert (got is None) if problem is None else (problem in got)
