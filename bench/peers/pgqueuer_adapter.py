"""PgQueuer adapter for the benchmark harness (run with bench/.venvs/pgqueuer/bin/python).

API used, as documented: `Queries(driver).install()` for the schema, `Queries.enqueue(entrypoint,
payload)` for one job and the same call with lists for a batch (one INSERT ... UNNEST), and a worker
built by a factory returning a `PgQueuer` (entrypoints + `@pgq.schedule`) run by `pgqueuer.run`, which
is what `pgq run module:factory` does. Library defaults otherwise (batch_size 10, dequeue_timeout 30 s,
NOTIFY on enqueue). `--driver` picks asyncpg (default) or psycopg for both client and worker.

PgQueuer deletes a job row when it finishes (and logs it in pgqueuer_log), so "unfinished" is simply
the row count of the queue table. Its schedules have no slot identity, so the harness takes
floor(start time) as the slot of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any

import pgqueuer
from harness import Adapter, main, record
from pgqueuer.models import Job, Schedule


async def connect_driver(dsn: str, driver: str):  # noqa: ANN201
    if driver == "asyncpg":
        import asyncpg

        conn = await asyncpg.connect(dsn)
        return conn, pgqueuer.AsyncpgDriver(conn)
    import psycopg

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return conn, pgqueuer.PsycopgDriver(conn)


class PgQueuerAdapter(Adapter):
    name = "pgqueuer"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--driver", choices=["asyncpg", "psycopg"], default="asyncpg")

    def version(self) -> str:
        return importlib.metadata.version("pgqueuer")

    def settings(self) -> dict[str, Any]:
        return {"driver": self.args.driver}

    async def install(self, dsn: str) -> None:
        conn, driver = await connect_driver(dsn, self.args.driver)
        try:
            await pgqueuer.Queries(driver).install()
        finally:
            await conn.close()

    async def open(self, dsn: str) -> None:
        self.conn, driver = await connect_driver(dsn, self.args.driver)
        self.queries = pgqueuer.Queries(driver)

    async def close(self) -> None:
        await self.conn.close()

    async def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        await self.queries.enqueue(task, _payload(kwargs))

    async def enqueue_many(self, task: str, kwargs_list: list[dict[str, Any]]) -> None:
        n = len(kwargs_list)
        await self.queries.enqueue([task] * n, [_payload(k) for k in kwargs_list], [0] * n)

    def unfinished_sql(self) -> str:
        return "SELECT count(*) FROM pgqueuer"

    async def run_worker(self, dsn: str, mode: str) -> None:
        driver_name = self.args.driver

        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[pgqueuer.PgQueuer]:
            conn, driver = await connect_driver(dsn, driver_name)
            pgq = pgqueuer.PgQueuer(driver)

            @pgq.entrypoint("noop")
            async def noop(job: Job) -> None:
                pass

            @pgq.entrypoint("probe")
            async def probe(job: Job) -> None:
                record("probe", job.payload.decode() if job.payload else "-")

            if mode == "cron":

                @pgq.schedule("tick", "* * * * * *")
                async def tick(schedule: Schedule) -> None:
                    record("tick")

            try:
                yield pgq
            finally:
                await conn.close()

        await pgqueuer.run(factory)


def _payload(kwargs: dict[str, Any]) -> bytes | None:
    # The probe's only argument is its sample number; no-op jobs carry no payload.
    return str(kwargs["sample"]).encode() if "sample" in kwargs else None


if __name__ == "__main__":
    main(PgQueuerAdapter)
