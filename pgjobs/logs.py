"""Logging setup: plain text or one JSON object per line, with job fields (job_id, task, schedule_id, slot,
attempt) on every job line."""

from __future__ import annotations

import json
import logging
import sys
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
