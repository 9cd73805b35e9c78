"""Logging setup: plain text or one JSON object per line, with job fields (job_id, task, schedule_id, slot,
attempt) on every job line."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime

from pgjobs.config import Settings

JOB_FIELDS = ("job_id", "task", "attempt", "schedule_id", "slot")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in JOB_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={getattr(record, k)}" for k in JOB_FIELDS
                  if getattr(record, k, None) is not None and k not in ("job_id", "task")]
        return f"{line} [{' '.join(extras)}]" if extras else line


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger("pgjobs")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    root.propagate = False
    # psycopg_pool logs every failed reconnect attempt (several a second per worker during an outage); the
    # worker reports an outage itself: when it starts, once a minute while it lasts, and when it ends.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class Outage:
    """Logs a failure that repeats (the database away, a refused lock) without flooding the log: the first
    failure, then one line every `every` seconds while it lasts, and one line when it ends."""

    def __init__(self, logger: logging.Logger, what: str, every: float = 60.0) -> None:
        self._log = logger
        self._what = what
        self._every = every
        self._lock = threading.Lock()
        self._since: float | None = None
        self._next = 0.0
        self._failures = 0

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            if self._since is None:
                self._since, self._next = now, now + self._every
                self._log.warning("%s: %s; retrying", self._what, reason)
            elif now >= self._next:
                self._next = now + self._every
                self._log.warning("%s for %.0fs (%d failed attempts): %s; still retrying", self._what,
                                  now - self._since, self._failures, reason)

    def ok(self) -> None:
        if self._since is None:  # the usual case, on every successful statement: no lock taken
            return
        with self._lock:
            if self._since is None:
                return
            seconds, self._since, self._failures = time.monotonic() - self._since, None, 0
        self._log.warning("%s: recovered after %.1fs", self._what, seconds)
