"""Configuration: one frozen `Settings` object, read from the environment and overridden by CLI flags.

Every knob an operator can turn is a field here, with its environment variable and default, so the
configuration reference in the README and `docs/` can be generated from this module (`settings_reference()`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from psycopg.conninfo import conninfo_to_dict


class ConfigError(ValueError):
    """A configuration value is unusable; the message says which one and why."""


_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def normalize_database_url(url: str) -> str:
    """Return a libpq connection string for `url`, or raise ConfigError with a one-line reason.

    Accepts `postgresql://`, `postgres://`, SQLAlchemy's `postgresql+psycopg://` and libpq `key=value` strings.
    """
    text = (url or "").strip()
    if not text:
        raise ConfigError("database URL is empty: pass --database-url or set PGJOBS_DATABASE_URL")
    text = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", text)
    if "://" in text and not text.startswith(("postgresql://", "postgres://")):
        scheme = text.split("://", 1)[0]
        raise ConfigError(f"database URL '{_redact(text)}': scheme '{scheme}' is not postgresql://")
    if "://" not in text and "=" not in text:
        raise ConfigError(f"database URL '{_redact(text)}': expected postgresql://user@host:port/dbname")
    try:
        conninfo_to_dict(text)
    except Exception as exc:  # psycopg raises ProgrammingError for malformed strings
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"database URL '{_redact(text)}': {first_line}") from None
    return text


def _redact(url: str) -> str:
    """Hide a password in a URL before it is printed."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def sqlalchemy_url(conninfo: str) -> str:
    """The same database as a SQLAlchemy URL using the psycopg 3 driver."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + conninfo.split("://", 1)[1]
    params = conninfo_to_dict(conninfo)
    from sqlalchemy.engine import URL

    return URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=params.pop("host", None),
        port=int(params.pop("port")) if "port" in params else None,
        database=params.pop("dbname", None),
        query={k: str(v) for k, v in params.items()},
    ).render_as_string(hide_password=False)


def _env_url() -> str | None:
    return os.environ.get("PGJOBS_DATABASE_URL") or os.environ.get("DATABASE_URL")


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw[:80]!r}: expected a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw[:80]!r}: must not be negative")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw[:80]!r}: expected a whole number") from None


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected on or off")


def parse_queues(text: str | None) -> tuple[str, ...]:
    """Parse 'a,b' into ('a', 'b'); every name must be a plain queue name."""
    names = tuple(q.strip() for q in (text or "default").split(",") if q.strip())
    if not names:
        raise ConfigError("queues: give at least one queue name")
    for name in names:
        if not _QUEUE_RE.match(name):
            raise ConfigError(f"queue '{name}': use 1-64 letters, digits, '_', '.', ':' or '-'")
    return names


def _doc(env: str, text: str) -> dict[str, str]:
    return {"env": env, "doc": text}


@dataclass(frozen=True)
class Settings:
    """Everything a worker, the CLI or the console needs to know. Build with `Settings.load(...)`."""

    database_url: str = field(default="", metadata=_doc(
        "PGJOBS_DATABASE_URL", "Postgres URL (falls back to DATABASE_URL)."))
    lock_database_url: str = field(default="", metadata=_doc(
        "PGJOBS_LOCK_DATABASE_URL",
        "Direct (unpooled) URL for the two connections that need a session: the leader's advisory lock and "
        "LISTEN. Set it when the database URL goes through PgBouncer in transaction mode. Defaults to the "
        "database URL."))
    schema: str = field(default="pgjobs", metadata=_doc(
        "PGJOBS_SCHEMA", "Postgres schema holding pgjobs' tables and its Alembic version table."))
    concurrency: int = field(default=4, metadata=_doc(
        "PGJOBS_CONCURRENCY", "Jobs one worker process runs at once (threads)."))
    async_concurrency: int = field(default=100, metadata=_doc(
        "PGJOBS_ASYNC_CONCURRENCY",
        "Async (`async def`) jobs one worker process runs at once on its event loop (started only when an async "
        "task is registered)."))
    async_lag_warn: float = field(default=0.5, metadata=_doc(
        "PGJOBS_ASYNC_LAG_WARN",
        "Seconds the event loop may go without running before a warning names the async task blocking it."))
    queues: tuple[str, ...] = field(default=("default",), metadata=_doc(
        "PGJOBS_QUEUES", "Comma-separated queues a worker claims from."))
    poll_interval: float = field(default=5.0, metadata=_doc(
        "PGJOBS_POLL_INTERVAL", "Seconds between fallback polls when no NOTIFY arrives."))
    heartbeat_interval: float = field(default=5.0, metadata=_doc(
        "PGJOBS_HEARTBEAT_INTERVAL",
        "Seconds between a worker's heartbeats (they deliver cancel requests; their age is shown, never used to "
        "declare a worker dead)."))
    rescue_after: float = field(default=1.0, metadata=_doc(
        "PGJOBS_RESCUE_AFTER",
        "Grace in seconds: a worker whose session is gone (its liveness lock free in pg_locks) and still gone "
        "this much later is dead, and the leader rescues its running jobs. A worker that reconnects sooner keeps "
        "them."))
    catchup_grace: float = field(default=60.0, metadata=_doc(
        "PGJOBS_CATCHUP_GRACE",
        "While a schedule's oldest due slot is younger than this many seconds, every due slot is enqueued (a "
        "leader change loses nothing); a schedule further behind follows its catch-up policy."))
    shutdown_grace: float = field(default=30.0, metadata=_doc(
        "PGJOBS_SHUTDOWN_GRACE", "Seconds running jobs get to finish on SIGTERM before they are requeued."))
    retention_completed: float = field(default=7 * 86400.0, metadata=_doc(
        "PGJOBS_RETENTION_COMPLETED", "Seconds completed and skipped jobs are kept."))
    retention_failed: float = field(default=30 * 86400.0, metadata=_doc(
        "PGJOBS_RETENTION_FAILED", "Seconds failed and cancelled jobs are kept."))
    retention_slots: float = field(default=90 * 86400.0, metadata=_doc(
        "PGJOBS_RETENTION_SLOTS",
        "Seconds the slot ledger (`schedule slots`: what happened to every slot) is kept; independent of job "
        "retention, so pruning jobs does not erase it."))
    overdue_intervals: float = field(default=3.0, metadata=_doc(
        "PGJOBS_OVERDUE_INTERVALS",
        "An enabled schedule is overdue (`schedule overdue`, the console, /metrics) when it has had no successful "
        "slot for this many of its intervals (the time back to its Nth latest slot)."))
    backfill_max: int = field(default=1000, metadata=_doc(
        "PGJOBS_BACKFILL_MAX", "Most slots one `schedule backfill` may create; a larger range is refused."))
    maintenance_interval: float = field(default=0.25, metadata=_doc(
        "PGJOBS_MAINTENANCE_INTERVAL",
        "Seconds between the leader's liveness checks (one read of pg_locks; pruning runs once a minute)."))
    backoff_base: float = field(default=2.0, metadata=_doc(
        "PGJOBS_BACKOFF_BASE", "Retry delay is backoff_base ** attempt seconds plus jitter, capped by backoff_max."))
    backoff_max: float = field(default=3600.0, metadata=_doc(
        "PGJOBS_BACKOFF_MAX", "Longest retry delay in seconds."))
    imports: tuple[str, ...] = field(default=(), metadata=_doc(
        "PGJOBS_IMPORTS", "Comma-separated modules imported at start to register tasks."))
    synchronous_claims: bool = field(default=False, metadata=_doc(
        "PGJOBS_SYNCHRONOUS_CLAIMS",
        "Commit job claims with synchronous_commit = on. Off (the default), a worker does not wait for a "
        "claim's WAL flush (about 0.25 ms per pickup here); a Postgres crash within 3 x wal_writer_delay of "
        "a claim returns that job to the queue, so it can run again, as after a worker crash. Enqueues, cron "
        "slots and outcomes are always synchronous."))
    horizon_warn_age: float = field(default=300.0, metadata=_doc(
        "PGJOBS_HORIZON_WARN_AGE",
        "A transaction (or prepared transaction) of this database older than this many seconds that holds a "
        "snapshot or an xid is reported by `status`, /metrics and the console, and the leader logs a warning: "
        "while it lasts, vacuum cannot remove dead job rows. Inactive replication slots holding xmin are "
        "always reported."))
    sql_tasks: bool = field(default=False, metadata=_doc(
        "PGJOBS_SQL_TASKS", "Allow the built-in `pgjobs.sql` task (arbitrary SQL, e.g. imported from pg_cron)."))
    metrics_port: int = field(default=0, metadata=_doc(
        "PGJOBS_METRICS_PORT", "Serve Prometheus metrics, /healthz and /readyz on this port (0 = off)."))
    log_format: str = field(default="text", metadata=_doc(
        "PGJOBS_LOG_FORMAT", "'text' or 'json' log lines."))
    log_level: str = field(default="INFO", metadata=_doc(
        "PGJOBS_LOG_LEVEL", "Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL."))
    max_args_bytes: int = field(default=1024 * 1024, metadata=_doc(
        "PGJOBS_MAX_ARGS_BYTES",
        "Largest job or schedule args, in bytes of JSON (1 KiB to 64 MiB); larger args are refused before "
        "anything is written."))

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Environment first, then non-None `overrides` (CLI flags). Raises ConfigError on bad values."""
        env: dict[str, Any] = {
            "database_url": _env_url() or "",
            "lock_database_url": os.environ.get("PGJOBS_LOCK_DATABASE_URL", ""),
            "schema": os.environ.get("PGJOBS_SCHEMA", "pgjobs"),
            "concurrency": _int("PGJOBS_CONCURRENCY", 4),
            "async_concurrency": _int("PGJOBS_ASYNC_CONCURRENCY", 100),
            "async_lag_warn": _float("PGJOBS_ASYNC_LAG_WARN", 0.5),
            "queues": parse_queues(os.environ.get("PGJOBS_QUEUES")),
            "poll_interval": _float("PGJOBS_POLL_INTERVAL", 5.0),
            "heartbeat_interval": _float("PGJOBS_HEARTBEAT_INTERVAL", 5.0),
            "rescue_after": _float("PGJOBS_RESCUE_AFTER", 1.0),
            "catchup_grace": _float("PGJOBS_CATCHUP_GRACE", 60.0),
            "shutdown_grace": _float("PGJOBS_SHUTDOWN_GRACE", 30.0),
            "retention_completed": _float("PGJOBS_RETENTION_COMPLETED", 7 * 86400.0),
            "retention_failed": _float("PGJOBS_RETENTION_FAILED", 30 * 86400.0),
            "retention_slots": _float("PGJOBS_RETENTION_SLOTS", 90 * 86400.0),
            "backfill_max": _int("PGJOBS_BACKFILL_MAX", 1000),
            "overdue_intervals": _float("PGJOBS_OVERDUE_INTERVALS", 3.0),
            "maintenance_interval": _float("PGJOBS_MAINTENANCE_INTERVAL", 0.25),
            "backoff_base": _float("PGJOBS_BACKOFF_BASE", 2.0),
            "backoff_max": _float("PGJOBS_BACKOFF_MAX", 3600.0),
            "imports": tuple(m.strip() for m in os.environ.get("PGJOBS_IMPORTS", "").split(",") if m.strip()),
            "synchronous_claims": _bool("PGJOBS_SYNCHRONOUS_CLAIMS", False),
            "horizon_warn_age": _float("PGJOBS_HORIZON_WARN_AGE", 300.0),
            "sql_tasks": _bool("PGJOBS_SQL_TASKS", False),
            "metrics_port": _int("PGJOBS_METRICS_PORT", 0),
            "log_format": os.environ.get("PGJOBS_LOG_FORMAT", "text"),
            "log_level": os.environ.get("PGJOBS_LOG_LEVEL", "INFO"),
            "max_args_bytes": _int("PGJOBS_MAX_ARGS_BYTES", 1024 * 1024),
        }
        env.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**env)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values a worker could not act on: an interval of 0, negative, NaN or infinite (a worker would
        spin or never act), a maximum beyond its bound, an unknown log level. Keyword arguments get the same
        checks as the environment; each error is one line naming the setting and its variable."""
        for name, (lo, hi, lo_open) in _NUMBER_BOUNDS.items():
            object.__setattr__(self, name, _checked_number(name, getattr(self, name), lo, hi, lo_open))
        for name, (lo, hi) in _INT_BOUNDS.items():
            object.__setattr__(self, name, _checked_int(name, getattr(self, name), lo, hi))
        if not isinstance(self.log_level, str) or self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"{_label('log_level')} {_echo(self.log_level)}: use one of {', '.join(LOG_LEVELS)}")
        object.__setattr__(self, "log_level", self.log_level.upper())
        if self.database_url:
            object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if self.lock_database_url:
            object.__setattr__(self, "lock_database_url", normalize_database_url(self.lock_database_url))
        if not _SCHEMA_RE.match(self.schema):
            raise ConfigError(f"schema '{self.schema}': use lower-case letters, digits and '_' (max 63)")
        if isinstance(self.queues, str):
            object.__setattr__(self, "queues", parse_queues(self.queues))
        else:
            parse_queues(",".join(self.queues))
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log format '{self.log_format}': use 'text' or 'json'")

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("no database URL: pass --database-url or set PGJOBS_DATABASE_URL (or DATABASE_URL)")
        return self.database_url

    @property
    def lock_url(self) -> str:
        return self.lock_database_url or self.require_database()

    def with_(self, **changes: Any) -> Settings:
        """A copy with `changes`, checked like `load` (a copy cannot smuggle in a spinning interval)."""
        changed = replace(self, **changes)
        changed.validate()
        return changed


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DAY = 86400.0
# Every number setting: (lowest, highest, lowest excluded). Intervals a loop sleeps for exclude 0: a worker
# with a 0 s poll, heartbeat or maintenance interval spins (thousands of commits a second on an empty queue).
_NUMBER_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "poll_interval": (0.01, 3600.0, False),
    "heartbeat_interval": (0.05, 3600.0, False),
    "maintenance_interval": (0.01, 3600.0, False),
    "rescue_after": (0.0, _DAY, False),
    "catchup_grace": (0.0, 30 * _DAY, False),
    "shutdown_grace": (0.0, _DAY, False),
    "retention_completed": (0.0, 3660 * _DAY, False),
    "retention_failed": (0.0, 3660 * _DAY, False),
    "retention_slots": (0.0, 3660 * _DAY, False),
    "overdue_intervals": (1.0, 1000.0, False),
    "backoff_base": (0.0, 1000.0, False),
    "backoff_max": (0.0, 30 * _DAY, False),
    "horizon_warn_age": (0.0, 7 * _DAY, True),
    "async_lag_warn": (0.01, 3600.0, False),
}
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "concurrency": (1, 1000),
    "async_concurrency": (1, 10000),
    "backfill_max": (1, 1_000_000),
    "metrics_port": (0, 65535),
    "max_args_bytes": (1024, 64 * 1024 * 1024),
}


def _label(name: str) -> str:
    return f"{name} ({Settings.__dataclass_fields__[name].metadata['env']})"


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _checked_number(name: str, value: Any, lo: float, hi: float, lo_open: bool) -> float:
    try:
        if isinstance(value, bool) or (isinstance(value, str) and len(value) > 40):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{_label(name)} {_echo(value)}: expected a number") from None
    low_ok = number > lo if lo_open else number >= lo
    if not (math.isfinite(number) and low_ok and number <= hi):
        low = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
        raise ConfigError(f"{_label(name)} {_echo(value)}: must be finite, {low} and at most {hi:g}")
    return number


def _checked_int(name: str, value: Any, lo: int, hi: int) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        if isinstance(value, str) and len(value) > 40:
            raise ValueError
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{_label(name)} {_echo(value)}: expected a whole number") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{_label(name)} {_echo(value)}: must be between {lo} and {hi}")
    return number


def _bounds_text(name: str) -> str:
    """The accepted range of a setting, as the configuration reference shows it."""
    if name in _NUMBER_BOUNDS:
        lo, hi, lo_open = _NUMBER_BOUNDS[name]
        return f"{'>' if lo_open else '>='} {lo:g}, <= {hi:g}, finite"
    if name in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[name]
        return f"{lo}..{hi}"
    return {"log_level": ", ".join(LOG_LEVELS), "log_format": "text, json",
            "queues": "1-64 of A-Z a-z 0-9 _ . : - each", "schema": "[a-z_][a-z0-9_]*, at most 63"}.get(name, "")


def settings_reference() -> list[dict[str, str]]:
    """Rows (name, env, default, doc) for the configuration reference."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append({"name": f.name, "env": f.metadata["env"], "default": str(default), "doc": f.metadata["doc"],
                     "bounds": _bounds_text(f.name)})
    return rows
