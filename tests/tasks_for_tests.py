"""Tasks the tests' worker processes load with `--import tasks_for_tests`."""

from __future__ import annotations

import random
import threading
import time

from pgjobs import JobContext, task


@task("tests.fail_until", pass_context=True)
def fail_until(ctx: JobContext, succeed_on: int = 99) -> dict:
    """Fails until attempt `succeed_on`."""
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@task("tests.random_fail")
def random_fail(p: float = 0.2, seed: int | None = None) -> None:
    if random.random() < p:
        raise RuntimeError("random failure")


@task("tests.python_loop", pass_context=True)
def python_loop(ctx: JobContext, seconds: float = 30) -> None:
    """Busy Python work that checks for cancellation between steps."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        ctx.cancel_event.wait(0.02)


@task("tests.hang")
def hang(seconds: float = 30) -> None:
    """Ignores cancellation entirely (it waits on an event nobody sets); only a timeout can end it."""
    threading.Event().wait(seconds)


@task("tests.sql_sleep", pass_context=True)
def sql_sleep(ctx: JobContext, seconds: float = 30) -> None:
    with ctx.connection() as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
