"""10,000 schedules due at the same instant: how long until all their jobs exist?

    .venv/bin/python bench/schedules_due.py [--schedules 10000] [--lead 20] [--server postgresql://...]

Creates a fresh database, migrates it, starts one `python -m pgjobs worker` (it becomes the leader), then
adds `--schedules` schedules in one admin transaction (`Admin.transaction()` + `add_schedule`, the API the
CLI's `schedule apply` uses), all with the same once-a-day cron at one whole second T about `--lead` seconds
ahead (6-field cron, seconds first: 'S M H * * *', UTC), running the built-in `pgjobs.noop`. From T on, a
monitoring connection polls `count(*) WHERE slot = T` every ~5 ms; the result is the database-clock time
from T until the count reached `--schedules` (and until the first job appeared). The worker also runs the
jobs while they are being inserted, as it would in production; once all have started, the start lateness
(started_at - T) p50 / p99 / max is reported too. Prints one JSON line.

Peers: procrastinate and PgQueuer define periodic tasks in code (decorators), so 10,000 schedules cannot
be added at runtime; chancy stores cron rows in a table (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgjobs import Admin, __version__, migrations  # noqa: E402
from pgjobs.config import Settings  # noqa: E402

COUNT = "SELECT count(*), clock_timestamp() FROM pgjobs.jobs WHERE slot = %(slot)s"
NOT_STARTED = "SELECT count(*) FROM pgjobs.jobs WHERE slot = %(slot)s AND started_at IS NULL"
START_LATENESS = """
    SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - slot)),
           max(extract(epoch FROM started_at - slot))
    FROM pgjobs.jobs WHERE slot = %(slot)s"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--lead", type=float, default=20.0, help="seconds between start of creation and T")
    ap.add_argument("--timeout", type=float, default=60.0, help="give up this many seconds after T")
    ap.add_argument("--server", default=os.environ.get("PGJOBS_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432"))
    opts = ap.parse_args()

    dbname = f"pgjobs_due_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = f"{opts.server}/{dbname}"
    proc = None
    metrics: dict[str, float | int | None] = {}
    notes: list[str] = []
    ok = False
    try:
        settings = Settings.load(database_url=url)
        migrations.upgrade(settings)
        env = {**os.environ, "PGJOBS_DATABASE_URL": url, "PYTHONPATH": str(ROOT), "PGJOBS_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "-m", "pgjobs", "worker"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=sys.stderr, stdin=subprocess.DEVNULL)
        admin = Admin(settings, actor="bench")
        with psycopg.connect(url, autocommit=True) as mon:
            now = mon.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(UTC)
            slot = (now + timedelta(seconds=opts.lead)).replace(microsecond=0)
            expr = f"{slot.second} {slot.minute} {slot.hour} * * *"
            t0 = time.monotonic()
            with admin.transaction() as tx:
                for i in range(opts.schedules):
                    tx.add_schedule(f"due-{i:05d}", cron=expr, task="pgjobs.noop", timezone="UTC")
            metrics["create_s"] = round(time.monotonic() - t0, 2)
            before = (slot - mon.execute("SELECT clock_timestamp()").fetchone()[0]).total_seconds()
            if before < 1:
                notes.append(f"creating the schedules ended {-before:.1f}s after the slot: raise --lead")
            first = None
            deadline = time.monotonic() + max(0.0, before) + opts.timeout
            count = 0
            while time.monotonic() < deadline:
                count, at = mon.execute(COUNT, {"slot": slot}).fetchone()
                if count and first is None:
                    first = at
                if count >= opts.schedules:
                    break
                time.sleep(0.005)
            metrics.update(jobs=count, first_job_s=round((first - slot).total_seconds(), 3) if first else None,
                           all_jobs_s=round((at - slot).total_seconds(), 3) if count >= opts.schedules else None)
            ok = count >= opts.schedules and before >= 1
            # How late each job started after its slot (the worker ran them while the leader inserted them).
            while ok and time.monotonic() < deadline and mon.execute(NOT_STARTED, {"slot": slot}).fetchone()[0]:
                time.sleep(0.02)
            (p50, p99), worst = mon.execute(START_LATENESS, {"slot": slot}).fetchone()
            if ok and worst is not None:
                metrics.update(start_p50_s=round(float(p50), 3), start_p99_s=round(float(p99), 3),
                               start_max_s=round(float(worst), 3))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    print(json.dumps({"peer": "pgjobs", "version": __version__, "workload": "schedules_due", "ok": ok,
                      "params": {"schedules": opts.schedules}, "metrics": metrics, "settings": {},
                      "notes": notes}, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
