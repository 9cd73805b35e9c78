"""Leader takeover after `kill -9`: how long until another worker holds the leader lock?

    .venv/bin/python bench/takeover.py [--kills 20] [--workers 3] [--server postgresql://postgres@127.0.0.1:5432]

Creates a fresh database, migrates it, starts `--workers` `python -m pgjobs worker` processes and, `--kills`
times: finds the leader (the backend holding pgjobs' advisory lock in pg_locks, mapped to its worker process
through the lock connection's application_name), SIGKILLs that process, and polls pg_locks every ~1 ms until a
different backend holds the lock. takeover = SIGKILL -> new holder seen in pg_locks. Also measured: until the
new leader has marked itself in `workers.leader_since` (its duties have started). A replacement worker is
started after each kill, so there are always `--workers` processes. Prints one JSON line (p50/p99/max in ms).

Only pgjobs is measured here. Of the peers, procrastinate and PgQueuer have no leader (every procrastinate
worker defers periodic tasks and a unique constraint drops duplicates; PgQueuer workers claim schedule rows
with SKIP LOCKED), and chancy's lease leader is replaced only after its lease expires (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgjobs import __version__, migrations  # noqa: E402
from pgjobs.config import Settings  # noqa: E402
from pgjobs.queries import queries  # noqa: E402

LEADER = """
    SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(cls)s AND l.objid = %(key)s
      AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
WAITERS = """
    SELECT count(*) FROM pg_locks l
    WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = %(cls)s AND l.objid = %(key)s
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
LEADER_ROW = "SELECT pid FROM pgjobs.workers WHERE leader_since IS NOT NULL"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1], 2)


def wait(predicate, timeout: float, what: str, interval: float = 0.001):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not seen within {timeout}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--settle", type=float, default=0.5, help="pause after a replacement is waiting (s)")
    ap.add_argument("--server", default=os.environ.get("PGJOBS_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432"))
    ap.add_argument("--dsn", help="use this (fresh) database instead of creating one")
    opts = ap.parse_args()

    dbname = None
    url = opts.dsn
    if url is None:
        dbname = f"pgjobs_takeover_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        url = f"{opts.server}/{dbname}"
    settings = Settings.load(database_url=url)
    migrations.upgrade(settings)
    lock = queries(settings.schema).lock
    env = {**os.environ, "PGJOBS_DATABASE_URL": url, "PYTHONPATH": str(ROOT), "PGJOBS_LOG_LEVEL": "WARNING"}
    procs: dict[int, subprocess.Popen[bytes]] = {}

    def spawn() -> None:
        p = subprocess.Popen([sys.executable, "-m", "pgjobs", "worker"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=sys.stderr, stdin=subprocess.DEVNULL)
        procs[p.pid] = p

    lock_ms: list[float] = []
    duties_ms: list[float] = []
    notes: list[str] = []
    try:
        with psycopg.connect(url, autocommit=True) as mon:
            def leader() -> tuple[int, int] | None:
                row = mon.execute(LEADER, lock).fetchone()
                if row is None:
                    return None
                worker_pid = int(row[1].split(":")[-1].split()[0])  # "pgjobs host:pid leader-lock"
                return row[0], worker_pid

            def ready() -> bool:
                # one holder and (workers - 1) processes queued on the lock
                return leader() is not None and mon.execute(WAITERS, lock).fetchone()[0] >= opts.workers - 1

            for _ in range(opts.workers):
                spawn()
            wait(ready, 60, "all workers in the election", 0.02)
            for i in range(opts.kills):
                backend, worker_pid = leader()
                time.sleep(opts.settle)
                t0 = time.monotonic()
                os.kill(worker_pid, signal.SIGKILL)
                new = wait(lambda b=backend: (lambda r: r if r and r[0] != b else None)(leader()), 30,
                           "a new lock holder")
                t1 = time.monotonic()
                wait(lambda p=new[1]: (mon.execute(LEADER_ROW).fetchone() or [None])[0] == p, 30,
                     "the new leader's workers row", 0.002)
                t2 = time.monotonic()
                lock_ms.append((t1 - t0) * 1000)
                duties_ms.append((t2 - t0) * 1000)
                print(f"kill {i + 1}: lock {lock_ms[-1]:.1f} ms, leader row {duties_ms[-1]:.1f} ms",
                      file=sys.stderr)
                procs.pop(worker_pid).wait(10)
                spawn()
                wait(ready, 60, "the replacement in the election", 0.02)
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if dbname:
            with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    result = {
        "peer": "pgjobs", "version": __version__, "workload": "takeover", "ok": len(lock_ms) == opts.kills,
        "params": {"kills": opts.kills, "workers": opts.workers},
        "metrics": {"kills": len(lock_ms), "p50_ms": pct(lock_ms, 50), "p99_ms": pct(lock_ms, 99),
                    "max_ms": pct(lock_ms, 100), "duties_p50_ms": pct(duties_ms, 50),
                    "duties_p99_ms": pct(duties_ms, 99)},
        "settings": {"log_level": "WARNING"}, "notes": notes,
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
