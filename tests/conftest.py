"""Shared fixtures: a real Postgres, one fresh migrated database per test, real worker processes.

- The server is PGJOBS_TEST_SERVER (scripts/test.sh starts a throwaway one when it is not set; default here
  postgresql://postgres@127.0.0.1:5432); every test gets its own database, cloned from a template migrated
  once per session with Alembic, and dropped afterwards.
- Tests that stop, restart, kill, promote or pool Postgres never touch that server: `pg_server` gives them a
  throwaway one of their own (tests/pgserver.py), and `migrated_database` a migrated database on it.
- `workers` starts `python -m pgjobs worker` subprocesses and kills whatever is left at teardown.
- `wait_for` waits for a database state with a deadline; tests never sleep to synchronize.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs.admin import Admin
from pgjobs.config import Settings
from pgserver import PgServer

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("PGJOBS_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")
TEMPLATE = f"pgjobs_tpl_{os.getpid()}"


def server_url(dbname: str = "postgres") -> str:
    return f"{SERVER}/{dbname}"


def admin_execute(statement: str) -> None:
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(statement)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.02) -> Any:
    """Return predicate()'s first truthy value, polling until `timeout`; fail the test naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def job_row(db: psycopg.Connection, job_id: int) -> dict[str, Any]:
    """The job's row as a dict (every column), for assertions."""
    cur = db.execute("SELECT * FROM pgjobs.jobs WHERE id = %s", (job_id,))
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def job_state(db: psycopg.Connection, job_id: int) -> str:
    return db.execute("SELECT state FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()[0]


def _create_database(name: str, template: str | None = None) -> None:
    from psycopg import sql

    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(stmt)


class _ReadyDatabases:
    """Migrated databases copied from the template ahead of the tests that take them, by one thread.

    A copy of the template (a thousand relations: the ring segments and history partitions with their
    indexes) takes 0.1-1 s; most tests take less than that themselves, so the copies are made while the
    tests before them run, AHEAD at a time. A test that finds none ready waits for the next (or, if the
    maker failed, makes its own). Only this thread and `take` touch the template, never at once with a
    connection to it: CREATE DATABASE refuses a template in use.
    """

    AHEAD = 4

    def __init__(self, template: str) -> None:
        self._template = template
        self._ready: queue.Queue[str] = queue.Queue()
        self._want = threading.Semaphore(self.AHEAD)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make, name="ready-databases", daemon=True)
        self._thread.start()

    def _make(self) -> None:
        while True:
            self._want.acquire()
            if self._stop.is_set():
                return
            name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
            try:
                _create_database(name, template=self._template)
            except BaseException as exc:  # noqa: BLE001 - reported by take(), which then makes its own
                self._error = exc
                return
            self._ready.put(name)

    def take(self) -> str:
        while self._error is None:
            try:
                name = self._ready.get(timeout=1)
            except queue.Empty:
                continue
            self._want.release()
            return name
        self._thread.join()
        name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
        _create_database(name, template=self._template)
        return name

    def close(self) -> None:
        self._stop.set()
        self._want.release()
        self._thread.join(60)
        while not self._ready.empty():
            drop_database(self._ready.get())


def drop_database(name: str) -> None:
    from psycopg import sql

    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    from pgjobs import migrations

    drop_database(TEMPLATE)
    _create_database(TEMPLATE)
    migrations.upgrade(Settings.load(database_url=server_url(TEMPLATE)))
    yield TEMPLATE
    if _READY:
        _READY.pop().close()
    drop_database(TEMPLATE)


_READY: list[_ReadyDatabases] = []


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """A fresh, empty database (not migrated)."""
    name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    yield server_url(name)
    drop_database(name)


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A fresh database at the latest migration (made ahead, while the tests before it ran)."""
    if not _READY:
        _READY.append(_ReadyDatabases(template_db))
    name = _READY[0].take()
    yield server_url(name)
    drop_database(name)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings.load(database_url=db_url, heartbeat_interval=0.5, rescue_after=1.0, maintenance_interval=0.25,
                         poll_interval=1.0, catchup_grace=60.0, shutdown_grace=5.0)


@pytest.fixture
def admin(settings: Settings) -> Admin:
    return Admin(settings, actor="test")


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, for assertions."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


class WorkerProcs:
    """Real `python -m pgjobs worker` processes; killed at teardown whatever happened."""

    def __init__(self, db_url: str, log_dir: Path) -> None:
        self.db_url = db_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str, env: dict[str, str] | None = None, concurrency: int = 4) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "PGJOBS_DATABASE_URL": self.db_url,
            "PGJOBS_HEARTBEAT_INTERVAL": "0.5",
            "PGJOBS_RESCUE_AFTER": "1",
            "PGJOBS_MAINTENANCE_INTERVAL": "0.25",
            "PGJOBS_POLL_INTERVAL": "1",
            "PGJOBS_SHUTDOWN_GRACE": "5",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            **(env or {}),
        }
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgjobs", "worker", "--concurrency", str(concurrency), *extra],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def pg_server() -> Iterator[PgServer]:
    """A throwaway Postgres server of this test's own, started; removed at teardown."""
    with PgServer() as server:
        server.start()
        yield server


def migrated_database(server: PgServer, name: str = "pgjobs") -> str:
    """Create `name` on a throwaway server, migrate it to head, and return its URL."""
    from pgjobs import migrations

    url = server.create_database(name)
    migrations.upgrade(Settings.load(database_url=url))
    return url


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(db_url, tmp_path)
    yield procs
    procs.stop_all()


def worker_pid_of_leader(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pgjobs.workers WHERE leader_since IS NOT NULL ORDER BY leader_since DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def lock_holder_backend(conn: psycopg.Connection) -> int | None:
    from pgjobs.queries import queries

    q = queries("pgjobs")
    row = conn.execute(q.leader_backend, q.lock).fetchone()
    return row[0] if row else None
