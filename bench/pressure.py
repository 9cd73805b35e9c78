#!/usr/bin/env python3
"""A held xmin horizon under a steady load: throughput, pickup wait and bloat before, during and after.

    .venv/bin/python bench/pressure.py --rate 2000 --before 60 --hold 300 --after 60
    .venv/bin/python bench/pressure.py --holder readers --readers 4 --hold 300

It starts a Postgres of its own (tests/pgserver.py) with production settings: autovacuum on, fsync and
synchronous_commit on. This machine's shared server runs with autovacuum off, so it cannot show bloat.
Then: `--workers` pgjobs worker processes, and a producer that bulk-enqueues `--rate` no-op jobs a second
in batches every 100 ms. After `--before` seconds a holder pins the horizon for `--hold` seconds:
- `idle`: one REPEATABLE READ transaction that took an xid and a snapshot, then sits idle in transaction
  (pg_dump, an analytics session, a forgotten BEGIN);
- `readers`: `--readers` REPEATABLE READ sessions that scan the job table again and again, each in a
  transaction that lasts the whole hold (analytics on the OLTP path).
Then `--after` seconds without it.

Every 10 s window reports: jobs completed, the offered count, pickup wait p50/p99 (started_at minus
scheduled_at, database clock) of the jobs started in the window, the backlog, dead tuples and size (tables +
indexes) summed over every table of the pgjobs schema (partitions included), and per table. The JSON goes to bench/results/pressure-<timestamp>.json, a line per window to
stderr. pgjobs only, for now: the peers' adapters (bench/peers/) have no steady-rate workload yet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(BENCH / "peers"), str(ROOT / "tests"), str(ROOT)]

import psycopg  # noqa: E402

from pgjobs import Admin, Settings, migrations  # noqa: E402
from pgserver import PgServer  # noqa: E402

WINDOW = 10.0
PRODUCTION = {
    "autovacuum": "on",
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=2000, help="jobs offered per second (default 2000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--before", type=float, default=60, help="seconds of load before the holder (default 60)")
    p.add_argument("--hold", type=float, default=300, help="seconds the horizon is held (default 300)")
    p.add_argument("--after", type=float, default=60, help="seconds of load after it ends (default 60)")
    p.add_argument("--holder", choices=("idle", "readers"), default="idle")
    p.add_argument("--readers", type=int, default=4, help="with --holder readers: how many (default 4)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/pressure-<time>.json)")
    args = p.parse_args()
    if not (1 <= args.rate <= 50_000 and 1 <= args.workers <= 16 and 1 <= args.readers <= 16):
        p.error("--rate 1-50000, --workers 1-16, --readers 1-16")
    if min(args.before, args.hold, args.after) < 0 or args.before + args.hold + args.after > 4 * 3600:
        p.error("phases must be >= 0 s and at most 4 h in all")

    with PgServer(settings=PRODUCTION) as server:
        server.start()
        url = server.create_database("pressure")
        settings = Settings.load(database_url=url)
        migrations.upgrade(settings)
        result = run(args, server, url, settings)
    out = args.out or BENCH / "results" / f"pressure-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace, server: PgServer, url: str, settings: Settings) -> dict:
    env = {**os.environ, "PGJOBS_DATABASE_URL": url, "PGJOBS_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(BENCH), str(BENCH / "peers"), str(ROOT)])}
    workers = [subprocess.Popen([sys.executable, "-m", "pgjobs", "worker", "--import", "pgjobs_tasks"], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(args.workers)]
    stop = threading.Event()
    offered = [0]
    failure: list[BaseException] = []
    producer = threading.Thread(target=produce, args=(settings, args.rate, stop, offered, failure), daemon=True)
    holders: list[psycopg.Connection] = []
    reader_threads: list[threading.Thread] = []
    windows: list[dict] = []
    t0 = time.monotonic()
    phases = [("before", args.before), ("hold", args.hold), ("after", args.after)]
    try:
        producer.start()
        with psycopg.connect(url, autocommit=True) as mon:
            last = mon.execute("SELECT clock_timestamp()").fetchone()[0]
            last_offered = 0
            for phase, seconds in phases:
                if phase == "hold":
                    holders, reader_threads = start_holder(args, url, stop)
                if phase == "after":
                    end_holder(holders, reader_threads)
                phase_end = time.monotonic() + seconds
                while time.monotonic() < phase_end:
                    time.sleep(min(WINDOW, max(0.0, phase_end - time.monotonic())))  # the window's length
                    now, row = sample(mon, last)
                    windows.append({"t": round(time.monotonic() - t0, 1), "phase": phase,
                                    "offered": offered[0] - last_offered, **row})
                    last, last_offered = now, offered[0]
                    print(json.dumps(windows[-1]), file=sys.stderr)
                    if failure:
                        raise RuntimeError(f"the producer failed: {failure[0]!r}")
    finally:
        stop.set()
        end_holder(holders, reader_threads)
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
    return {"settings": {**vars(args), "out": str(args.out), "postgres": PRODUCTION,
                         "server_version": server.version()},
            "windows": windows, "summary": summarize(windows)}


def produce(settings: Settings, rate: int, stop: threading.Event, offered: list[int],
            failure: list[BaseException]) -> None:
    """`rate` jobs a second, in bulk enqueues every 100 ms, on a fixed schedule (no drift)."""
    try:
        import pgjobs_tasks  # noqa: F401 - registers noop in this process

        admin = Admin(settings, actor="bench")
        per_tick = max(1, rate // 10)
        next_at = time.monotonic()
        while not stop.is_set():
            admin.enqueue_many("noop", [{}] * per_tick)
            offered[0] += per_tick
            next_at += 0.1
            stop.wait(max(0.0, next_at - time.monotonic()))
    except BaseException as exc:  # noqa: BLE001 - reported by the sampling loop, which stops the run
        failure.append(exc)


def start_holder(args: argparse.Namespace, url: str, stop: threading.Event
                 ) -> tuple[list[psycopg.Connection], list[threading.Thread]]:
    if args.holder == "idle":
        # autocommit, so that the BEGIN below is the transaction's own start, not a redundant one inside the
        # driver's implicit transaction (Postgres applies its isolation level either way, with a warning)
        conn = psycopg.connect(url, application_name="pressure-idle-in-transaction", autocommit=True)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT txid_current(), count(*) FROM pgjobs.jobs")
        return [conn], []
    conns = [psycopg.connect(url, application_name=f"pressure-reader-{i}", autocommit=True)
             for i in range(args.readers)]
    done = threading.Event()

    def read(conn: psycopg.Connection) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        while not stop.is_set() and not done.is_set():
            conn.execute("SELECT state, count(*) FROM pgjobs.jobs GROUP BY state").fetchall()

    threads = [threading.Thread(target=read, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    threads.append(_Done(done))
    return conns, threads


class _Done(threading.Thread):
    """A marker in the reader list: joining it tells the readers to stop."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__(daemon=True)
        self.event = event

    def join(self, timeout: float | None = None) -> None:
        self.event.set()


def end_holder(holders: list[psycopg.Connection], threads: list[threading.Thread]) -> None:
    for t in reversed(threads):
        t.join(30)
    for conn in holders:
        try:
            conn.close()
        except psycopg.Error:
            pass
    holders.clear()
    threads.clear()


def sample(mon: psycopg.Connection, since) -> tuple:
    now = mon.execute("SELECT clock_timestamp()").fetchone()[0]
    done, p50, p99 = mon.execute(
        """SELECT count(*) FILTER (WHERE finished_at > %s AND finished_at <= %s),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_at))
                      FILTER (WHERE started_at > %s AND started_at <= %s),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_at))
                      FILTER (WHERE started_at > %s AND started_at <= %s)
           FROM pgjobs.jobs WHERE started_at > %s""", (since, now, since, now, since, now, since)).fetchone()
    backlog = mon.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'available'").fetchone()[0]
    # Every table of the pgjobs schema, partitions included (pg_stat_user_tables lists leaf tables), so a
    # storage that splits or partitions the queue is measured without changing this file.
    rels = mon.execute(
        """SELECT relname, n_dead_tup, n_live_tup, pg_total_relation_size(relid)
           FROM pg_stat_user_tables WHERE schemaname = 'pgjobs' ORDER BY relname""").fetchall()
    return now, {"completed": done, "wait_p50_ms": _ms(p50), "wait_p99_ms": _ms(p99), "backlog": backlog,
                 "dead_tuples": sum(r[1] for r in rels), "live_tuples": sum(r[2] for r in rels),
                 "jobs_bytes": sum(r[3] for r in rels),
                 "relations": {r[0]: {"dead": r[1], "live": r[2], "bytes": r[3]} for r in rels if r[3] > 65536}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summarize(windows: list[dict]) -> dict:
    out = {}
    for phase in ("before", "hold", "after"):
        rows = [w for w in windows if w["phase"] == phase]
        if not rows:
            continue
        p99s = [w["wait_p99_ms"] for w in rows if w["wait_p99_ms"] is not None]
        out[phase] = {
            "windows": len(rows),
            "kept_up_windows": sum(1 for w in rows if w["completed"] >= 0.95 * w["offered"]),
            "min_completed_per_s": min(w["completed"] for w in rows) / WINDOW,
            "worst_wait_p99_ms": max(p99s) if p99s else None,
            "max_backlog": max(w["backlog"] for w in rows),
            "max_dead_tuples": max(w["dead_tuples"] for w in rows),
            "max_jobs_mb": round(max(w["jobs_bytes"] for w in rows) / 2**20, 1),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
