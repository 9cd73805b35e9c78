"""The async API: enqueue inside the caller's async transaction, and the admin API as awaitables.

- `enqueue_async(task, args, conn=...)` / `enqueue_many_async(task, args_list, conn=...)`: `conn` is a psycopg
  `AsyncConnection`, or a SQLAlchemy `AsyncSession` / `AsyncConnection` on the psycopg driver. The insert runs
  in the caller's transaction: the job exists only if the caller commits. Arguments are checked exactly as by
  `pgjobs.enqueue` (the same `Admin._job_params`), before anything is sent.
- `AsyncAdmin`: every method of `Admin`, awaitable. Each call runs the synchronous method in a thread
  (`asyncio.to_thread`), so the validation, errors and audit are those of `Admin`, written once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from pgjobs import otel
from pgjobs.admin import Admin, AdminError
from pgjobs.config import Settings
from pgjobs.rows import one_async


async def _raw_async_connection(conn: Any) -> psycopg.AsyncConnection[Any]:
    """A psycopg AsyncConnection from itself, a SQLAlchemy AsyncSession or a SQLAlchemy AsyncConnection."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    sa_conn = conn
    if callable(getattr(conn, "connection", None)) and not hasattr(conn, "get_raw_connection"):
        sa_conn = await conn.connection()  # an AsyncSession: its connection, in its transaction
    if hasattr(sa_conn, "get_raw_connection"):
        raw = await sa_conn.get_raw_connection()
        driver = getattr(raw, "driver_connection", None)
        if isinstance(driver, psycopg.AsyncConnection):
            return driver
    raise AdminError("enqueue_async(conn=...) takes a psycopg AsyncConnection or a SQLAlchemy AsyncSession/"
                     "AsyncConnection on the psycopg driver (postgresql+psycopg://)")


def _admin(settings: Settings | None) -> Admin:
    return Admin(settings or Settings.load(), actor="app")


async def enqueue_async(task: str, args: Any = None, *, conn: Any, settings: Settings | None = None,
                        queue: str = "default", priority: int = 0, max_attempts: int | None = None,
                        scheduled_at: datetime | None = None, unique_key: str | None = None,
                        timeout: float | None = None) -> int:
    """Enqueue a job in the caller's async transaction (`conn`); returns its id (with `unique_key`, the id of
    the waiting or running job that holds the key). The job exists only if the caller's transaction commits."""
    admin = _admin(settings)
    params = admin._job_params(task, args, queue, priority, max_attempts, scheduled_at, unique_key, timeout)
    params.pop("args_text")
    if otel.tracing():
        with otel.enqueue_span(task, params["queue"]) as span:
            params["trace"] = otel.trace_context()  # the send span's: the run links to it
            job_id = await _insert(admin, params, conn)
            span.set_attribute("messaging.message.id", str(job_id))
            return job_id
    return await _insert(admin, params, conn)


async def _insert(admin: Admin, params: dict[str, Any], conn: Any) -> int:
    raw = await _raw_async_connection(conn)
    async with raw.cursor(row_factory=tuple_row) as cur:
        while True:
            row = await (await cur.execute(admin.q.enqueue_job, params)).fetchone()
            if row is not None:
                return int(row[0])
            existing = await (await cur.execute(admin.q.find_unique_job, {"unique_key": params["unique_key"]})).fetchone()
            if existing is not None:  # a duplicate: hand back the job that holds the key
                return int(existing[0])


async def enqueue_many_async(task: str, args_list: Iterable[Any], *, conn: Any, settings: Settings | None = None,
                             queue: str = "default", priority: int = 0, max_attempts: int | None = None,
                             timeout: float | None = None) -> int:
    """Bulk insert (COPY) in the caller's async transaction; returns the number of jobs inserted. Every job's
    args are checked (as by `Admin.enqueue_many`) before the first row is sent: one bad job refuses them all."""
    admin = _admin(settings)
    base = admin._job_params(task, None, queue, priority, max_attempts, None, None, timeout, check=False)
    rows = admin._bulk_args(task, args_list)
    raw = await _raw_async_connection(conn)
    with otel.bulk_enqueue_span(task, base["queue"], len(rows)) as trace_text:
        async with raw.cursor(row_factory=tuple_row) as cur:
            now = (await one_async(await cur.execute(admin.q.db_now)))[0]
            async with cur.copy(admin.q.copy_jobs) as copy:
                for text in rows:
                    await copy.write_row((base["queue"], task, text, base["priority"], base["max_attempts"], now,
                                          base["timeout"], trace_text))
    return len(rows)


class AsyncAdmin:
    """`Admin`, awaitable: `await AsyncAdmin(settings).list_jobs(state="failed")`. Each call runs the
    synchronous method in a thread, so validation, errors (AdminError and its kinds) and audit are Admin's."""

    _SYNC_ONLY = frozenset({"transaction", "as_user"})

    def __init__(self, settings: Settings, *, actor: str | None = None, role: str = "admin",
                 pool: ConnectionPool | None = None) -> None:
        self.admin = Admin(settings, actor=actor, role=role, pool=pool)

    def as_user(self, actor: str, role: str) -> AsyncAdmin:
        other = AsyncAdmin.__new__(AsyncAdmin)
        other.admin = self.admin.as_user(actor, role)
        return other

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.admin, name)
        if name.startswith("_") or name in self._SYNC_ONLY or not callable(target):
            raise AttributeError(f"AsyncAdmin has no attribute '{name}'")

        @functools.wraps(target)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(target, *args, **kwargs)

        return call
