"""A host application embeds pgjobs: pgjobs' migrations run from the host's own Alembic environment, and the
host enqueues jobs inside its own transactions (psycopg and SQLAlchemy), which commit or roll back with it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import pgjobs
from conftest import ROOT
from pgjobs.config import Settings, sqlalchemy_url
from pgjobs.migrations import head_revision, upgrade_connection

HOST_ENV = '''
"""The host application's Alembic env.py (the part that matters: the last line of run_migrations_online)."""
from alembic import context
from sqlalchemy import create_engine, pool

from pgjobs.migrations import upgrade_connection

config = context.config


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
            # pgjobs' tables and history live in the pgjobs schema; same connection, same transaction.
            upgrade_connection(connection)


run_migrations_online()
'''

HOST_REVISION = '''
"""host: orders table

Revision ID: host0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "host0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True), sa.Column("item", sa.Text))


def downgrade() -> None:
    op.drop_table("orders")
'''


def make_host_app(tmp_path: Path) -> Path:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(textwrap.dedent(HOST_ENV))
    (tmp_path / "migrations" / "versions" / "host0001_orders.py").write_text(textwrap.dedent(HOST_REVISION))
    return tmp_path


def test_host_alembic_env_runs_pgjobs_migrations_with_its_own(empty_db_url: str, tmp_path: Path) -> None:
    host = make_host_app(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGJOBS_ALEMBIC_INI": str(ROOT / "alembic.ini")}
    url = sqlalchemy_url(empty_db_url)
    (host / "alembic.ini").write_text(
        f"[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url = {url.replace('%', '%%')}\n")
    proc = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=host, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        host_version = conn.execute("SELECT version_num FROM public.alembic_version").fetchall()
        pgjobs_version = conn.execute("SELECT version_num FROM pgjobs.alembic_version").fetchall()
        assert conn.execute("SELECT to_regclass('public.orders') IS NOT NULL").fetchone()[0]
    assert host_version == [("host0001",)]
    assert pgjobs_version == [(head_revision(Settings.load(database_url=empty_db_url)),)]
    # Running the host's upgrade again is a no-op for both histories.
    again = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=host, capture_output=True,
                           text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr


def _job_count(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pgjobs.jobs WHERE task = 'pgjobs.noop'").fetchone()[0]


def test_enqueue_in_a_psycopg_transaction_commits_and_rolls_back_with_it(db_url: str, settings: Settings) -> None:
    with psycopg.connect(db_url) as conn:
        pgjobs.enqueue("pgjobs.noop", {"order": 1}, conn=conn, settings=settings)
        assert _job_count(db_url) == 0  # invisible until the caller commits
        conn.rollback()
        assert _job_count(db_url) == 0
        job_id = pgjobs.enqueue("pgjobs.noop", {"order": 2}, conn=conn, settings=settings)
        conn.commit()
    with psycopg.connect(db_url, autocommit=True) as check:
        assert check.execute("SELECT args FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone() == ({"order": 2},)


@pytest.fixture
def engine(db_url: str):
    engine = create_engine(sqlalchemy_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id serial PRIMARY KEY, item text)"))
    yield engine
    engine.dispose()


def test_enqueue_in_a_sqlalchemy_session_commits_and_rolls_back_with_it(engine, db_url: str,
                                                                         settings: Settings) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders (item) VALUES ('lost')"))
        pgjobs.enqueue("pgjobs.noop", {"order": "lost"}, conn=session, settings=settings)
        session.rollback()
        assert _job_count(db_url) == 0

        session.execute(text("INSERT INTO orders (item) VALUES ('kept')"))
        job_id = pgjobs.enqueue("pgjobs.noop", {"order": "kept"}, conn=session, settings=settings)
        assert _job_count(db_url) == 0
        session.commit()
    with psycopg.connect(db_url, autocommit=True) as check:
        assert check.execute("SELECT item FROM orders").fetchall() == [("kept",)]
        assert check.execute("SELECT args FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone() == (
            {"order": "kept"},)


def test_pgjobs_migrations_join_the_host_connections_transaction(empty_db_url: str) -> None:
    engine = create_engine(sqlalchemy_url(empty_db_url))
    try:
        with engine.connect() as conn:
            host_transaction = conn.begin()
            upgrade_connection(conn)
            host_transaction.rollback()  # the host changed its mind: nothing of pgjobs is left
            assert conn.execute(text("SELECT to_regclass('pgjobs.jobs')")).scalar() is None
            conn.rollback()
            with conn.begin():
                upgrade_connection(conn)
            assert conn.execute(text("SELECT version_num FROM pgjobs.alembic_version")).scalar() == \
                head_revision(Settings.load(database_url=empty_db_url))
    finally:
        engine.dispose()
