"""Behind a real PgBouncer in transaction mode: jobs and cron slots work when the session-bound connections
(leader lock, LISTEN) use a direct URL; without one, a worker refuses to start (exit 2, one line) and never
campaigns for leadership through the pooler."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import SERVER, lock_holder_backend, wait_for
from pgjobs.admin import Admin

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pgbouncer():
    assert os.path.exists(PGBOUNCER), "pgbouncer is not installed (apt-get install pgbouncer); .ci/run installs it"
    server = urlparse(SERVER)
    port = _free_port()
    # Not under pytest's tmp_path: PgBouncer drops root for 'postgres', which cannot enter /tmp/pytest-of-root.
    workdir = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
    ini = workdir / "pgbouncer.ini"
    ini.write_text(f"""[databases]
* = host={server.hostname} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = trust
auth_file = {workdir / 'users.txt'}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
unix_socket_dir =
logfile = {workdir / 'pgbouncer.log'}
pidfile = {workdir / 'pgbouncer.pid'}
""")
    (workdir / "users.txt").write_text('"postgres" ""\n')
    for path in (workdir, ini, workdir / "users.txt"):
        os.chmod(path, 0o777 if path.is_dir() else 0o644)
    cmd = [PGBOUNCER, str(ini)]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "postgres"]  # PgBouncer refuses to run as root
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def accepting() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(lambda: accepting() or proc.poll() is not None, 10, "pgbouncer to listen")
        assert proc.poll() is None, f"pgbouncer exited: {proc.stdout.read().decode(errors='replace')}"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _via(db_url: str, port: int) -> str:
    parsed = urlparse(db_url)
    return parsed._replace(netloc=f"{parsed.username or 'postgres'}@127.0.0.1:{port}").geturl()


def test_worker_behind_pgbouncer_transaction_mode_with_a_direct_lock_url(admin: Admin, db, db_url, workers,
                                                                         pgbouncer) -> None:
    pooled = _via(db_url, pgbouncer)
    admin.add_schedule("through-pooler", cron="1 seconds", task="pgjobs.noop", overlap="allow")
    for _ in range(2):
        workers.start(env={"PGJOBS_DATABASE_URL": pooled, "PGJOBS_LOCK_DATABASE_URL": db_url})
    wait_for(lambda: lock_holder_backend(db), 15, "a leader")
    job_ids = [admin.enqueue("pgjobs.noop") for _ in range(50)]
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE id = ANY(%s) AND state = 'completed'",
                                (job_ids,)).fetchone()[0] == 50, 20, "enqueued jobs through the pooler")
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE slot IS NOT NULL AND state = 'completed'"
                                ).fetchone()[0] >= 5, 20, "five cron slots through the pooler")
    doubled = db.execute("SELECT slot FROM pgjobs.jobs WHERE slot IS NOT NULL GROUP BY slot HAVING count(*) > 1"
                         ).fetchall()
    assert doubled == []
    logs = workers.logs()
    assert "prepared statements off" in logs
    assert "leader-lock connection goes through a pooler" not in logs


def test_without_a_direct_lock_url_a_worker_exits_2_with_one_line_and_takes_no_lock(db_url, db, workers,
                                                                                  pgbouncer) -> None:
    pooled = _via(db_url, pgbouncer)
    for env in ({"PGJOBS_DATABASE_URL": pooled}, {"PGJOBS_DATABASE_URL": pooled, "PGJOBS_LOCK_DATABASE_URL": pooled}):
        proc = workers.start(env=env)
        assert proc.wait(30) == 2
        lines = [line for line in workers.logs().splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith("pgjobs: error: ") and "PGJOBS_LOCK_DATABASE_URL" in lines[0], lines[0]
        for log in workers.log_dir.glob("worker-*.log"):
            log.unlink()
    print(f"\nrefused: {lines[0]}")
    assert lock_holder_backend(db) is None, "nobody campaigned through the pooler"
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0] == 0
