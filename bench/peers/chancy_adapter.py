"""chancy adapter for the benchmark harness (run with bench/.venvs/chancy/bin/python).

API used, as documented: `Chancy(dsn, plugins=[...])`, `chancy.migrate()` and `chancy.declare(Queue(...))`
for the schema, `chancy.push(job)` for one job, `chancy.push_many(jobs)` (an async iterator of
1000-job batches) for many, and `async with Worker(chancy) as worker: await worker.wait_for_shutdown()`
for a worker, with the default plugins (leadership, pruner, recovery, metrics, workflow).

Settings that differ from the library defaults, and why (all reported in the result's "settings"):
- Queue executor: `Chancy.Executor.Async` instead of the default process pool, so that a no-op job is
  an in-loop coroutine as it is for procrastinate and PgQueuer. With the process pool, a drain of
  no-op jobs measured ~145 jobs/s here (pickling to a spawned child per job).
- `Queue(eager_polling=True)`: by default a worker fetches only when NOTIFYed or every 5 s
  (polling_interval), and only up to `concurrency` jobs per fetch, so a backlog that was enqueued
  before the worker started drains at `concurrency / 5 s` (measured: 0.4 jobs/s). Eager polling is
  the documented switch for "jobs continuously available".
- Cron plugin `poll_interval=1`: the default 60 s cannot serve a per-second schedule (1 is its
  minimum: the parameter is whole seconds). Cron jobs carry no slot identity, so the harness takes
  floor(start time) as the slot of a run.
`--executor process` and `--no-eager-polling` bring the defaults back.

Job functions are referred to by import path ("chancy_adapter.noop"): the process-pool children import
this module (the script's folder is on their sys.path) and never run the `__main__` block.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from typing import Any

from chancy import Chancy, Job, Queue, Worker
from chancy.plugins.cron import Cron
from harness import Adapter, main, record

CRON_POLL_S = 1


# Sync job functions for the (default) process-pool executor, async twins for the async executor.
def noop() -> None:
    pass


def probe(sample: int) -> None:
    record("probe", sample)


def tick() -> None:
    record("tick")


async def async_noop() -> None:
    pass


async def async_probe(sample: int) -> None:
    record("probe", sample)


async def async_tick() -> None:
    record("tick")


def make_chancy(dsn: str, *, with_cron: bool = True) -> Chancy:
    # Workers outside the cron workload run without the Cron plugin: its 1 s poll is not a default.
    return Chancy(dsn, plugins=[Cron(poll_interval=CRON_POLL_S)] if with_cron else [])


class ChancyAdapter(Adapter):
    name = "chancy"

    def version(self) -> str:
        return importlib.metadata.version("chancy")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--eager-polling",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Queue.eager_polling (library default: off; see the module docstring)",
        )
        parser.add_argument(
            "--executor",
            choices=["process", "async"],
            default="async",
            help="async = Chancy.Executor.Async (used here); process = library default (process pool)",
        )
        parser.add_argument("--concurrency", type=int, default=None, help="Queue.concurrency (default: CPUs)")

    def settings(self) -> dict[str, Any]:
        return {
            "cron_poll_interval_s": CRON_POLL_S,
            "eager_polling": self.args.eager_polling,
            "executor": self.args.executor,
            "concurrency": self.args.concurrency,
        }

    def queue(self) -> Queue:
        executor = Chancy.Executor.Async if self.args.executor == "async" else Chancy.Executor.Process
        return Queue(
            "default",
            concurrency=self.args.concurrency,
            executor=executor,
            eager_polling=self.args.eager_polling,
        )

    def job(self, task: str, kwargs: dict[str, Any] | None = None) -> Job:
        prefix = "async_" if self.args.executor == "async" else ""
        return Job(func=f"chancy_adapter.{prefix}{task}", kwargs=kwargs or {})

    async def install(self, dsn: str) -> None:
        async with make_chancy(dsn) as chancy:
            await chancy.migrate()
            await chancy.declare(self.queue())

    async def install_cron(self, dsn: str) -> None:
        async with make_chancy(dsn) as chancy:
            await Cron.schedule(chancy, "* * * * * *", self.job("tick").with_unique_key("bench-tick"))

    async def open(self, dsn: str) -> None:
        self.chancy = make_chancy(dsn)
        await self.chancy.__aenter__()

    async def close(self) -> None:
        await self.chancy.__aexit__(None, None, None)

    async def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        await self.chancy.push(self.job(task, kwargs))

    async def enqueue_many(self, task: str, kwargs_list: list[dict[str, Any]]) -> None:
        async for _refs in self.chancy.push_many([self.job(task, k) for k in kwargs_list]):
            pass

    def unfinished_sql(self) -> str:
        return "SELECT count(*) FROM chancy_jobs WHERE state IN ('pending', 'running', 'retrying')"

    async def run_worker(self, dsn: str, mode: str) -> None:
        async with make_chancy(dsn, with_cron=(mode == "cron")) as chancy, Worker(chancy) as worker:
            await worker.wait_for_shutdown()


if __name__ == "__main__":
    main(ChancyAdapter)
