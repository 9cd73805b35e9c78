"""Task registry: Python callables registered by name with `@task`, and the context a running job sees.

A task is called as `fn(**args)`, or `fn(ctx, **args)` when registered with `pass_context=True`; an `async def`
task is awaited on the worker's event loop (async_runner.py).
Workers load tasks with `--import module` (repeatable); the CLI and console load the same modules so that
"the task must be registered" is checked before a schedule or job is written.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TASK_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*([.:-][A-Za-z_][A-Za-z0-9_]*)*$")


class TaskError(ValueError):
    """A task name or its arguments are not acceptable."""


class SkipJob(Exception):  # noqa: N818 - it is a signal, not an error
    """Raise from a task to end the job as `skipped` with this reason (e.g. the same refresh is running)."""


class JobCancelled(Exception):  # noqa: N818
    """Raised inside a task (by `ctx.check_cancelled()`) when an operator cancelled the job."""


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable[..., Any]
    pass_context: bool = False
    max_attempts: int | None = None
    timeout: float | None = None
    validate: Callable[[dict[str, Any]], None] | None = None
    description: str = ""
    is_async: bool = False  # an `async def` function: runs on the worker's event loop (async_runner.py)


_registry: dict[str, Task] = {}
_lock = threading.Lock()
_cancel_lock = threading.Lock()  # makes a JobContext's cancel event exactly once, whichever thread asks first


def validate_task_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TaskError("task name is empty")
    if len(name) > 200 or not TASK_NAME_RE.match(name):
        raise TaskError(f"task '{name}': use letters, digits and '_' in dot-separated parts (e.g. app.reports.daily)")
    return name


def task(
    name: str | None = None,
    *,
    pass_context: bool = False,
    max_attempts: int | None = None,
    timeout: float | None = None,
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a task, under `name` or `module.function`."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        task_name = validate_task_name(name or f"{fn.__module__}.{fn.__qualname__}")
        with _lock:
            existing = _registry.get(task_name)
            if existing is not None and existing.fn is not fn and existing.fn.__qualname__ != fn.__qualname__:
                raise TaskError(f"task '{task_name}' is registered twice ({existing.fn!r} and {fn!r})")
            _registry[task_name] = Task(
                task_name, fn, pass_context, max_attempts, timeout, validate, (fn.__doc__ or "").strip(),
                is_async=inspect.iscoroutinefunction(inspect.unwrap(fn)),
            )
        return fn

    return register


_OWN_TASK_MODULES = ("pgjobs.demo",)


def get_task(name: str) -> Task:
    """The registered task `name`. A registered name was validated when it was registered, so only a miss
    checks the name (a worker looks a task up for every job it runs)."""
    found = _registry.get(name) if isinstance(name, str) else None
    if found is None and isinstance(name, str) and name.startswith("pgjobs.") and name.count(".") >= 2:
        # pgjobs' own tasks (`pgjobs.demo.insert_spans`) register themselves on import of their module, so
        # no command needs `--import pgjobs.demo`; only modules of the pgjobs package are imported this way
        module = name.rsplit(".", 1)[0]
        if module in _OWN_TASK_MODULES:
            importlib.import_module(module)
            found = _registry.get(name)
    if found is None:
        validate_task_name(name)
        known = ", ".join(sorted(_registry)) or "none"
        raise TaskError(f"task '{name}' is not registered (known: {known}); load its module with --import")
    return found


def registered() -> list[Task]:
    return sorted(_registry.values(), key=lambda t: t.name)


def check_args(task_obj: Task, args: dict[str, Any]) -> None:
    """Run the task's own argument check, if it has one; raise TaskError with its message."""
    if task_obj.validate is None:
        return
    try:
        task_obj.validate(args)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task '{task_obj.name}': {exc}") from None


def import_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import modules that register tasks; a module that cannot be imported is a one-line error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise TaskError(f"cannot import task module '{module}': {type(exc).__name__}: {exc}") from None


def ensure_builtins() -> None:
    importlib.import_module("pgjobs.builtin")


@dataclass
class JobContext:
    """What a running job knows about itself, handed to tasks registered with `pass_context=True`."""

    id: int
    task: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    queue: str
    schedule_id: int | None
    slot: datetime | None
    worker: str
    timeout: float | None
    started: float = field(default_factory=time.monotonic)
    queries: Any = None
    _connect: Callable[[], Any] | None = None
    _on_backend: Callable[[int, int | None], None] | None = None
    _aconnect: Callable[[], Any] | None = None  # async tasks: an async context manager giving an AsyncConnection
    _cancel: threading.Event | None = field(default=None, repr=False)
    # Why cancel_event was set: "operator" (ends the job `cancelled`), "timeout" (`failed`, retried while
    # attempts remain), "shutdown" (requeued) or "disowned" (no longer this attempt: terminated by a newer
    # slot; nothing is recorded). Set by the worker before it sets the event.
    cancel_reason: str | None = field(default=None, repr=False)

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the job should stop: an operator cancelled it, it timed out, or the worker is stopping.

        Made on first use (most jobs never look, and an Event costs more to make than the rest of the context).
        """
        event = self._cancel
        if event is None:
            with _cancel_lock:
                if self._cancel is None:
                    self._cancel = threading.Event()
                event = self._cancel
        return event

    @property
    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Call from long-running Python tasks at safe points: raises JobCancelled once an operator cancels."""
        if self.cancelled:
            raise JobCancelled(f"job {self.id} was cancelled")

    def remaining(self) -> float | None:
        """Seconds left before the job's timeout, or None when it has none."""
        if self.timeout is None:
            return None
        return max(0.001, self.timeout - (time.monotonic() - self.started))

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A psycopg connection for SQL work, bounded by the job's timeout and cancellable by operators.

        `statement_timeout` is set to the time the job has left, so SQL never outlives its job, and the
        backend pid is recorded on the job so that a cancel reaches the running statement.
        """
        if self._connect is None:
            raise RuntimeError("this job context has no database connection factory")
        q = self.queries
        with self._connect() as conn:
            conn.autocommit = False  # the task's work is one transaction, committed when it returns
            pid = conn.info.backend_pid
            if self._on_backend:
                self._on_backend(self.id, pid)
            try:
                remaining = self.remaining()
                conn.execute(q.set_statement_timeout, {"ms": str(int(remaining * 1000)) if remaining else "0"})
                conn.commit()
                yield conn
                if not conn.closed:
                    conn.commit()
            finally:
                if self._on_backend:
                    self._on_backend(self.id, None)
                if not conn.closed:
                    conn.rollback()
                    conn.execute(q.reset_statement_timeout)
                    conn.commit()
                    conn.autocommit = True

    @asynccontextmanager
    async def aconnection(self) -> AsyncIterator[Any]:
        """For `async def` tasks: a psycopg AsyncConnection, like `connection()`: one transaction, committed
        when the block ends, `statement_timeout` set to the time the job has left, the backend pid recorded so
        that an operator's cancel reaches the running statement. Cancelling the task (timeout, cancel,
        shutdown) cancels a running statement too (psycopg sends the server a cancel request)."""
        if self._aconnect is None:
            raise RuntimeError("this job context has no async connection (only async tasks get one)")
        q = self.queries
        async with self._aconnect() as conn:
            await conn.set_autocommit(False)
            pid = conn.info.backend_pid
            if self._on_backend:
                await asyncio.to_thread(self._on_backend, self.id, pid)
            try:
                remaining = self.remaining()
                await conn.execute(q.set_statement_timeout, {"ms": str(int(remaining * 1000)) if remaining else "0"})
                await conn.commit()
                yield conn
                if not conn.closed:
                    await conn.commit()
            finally:
                if self._on_backend:
                    await asyncio.to_thread(self._on_backend, self.id, None)
                if not conn.closed:
                    await conn.rollback()
                    await conn.execute(q.reset_statement_timeout)
                    await conn.commit()
                    await conn.set_autocommit(True)
