"""The harness's tasks for pgjobs: `noop`, `anoop` (its async twin), `probe(sample)` and `tick` (the '1 second'
schedule's task).

Workers load this module with `python -m pgjobs worker --import pgjobs_tasks` (bench/ and bench/peers/ on
PYTHONPATH); the adapter's client imports it too, because pgjobs refuses to enqueue an unregistered task.
A worker process started by the adapter has PGJOBS_BENCH_WORKER=1 and records "ready" when it imports
this module, which `pgjobs worker` does just before it connects and starts its threads (the moment the
other adapters record "ready": right before they call their worker API).
"""

from __future__ import annotations

import os

from harness import record

from pgjobs import JobContext, task


@task("noop")
def noop() -> None:
    pass


@task("anoop")
async def anoop() -> None:
    """The async drain's no-op (harness `--async-tasks`): run on the worker's event loop."""


@task("probe")
def probe(sample: int) -> None:
    record("probe", sample)


@task("tick", pass_context=True)
def tick(ctx: JobContext) -> None:
    # pgjobs tells the task which slot it runs for: the harness uses it (exact missed/doubled counts).
    record("tick", int(ctx.slot.timestamp()) if ctx.slot else "-")


if os.environ.get("PGJOBS_BENCH_WORKER") == "1":
    record("ready")
