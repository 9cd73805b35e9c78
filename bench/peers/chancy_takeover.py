"""chancy: leader takeover after `kill -9`, with chancy's own Leadership plugin and library defaults.

    bench/.venvs/chancy/bin/python bench/peers/chancy_takeover.py [--kills 5] [--workers 3]
        [--server postgresql://postgres@127.0.0.1:5432] [--timeout 300] [--settle S] [--seed 1] [--no-stagger]

The chancy counterpart of bench/takeover.py. Creates a fresh database, migrates it (`Chancy(dsn).migrate()`,
default plugins), starts `--workers` worker processes (this script's hidden `_worker` command:
`async with Chancy(dsn) as chancy, Worker(chancy) as worker: await worker.wait_for_shutdown()`, i.e. the
default plugins Leadership, Pruner, Recovery, Metrics and Workflow, and the default queue with its default
process-pool executor), then `--kills` times:

- the leader is the `worker_id` of the single row of `chancy_leader` (chancy/plugins/leadership.py,
  `Leadership.run`: a lease row `id = 1, worker_id, expires_at`); each worker process prints its
  `worker.worker_id` on start, which maps the row to a process;
- after a pause (`--settle`; by default a random time in [0, Leadership.poll_interval), so that the kill
  lands at a random point of the leader's renewal cycle, as a crash would), the leader's process group is
  SIGKILLed (the worker and the helper processes of its process-pool executor, a multiprocessing Manager;
  SIGKILL of the worker alone would leave them orphaned);
- a monitoring connection polls `chancy_leader` every ~5 ms until a different `worker_id` holds the row
  (deadline `--timeout` s per kill). takeover = SIGKILL -> new holder seen;
- a replacement worker is started (and seen in `chancy_workers`) before the next kill, so there are
  always `--workers` processes.

Worker phases (`--stagger`, on by default). Every worker runs the leadership check once per poll interval
(60 s), counted from its own start, so when a follower looks at an expired lease depends on when it
started. With `--stagger`, the first workers are started at random offsets in [0, poll interval) and each
replacement after a random delay in that range, so the workers' phases are independent, as in a cluster
whose processes started at unrelated times. With `--no-stagger` they are started back to back and each
replacement right after the takeover, as bench/takeover.py does; the phases then stay within ~1 s of each
other and a follower looks again within ~1 s of the lease's expiry (chancy's best case).

The Postgres server of this machine is shared and sometimes restarted by others: a kill during which
`pg_postmaster_start_time()` changed (or the monitor lost its connection) is not counted and is run again
(at most `--retries` extra attempts); a worker that a restart ended is replaced before the next kill.

Reported: p50/p99/max of the takeover (ms; nearest rank, so with 5 kills p99 = max), the number of kills
that timed out, each takeover and how much of the dead leader's lease was left at the kill
(`expires_at - now`), the rest (`after_expiry_s`: from the lease's expiry until a follower's poll took
it), and how long the first election took after the workers started.

Settings that differ from chancy's defaults: none. The lease and poll settings are read from chancy's own
defaults (`Leadership()`, `Worker.__init__`) and reported in "settings". Expect minutes, not milliseconds:
a follower takes over only after the dead leader's lease has expired (timeout 120 s, renewed every 60 s,
so 60-120 s after the kill) *and* its own next poll (every 60 s) has come round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import inspect
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid

import psycopg
from chancy import Chancy, Worker
from harness import percentile
from psycopg import sql

LEADER = "SELECT worker_id, extract(epoch FROM expires_at - clock_timestamp()) FROM chancy_leader WHERE id = 1"
WORKER_SEEN = "SELECT 1 FROM chancy_workers WHERE worker_id = %s"


def pct(values: list[float], p: float) -> float | None:
    """The harness's nearest-rank percentile, rounded for the report."""
    value = percentile(values, p)
    return None if value is None else round(value, 2)


class Monitor:
    """The monitoring connection; reconnects (and counts it) when Postgres drops it, e.g. on a restart."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors = 0
        self.conn: psycopg.Connection | None = psycopg.connect(url, autocommit=True)

    def one(self, query: str, params: tuple | None = None) -> tuple | None:
        try:
            if self.conn is None:
                self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            return self.conn.execute(query, params).fetchone()
        except psycopg.OperationalError:
            self.errors += 1
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            time.sleep(0.2)
            return None

    def postmaster(self) -> object:
        row = None
        for _ in range(100):
            row = self.one("SELECT pg_postmaster_start_time()")
            if row:
                return row[0]
        return row

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def wait(predicate, timeout: float, what: str, interval: float = 0.005):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not seen within {timeout}s")


async def run_worker(dsn: str) -> None:
    async with Chancy(dsn) as chancy:
        worker = Worker(chancy)
        print(worker.worker_id, flush=True)
        # Nothing else goes to the parent's pipe (chancy logs to stderr).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        async with worker:
            await worker.wait_for_shutdown()


def chancy_defaults() -> dict[str, float]:
    leadership = Chancy("postgresql://unused/unused").plugins["chancy.leadership"]
    params = inspect.signature(Worker.__init__).parameters
    return {
        "leadership_poll_interval_s": leadership.poll_interval,
        "leadership_timeout_s": leadership.timeout,
        "heartbeat_poll_interval_s": params["heartbeat_poll_interval"].default,
        "heartbeat_timeout_s": params["heartbeat_timeout"].default,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    wk = sub.add_parser("_worker")
    wk.add_argument("--dsn", required=True)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0, help="deadline per kill (s)")
    ap.add_argument("--settle", type=float, default=None,
                    help="pause between seeing a leader and killing it (s); default random in [0, poll interval)")
    ap.add_argument("--retries", type=int, default=3,
                    help="extra attempts for kills during which Postgres restarted (those are not counted)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random settle times and start offsets")
    ap.add_argument("--stagger", action=argparse.BooleanOptionalAction, default=True,
                    help="start workers at random offsets within one leadership poll interval (see above)")
    ap.add_argument("--server", default=os.environ.get("PGJOBS_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432"))
    opts = ap.parse_args()
    if opts.cmd == "_worker":
        asyncio.run(run_worker(opts.dsn))
        return 0

    defaults = chancy_defaults()
    poll_s = defaults["leadership_poll_interval_s"]
    rng = random.Random(opts.seed)
    dbname = f"chancy_takeover_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = f"{opts.server}/{dbname}"
    procs: dict[str, subprocess.Popen[bytes]] = {}  # worker_id -> process (its own process group)
    takeover_s: list[float] = []
    lease_left_s: list[float] = []
    settle_s: list[float] = []
    replacement_delay_s: list[float] = []
    metrics: dict[str, object] = {}
    notes: list[str] = []
    timeouts = 0
    restarts = 0
    started = time.monotonic()
    try:
        async def migrate() -> None:
            async with Chancy(url) as chancy:
                await chancy.migrate()

        asyncio.run(migrate())

        def spawn() -> str:
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_worker", "--dsn", url],
                                 stdout=subprocess.PIPE, stderr=sys.stderr, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            ready, _, _ = select.select([p.stdout], [], [], 60)
            line = p.stdout.readline().decode().strip() if ready else ""
            if not line:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
                raise RuntimeError("a worker process did not start (no worker_id printed)")
            procs[line] = p
            return line

        mon = Monitor(url)
        try:
            def leader() -> tuple[str, float] | None:
                row = mon.one(LEADER)
                return (row[0], float(row[1])) if row and row[0] else None

            def live_leader() -> tuple[str, float] | None:
                current = leader()
                return current if current and current[0] in procs and procs[current[0]].poll() is None else None

            t_start = time.monotonic()
            offsets = sorted(rng.uniform(0, poll_s) for _ in range(opts.workers)) if opts.stagger else []
            for k in range(opts.workers):
                if opts.stagger:
                    time.sleep(max(0.0, t_start + offsets[k] - time.monotonic()))
                spawn()
            wait(leader, opts.timeout + poll_s, "a first leader")
            metrics["first_leader_s"] = round(time.monotonic() - t_start, 2)
            print(f"first leader after {metrics['first_leader_s']} s", file=sys.stderr)
            attempt = 0
            while len(takeover_s) + timeouts < opts.kills and attempt < opts.kills + opts.retries:
                attempt += 1
                # A Postgres restart can end a worker (a plugin task without retry ends Worker.wait_for_shutdown).
                for wid, p in list(procs.items()):
                    if p.poll() is not None:
                        notes.append(f"attempt {attempt}: worker {wid[:8]} had exited ({p.returncode}); replaced")
                        procs.pop(wid)
                        spawn()
                pause = opts.settle if opts.settle is not None else rng.uniform(0, poll_s)
                time.sleep(pause)
                current = wait(live_leader, opts.timeout + poll_s, "a leader among the live workers")
                pm0, errors0 = mon.postmaster(), mon.errors
                victim, left = current
                proc = procs.pop(victim)
                t0 = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its executor's helpers, before the pid is reaped
                try:
                    new = wait(lambda v=victim: (lambda r: r if r and r[0] != v else None)(leader()),
                               opts.timeout, "a new leader")
                    took, timed_out = time.monotonic() - t0, False
                except TimeoutError:
                    took, timed_out, new = None, True, None
                if mon.postmaster() != pm0 or mon.errors != errors0:
                    restarts += 1
                    notes.append(f"attempt {attempt}: Postgres restarted or dropped the monitor's connection "
                                 "during the takeover; not counted, run again")
                    print(f"attempt {attempt}: Postgres restarted, not counted", file=sys.stderr)
                elif timed_out:
                    timeouts += 1
                    notes.append(f"kill {attempt}: no new leader within {opts.timeout}s (lease left {left:.1f} s)")
                else:
                    takeover_s.append(took)
                    lease_left_s.append(round(left, 2))
                    settle_s.append(round(pause, 2))
                    print(f"kill {len(takeover_s)}: lease left {left:.1f} s, takeover {took:.2f} s "
                          f"(new leader {new[0][:8]})", file=sys.stderr)
                proc.wait(10)
                if opts.stagger:
                    delay = rng.uniform(0, poll_s)
                    replacement_delay_s.append(round(delay, 2))
                    time.sleep(delay)
                replacement = spawn()
                wait(lambda r=replacement: mon.one(WORKER_SEEN, (r,)), 60, "the replacement in chancy_workers", 0.02)
        finally:
            mon.close()
    except Exception as exc:  # reported in the JSON line; the finally still cleans up
        notes.append(f"error: {type(exc).__name__}: {exc}")
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # whatever is left of its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    ms = [s * 1000 for s in takeover_s]
    metrics.update(kills=len(takeover_s), timeouts=timeouts, discarded_for_restart=restarts, p50_ms=pct(ms, 50), p99_ms=pct(ms, 99),
                   max_ms=pct(ms, 100), takeover_s=[round(s, 2) for s in takeover_s],
                   lease_left_at_kill_s=lease_left_s, settle_s=settle_s, replacement_delay_s=replacement_delay_s,
                   after_expiry_s=[round(t - left, 2) for t, left in zip(takeover_s, lease_left_s, strict=True)],
                   wall_s=round(time.monotonic() - started, 1))
    notes.append("takeover = kill -> another worker_id in chancy_leader; a follower takes the row only once "
                 "the lease has expired (Leadership.run deletes expires_at < now, then INSERT ... ON CONFLICT DO "
                 "NOTHING) and its own poll comes round: ~lease left + up to one poll interval")
    result = {
        "peer": "chancy", "version": importlib.metadata.version("chancy"), "workload": "takeover",
        "ok": len(takeover_s) == opts.kills and timeouts == 0 and not any(n.startswith("error") for n in notes),
        "params": {"kills": opts.kills, "workers": opts.workers, "timeout_s": opts.timeout,
                   "settle": "random" if opts.settle is None else opts.settle, "seed": opts.seed,
                   "stagger": opts.stagger},
        "metrics": metrics,
        "settings": {**defaults, "plugins": "defaults", "executor": "process pool (default)",
                     "monitor_poll_ms": 5, "kill": "SIGKILL to the worker's process group"},
        "notes": notes,
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
