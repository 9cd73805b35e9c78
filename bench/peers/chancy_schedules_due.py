"""chancy: 10,000 cron schedules due at the same instant: how long until all their jobs exist?

    bench/.venvs/chancy/bin/python bench/peers/chancy_schedules_due.py [--schedules 10000] [--lead 20]
        [--timeout 120] [--server postgresql://postgres@127.0.0.1:5432]

The chancy counterpart of bench/schedules_due.py. Creates a fresh database and installs chancy with the
adapter's own code (`ChancyAdapter.install`: `chancy.migrate()` with the Cron plugin and the default
plugins, and the `default` queue declared), starts one worker with the adapter's cron-workload command
(`chancy_adapter.py _worker --mode cron`: `Worker(chancy)` with the Cron plugin and the default plugins),
waits until it has announced itself in `chancy_workers`, then adds `--schedules` schedules with chancy's
public API, in one call: `Cron.schedule(chancy, expr, *jobs)` with distinct unique keys `due-00000`...
(chancy requires a unique key per scheduled job), each a `chancy_adapter.async_noop` job. `expr` fires once
a day at one whole second T about `--lead` seconds ahead, 'M H * * * S' in UTC: chancy parses crons with
croniter, whose 6-field form has the seconds *last* (chancy.plugins.cron `_next_run`; checked: the stored
`next_run` of every row must equal T, else the run is not ok). From T on, a monitoring connection polls
`count(*)` of the jobs with those unique keys every ~5 ms until all exist (deadline `--timeout` s after T).

Reported (database clock): all_jobs_s (T -> all jobs exist), first_job_s (T -> first job visible),
pass_start_s (T -> the start of the Cron pass that pushed them: the earliest `created_at`, which is the
pass transaction's `now()`), and, once all have started (chancy sets `started_at = NOW()` when a worker
fetches a job), the start lateness started_at - T p50 / p99 / max. The worker runs the jobs while they
appear, as in production.

Settings that differ from chancy's defaults (those of the adapter's cron workload, reported in
"settings"): the queue's executor is `Chancy.Executor.Async` (default: process pool) and it has
`eager_polling=True` (default off), so the 10,000 no-op jobs are run as they are by the other peers'
workers; the Cron plugin has `poll_interval=1` (default 60 s: with the default, T -> jobs would be up to a
minute by design). Everything else is chancy's default, including one INFO log line per job (the worker's
log goes to a temporary file; its tail is printed on failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, timedelta
from pathlib import Path

import chancy_adapter
import psycopg
from chancy.plugins.cron import Cron
from chancy_adapter import ChancyAdapter, make_chancy
from psycopg import sql

KEY_PREFIX = "due-"
COUNT = "SELECT count(*), clock_timestamp() FROM chancy_jobs WHERE unique_key LIKE 'due-%'"
NOT_STARTED = "SELECT count(*) FROM chancy_jobs WHERE unique_key LIKE 'due-%' AND started_at IS NULL"
LATENESS = """
    SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - %(slot)s)),
           max(extract(epoch FROM started_at - %(slot)s)), extract(epoch FROM min(created_at) - %(slot)s)
    FROM chancy_jobs WHERE unique_key LIKE 'due-%%'"""
NEXT_RUN_OK = "SELECT count(*) FROM chancy_cron WHERE unique_key LIKE 'due-%%' AND next_run = %(slot)s"
WORKER_SEEN = "SELECT count(*) FROM chancy_workers"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedules", type=int, default=10_000)
    ap.add_argument("--lead", type=float, default=20.0, help="seconds between the start of creation and T")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up this many seconds after T")
    ap.add_argument("--server", default=os.environ.get("PGJOBS_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432"))
    opts = ap.parse_args()
    adapter = ChancyAdapter(argparse.Namespace(eager_polling=True, executor="async", concurrency=None))

    dbname = f"chancy_due_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        postmaster0 = c.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    url = f"{opts.server}/{dbname}"
    proc = None
    log = tempfile.NamedTemporaryFile(prefix="chancy_due_worker_", suffix=".log", delete=False)
    metrics: dict[str, float | int | None] = {}
    notes: list[str] = []
    ok = False
    try:
        asyncio.run(adapter.install(url))
        proc = subprocess.Popen(
            [sys.executable, str(Path(chancy_adapter.__file__).resolve()), "_worker", "--dsn", url, "--mode", "cron"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        with psycopg.connect(url, autocommit=True) as mon:
            deadline = time.monotonic() + 60
            while not mon.execute(WORKER_SEEN).fetchone()[0]:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the worker did not start")
                time.sleep(0.05)
            now = mon.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(UTC)
            slot = (now + timedelta(seconds=opts.lead)).replace(microsecond=0)
            expr = f"{slot.minute} {slot.hour} * * * {slot.second}"  # croniter: seconds last
            jobs = [adapter.job("noop").with_unique_key(f"{KEY_PREFIX}{i:05d}") for i in range(opts.schedules)]

            async def add() -> None:
                async with make_chancy(url) as chancy:
                    await Cron.schedule(chancy, expr, *jobs)

            t0 = time.monotonic()
            asyncio.run(add())
            metrics["create_s"] = round(time.monotonic() - t0, 2)
            at_slot = mon.execute(NEXT_RUN_OK, {"slot": slot}).fetchone()[0]
            if at_slot != opts.schedules:
                notes.append(f"only {at_slot} of {opts.schedules} schedules have next_run = T ({slot.isoformat()})")
            before = (slot - mon.execute("SELECT clock_timestamp()").fetchone()[0]).total_seconds()
            if before < 1:
                notes.append(f"creating the schedules ended {-before:.1f}s after T: raise --lead")
            first = None
            deadline = time.monotonic() + max(0.0, before) + opts.timeout
            count, at = 0, None
            while time.monotonic() < deadline:
                count, at = mon.execute(COUNT).fetchone()
                if count and first is None:
                    first = at
                if count >= opts.schedules:
                    break
                time.sleep(0.005)
            metrics.update(jobs=count, first_job_s=round((first - slot).total_seconds(), 3) if first else None,
                           all_jobs_s=round((at - slot).total_seconds(), 3) if count >= opts.schedules else None)
            ok = count >= opts.schedules and before >= 1 and at_slot == opts.schedules
            if count < opts.schedules:
                notes.append(f"{count} of {opts.schedules} jobs within {opts.timeout}s after T")
            # How late each job started after T (the worker ran them as they appeared).
            while ok and time.monotonic() < deadline and mon.execute(NOT_STARTED).fetchone()[0]:
                time.sleep(0.02)
            not_started = mon.execute(NOT_STARTED).fetchone()[0]
            (p50, p99), worst, pass_start = mon.execute(LATENESS, {"slot": slot}).fetchone()
            if pass_start is not None:
                metrics["pass_start_s"] = round(float(pass_start), 3)
            if ok and not not_started and worst is not None:
                metrics.update(start_p50_s=round(float(p50), 3), start_p99_s=round(float(p99), 3),
                               start_max_s=round(float(worst), 3))
            elif ok:
                notes.append(f"{not_started} jobs had not started by the deadline: no start lateness")
    except Exception as exc:  # reported in the JSON line; the finally still cleans up
        notes.append(f"error: {type(exc).__name__}: {exc}")
        ok = False
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its process group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        with psycopg.connect(f"{opts.server}/postgres", autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            if c.execute("SELECT pg_postmaster_start_time()").fetchone()[0] != postmaster0:
                notes.append("Postgres was restarted during the run: run it again")
                ok = False
        log.close()
        if ok:
            os.unlink(log.name)
        else:
            tail = Path(log.name).read_text(errors="replace").splitlines()[-30:]
            print("\n".join(["worker log (last lines), " + log.name, *tail]), file=sys.stderr)
    print(json.dumps({"peer": "chancy", "version": adapter.version(), "workload": "schedules_due", "ok": ok,
                      "params": {"schedules": opts.schedules, "lead_s": opts.lead, "timeout_s": opts.timeout},
                      "metrics": metrics,
                      "settings": {**adapter.settings(), "plugins": "Cron + defaults", "monitor_poll_ms": 5,
                                   "schedule_api": "Cron.schedule(chancy, expr, *jobs), one call"},
                      "notes": notes}, sort_keys=True), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
