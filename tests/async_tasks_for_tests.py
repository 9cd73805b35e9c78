"""Async tasks the tests' worker processes load with `--import async_tasks_for_tests` (kept apart from
tasks_for_tests, so the other tests' workers start no event loop)."""

from __future__ import annotations

import asyncio
import time

from pgjobs import JobContext, task


@task("atests.sleep")
async def sleep(seconds: float = 1.0) -> dict:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@task("atests.fail_until", pass_context=True)
async def fail_until(ctx: JobContext, succeed_on: int = 99) -> dict:
    await asyncio.sleep(0)
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"planned async failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@task("atests.slow_first", pass_context=True)
async def slow_first(ctx: JobContext, seconds: float = 30) -> dict:
    """Sleeps `seconds` on its first attempt (past its timeout), returns at once on the next ones."""
    if ctx.attempt == 1:
        await asyncio.sleep(seconds)
    return {"attempt": ctx.attempt}


@task("atests.block_loop")
async def block_loop(seconds: float = 1.5) -> None:
    """Sync work inside async def: blocks the worker's event loop."""
    time.sleep(seconds)


@task("atests.span")
async def span(seconds: float = 0.5) -> dict:
    """Returns when it ran (wall clock), so a test can count how many ran at once."""
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


@task("atests.statement_timeout", pass_context=True)
async def statement_timeout(ctx: JobContext) -> dict:
    """What `ctx.aconnection()` sets: the job's remaining time as statement_timeout, in a transaction."""
    async with ctx.aconnection() as conn:
        cur = await conn.execute("SELECT current_setting('statement_timeout'), pg_backend_pid(), "
                                 "(SELECT backend_pid FROM pgjobs.jobs WHERE id = %s)", (ctx.id,))
        setting, pid, recorded = await cur.fetchone()
    return {"statement_timeout": setting, "pid_recorded": pid == recorded}


@task("atests.sql_sleep", pass_context=True)
async def sql_sleep(ctx: JobContext, seconds: float = 30) -> None:
    async with ctx.aconnection() as conn:
        await conn.execute("SELECT pg_sleep(%s)", (seconds,))
