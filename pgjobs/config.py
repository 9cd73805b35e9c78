"""Configuration: one frozen `Settings` object, read from the environment and overridden by CLI flags.

Every knob an operator can turn is a field of `Settings`, defined once with its `Setting`: variable, default,
type, bounds, help and CLI flag. `Settings.load` reads the variables from that table, the CLI builds its
setting flags and their help from it, and docs/configuration.md is generated from it (`settings_reference()`,
`python -m pgjobs.docgen`); tests/test_settings.py compares all three with the table.
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
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    from sqlalchemy.engine import URL

    return URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=params.pop("host", None),
        port=int(params.pop("port")) if "port" in params else None,
        database=params.pop("dbname", None),
        query=params,
    ).render_as_string(hide_password=False)


def parse_queues(text: str | None) -> tuple[str, ...]:
    """Parse 'a,b' into ('a', 'b'); every name must be a plain queue name."""
    names = tuple(q.strip() for q in (text or "default").split(",") if q.strip())
    if not names:
        raise ConfigError("queues: give at least one queue name")
    for name in names:
        if not _QUEUE_RE.match(name):
            raise ConfigError(f"queue '{name}': use 1-64 letters, digits, '_', '.', ':' or '-'")
    return names


@dataclass(frozen=True)
class Setting:
    """One setting's definition: everything `Settings.load`, the CLI help and docs/configuration.md say
    about it comes from here (`SETTINGS`)."""

    env: str
    doc: str
    kind: str = "text"                  # how its variable reads: text, int, float, bool, list (comma-separated)
    lo: float | None = None             # numbers: the lowest accepted value ...
    hi: float | None = None             # ... and the highest
    lo_open: bool = False               # the lowest value itself is refused (an interval a loop sleeps for)
    choices: tuple[str, ...] = ()       # text: the accepted values (case-insensitive)
    fallback_env: str | None = None     # read when `env` is unset
    flag: str | None = None             # the CLI flag that overrides it


def _setting(default: Any, env: str, doc: str, **spec: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(env, doc, **spec)})


_DAY = 86400.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Everything a worker, the CLI or the console needs to know. Build with `Settings.load(...)`.

    Each field is a setting, defined once: its variable, default, bounds and help (`Setting`). Intervals a loop
    sleeps for exclude 0: a worker with a 0 s poll, heartbeat or maintenance interval spins (thousands of
    commits a second on an empty queue).
    """

    database_url: str = _setting("", "PGJOBS_DATABASE_URL", "Postgres URL (falls back to DATABASE_URL).",
                                 fallback_env="DATABASE_URL", flag="--database-url")
    lock_database_url: str = _setting(
        "", "PGJOBS_LOCK_DATABASE_URL",
        "Direct (unpooled) URL for the two connections that need a session: the leader's advisory lock and "
        "LISTEN. Set it when the database URL goes through PgBouncer in transaction mode. Defaults to the "
        "database URL.")
    schema: str = _setting("pgjobs", "PGJOBS_SCHEMA",
                           "Postgres schema holding pgjobs' tables and its Alembic version table.", flag="--schema")
    concurrency: int = _setting(4, "PGJOBS_CONCURRENCY", "Jobs one worker process runs at once (threads).",
                                kind="int", lo=1, hi=1000, flag="--concurrency")
    async_concurrency: int = _setting(
        100, "PGJOBS_ASYNC_CONCURRENCY",
        "Async (`async def`) jobs one worker process runs at once on its event loop (started only when an async "
        "task is registered).", kind="int", lo=1, hi=10000, flag="--async-concurrency")
    async_lag_warn: float = _setting(
        0.5, "PGJOBS_ASYNC_LAG_WARN",
        "Seconds the event loop may go without running before a warning names the async task blocking it.",
        kind="float", lo=0.01, hi=3600.0)
    queues: tuple[str, ...] = _setting(("default",), "PGJOBS_QUEUES", "Comma-separated queues a worker claims from.",
                                       kind="list", flag="--queues")
    poll_interval: float = _setting(5.0, "PGJOBS_POLL_INTERVAL",
                                    "Seconds between fallback polls when no NOTIFY arrives.",
                                    kind="float", lo=0.01, hi=3600.0)
    heartbeat_interval: float = _setting(
        5.0, "PGJOBS_HEARTBEAT_INTERVAL",
        "Seconds between a worker's heartbeats (they deliver cancel requests; their age is shown, never used to "
        "declare a worker dead).", kind="float", lo=0.05, hi=3600.0)
    rescue_after: float = _setting(
        1.0, "PGJOBS_RESCUE_AFTER",
        "Grace in seconds: a worker whose session is gone (its liveness lock free in pg_locks) and still gone "
        "this much later is dead, and the leader rescues its running jobs. A worker that reconnects sooner keeps "
        "them.", kind="float", lo=0.0, hi=_DAY)
    catchup_grace: float = _setting(
        60.0, "PGJOBS_CATCHUP_GRACE",
        "While a schedule's oldest due slot is younger than this many seconds, every due slot is enqueued (a "
        "leader change loses nothing); a schedule further behind follows its catch-up policy.",
        kind="float", lo=0.0, hi=30 * _DAY)
    shutdown_grace: float = _setting(30.0, "PGJOBS_SHUTDOWN_GRACE",
                                     "Seconds running jobs get to finish on SIGTERM before they are requeued.",
                                     kind="float", lo=0.0, hi=_DAY)
    retention_completed: float = _setting(7 * _DAY, "PGJOBS_RETENTION_COMPLETED",
                                          "Seconds completed and skipped jobs are kept.",
                                          kind="float", lo=0.0, hi=3660 * _DAY)
    retention_failed: float = _setting(30 * _DAY, "PGJOBS_RETENTION_FAILED",
                                       "Seconds failed and cancelled jobs are kept.",
                                       kind="float", lo=0.0, hi=3660 * _DAY)
    retention_slots: float = _setting(
        90 * _DAY, "PGJOBS_RETENTION_SLOTS",
        "Seconds the slot ledger (`schedule slots`: what happened to every slot) is kept; independent of job "
        "retention, so pruning jobs does not erase it.", kind="float", lo=0.0, hi=3660 * _DAY)
    overdue_intervals: float = _setting(
        3.0, "PGJOBS_OVERDUE_INTERVALS",
        "An enabled schedule is overdue (`schedule overdue`, the console, /metrics) when it has had no successful "
        "slot for this many of its intervals (the time back to its Nth latest slot).",
        kind="float", lo=1.0, hi=1000.0)
    backfill_max: int = _setting(1000, "PGJOBS_BACKFILL_MAX",
                                 "Most slots one `schedule backfill` may create; a larger range is refused.",
                                 kind="int", lo=1, hi=1_000_000)
    maintenance_interval: float = _setting(
        0.25, "PGJOBS_MAINTENANCE_INTERVAL",
        "Seconds between the leader's liveness checks (one read of pg_locks; pruning runs once a minute).",
        kind="float", lo=0.01, hi=3600.0)
    backoff_base: float = _setting(
        2.0, "PGJOBS_BACKOFF_BASE", "Retry delay is backoff_base ** attempt seconds plus jitter, capped by backoff_max.",
        kind="float", lo=0.0, hi=1000.0)
    backoff_max: float = _setting(3600.0, "PGJOBS_BACKOFF_MAX", "Longest retry delay in seconds.",
                                  kind="float", lo=0.0, hi=30 * _DAY)
    imports: tuple[str, ...] = _setting((), "PGJOBS_IMPORTS",
                                        "Comma-separated modules imported at start to register tasks.",
                                        kind="list", flag="--import")
    synchronous_claims: bool = _setting(
        False, "PGJOBS_SYNCHRONOUS_CLAIMS",
        "Commit job claims with synchronous_commit = on. Off (the default), a worker does not wait for a "
        "claim's WAL flush (a disk flush per pickup); a Postgres crash within 3 x wal_writer_delay of "
        "a claim returns that job to the queue, so it can run again, as after a worker crash. Enqueues, cron "
        "slots and outcomes are always synchronous.", kind="bool")
    horizon_warn_age: float = _setting(
        300.0, "PGJOBS_HORIZON_WARN_AGE",
        "A transaction (or prepared transaction) of this database older than this many seconds that holds a "
        "snapshot or an xid is reported by `status`, /metrics and the console, and the leader logs a warning: "
        "while it lasts, vacuum cannot remove dead job rows. Inactive replication slots holding xmin are "
        "always reported.", kind="float", lo=0.0, hi=7 * _DAY, lo_open=True)
    sql_tasks: bool = _setting(
        False, "PGJOBS_SQL_TASKS", "Allow the built-in `pgjobs.sql` task (arbitrary SQL, e.g. imported from pg_cron).",
        kind="bool")
    metrics_port: int = _setting(0, "PGJOBS_METRICS_PORT",
                                 "Serve Prometheus metrics, /healthz and /readyz on this port (0 = off).",
                                 kind="int", lo=0, hi=65535, flag="--metrics-port")
    log_format: str = _setting("text", "PGJOBS_LOG_FORMAT", "'text' or 'json' log lines.",
                               choices=("text", "json"), flag="--log-format")
    log_level: str = _setting("INFO", "PGJOBS_LOG_LEVEL",
                              "Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL.", choices=LOG_LEVELS)
    max_args_bytes: int = _setting(
        1024 * 1024, "PGJOBS_MAX_ARGS_BYTES",
        "Largest job or schedule args, in bytes of JSON (1 KiB to 64 MiB); larger args are refused before "
        "anything is written.", kind="int", lo=1024, hi=64 * 1024 * 1024)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Environment first, then non-None `overrides` (CLI flags). Raises ConfigError on bad values."""
        values: dict[str, Any] = {}
        for name, spec in SETTINGS.items():
            raw = os.environ.get(spec.env)
            if not raw and spec.fallback_env:
                raw = os.environ.get(spec.fallback_env)
            if raw is not None and raw != "":
                values[name] = _from_env(spec, raw)
        unknown = set(overrides) - set(SETTINGS)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values a worker could not act on: an interval of 0, negative, NaN or infinite (a worker would
        spin or never act), a maximum beyond its bound, an unknown log level. Keyword arguments get the same
        checks as the environment; each error is one line naming the setting and its variable."""
        for name, spec in SETTINGS.items():
            value = getattr(self, name)
            if spec.kind == "float":
                value = _checked_number(name, value, spec)
            elif spec.kind == "int":
                value = _checked_int(name, value, spec)
            elif spec.kind == "bool" and not isinstance(value, bool):
                raise ConfigError(f"{_label(name)} {_echo(value)}: expected on or off")
            elif spec.choices:
                if not isinstance(value, str) or value.lower() not in [c.lower() for c in spec.choices]:
                    raise ConfigError(f"{_label(name)} {_echo(value)}: use one of {', '.join(spec.choices)}")
                value = next(c for c in spec.choices if c.lower() == value.lower())
            object.__setattr__(self, name, value)
        if self.database_url:
            object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if self.lock_database_url:
            object.__setattr__(self, "lock_database_url", normalize_database_url(self.lock_database_url))
        if not _SCHEMA_RE.match(self.schema):
            raise ConfigError(f"schema '{self.schema}': use lower-case letters, digits and '_' (max 63)")
        if isinstance(self.queues, str):
            object.__setattr__(self, "queues", parse_queues(self.queues))
        elif not self.queues:
            raise ConfigError(f"{_label('queues')}: give at least one queue name")
        else:
            parse_queues(",".join(self.queues))
        if isinstance(self.imports, str):
            object.__setattr__(self, "imports", _split(self.imports))

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


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Settings)}


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _from_env(spec: Setting, raw: str) -> Any:
    """A variable's text as its setting's type; its bounds are checked afterwards, by `validate`."""
    if spec.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{spec.env}={raw[:80]!r}: expected a number") from None
    if spec.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{spec.env}={raw[:80]!r}: expected a whole number") from None
    if spec.kind == "bool":
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{spec.env}={raw[:80]!r}: expected on or off")
    if spec.kind == "list":
        return _split(raw)
    return raw


def _label(name: str) -> str:
    return f"{name} ({SETTINGS[name].env})"


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _checked_number(name: str, value: Any, spec: Setting) -> float:
    try:
        if isinstance(value, bool) or (isinstance(value, str) and len(value) > 40):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{_label(name)} {_echo(value)}: expected a number") from None
    lo = spec.lo if spec.lo is not None else -math.inf
    hi = spec.hi if spec.hi is not None else math.inf
    low_ok = number > lo if spec.lo_open else number >= lo
    if not (math.isfinite(number) and low_ok and number <= hi):
        low = f"more than {lo:g}" if spec.lo_open else f"at least {lo:g}"
        raise ConfigError(f"{_label(name)} {_echo(value)}: must be finite, {low} and at most {hi:g}")
    return number


def _checked_int(name: str, value: Any, spec: Setting) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        if isinstance(value, str) and len(value) > 40:
            raise ValueError
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{_label(name)} {_echo(value)}: expected a whole number") from None
    if (spec.lo is not None and number < spec.lo) or (spec.hi is not None and number > spec.hi):
        raise ConfigError(f"{_label(name)} {_echo(value)}: must be between {spec.lo:.0f} and {spec.hi:.0f}")
    return number


_TEXT_BOUNDS = {"queues": "1-64 of A-Z a-z 0-9 _ . : - each", "schema": "[a-z_][a-z0-9_]*, at most 63"}


def bounds_text(name: str) -> str:
    """The accepted values of a setting, as the configuration reference and the CLI help show them."""
    spec = SETTINGS[name]
    if spec.kind == "float":
        return f"{'>' if spec.lo_open else '>='} {spec.lo:g}, <= {spec.hi:g}, finite"
    if spec.kind == "int":
        return f"{spec.lo:.0f}..{spec.hi:.0f}"
    if spec.kind == "bool":
        return "on, off"
    if spec.choices:
        return ", ".join(spec.choices)
    return _TEXT_BOUNDS.get(name, "")


def default_text(name: str) -> str:
    default = Settings.__dataclass_fields__[name].default
    if isinstance(default, tuple):
        return ",".join(default)
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def flag_help(name: str) -> str:
    """A CLI flag's help, from its setting: the meaning, then the variable and the default it overrides."""
    spec = SETTINGS[name]
    default = default_text(name)
    return f"{spec.doc} (env {spec.env}; default {default or 'none'})".replace("%", "%%")


def settings_reference() -> list[dict[str, str]]:
    """Rows (name, env, default, doc, bounds) for the configuration reference."""
    return [{"name": name, "env": spec.env, "default": default_text(name), "doc": spec.doc,
             "bounds": bounds_text(name)} for name, spec in SETTINGS.items()]
