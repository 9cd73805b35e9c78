"""Migrations: upgrade, downgrade to nothing, upgrade again, and the metadata matches (alembic check)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from conftest import ROOT
from pgjobs import migrations
from pgjobs.config import Settings


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'pgjobs'").fetchall()
    return {r[0] for r in rows}


def _alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGJOBS_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_upgrade_downgrade_upgrade_on_an_empty_database(empty_db_url: str) -> None:
    settings = Settings.load(database_url=empty_db_url)
    migrations.upgrade(settings)
    assert {"schedules", "jobs", "workers", "audit", "alembic_version"} <= _tables(empty_db_url)

    migrations.downgrade(settings, "base")
    assert _tables(empty_db_url) == {"alembic_version"}, "downgrade base leaves only Alembic's (empty) version table"
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgjobs.alembic_version").fetchone()[0] == 0
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'pgjobs'").fetchone()[0]
        assert functions == 0

    migrations.upgrade(settings)
    assert {"schedules", "jobs", "workers", "audit"} <= _tables(empty_db_url)


def test_alembic_cli_upgrade_and_check_report_nothing(empty_db_url: str) -> None:
    up = _alembic(empty_db_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    check = _alembic(empty_db_url, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_version_table_lives_in_the_pgjobs_schema(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        public = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]
        ours = conn.execute("SELECT to_regclass('pgjobs.alembic_version')").fetchone()[0]
    assert public is None and ours is not None


def test_a_custom_schema_name_is_honoured(empty_db_url: str) -> None:
    settings = Settings.load(database_url=empty_db_url, schema="jobs_custom")
    migrations.upgrade(settings)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('jobs_custom.jobs')").fetchone()[0] is not None
        assert conn.execute("SELECT to_regclass('pgjobs.jobs')").fetchone()[0] is None


def test_the_revisions_a_worker_checks_at_start_are_alembics(empty_db_url: str) -> None:
    """Workers compare the database with migrations.REVISIONS (no Alembic import); they must be Alembic's."""
    settings = Settings.load(database_url=empty_db_url)
    assert migrations.HEAD_REVISION == migrations.head_revision(settings)
    assert set(migrations.REVISIONS) == migrations.known_revisions(settings)
    assert len(set(migrations.REVISIONS)) == len(migrations.REVISIONS)


def test_a_worker_starts_without_importing_sqlalchemy_or_alembic() -> None:
    """The worker's imports and its schema check stay light: SQLAlchemy and Alembic are for migrations."""
    code = ("import sys; import pgjobs.cli, pgjobs.worker, pgjobs.metrics, pgjobs.migrations; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules if m.startswith(('sqlalchemy', 'alembic'))}); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"a worker imports {out.stdout.strip()}"


def test_0004_repairs_rows_whose_finished_at_disagrees_with_their_state_then_enforces_it(empty_db_url: str) -> None:
    """The new CHECK (finished_at set exactly on finished jobs) cannot fail a deploy on old, odd rows."""
    settings = Settings.load(database_url=empty_db_url)
    migrations.upgrade(settings, "0003")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO pgjobs.jobs (task, state, started_at, finished_at) VALUES
                        ('a', 'completed', '2026-01-01T00:00:00Z', NULL),
                        ('b', 'failed', NULL, NULL),
                        ('c', 'available', NULL, now()),
                        ('d', 'completed', now(), now())""")
    migrations.upgrade(settings)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        rows = dict(conn.execute("SELECT task, finished_at IS NOT NULL FROM pgjobs.jobs").fetchall())
        assert rows == {"a": True, "b": True, "c": False, "d": True}
        started = conn.execute("SELECT finished_at = started_at FROM pgjobs.jobs WHERE task = 'a'").fetchone()[0]
        assert started, "a finished job without finished_at gets its start time"
        partial = dict(conn.execute(
            "SELECT indexname, indexdef LIKE '%WHERE (finished_at IS NOT NULL)' FROM pg_indexes "
            "WHERE schemaname = 'pgjobs' AND indexname IN ('ix_jobs_state_finished', 'ix_jobs_state_id', "
            "'ix_jobs_queue_id', 'ix_jobs_task_id', 'ix_jobs_finished_id')").fetchall())
        assert partial == dict.fromkeys(partial, True) and len(partial) == 5
    migrations.downgrade(settings, "0003")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO pgjobs.jobs (task, state) VALUES ('e', 'completed')")  # the CHECK is gone again
