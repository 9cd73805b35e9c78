"""procrastinate adapter for the benchmark harness (run with bench/.venvs/procrastinate/bin/python).

API used, as documented: `App(connector=PsycopgConnector(conninfo=...))`, `app.schema_manager`,
`task.defer_async` (one job), `task.batch_defer_async` (many jobs, one INSERT), `app.run_worker_async`
with library defaults (concurrency 1, LISTEN/NOTIFY on, jobs kept after completion), and
`@app.periodic(cron=...)` with the optional 6th (seconds) cron field. The periodic task receives the
slot it runs for as `timestamp`, which is what the harness uses as the slot.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import procrastinate
from harness import Adapter, main, record


def make_app(dsn: str, *, with_cron: bool) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        pass

    @app.task(name="probe")
    async def probe(sample: int) -> None:
        record("probe", sample)

    if with_cron:

        @app.periodic(cron="* * * * * *")
        @app.task(name="tick")
        async def tick(timestamp: int) -> None:
            record("tick", timestamp)

    return app


class ProcrastinateAdapter(Adapter):
    name = "procrastinate"

    def version(self) -> str:
        return importlib.metadata.version("procrastinate")

    async def install(self, dsn: str) -> None:
        app = make_app(dsn, with_cron=False)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def open(self, dsn: str) -> None:
        self.app = make_app(dsn, with_cron=False)
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        await self.app.tasks[task].defer_async(**kwargs)

    async def enqueue_many(self, task: str, kwargs_list: list[dict[str, Any]]) -> None:
        await self.app.tasks[task].batch_defer_async(*kwargs_list)

    def unfinished_sql(self) -> str:
        return "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"

    async def run_worker(self, dsn: str, mode: str) -> None:
        app = make_app(dsn, with_cron=(mode == "cron"))
        async with app.open_async():
            await app.run_worker_async()


if __name__ == "__main__":
    main(ProcrastinateAdapter)
