"""awa adapter for the benchmark harness (run with bench/.venvs/awa/bin/python; `awa-pg` from PyPI).

API used, as documented in awa-python/README.md: `AsyncClient(url)`, `client.migrate()` for the schema,
`client.insert(args, kind=...)` for one job, `client.enqueue_many_copy(jobs, kind=...)` (one COPY into the
queue storage) for a batch, `@client.task(ArgsType, kind=...)` handlers and `client.start([("default", N)])`
for a worker, `client.periodic(name, cron, ...)` for the per-second schedule (croner, seconds field optional). Library defaults otherwise.

awa's queue-storage engine is finalized by the first runtime that starts on a fresh database ("start
processing before the first enqueue", examples/quickstart.py), so `install` starts and stops one runtime;
without it `enqueue_many_copy` refuses ("requires an active queue_storage backend").

Counting. The `awa.jobs` view (ready, leased and terminal rows) took 122 s for one `count(*)` of 5,000 jobs on
this machine (load ~7), and `client.queue_stats()` did not return within 60 s, so neither can be polled every
50 ms. The drain counts completions instead: awa's `noop` handler appends one `done` record to the probe file
(one O_APPEND write, a few microseconds, the only extra work any system's task does here), and unfinished =
jobs - done. `unfinished_sql` (used by the enqueue check, no worker running) counts `awa.ready_entries`: every
enqueued job has one there until the queue ring rotates it away after it is finished.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import signal
from dataclasses import dataclass
from typing import Any

import awa
from harness import Adapter, main, record

WORKERS = 4  # handlers per worker process on the one queue ("default"), like pgjobs' concurrency 4


@dataclass
class Noop:
    pass


@dataclass
class Probe:
    sample: int


@dataclass
class Tick:
    pass


def _register(client: awa.AsyncClient) -> None:
    @client.task(Noop, kind="noop")
    async def noop(job: Any) -> None:
        record("done")

    @client.task(Probe, kind="probe")
    async def probe(job: Any) -> None:
        record("probe", job.args.sample)

    @client.task(Tick, kind="tick")
    async def tick(job: Any) -> None:
        record("tick")


ARGS = {"noop": lambda kw: Noop(), "probe": lambda kw: Probe(**kw), "tick": lambda kw: Tick()}


class AwaAdapter(Adapter):
    name = "awa"

    def version(self) -> str:
        return importlib.metadata.version("awa-pg")

    def settings(self) -> dict[str, Any]:
        return {"queue": "default", "workers_per_process": WORKERS}

    async def install(self, dsn: str) -> None:
        client = awa.AsyncClient(dsn)
        await client.migrate()
        _register(client)
        await client.start([("default", 1)])  # finalizes the queue-storage engine
        await client.shutdown()
        await client.close()

    async def open(self, dsn: str) -> None:
        self.client = awa.AsyncClient(dsn)
        _register(self.client)

    async def close(self) -> None:
        await self.client.close()

    async def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        await self.client.insert(ARGS[task](kwargs), kind=task)

    async def enqueue_many(self, task: str, kwargs_list: list[dict[str, Any]]) -> None:
        await self.client.enqueue_many_copy([ARGS[task](k) for k in kwargs_list], kind=task)

    def unfinished_sql(self) -> str:
        return "SELECT count(*) FROM awa.ready_entries"

    def count_unfinished(self, conn: Any, probe: str, total: int) -> int:
        # read_probes is imported lazily: harness is this script's sibling module
        from harness import read_probes

        return total - sum(1 for kind, _, _ in read_probes(probe) if kind == "done")

    async def run_worker(self, dsn: str, mode: str) -> None:
        client = awa.AsyncClient(dsn)
        _register(client)
        if mode == "cron":
            # croner with optional seconds (awa-model/src/cron.rs); the leader evaluates schedules every 1 s.
            # The job does not carry its fire time, so the harness takes floor(start) as the slot.
            client.periodic("tick", "* * * * * *", Tick, Tick())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await client.start([("default", WORKERS)])
        try:
            await stop.wait()
        finally:
            await client.shutdown()
            await client.close()


if __name__ == "__main__":
    main(AwaAdapter)
