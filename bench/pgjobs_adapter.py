"""pgjobs adapter for the benchmark harness (run with the project's venv: .venv/bin/python).

    .venv/bin/python bench/pgjobs_adapter.py drain --processes 2 --dsn postgresql://postgres@127.0.0.1:5432/b1

API used, as documented: `pgjobs.migrations.upgrade` for the schema (what `pgjobs migrate` does);
`Admin.enqueue(task, args, conn=...)` for one job (the application path of `pgjobs.enqueue`: one INSERT on
the caller's connection, no audit row); `Admin.enqueue_many` (one COPY) for a batch; `Admin.add_schedule`
with cron '1 seconds' for the cron workload (pgjobs keeps schedules in the database, and any worker that
leads runs them, so the worker is started the same way in every mode); and worker processes started as
`python -m pgjobs worker --import pgjobs_tasks`.

Settings that are not the library's defaults (reported in each result's "settings"):
- PGJOBS_LOG_LEVEL=WARNING: at INFO a worker logs one line per job, which on no-op jobs measures the
  logging module rather than the job system (`--log-level INFO` puts the default back);
- `--concurrency N` passes `--concurrency` to the worker (default: the library default, 4);
- `--worker-env NAME=VALUE` (repeatable) runs the workers with a setting changed, so two configurations
  can be compared in one run: `--adapter 'pgjobs-sync=.venv/bin/python:bench/pgjobs_adapter.py:--worker-env
  PGJOBS_SYNCHRONOUS_CLAIMS=on'` beside the default `pgjobs` adapter.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH / "peers"), str(BENCH), str(ROOT)]

import pgjobs_tasks  # noqa: E402, F401 - registers noop/probe/tick in the client (enqueue checks the task)
import psycopg  # noqa: E402
from harness import Adapter, main  # noqa: E402
from psycopg_pool import ConnectionPool  # noqa: E402

import pgjobs  # noqa: E402
from pgjobs import Admin, Settings, migrations  # noqa: E402


class PgjobsAdapter(Adapter):
    name = "pgjobs"
    async_noop_task = "anoop"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--concurrency", type=int, default=None, help="worker --concurrency (default: 4)")
        parser.add_argument("--log-level", default="WARNING", help="PGJOBS_LOG_LEVEL of the workers")
        parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                            help="extra environment for the workers, e.g. PGJOBS_SYNCHRONOUS_CLAIMS=on to compare "
                                 "a setting in the same run (repeatable)")

    def version(self) -> str:
        return pgjobs.__version__

    def settings(self) -> dict[str, Any]:
        return {"log_level": self.args.log_level, "concurrency": self.args.concurrency or "default (4)",
                **({"worker_env": self.args.worker_env} if self.args.worker_env else {})}

    async def install(self, dsn: str) -> None:
        migrations.upgrade(Settings.load(database_url=dsn))

    async def install_cron(self, dsn: str) -> None:
        Admin(Settings.load(database_url=dsn), actor="bench").add_schedule("tick", cron="1 seconds", task="tick")

    async def open(self, dsn: str) -> None:
        settings = Settings.load(database_url=dsn)
        self.pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True)
        self.admin = Admin(settings, actor="bench", pool=self.pool)
        self.conn = psycopg.connect(dsn, autocommit=True)

    async def close(self) -> None:
        self.conn.close()
        self.pool.close()

    async def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        self.admin.enqueue(task, kwargs, conn=self.conn)

    async def enqueue_many(self, task: str, kwargs_list: list[dict[str, Any]]) -> None:
        self.admin.enqueue_many(task, kwargs_list)

    def unfinished_sql(self) -> str:
        # Counted as pgjobs' own `unfinished_counts` does, one partial index per state. A plain `count(*) ...
        # WHERE state IN (...)` has no full index on state to use since migration 0004 and would scan the table
        # on every 50 ms poll, taking CPU from the workers being measured.
        return ("SELECT (SELECT count(*) FROM pgjobs.jobs WHERE state = 'available')"
                " + (SELECT count(*) FROM pgjobs.jobs WHERE state = 'running')")

    def worker_argv(self, dsn: str, mode: str) -> list[str]:
        # `env` execs the worker in place (same pid, same process group); PYTHONPATH lets it import the
        # task module and the harness's record().
        path = os.pathsep.join([str(BENCH), str(BENCH / "peers"), str(ROOT), os.environ.get("PYTHONPATH", "")])
        argv = ["env", "PGJOBS_BENCH_WORKER=1", f"PGJOBS_LOG_LEVEL={self.args.log_level}", f"PYTHONPATH={path}",
                *self.args.worker_env, sys.executable, "-m", "pgjobs", "--database-url", dsn, "worker", "--import", "pgjobs_tasks"]
        if self.args.concurrency:
            argv += ["--concurrency", str(self.args.concurrency)]
        return argv

    async def run_worker(self, dsn: str, mode: str) -> None:  # workers are started by worker_argv
        raise NotImplementedError


if __name__ == "__main__":
    main(PgjobsAdapter)
