"""Shared benchmark harness: the adapter interface and the five workloads.

Each system under test (a "peer": procrastinate, PgQueuer, chancy, and later pgjobs itself) gets one
small adapter script that subclasses `Adapter` and calls `main(MyAdapter)`. The script runs with that
system's own virtualenv python; this module only needs the standard library plus `psycopg` (every peer
venv has it) for the harness's own monitoring queries.

The adapter says *how* to talk to its system (install schema, enqueue one, enqueue many, run a worker,
count unfinished jobs); this module says *what* is measured, identically for every system:

    drain     bulk-enqueue N no-op jobs, start P worker processes, time until none is unfinished
              (`--async-tasks`: each system's `async def` no-op)
    enqueue   single enqueues (one call, one job) and one bulk enqueue, in jobs/s
    latency   one idle worker; enqueue a probe job, wait for it to start, repeat; pickup ms percentiles
    cron      a per-second periodic task for ~30 s; lateness percentiles, missed and doubled slots
    idle      one worker with nothing to do for 10 s; transactions/s and statements/s it sends

Tasks record their start with `record()`, which appends one line to the file named by the
BENCH_PROBE_FILE environment variable (an O_APPEND write of a short line is atomic, so several
worker processes can share the file). The harness reads that file, never the peer's tables, for
start times, so every system is timed the same way.

Output: progress goes to stderr; the last line on stdout is one JSON object (see `Result`).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PROBE_ENV = "BENCH_PROBE_FILE"
DEFAULT_PG_LOG = "/var/log/postgresql/postgresql-15-main.log"


# --------------------------------------------------------------------------------------------------
# What tasks call


def record(kind: str, key: str | int = "-") -> None:
    """Append "<kind> <key> <time.time()>" to the probe file. Called first thing in a task body."""
    t = time.time()
    path = os.environ.get(PROBE_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {key} {t:.6f}\n".encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# The adapter interface


class Adapter(abc.ABC):
    """One system under test. Subclass it in `<name>_adapter.py` and call `main(YourAdapter)`.

    Every adapter provides three tasks, under these names:
      - "noop":  does nothing.
      - "probe": takes `sample: int` and calls `record("probe", sample)` first.
      - "tick":  a periodic task due every second (if `supports_second_cron`); calls
                 `record("tick", slot)` first, where slot is the epoch second the system says the run
                 is for, or "-" if the system does not tell (the harness then uses floor(start)).
    """

    #: Short name used in results ("procrastinate", "pgqueuer", ...).
    name: str = "?"
    #: Whether the system can schedule a periodic task every second.
    supports_second_cron: bool = True
    #: The adapter's `async def` no-op task, for the async drain (`drain --async-tasks`). The peers' "noop"
    #: already is one (procrastinate, PgQueuer, awa and chancy's async executor run coroutines); pgjobs runs
    #: sync tasks on threads and async ones on an event loop, so it names a separate task.
    async_noop_task: str = "noop"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add adapter-specific options (e.g. a driver choice). Optional."""
        return None

    @abc.abstractmethod
    def version(self) -> str:
        """The installed version of the system."""

    def settings(self) -> dict[str, Any]:
        """Non-default settings this adapter uses, reported with the result."""
        return {}

    # Client side (runs in the harness process) ------------------------------------------------

    @abc.abstractmethod
    async def install(self, dsn: str) -> None:
        """Create the system's schema in the given fresh, empty database."""

    async def install_cron(self, dsn: str) -> None:
        """Register the per-second "tick" schedule, if the system stores schedules in the database."""
        return None

    @abc.abstractmethod
    async def open(self, dsn: str) -> None:
        """Open the client used by `enqueue` / `enqueue_many` / `unfinished`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        """Enqueue one job with one API call."""

    @abc.abstractmethod
    async def enqueue_many(self, task: str, kwargs_list: list[dict[str, Any]]) -> None:
        """Enqueue many jobs with the system's batch API."""

    @abc.abstractmethod
    def unfinished_sql(self) -> str:
        """One SQL query returning the count of jobs not yet finished (queued or running)."""

    def count_unfinished(self, conn: Any, probe: str, total: int) -> int:
        """Jobs of `total` not finished yet (drain polls it every 50 ms). Default: `unfinished_sql()`."""
        return conn.execute(self.unfinished_sql()).fetchone()[0]

    # Worker side (runs in a worker subprocess) ------------------------------------------------

    @abc.abstractmethod
    async def run_worker(self, dsn: str, mode: str) -> None:
        """Run one worker with the system's normal worker API until SIGTERM/SIGINT.

        mode "jobs": process jobs. mode "cron": also run the per-second "tick" schedule.
        """

    def worker_argv(self, dsn: str, mode: str) -> list[str]:
        """Command that starts one worker process. Default: this script's hidden `_worker` command."""
        return [sys.executable, os.path.abspath(sys.argv[0]), "_worker", "--dsn", dsn, "--mode", mode]


# --------------------------------------------------------------------------------------------------
# Result


@dataclass
class Result:
    peer: str
    version: str
    workload: str
    params: dict[str, Any]
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ok: bool = True

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of a non-empty list; None for an empty one."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Worker processes


class Workers:
    """Worker subprocesses, each in its own process group so that it and its children stop together."""

    def __init__(self, adapter: Adapter, dsn: str, probe_file: str) -> None:
        self.adapter, self.dsn, self.probe_file = adapter, dsn, probe_file
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, mode: str) -> float:
        env = dict(os.environ, **{PROBE_ENV: self.probe_file})
        spawned_at = time.time()
        for _ in range(count):
            self.procs.append(
                subprocess.Popen(
                    self.adapter.worker_argv(self.dsn, mode),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=sys.stderr,  # keep the adapter's stdout for the one JSON line
                    process_group=0,
                )
            )
        return spawned_at

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self, grace: float = 8.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            # Also reaps children of a worker that exited by itself (e.g. a process-pool executor).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        self.procs.clear()


def read_probes(path: str) -> list[tuple[str, str, float]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], parts[1], float(parts[2])))
    return out


async def wait_ready(path: str, count: int, workers: Workers, timeout: float = 60.0) -> list[float]:
    """Wait until `count` workers have recorded "ready"; return their ready times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [t for kind, _, t in read_probes(path) if kind == "ready"]
        if len(ready) >= count:
            return sorted(ready)
        if not workers.alive():
            raise RuntimeError("a worker process exited during start-up")
        await asyncio.sleep(0.02)
    raise TimeoutError(f"workers not ready after {timeout}s")


# --------------------------------------------------------------------------------------------------
# Monitoring connections (psycopg, sync, autocommit)


def connect(dsn: str):  # noqa: ANN201 - psycopg is imported lazily
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def admin_dsn(dsn: str) -> str:
    """Same server, `postgres` database: monitoring queries there do not count as traffic to `dsn`."""
    head, _, _ = dsn.rpartition("/")
    return f"{head}/postgres"


def db_name(dsn: str) -> str:
    return dsn.rpartition("/")[2].split("?")[0]


# --------------------------------------------------------------------------------------------------
# Workloads


async def workload_drain(adapter: Adapter, a: argparse.Namespace, res: Result, probe: str) -> None:
    n, procs = a.jobs, a.processes
    task = adapter.async_noop_task if a.async_tasks else "noop"
    res.metrics["task"] = task
    await adapter.open(a.dsn)
    try:
        t0 = time.perf_counter()
        for i in range(0, n, a.batch):
            await adapter.enqueue_many(task, [{} for _ in range(min(a.batch, n - i))])
        res.metrics["enqueue_s"] = round(time.perf_counter() - t0, 3)
    finally:
        await adapter.close()
    with connect(a.dsn) as conn:
        start_count = adapter.count_unfinished(conn, probe, n)
        if start_count != n:
            res.notes.append(f"expected {n} unfinished after enqueue, found {start_count}")
        workers = Workers(adapter, a.dsn, probe)
        try:
            spawned = workers.start(procs, "jobs")
            ready = await wait_ready(probe, procs, workers)
            deadline = time.monotonic() + a.deadline
            left = n
            while time.monotonic() < deadline:
                left = adapter.count_unfinished(conn, probe, n)
                if left == 0:
                    break
                if not workers.alive():
                    res.notes.append("a worker exited before the queue was drained")
                    break
                time.sleep(a.poll)
            done_at = time.time()
        finally:
            workers.stop()
    seconds = done_at - ready[0]
    res.metrics.update(
        jobs_done=n - left,
        seconds=round(seconds, 3),
        jobs_per_s=round((n - left) / seconds, 1),
        seconds_from_spawn=round(done_at - spawned, 3),
        worker_startup_s=round(ready[-1] - spawned, 3),
    )
    if left:
        res.ok = False
        res.notes.append(f"{left} jobs unfinished at the deadline ({a.deadline}s)")


async def workload_enqueue(adapter: Adapter, a: argparse.Namespace, res: Result, probe: str) -> None:
    await adapter.open(a.dsn)
    try:
        for _ in range(20):  # warm-up: connections, prepared statements
            await adapter.enqueue("noop", {})
        t0 = time.perf_counter()
        for _ in range(a.single):
            await adapter.enqueue("noop", {})
        single_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await adapter.enqueue_many("noop", [{} for _ in range(a.jobs)])
        bulk_s = time.perf_counter() - t0
    finally:
        await adapter.close()
    with connect(a.dsn) as conn:
        count = conn.execute(adapter.unfinished_sql()).fetchone()[0]
    expected = 20 + a.single + a.jobs
    if count != expected:
        res.ok = False
        res.notes.append(f"expected {expected} queued jobs, found {count}")
    res.metrics.update(
        single_jobs_per_s=round(a.single / single_s, 1),
        single_ms_per_call=round(single_s / a.single * 1000, 3),
        bulk_jobs_per_s=round(a.jobs / bulk_s, 1),
        bulk_s=round(bulk_s, 3),
    )


async def workload_latency(adapter: Adapter, a: argparse.Namespace, res: Result, probe: str) -> None:
    await adapter.open(a.dsn)
    workers = Workers(adapter, a.dsn, probe)
    latencies: list[float] = []
    timeouts = 0
    try:
        workers.start(1, "jobs")
        await wait_ready(probe, 1, workers)
        await asyncio.sleep(a.warmup)
        # Track the probe file incrementally; it only grows.
        with open(probe) as f:
            f.read()
            buf = ""
            for i in range(a.samples):
                t_enq = time.time()
                await adapter.enqueue("probe", {"sample": i})
                deadline = time.monotonic() + a.sample_timeout
                started = None
                while started is None and time.monotonic() < deadline:
                    buf += f.read()
                    while "\n" in buf:
                        line, buf = buf.split("\n", 1)
                        kind, key, t = line.split()
                        if kind == "probe" and key == str(i):
                            started = float(t)
                    if started is None:
                        await asyncio.sleep(0.0005)
                if started is None:
                    timeouts += 1
                else:
                    latencies.append((started - t_enq) * 1000)
                await asyncio.sleep(a.spacing)
    finally:
        workers.stop()
        await adapter.close()
    res.metrics.update(
        samples=len(latencies),
        timeouts=timeouts,
        p50_ms=_r(percentile(latencies, 50)),
        p95_ms=_r(percentile(latencies, 95)),
        p99_ms=_r(percentile(latencies, 99)),
        max_ms=_r(max(latencies) if latencies else None),
        mean_ms=_r(statistics.fmean(latencies) if latencies else None),
    )
    if timeouts:
        res.notes.append(f"{timeouts} probes did not start within {a.sample_timeout}s")


async def workload_cron(adapter: Adapter, a: argparse.Namespace, res: Result, probe: str) -> None:
    if not adapter.supports_second_cron:
        res.metrics["unsupported"] = 1
        res.notes.append("unsupported: no per-second periodic tasks")
        return
    await adapter.install_cron(a.dsn)
    workers = Workers(adapter, a.dsn, probe)
    try:
        workers.start(1, "cron")
        ready = await wait_ready(probe, 1, workers)
        first_slot = math.ceil(ready[0] + a.warmup)
        last_slot = first_slot + a.duration - 1  # inclusive
        # Let the last slot's run (if it is late) arrive before stopping.
        await asyncio.sleep(max(0.0, last_slot + a.cron_grace - time.time()))
        if not workers.alive():
            res.notes.append("the worker exited during the run")
    finally:
        workers.stop()
    runs: Counter[int] = Counter()
    lateness: list[float] = []
    slot_source = set()
    for kind, key, t in read_probes(probe):
        if kind != "tick":
            continue
        slot = int(key) if key != "-" else math.floor(t)
        slot_source.add("system" if key != "-" else "floor(start)")
        if first_slot <= slot <= last_slot:
            runs[slot] += 1
            lateness.append((t - slot) * 1000)
    slots = range(first_slot, last_slot + 1)
    res.metrics.update(
        slots=len(slots),
        runs=sum(runs.values()),
        missed=sum(1 for s in slots if runs[s] == 0),
        doubled=sum(1 for s in slots if runs[s] > 1),
        late_p50_ms=_r(percentile(lateness, 50)),
        late_p99_ms=_r(percentile(lateness, 99)),
        late_max_ms=_r(max(lateness) if lateness else None),
    )
    res.notes.append(f"slot of a run taken from: {', '.join(sorted(slot_source)) or 'no runs'}")


async def workload_idle(adapter: Adapter, a: argparse.Namespace, res: Result, probe: str) -> None:
    db = db_name(a.dsn)
    pg_log = os.environ.get("BENCH_PG_LOG", DEFAULT_PG_LOG)
    use_log = os.access(pg_log, os.R_OK)
    with connect(admin_dsn(a.dsn)) as mon:
        if use_log:
            # Applies only to new sessions of this (throw-away) database; the worker starts after this.
            mon.execute(f"ALTER DATABASE \"{db}\" SET log_statement = 'all'")

        def xacts() -> int:
            row = mon.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (db,)
            ).fetchone()
            return int(row[0])

        workers = Workers(adapter, a.dsn, probe)
        try:
            workers.start(1, "jobs")
            await wait_ready(probe, 1, workers)
            await asyncio.sleep(a.warmup)
            log_start = os.path.getsize(pg_log) if use_log else 0
            x0, t0 = xacts(), time.monotonic()
            await asyncio.sleep(a.duration)
            x1, t1 = xacts(), time.monotonic()
            log_end = os.path.getsize(pg_log) if use_log else 0
            conns = mon.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,)).fetchone()[
                0
            ]
        finally:
            workers.stop()
    elapsed = t1 - t0
    res.metrics.update(
        seconds=round(elapsed, 2),
        xacts_per_s=round((x1 - x0) / elapsed, 2),
        connections=conns,
    )
    if use_log:
        stmts = _logged_statements(pg_log, log_start, log_end, db)
        control = {"", ";", "BEGIN", "COMMIT", "ROLLBACK"}
        queries = sum(c for s, c in stmts.items() if s.strip().rstrip(";").upper() not in control)
        res.metrics["statements_per_s"] = round(sum(stmts.values()) / elapsed, 2)
        res.metrics["queries_per_s"] = round(queries / elapsed, 2)
        res.notes.append("top statements: " + "; ".join(f"{c}x {s}" for s, c in stmts.most_common(4)))
    else:
        res.notes.append(f"server log {pg_log} not readable: statements_per_s not measured")


def _logged_statements(path: str, start: int, end: int, db: str) -> Counter[str]:
    """Count statements logged (log_statement=all) for `db` between two byte offsets of the server log.

    Keyed by the first 70 characters of the statement; a statement whose text starts on the next line
    (continuation lines carry no log prefix) is keyed by its first non-blank continuation line.
    """
    marker = f"@{db} "
    counts: Counter[str] = Counter()
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read(end - start).decode(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if marker not in line:
            continue
        for tag in ("LOG:  statement: ", "LOG:  execute "):
            if tag not in line:
                continue
            text = line.split(tag, 1)[1]
            if tag == "LOG:  execute ":
                text = text.split(": ", 1)[1] if ": " in text else ""
            j = i + 1
            while not text.strip() and j < len(lines) and not _LOG_PREFIX.match(lines[j]):
                text = lines[j]
                j += 1
            counts[" ".join(text.split())[:70]] += 1
    return counts


_LOG_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2} ")


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


WORKLOADS = {
    "drain": workload_drain,
    "enqueue": workload_enqueue,
    "latency": workload_latency,
    "cron": workload_cron,
    "idle": workload_idle,
}


# --------------------------------------------------------------------------------------------------
# CLI


def build_parser(adapter_cls: type[Adapter]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=f"{adapter_cls.name} benchmark adapter")
    p.add_argument("workload", choices=[*WORKLOADS, "_worker"])
    p.add_argument("--dsn", required=True, help="a fresh, empty database (the adapter installs the schema)")
    p.add_argument("--jobs", type=int, default=20000, help="drain: jobs to drain; enqueue: bulk size")
    p.add_argument("--processes", type=int, default=1, help="drain: worker processes")
    p.add_argument("--samples", type=int, default=200, help="latency: probe jobs")
    p.add_argument("--single", type=int, default=2000, help="enqueue: single-enqueue calls")
    p.add_argument("--batch", type=int, default=20000, help="drain: jobs per enqueue_many call")
    p.add_argument("--spacing", type=float, default=0.02, help="latency: pause between probes (s)")
    p.add_argument("--sample-timeout", type=float, default=10.0, help="latency: per-probe deadline (s)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between worker ready and measuring")
    p.add_argument("--duration", type=int, default=None, help="cron: slots (30); idle: seconds (10)")
    p.add_argument("--cron-grace", type=float, default=3.0, help="cron: wait after the last slot (s)")
    p.add_argument("--deadline", type=float, default=240.0, help="drain: give up after this many s")
    p.add_argument("--poll", type=float, default=0.05, help="drain: unfinished-count poll interval (s)")
    p.add_argument("--async-tasks", action="store_true",
                   help="drain: the adapter's async def no-op (Adapter.async_noop_task) instead of noop")
    p.add_argument("--mode", default="jobs", help=argparse.SUPPRESS)  # _worker only
    adapter_cls.add_arguments(p)
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Turn a runner's timeout (SIGTERM) into SystemExit so `finally` blocks stop the worker processes.
    raise SystemExit(128 + signum)


def main(adapter_cls: type[Adapter]) -> None:
    args = build_parser(adapter_cls).parse_args()
    adapter = adapter_cls(args)
    if args.workload == "_worker":
        record("ready")
        asyncio.run(adapter.run_worker(args.dsn, args.mode))
        return
    if args.duration is None:
        args.duration = 30 if args.workload == "cron" else 10
    params = {
        k: getattr(args, k)
        for k in ("jobs", "processes", "samples", "single", "spacing", "warmup", "duration")
    }
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    res = Result(adapter.name, adapter.version(), args.workload, params, settings=adapter.settings())
    fd, probe = tempfile.mkstemp(prefix=f"bench-{adapter.name}-", suffix=".probe")
    os.close(fd)

    async def run() -> None:
        t0 = time.perf_counter()
        await adapter.install(args.dsn)
        log(f"{adapter.name}: schema installed in {time.perf_counter() - t0:.2f}s; running {args.workload}")
        await WORKLOADS[args.workload](adapter, args, res, probe)

    try:
        asyncio.run(run())
    except Exception as exc:  # report, don't hide: the runner records ok=false with the error
        res.ok = False
        res.notes.append(f"error: {type(exc).__name__}: {exc}")
        log(f"{adapter.name} {args.workload} failed: {exc!r}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
    print(res.to_json(), flush=True)
    sys.exit(0 if res.ok else 1)
