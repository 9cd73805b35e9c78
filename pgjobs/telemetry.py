"""Telemetry: the events the engine emits where it records an outcome, and the observers that consume them.

The worker and the leader duties call `emit(event, **fields)`; the Prometheus exporter (`metrics.py`) and
anything else (tests, a host application's own metrics) subscribe with `attach(handler)`. Nothing that
observes the engine has to recompute what the engine already knows, and the engine holds no metrics code.

Invariants
- Emitting never breaks the engine: an observer that raises is logged and skipped.
- With no observer attached, `emit` costs one empty-tuple check.

Events and their fields
- `job.claimed`   task, queue, lateness (seconds from the cron slot to the start of its first attempt; None
                  for non-cron jobs and retries),
                  wait (seconds from scheduled_at to the start)
- `job.ran`       task, queue, outcome ('completed', 'failed', 'skipped', 'cancelled'), seconds
- `job.recorded`  task, queue, state (the state the failure was recorded as: 'available' = will retry,
                  'failed', 'cancelled', 'skipped')
- `job.rescued`   task, state (the rescued job's new state), worker (the dead worker's name)
- `slot.recorded` schedule (name), outcome (the ledger outcome just written: completed, failed, cancelled,
                  skipped, missed, paused), count (slots: a missed range counts all), lateness (first attempt
                  start minus the slot, seconds; None when it never started). Emitted by the leader.
- `schedule.paused`  schedule, reason ('failures': pause_after_failures)
- `worker.heartbeat`  (no fields) after a successful heartbeat
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pgjobs.telemetry")

Handler = Callable[[str, dict[str, Any]], None]

_handlers: tuple[Handler, ...] = ()
_lock = threading.Lock()


def attach(handler: Handler) -> Callable[[], None]:
    """Call `handler(event, fields)` on every event from now on; returns a function that detaches it."""
    global _handlers
    with _lock:
        _handlers = (*_handlers, handler)

    def detach() -> None:
        global _handlers
        with _lock:
            _handlers = tuple(h for h in _handlers if h is not handler)

    return detach


def active() -> bool:
    """Whether anything observes events (lets hot paths skip computing fields nobody reads)."""
    return bool(_handlers)


def emit(event: str, **fields: Any) -> None:
    """Deliver one event to every attached handler (synchronously, on the caller's thread)."""
    handlers = _handlers
    if not handlers:
        return
    for handler in handlers:
        try:
            handler(event, fields)
        except Exception:  # noqa: BLE001 - an observer must never break the engine
            log.exception("telemetry handler %r failed on %s", handler, event)
