"""The admin API: the one place where schedules and jobs are created, changed and read.

The CLI and the Streamlit console are thin layers over this module and hold no SQL, so every rule lives
here once: a cron must parse, a timezone must exist, a task must be registered and accept its arguments,
args must be a JSON object, a viewer may not change anything. Every change is written to the audit table
in the same transaction as the change, with the actor, and a schedule change is NOTIFYed so the leader
picks it up at once.
"""

from __future__ import annotations

import getpass
import json
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, cast
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pgjobs import cron, otel
from pgjobs import validation as v
from pgjobs.config import Settings, normalize_database_url
from pgjobs.queries import Queries, queries
from pgjobs.rows import one
from pgjobs.states import CATCHUP_POLICIES, JOB_STATES, OVERLAP_ALIASES, OVERLAP_POLICIES
from pgjobs.tasks import Task, TaskError, check_args, ensure_builtins, get_task

AdminError = v.AdminError  # defined with the field rules in pgjobs.validation; `.field` names the input


class NotFound(AdminError):
    pass


class EditConflict(AdminError):
    """The schedule changed since the caller read it: `current` is the row now, `actor` and `at` name the
    newest change."""

    def __init__(self, name: str, actor: str, at: datetime | None, current: dict[str, Any]) -> None:
        when = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "an unknown time"
        super().__init__(f"schedule '{name}' was changed by {actor} at {when} since you opened it; "
                         "reload it and make your change again")
        self.actor, self.at, self.current = actor, at, current


class PermissionDenied(AdminError):
    pass


# What `Admin.backfill` reports: the range and policy, how many slots it covers, how many already had a job,
# and the slots that got (or, with dry_run, would get) a job and those recorded skipped by the overlap policy.
BackfillResult = TypedDict("BackfillResult", {
    "schedule": str, "from": datetime, "to": datetime, "overlap": str, "dry_run": bool, "slots": int,
    "existing": int, "created": list[datetime], "skipped": list[datetime]})


ROLES = ("admin", "viewer")
# Console sign-in limits, kept in the database (table signin_attempts) so a new tab, browser or console
# process starts no fresh count: at most SIGNIN_USER_FAILURES failed attempts per user name (since its last
# success) and SIGNIN_CLIENT_FAILURES per client address, within SIGNIN_WINDOW.
SIGNIN_USER_FAILURES, SIGNIN_CLIENT_FAILURES, SIGNIN_WINDOW = 5, 20, timedelta(minutes=5)
# The xmin horizon report: its first rows, oldest first, and when an active replication slot counts as
# holding the horizon back (an inactive one holding xmin always does).
HORIZON_LIMIT = 5
SLOT_XID_AGE = 1_000_000
SCHEDULE_FIELDS = ("task", "args", "cron", "timezone", "enabled", "queue", "priority", "max_attempts",
                   "timeout_seconds", "catchup", "catchup_max", "overlap", "description", "catchup_window_seconds",
                   "jitter_seconds", "pause_after_failures")
DEFAULTS: dict[str, Any] = {
    "args": {}, "timezone": "UTC", "enabled": True, "queue": "default", "priority": 0, "max_attempts": 3,
    "timeout_seconds": None, "catchup": "latest", "catchup_max": 100, "overlap": "skip", "description": "",
    "catchup_window_seconds": None, "jitter_seconds": 0.0, "pause_after_failures": None,
}
MAX_JITTER = 86400.0                 # a slot's job starts at most a day after its slot
MAX_CATCHUP_WINDOW = 366 * 86400.0


# ---------------------------------------------------------------------- validation (pure)
def parse_args(value: Any, max_bytes: int = v.ARGS_MAX_BYTES) -> dict[str, Any]:
    """JSON text or a dict -> dict. Anything else is a one-line AdminError."""
    return args_json(value, max_bytes)[0]


def args_json(value: Any, max_bytes: int = v.ARGS_MAX_BYTES) -> tuple[dict[str, Any], str]:
    """`parse_args`, and the JSON text of the result: checking that args serialize produces the text that
    is sent, so a bulk enqueue encodes each job's args once. The rules are `validation.args`."""
    return v.args(value, max_bytes)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(label: str, value: Any) -> float:
    """Seconds from a number or text like '90s', '15m', '2h', '1d', '250ms'; a one-line AdminError else."""
    if isinstance(value, bool):
        raise v.fail(label, f"expected a duration like 30s, 15m, 2h or 1d, got {v.echo(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value)) if len(str(value)) <= 40 else None
        if not m:
            raise v.fail(label, f"expected a duration like 30s, 15m, 2h or 1d, got {v.echo(value)}")
        seconds = float(m[1]) * _UNIT_SECONDS[m[2] or "s"]
    if not math.isfinite(seconds) or seconds < 0 or seconds > 100 * 366 * 86400:
        raise v.fail(label, f"{v.echo(value)} is not a duration (0 to 100 years)")
    return seconds


def parse_time(label: str, value: Any, now: datetime | None = None) -> datetime:
    """An aware datetime from ISO 8601 text (no zone = UTC) or a duration ago ('2h' = two hours ago)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise v.fail(label, f"expected a datetime or ISO 8601 text, got {type(value).__name__} {v.echo(value)}")
    text = value.strip()
    if len(text) <= 40 and _DURATION_RE.match(text):
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(label, text))
        except OverflowError:
            raise v.fail(label, f"{v.echo(value)} is too long ago") from None
    try:
        when = datetime.fromisoformat(text) if len(text) <= 64 else None
    except ValueError:
        when = None
    if when is None:
        raise v.fail(label, f"expected an ISO 8601 time like 2026-12-01T09:00:00+00:00, or a duration ago like 2h, "
                            f"got {v.echo(text)}")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def validate_name(name: Any) -> str:
    return v.schedule_name(name)


def _int_in(label: str, value: Any, lo: int, hi: int) -> int:
    return v.integer(label, value, lo, hi)


def validate_schedule_fields(fields: dict[str, Any], *, max_args_bytes: int = v.ARGS_MAX_BYTES) -> dict[str, Any]:
    """Check and normalize schedule fields (a complete set); raises AdminError naming the bad field (`.field`)."""
    out = dict(fields)
    v.cron_text(out["cron"])
    try:
        spec = cron.parse_cron(out["cron"])
    except cron.CronError as exc:
        raise AdminError(str(exc), field="cron") from None
    out["cron"] = spec.expr
    v.timezone(out["timezone"])
    try:
        cron.load_timezone(out["timezone"])
    except cron.TimezoneError as exc:
        raise AdminError(str(exc), field="timezone") from None
    ensure_builtins()
    v.task_name(out["task"])
    try:
        task = get_task(out["task"])
    except TaskError as exc:
        raise AdminError(str(exc), field="task") from None
    out["args"] = parse_args(out["args"], max_args_bytes)
    try:
        check_args(task, out["args"])
    except TaskError as exc:
        raise AdminError(str(exc), field="args") from None
    if isinstance(out["queue"], str) and "," in out["queue"]:
        _bad_queue(out["queue"])
    out["queue"] = v.queue(out["queue"])
    out["priority"] = v.priority(out["priority"])
    out["max_attempts"] = v.max_attempts(out["max_attempts"])
    out["catchup_max"] = _int_in("catchup_max", out["catchup_max"], 1, 100_000)
    out["timeout_seconds"] = v.timeout(out["timeout_seconds"], "timeout_seconds")
    if out["catchup"] not in CATCHUP_POLICIES:
        raise AdminError(f"catchup {v.echo(out['catchup'])}: use one of {', '.join(CATCHUP_POLICIES)}",
                         field="catchup")
    overlap = out["overlap"]
    out["overlap"] = OVERLAP_ALIASES.get(overlap, overlap) if isinstance(overlap, str) else overlap
    if out["overlap"] not in OVERLAP_POLICIES:
        raise AdminError(f"overlap {v.echo(out['overlap'])}: use one of {', '.join(OVERLAP_POLICIES)}",
                         field="overlap")
    if not isinstance(out["enabled"], bool):
        raise v.fail("enabled", f"expected true or false, got {v.echo(out['enabled'])}")
    description = out.get("description") or ""
    if not isinstance(description, str):
        raise v.fail("description", f"expected text, got {type(description).__name__}")
    out["description"] = description[:2000]
    window = out.get("catchup_window_seconds")
    if window is not None:
        window = parse_duration("catchup_window_seconds", window)
        if not 1 <= window <= MAX_CATCHUP_WINDOW:
            raise v.fail("catchup_window_seconds",
                         f"{window:g}s is outside 1..{MAX_CATCHUP_WINDOW:.0f} seconds")
    out["catchup_window_seconds"] = window
    jitter = parse_duration("jitter_seconds", out.get("jitter_seconds") or 0)
    if jitter > MAX_JITTER:
        raise v.fail("jitter_seconds", f"{jitter:g}s is more than {MAX_JITTER:.0f} seconds")
    out["jitter_seconds"] = jitter
    if out.get("pause_after_failures") is not None:
        out["pause_after_failures"] = _int_in("pause_after_failures", out["pause_after_failures"], 1, 1000)
    return out


def _bad_queue(value: Any) -> str:
    raise v.fail("queue", f"{v.echo(value)}: a schedule targets exactly one queue")


def describe_cron(expr: str, timezone: str = "UTC", count: int = 5, now: datetime | None = None) -> dict[str, Any]:
    """Validate a cron + timezone; return its description and next fire times (in that timezone)."""
    v.cron_text(expr)
    v.timezone(timezone)
    count = v.integer("count", count, 0, v.COUNT_MAX)  # 0: the description only (the console)
    try:
        spec = cron.parse_cron(expr)
    except cron.CronError as exc:
        raise AdminError(str(exc), field="cron") from None
    try:
        times = cron.preview(expr, timezone, count=count, now=now)
    except cron.TimezoneError as exc:
        raise AdminError(str(exc), field="timezone") from None
    return {"cron": spec.expr, "timezone": timezone, "description": cron.describe(spec), "next": times}


def default_actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "os:unknown"


def _jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    plain: dict[str, Any] = json.loads(json.dumps(row, default=str))
    return plain


def _raw_connection(conn: Any) -> psycopg.Connection[Any]:
    """A psycopg connection from a psycopg connection, a SQLAlchemy Connection or a SQLAlchemy Session."""
    if isinstance(conn, psycopg.Connection):
        return conn
    sa_conn = conn.connection() if callable(getattr(conn, "connection", None)) else conn
    driver = getattr(getattr(sa_conn, "connection", None), "driver_connection", None)
    if isinstance(driver, psycopg.Connection):
        return driver
    raise AdminError("enqueue(conn=...) takes a psycopg connection or a SQLAlchemy Session/Connection (psycopg 3)")


# ---------------------------------------------------------------------- the API
@contextmanager
def _pooled(pool: ConnectionPool) -> Iterator[psycopg.Connection[DictRow]]:
    """A pool's connection returning dicts for the block."""
    with pool.connection() as pooled:
        # psycopg types a connection's rows when it is made; this one returns dicts for the block.
        conn = cast("psycopg.Connection[DictRow]", pooled)
        conn.row_factory = dict_row
        try:
            yield conn
        finally:
            pooled.row_factory = psycopg.rows.tuple_row


@contextmanager
def _connect(conninfo: str, application_name: str) -> Iterator[psycopg.Connection[DictRow]]:
    try:
        conn = psycopg.connect(conninfo, row_factory=dict_row, connect_timeout=10, application_name=application_name)
    except psycopg.OperationalError as exc:
        raise AdminError(f"cannot connect to the database: {v.first_line(exc)}") from None
    with conn:
        yield conn


class Admin:
    """Admin operations for one database. `role='viewer'` may read but not change anything."""

    def __init__(self, settings: Settings, *, actor: str | None = None, role: str = "admin",
                 pool: ConnectionPool | None = None, read_pool: ConnectionPool | None = None,
                 read_url: str | None = None) -> None:
        """`read_pool` / `read_url`: a replica (a streaming standby) for the reads marked `_read_conn` (lists,
        history, stats, the ledger, the audit): the console's PGJOBS_CONSOLE_READ_URL. Writes, and the reads
        that must be the primary's (a schedule read for an edit, leadership and liveness in `status`), go to
        the primary."""
        if role not in ROLES:
            raise AdminError(f"role '{role}': use admin or viewer")
        self.settings = settings
        self.q: Queries = queries(settings.schema)
        self.actor = actor or default_actor()
        self.role = role
        self._pool = pool
        self._read_pool = read_pool
        self._read_url = normalize_database_url(read_url) if read_url else None
        self._shared: psycopg.Connection[DictRow] | None = None  # set on the Admin handed out by transaction()

    def as_user(self, actor: str, role: str) -> Admin:
        return Admin(self.settings, actor=actor, role=role, pool=self._pool, read_pool=self._read_pool,
                     read_url=self._read_url)

    @contextmanager
    def transaction(self) -> Iterator[Admin]:
        """An Admin whose calls share one transaction: they commit together at the end of the block, or
        none does if it raises (used by `schedule apply`). Validation is the same as for single calls."""
        self._require_admin()
        with self._conn() as conn:
            tx = self.as_user(self.actor, self.role)
            tx._shared = conn
            yield tx

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection to the primary: the shared transaction's, the pool's, or a new one."""
        if self._shared is not None:
            yield self._shared
            return
        if self._pool is not None:
            with _pooled(self._pool) as conn:
                yield conn
            return
        with _connect(self.settings.require_database(), "pgjobs admin") as conn:
            yield conn

    @contextmanager
    def _read_conn(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection for a read that a replica may serve (`read_pool` / `read_url`), else the primary's.
        Inside `transaction()` every read is the transaction's."""
        if self._shared is None and self._read_pool is not None:
            with _pooled(self._read_pool) as conn:
                yield conn
            return
        if self._shared is None and self._read_url is not None:
            with _connect(self._read_url, "pgjobs admin (replica reads)") as conn:
                yield conn
            return
        with self._conn() as conn:
            yield conn

    def _require_admin(self) -> None:
        if self.role != "admin":
            raise PermissionDenied(f"user '{self.actor}' has the viewer role and cannot change anything")

    def _audit(self, conn: psycopg.Connection[DictRow], action: str, entity: str, name: str,
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        conn.execute(self.q.insert_audit, {
            "actor": self.actor, "action": action, "entity": entity, "entity_name": name,
            "before": Jsonb(_jsonable(before)) if before is not None else None,
            "after": Jsonb(_jsonable(after)) if after is not None else None,
        })

    def _notify(self, conn: psycopg.Connection[DictRow], name: str) -> None:
        conn.execute(self.q.notify_schedules_changed, {"channel": self.q.schedules_channel, "payload": name[:200]})

    def _db_now(self, conn: psycopg.Connection[DictRow]) -> datetime:
        now: datetime = one(conn.execute(self.q.db_now))["now"]
        return now

    # ------------------------------------------------------------------ schedules
    def add_schedule(self, name: str, *, cron: str, task: str, **fields: Any) -> dict[str, Any]:
        """Create a schedule; its first slot is the first one after now."""
        self._require_admin()
        validate_name(name)
        unknown = set(fields) - set(SCHEDULE_FIELDS)
        if unknown:
            raise AdminError(f"unknown schedule field(s): {', '.join(sorted(unknown))}")
        values = validate_schedule_fields({**DEFAULTS, **{k: x for k, x in fields.items() if x is not None},
                                           "cron": cron, "task": task}, max_args_bytes=self.settings.max_args_bytes)
        with self._conn() as conn:
            now = self._db_now(conn)
            values["next_run_at"] = self._first_run(values, now)
            try:
                row = one(conn.execute(self.q.insert_schedule,
                                       {**values, "name": name, "args": Jsonb(values["args"])}))
            except psycopg.errors.UniqueViolation:
                raise AdminError(f"schedule '{name}' already exists (use edit)") from None
            self._audit(conn, "create", "schedule", name, None, row)
            self._notify(conn, name)
        return row

    @staticmethod
    def _first_run(values: dict[str, Any], now: datetime) -> datetime:
        return _next_slot(values["cron"], values["timezone"], now)

    def edit_schedule(self, name: str, *, expected_version: int | None = None, **changes: Any) -> dict[str, Any]:
        """Change fields of a schedule; a new cron or timezone recomputes the next run from now. Only the
        fields given change. With `expected_version` (the `version` the caller read), EditConflict is raised
        instead if anyone changed the schedule since."""
        self._require_admin()
        unknown = set(changes) - set(SCHEDULE_FIELDS)
        if unknown:
            raise AdminError(f"unknown schedule field(s): {', '.join(sorted(unknown))}")
        changes = {k: x for k, x in changes.items()
                   if x is not None or k in ("timeout_seconds", "catchup_window_seconds", "pause_after_failures")}
        with self._conn() as conn:
            before = conn.execute(self.q.get_schedule_for_update, {"name": name}).fetchone()
            if before is None:
                raise NotFound(f"schedule '{name}' does not exist")
            if expected_version is not None and before["version"] != expected_version:
                last = conn.execute(self.q.last_schedule_change, {"name": name}).fetchone() or {}
                raise EditConflict(name, last.get("actor", "someone"), last.get("at"), before)
            merged = validate_schedule_fields({**{k: before[k] for k in SCHEDULE_FIELDS}, **changes},
                                              max_args_bytes=self.settings.max_args_bytes)
            next_run_at = before["next_run_at"]
            if (merged["cron"] != before["cron"] or merged["timezone"] != before["timezone"]
                    or next_run_at is None):
                now = self._db_now(conn)
                self._record_unrun_slots(conn, before, now)
                next_run_at = self._first_run(merged, now)
            row = one(conn.execute(self.q.update_schedule, {
                **merged, "id": before["id"], "args": Jsonb(merged["args"]), "next_run_at": next_run_at}))
            action = "edit"
            if set(changes) == {"enabled"}:
                action = "resume" if merged["enabled"] else "pause"
            self._audit(conn, action, "schedule", name, before, row)
            self._notify(conn, name)
        return row

    def _record_unrun_slots(self, conn: psycopg.Connection[DictRow], before: dict[str, Any], now: datetime) -> None:
        """A new cron or timezone restarts the schedule from now: its old cron's slots that were due and not
        run (a pause, or no leader) would then leave no trace. They go into the slot ledger as one range,
        `paused` or `missed`, with the reason."""
        from pgjobs.scheduler import slot_range

        if before["next_run_at"] is None or before["next_run_at"] > now:
            return
        try:
            spec, tz = cron.parse_cron(before["cron"]), cron.load_timezone(before["timezone"])
        except ValueError:  # a stored cron this version cannot read: nothing to enumerate
            return
        found = slot_range(spec, tz, before["next_run_at"], now)
        if found is None:
            return
        paused = not before["enabled"]
        why = "the schedule was paused" if paused else "no worker was leading (downtime)"
        reason = (f"{why}; its cron or timezone changed from '{before['cron']}' ({before['timezone']}) "
                  "before these slots ran, so they never will")
        conn.execute(self.q.insert_slot_ranges, {
            "schedule_id": [before["id"]], "first": [found[0]], "last": [found[1]], "count": [found[2]],
            "outcome": ["paused" if paused else "missed"], "reason": [reason[:500]]})

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return self.edit_schedule(name, enabled=False)

    def pause_for_failures(self, name: str, failures: int) -> dict[str, Any]:
        """Pause a schedule whose last `failures` slots failed (the leader's pause_after_failures); audited
        as action `pause` with the reason in `after`."""
        self._require_admin()
        with self._conn() as conn, conn.transaction():  # one transaction, on a pool's autocommit one too
            before = conn.execute(self.q.get_schedule_for_update, {"name": name}).fetchone()
            if before is None:
                raise NotFound(f"schedule '{name}' does not exist")
            if not before["enabled"]:
                return before
            row = one(conn.execute(self.q.update_schedule, {
                **{k: before[k] for k in SCHEDULE_FIELDS}, "enabled": False, "id": before["id"],
                "args": Jsonb(before["args"]), "next_run_at": before["next_run_at"]}))
            self._audit(conn, "pause", "schedule", name, before,
                        {**row, "reason": f"its last {failures} slots failed (pause_after_failures)"})
            self._notify(conn, name)
        return row

    def resume_schedule(self, name: str) -> dict[str, Any]:
        """Enable again; slots missed while paused follow the schedule's catch-up policy."""
        return self.edit_schedule(name, enabled=True)

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule; its jobs stay in history (schedule_id becomes NULL)."""
        self._require_admin()
        with self._conn() as conn:
            before = conn.execute(self.q.get_schedule_for_update, {"name": name}).fetchone()
            if before is None:
                raise NotFound(f"schedule '{name}' does not exist")
            conn.execute(self.q.delete_schedule, {"id": before["id"]})
            self._audit(conn, "remove", "schedule", name, before, None)
            self._notify(conn, name)

    def run_now(self, name: str) -> int:
        """Enqueue one run of a schedule now (outside its slots); returns the job id."""
        self._require_admin()
        with self._conn() as conn:
            sc = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
            if sc is None:
                raise NotFound(f"schedule '{name}' does not exist")
            # No unique key: the insert cannot skip its row.
            job_id: int = one(conn.execute(self.q.enqueue_job, {
                "queue": sc["queue"], "task": sc["task"], "args": Jsonb(sc["args"]), "priority": sc["priority"],
                "max_attempts": sc["max_attempts"], "timeout": sc["timeout_seconds"], "scheduled_at": None,
                "unique_key": None, "schedule_id": sc["id"], "trace": None}))["id"]
            self._audit(conn, "run-now", "schedule", name, None, {"job_id": job_id})
        return job_id

    def schedule_slots(self, name: str, *, since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The slot ledger of a schedule, oldest first: every slot since `since` (else the latest `limit`)
        with its outcome (completed, failed, cancelled, running, waiting, skipped, missed, paused), whether a
        backfill created it, its first attempt's start and lateness, and the reason for every gap. A run of
        missed or paused slots is one row: `slot` (the first), `last_slot` and `slot_count` (None = more than
        the scheduler counts)."""
        limit = _int_in("limit", limit, 1, 100_000)
        with self._read_conn() as conn:
            schedule_id = self._schedule_id(conn, name)
            if since is not None:
                return conn.execute(self.q.list_slots_since, {
                    "schedule_id": schedule_id, "since": since, "limit": limit}).fetchall()
            return conn.execute(self.q.list_slots_latest, {"schedule_id": schedule_id, "limit": limit}).fetchall()

    def backfill(self, name: str, *, start: datetime, end: datetime, dry_run: bool = False,
                 overlap: str | None = None) -> BackfillResult:
        """Create jobs for the slots in [start, end) that have none (no job, no ledger row): idempotent, so a
        second call creates nothing. Bounded by `Settings.backfill_max` slots (a larger range is refused).
        The schedule's overlap policy applies against its unfinished runs (`overlap` overrides it for this
        backfill, and for how its runs go: `allow` at once, any other one at a time; jobs.overlap_allow). Audited (action `backfill`); `dry_run` reports what it would do and writes nothing."""
        from pgjobs.scheduler import overlap_states

        self._require_admin()
        if start.tzinfo is None or end.tzinfo is None:
            raise AdminError("backfill: --from and --to must be timezone-aware")
        if end <= start:
            raise AdminError(f"backfill: --to ({end.isoformat()}) must be after --from ({start.isoformat()})")
        if overlap is not None:
            overlap = OVERLAP_ALIASES.get(overlap, overlap)
            if overlap not in OVERLAP_POLICIES:
                raise AdminError(f"overlap '{overlap}': use one of {', '.join(OVERLAP_POLICIES)}")
        cap = self.settings.backfill_max
        with self._conn() as conn, conn.transaction():
            now = self._db_now(conn)
            if end > now:
                raise AdminError(f"backfill: --to ({end.isoformat()}) is in the future; backfill fills past slots "
                                 "(the scheduler runs the coming ones)")
            sc = conn.execute(self.q.get_schedule_for_update, {"name": name}).fetchone()
            if sc is None:
                raise NotFound(f"schedule '{name}' does not exist")
            spec, tz = cron.parse_cron(sc["cron"]), cron.load_timezone(sc["timezone"])
            slots = cron.slots_between(spec, tz, start - timedelta(microseconds=1), end - timedelta(microseconds=1),
                                       limit=cap + 1)
            if len(slots) > cap:
                raise AdminError(f"backfill of '{name}': more than {cap} slots in [{start.isoformat()}, "
                                 f"{end.isoformat()}); narrow the range or raise PGJOBS_BACKFILL_MAX")
            ids = {"schedule_id": sc["id"], "start": start, "end": end}
            taken = {r["slot"] for r in conn.execute(self.q.slots_taken_between, ids)}
            todo = [s for s in slots if s not in taken]
            unfinished = conn.execute(self.q.unfinished_by_schedule, {"ids": [sc["id"]]}).fetchone()
            running, waiting = (unfinished["running"], unfinished["waiting"]) if unfinished else (0, 0)
            policy = overlap or sc["overlap"]
            planned = overlap_states(todo, policy, running, waiting)
            result: BackfillResult = {"schedule": name, "from": start, "to": end, "overlap": policy, "dry_run": dry_run,
                      "slots": len(slots), "existing": len(slots) - len(todo),
                      "created": [p.slot for p in planned if p.state == "available"],
                      "skipped": [p.slot for p in planned if p.state == "skipped"]}
            if dry_run:
                return result
            if planned:
                self._split_ranges(conn, ids, spec, tz)
                conn.execute(self.q.insert_due_slots, {
                    "schedule_id": [sc["id"]] * len(planned), "slot": [p.slot for p in planned],
                    "due": [p.slot for p in planned], "state": [p.state for p in planned],
                    "note": [p.note and f"{p.note} (backfill)" for p in planned], "backfilled": True,
                    # Told an overlap: its runs go beside others (allow) or one at a time, whatever the
                    # schedule's own policy; else they follow the schedule's.
                    "overlap_allow": None if overlap is None else overlap == "allow"})
            self._audit(conn, "backfill", "schedule", name, None, {
                "from": start, "to": end, "overlap": policy, "created": len(result["created"]),
                "skipped": len(result["skipped"]), "existing": result["existing"]})
        return result

    def _split_ranges(self, conn: psycopg.Connection[DictRow], ids: dict[str, Any], spec: cron.CronSpec,
                      tz: ZoneInfo) -> None:
        """Ledger ranges (missed, paused) overlapping [start, end) keep the parts outside it: the slots inside
        it get rows of their own from the backfill."""
        from pgjobs.scheduler import MISSED_COUNT_CAP, last_slots

        cols: dict[str, list[Any]] = {k: [] for k in ("schedule_id", "first", "last", "count", "outcome", "reason")}
        for r in conn.execute(self.q.slot_ranges_overlapping, ids).fetchall():
            pieces = []
            before = (last_slots(spec, tz, r["slot"], min(r["last_slot"], ids["start"] - timedelta(microseconds=1)), 1)
                      if r["slot"] < ids["start"] else [])
            if before:
                pieces.append((r["slot"], before[0]))
            if r["last_slot"] >= ids["end"]:
                pieces.append((cron.next_slot(spec, tz, ids["end"] - timedelta(microseconds=1)), r["last_slot"]))
            for first, last in pieces:
                for key, value in (("schedule_id", ids["schedule_id"]), ("first", first), ("last", last),
                                   ("count", cron.count_slots(spec, tz, first, last, MISSED_COUNT_CAP)),
                                   ("outcome", r["outcome"]), ("reason", r["reason"])):
                    cols[key].append(value)
        if cols["first"]:
            conn.execute(self.q.insert_slot_ranges, cols)

    def overdue_schedules(self, *, intervals: float | None = None, limit: int = 10_000) -> dict[str, Any]:
        """The dead man's switch: every enabled schedule (up to `limit`) with its last success, and `overdue`,
        those with no successful slot within `intervals` of their intervals (default
        `Settings.overdue_intervals`): no completed slot at or after their Nth latest slot. A schedule
        created or edited after that slot is not overdue yet."""
        from pgjobs.scheduler import last_slots

        n = float(intervals if intervals is not None else self.settings.overdue_intervals)
        if not (math.isfinite(n) and 1 <= n <= 1000):
            raise AdminError(f"intervals: {n:g} is outside 1..1000")
        with self._read_conn() as conn:
            now = self._db_now(conn)
            rows = conn.execute(self.q.schedule_successes, {"limit": _int_in("limit", limit, 1, 100_000)}).fetchall()
        out = []
        for r in rows:
            try:
                spec, tz = cron.parse_cron(r["cron"]), cron.load_timezone(r["timezone"])
                recent = last_slots(spec, tz, now - timedelta(days=3660), now, math.ceil(n) + 1)
            except ValueError:  # a cron or zone written by SQL that does not parse: the scheduler logs it
                continue
            # The deadline: n intervals back from the latest slot (fractional n interpolates the last gap).
            whole = math.floor(n)
            if len(recent) <= whole:
                deadline = None
            else:
                deadline = recent[-1 - whole]
                if n > whole and len(recent) > whole + 1:
                    deadline -= (recent[-1 - whole] - recent[-2 - whole]) * (n - whole)
            since = max(r["created_at"], r["updated_at"])
            overdue = (deadline is not None and deadline >= since and
                       (r["last_success_slot"] is None or r["last_success_slot"] < deadline))
            out.append({"name": r["name"], "cron": r["cron"], "timezone": r["timezone"],
                        "last_success_slot": r["last_success_slot"], "last_success_at": r["last_success_at"],
                        "deadline": deadline, "overdue": overdue,
                        "overdue_seconds": (now - deadline).total_seconds() if overdue and deadline else 0.0})
        return {"intervals": n, "checked_at": now, "schedules": out,
                "overdue": [s for s in out if s["overdue"]]}

    def get_schedule(self, name: str) -> dict[str, Any]:
        with self._conn() as conn:
            row = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
        if row is None:
            raise NotFound(f"schedule '{name}' does not exist")
        return row

    def list_schedules(self, search: str | None = None, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
        pattern = f"%{search}%" if search else None
        with self._read_conn() as conn:
            return conn.execute(self.q.list_schedules, {
                "search": pattern, "limit": _int_in("limit", limit, 1, 10_000),
                "offset": _int_in("offset", offset, 0, 10**9)}).fetchall()

    def count_schedules(self, search: str | None = None) -> int:
        with self._read_conn() as conn:
            count: int = one(conn.execute(self.q.count_schedules,
                                          {"search": f"%{search}%" if search else None}))["count"]
            return count

    # ------------------------------------------------------------------ jobs
    def enqueue(self, task: str, args: Any = None, *, queue: str = "default", priority: int = 0,
                max_attempts: int | None = None, scheduled_at: datetime | None = None,
                unique_key: str | None = None, timeout: float | None = None, conn: Any = None) -> int:
        """Insert one job; see `pgjobs.enqueue`. With `conn`, the job commits with the caller's transaction."""
        self._require_admin()
        params = self._job_params(task, args, queue, priority, max_attempts, scheduled_at, unique_key, timeout)
        params.pop("args_text")
        if otel.tracing():
            with otel.enqueue_span(task, params["queue"]) as span:
                params["trace"] = otel.trace_context()  # the send span's: the run links to it
                job_id = self._enqueue(task, params, conn)
                span.set_attribute("messaging.message.id", str(job_id))
                return job_id
        return self._enqueue(task, params, conn)

    def _enqueue(self, task: str, params: dict[str, Any], conn: Any) -> int:
        if conn is not None:
            return self._insert_job(_raw_connection(conn), params)
        with self._conn() as own:
            job_id = self._insert_job(own, params)
            self._audit(own, "enqueue", "job", task, None, {"job_id": job_id, "args": params["args"].obj})
            return job_id

    def _job_params(self, task: str, args: Any, queue: str, priority: int, max_attempts: int | None,
                    scheduled_at: datetime | None, unique_key: str | None, timeout: float | None,
                    check: bool = True) -> dict[str, Any]:
        """Every job option checked (validation.py); `args` against the task's own check unless `check` is
        False (a bulk enqueue checks each job's args itself)."""
        t = self._task(task)
        parsed, text = v.args(args, self.settings.max_args_bytes)
        if check:
            try:
                check_args(t, parsed)
            except TaskError as exc:
                raise AdminError(str(exc), field="args") from None
        if scheduled_at is not None:
            scheduled_at = v.aware_time("scheduled_at", scheduled_at)
        return {
            "queue": v.queue(queue), "task": task, "args": Jsonb(parsed), "args_text": text,
            "priority": v.priority(priority),
            "max_attempts": v.max_attempts(max_attempts if max_attempts is not None else (t.max_attempts or 3)),
            "timeout": v.timeout(timeout) if timeout is not None else t.timeout, "scheduled_at": scheduled_at,
            "unique_key": v.unique_key(unique_key), "schedule_id": None, "trace": None,
        }

    @staticmethod
    def _task(task: str) -> Task:
        ensure_builtins()
        v.task_name(task)
        try:
            return get_task(task)
        except TaskError as exc:
            raise AdminError(str(exc), field="task") from None

    def _insert_job(self, conn: psycopg.Connection[Any], params: dict[str, Any]) -> int:
        """Insert a job, or find the unfinished one holding its unique key; `conn` may be the caller's own,
        with its own row factory (tuples or dicts)."""
        while True:
            row = conn.execute(self.q.enqueue_job, params).fetchone()
            if row is not None:
                job_id: int = row["id"] if isinstance(row, dict) else row[0]
                return job_id
            existing = conn.execute(self.q.find_unique_job, {"unique_key": params["unique_key"]}).fetchone()
            if existing is not None:  # a duplicate: hand back the job that holds the key
                held_by: int = existing["id"] if isinstance(existing, dict) else existing[0]
                return held_by

    def enqueue_many(self, task: str, args_list: Iterable[Any], *, queue: str = "default", priority: int = 0,
                     max_attempts: int | None = None, timeout: float | None = None) -> int:
        """Bulk insert with COPY; returns the number of jobs inserted. Every job's args are checked before
        the first row is sent: one bad job refuses them all, and nothing is written."""
        self._require_admin()
        base = self._job_params(task, None, queue, priority, max_attempts, None, None, timeout, check=False)
        rows = self._bulk_args(task, args_list)
        with otel.bulk_enqueue_span(task, base["queue"], len(rows)) as trace_text:
            with self._conn() as conn:
                now = self._db_now(conn)
                with conn.cursor().copy(self.q.copy_jobs) as copy:
                    for text in rows:
                        copy.write_row((base["queue"], task, text, base["priority"], base["max_attempts"], now,
                                        base["timeout"], trace_text))
                self._audit(conn, "enqueue-many", "job", task, None, {"count": len(rows)})
        return len(rows)

    def _bulk_args(self, task: str, args_list: Iterable[Any]) -> list[str]:
        """Each job's args checked against the task (numbered from 1 in the error) -> their JSON texts for COPY;
        the sync and async bulk enqueues both call it before sending the first row."""
        t = get_task(task)
        rows = []
        for i, args in enumerate(args_list):
            try:
                parsed, text = v.args(args, self.settings.max_args_bytes)
                check_args(t, parsed)
            except (AdminError, TaskError) as exc:
                raise AdminError(f"job {i + 1}: {exc}", field="args") from None
            rows.append(text)
        return rows

    def get_job(self, job_id: int) -> dict[str, Any]:
        with self._read_conn() as conn:
            row = conn.execute(self.q.get_job, {"id": _int_in("job id", job_id, 1, 2**63 - 1)}).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return row

    def list_jobs(self, *, schedule: str | None = None, state: str | list[str] | None = None,
                  queue: str | None = None, task: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
        states = [state] if isinstance(state, str) else (list(state) if state else None)
        for s in states or []:
            if s not in JOB_STATES:
                raise AdminError(f"state '{s}': use one of {', '.join(JOB_STATES)}")
        with self._read_conn() as conn:
            schedule_id = None
            if schedule:
                sc = conn.execute(self.q.get_schedule, {"name": schedule}).fetchone()
                if sc is None:
                    raise NotFound(f"schedule '{schedule}' does not exist")
                schedule_id = sc["id"]
            return conn.execute(self.q.list_jobs, {
                "schedule_id": schedule_id, "states": states, "queue": queue or None, "task": task or None,
                "since": since, "until": until, "before_id": before_id,
                "limit": _int_in("limit", limit, 1, 10_000)}).fetchall()

    def cancel_jobs(self, ids: Iterable[int]) -> dict[str, list[int]]:
        """Cancel waiting jobs at once; ask running ones to stop (SQL through pg_cancel_backend)."""
        self._require_admin()
        ids = [_int_in("job id", i, 1, 2**63 - 1) for i in ids]
        with self._conn() as conn:
            rows = conn.execute(self.q.cancel_jobs, {"ids": ids, "actor": self.actor}).fetchall()
            for r in rows:
                self._audit(conn, "cancel", "job", str(r["id"]), None, {"state": r["state"]})
        for r in rows:
            if r["state"] == "running" and r["backend_pid"]:
                with self._conn() as conn:
                    conn.execute(self.q.cancel_backend, {"pid": r["backend_pid"]})
        return {"cancelled": [r["id"] for r in rows if r["state"] == "cancelled"],
                "requested": [r["id"] for r in rows if r["state"] == "running"]}

    def retry_jobs(self, ids: Iterable[int]) -> list[int]:
        """Put finished jobs back in the queue (one more attempt allowed)."""
        return self._bulk_job_action(self.q.retry_jobs, "retry", ids)

    def delete_jobs(self, ids: Iterable[int]) -> list[int]:
        """Delete jobs that are not running."""
        return self._bulk_job_action(self.q.delete_jobs, "delete", ids)

    def _bulk_job_action(self, statement: str, action: str, ids: Iterable[int]) -> list[int]:
        """Run a statement over job ids; audit each job it touched; return their ids."""
        self._require_admin()
        ids = [_int_in("job id", i, 1, 2**63 - 1) for i in ids]
        with self._conn() as conn:
            done = [r["id"] for r in conn.execute(statement, {"ids": ids}).fetchall()]
            for i in done:
                self._audit(conn, action, "job", str(i), None, None)
        return done

    # ------------------------------------------------------------------ status, stats, audit
    def status(self) -> dict[str, Any]:
        try:
            return self._status()
        except psycopg.errors.UndefinedTable:
            raise AdminError(f"pgjobs tables not found in schema '{self.settings.schema}': run pgjobs migrate "
                             "(or alembic upgrade head) first") from None

    def _status(self) -> dict[str, Any]:
        with self._conn() as conn:
            workers = conn.execute(self.q.list_workers, self.q.lock).fetchall()
            backend = conn.execute(self.q.leader_backend, self.q.lock).fetchone()
            counts = {r["state"]: r["count"] for r in conn.execute(self.q.unfinished_counts)}
            since = self._db_now(conn) - timedelta(hours=24)
            recent = {r["state"]: r["count"] for r in conn.execute(
                self.q.finished_counts_since, {"states": ["completed", "failed", "skipped", "cancelled"],
                                               "since": since})}
            estimate = conn.execute(self.q.job_count_estimate, {"table": f"{self.settings.schema}.jobs"}).fetchone()
            health = self._health(conn, since=self._db_now(conn) - timedelta(minutes=10))
            revision = None  # no version table, or an empty one (`alembic stamp base`): not migrated
            try:
                with conn.transaction():
                    version = conn.execute(self.q.schema_revision).fetchone()
                    revision = version["version_num"] if version is not None else None
            except psycopg.Error:
                pass
        # The leader is the worker whose liveness lock is held by the session that holds the leader lock, not
        # whichever row says leader_since (a dead worker's row can say so until it is removed).
        leader = None
        holder = None
        if backend is not None:
            leader = next((w for w in workers if backend["worker_key"] is not None
                           and w["id"] % 2**31 == backend["worker_key"]), None)
            if leader is None:
                holder = {k: backend[k] for k in ("pid", "application_name", "client_addr", "backend_start")}
                holder["clear_with"] = f"SELECT pg_terminate_backend({backend['pid']})"
        return {
            "leader": leader,
            "leader_backend_pid": backend["pid"] if backend else None,
            # A session that is not a live pgjobs worker holds the leader lock: nothing is scheduled until it ends.
            "foreign_lock_holder": holder,
            "workers": workers,
            "counts": {"available": counts.get("available", 0), "running": counts.get("running", 0)},
            "last_24h": recent,
            "jobs_estimate": max(0, (estimate or {}).get("reltuples", 0) or 0),
            "schema_revision": revision,
            **health,
        }

    def _health(self, conn: psycopg.Connection[DictRow], since: datetime) -> dict[str, Any]:
        """Lag: per queue, how long the oldest due job has waited; how far enabled schedules are behind
        (a slot more than 5 s overdue means no leader is scheduling); cron slot lateness since `since`."""
        queues = conn.execute(self.q.queue_health).fetchall()
        overdue = one(conn.execute(self.q.schedules_overdue, {"grace": 5.0}))
        lateness = one(conn.execute(self.q.recent_slot_lateness, {"since": since}))
        horizon = conn.execute(self.q.horizon_holders, {
            "min_age": 0, "slot_xid_age": SLOT_XID_AGE, "limit": HORIZON_LIMIT, "query_chars": 200}).fetchall()
        warn = self.settings.horizon_warn_age
        return {
            "horizon_oldest_seconds": max((h["age_seconds"] for h in horizon if h["age_seconds"] is not None),
                                          default=0.0),
            "horizon_holders": [h for h in horizon
                                if h["kind"] == "replication slot" or (h["age_seconds"] or 0.0) >= warn],
            "queues": queues,
            "lag_seconds": max((q["lag"] for q in queues), default=0.0),
            "schedules_overdue": overdue["overdue"],
            "max_overdue_seconds": overdue["max_overdue"],
            "slot_lateness": lateness,
        }

    def health(self) -> dict[str, Any]:
        """The cheap part of `status()` (no worker list, no 24 h counts): what metrics scrape.

        `horizon_holders` lists what holds this database's xmin horizon back for longer than
        `horizon_warn_age` (`describe_horizon_holder` words each one); `horizon_oldest_seconds` is the age of
        the oldest transaction holding a snapshot or xid, whatever its age."""
        with self._conn() as conn:
            return self._health(conn, since=self._db_now(conn) - timedelta(minutes=10))

    def schedule_history(self, name: str, *, since: datetime, limit: int = 5000) -> list[dict[str, Any]]:
        with self._read_conn() as conn:
            sc = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
            if sc is None:
                raise NotFound(f"schedule '{name}' does not exist")
            return conn.execute(self.q.schedule_history, {
                "schedule_id": sc["id"], "since": since, "limit": _int_in("limit", limit, 1, 100_000)}).fetchall()

    def audit(self, *, limit: int = 100, entity_name: str | None = None, before_id: int | None = None
              ) -> list[dict[str, Any]]:
        with self._read_conn() as conn:
            return conn.execute(self.q.list_audit, {
                "limit": _int_in("limit", limit, 1, 10_000), "entity_name": entity_name,
                "before_id": before_id}).fetchall()

    def timezones(self) -> list[str]:
        """Every timezone name the server knows that Python's zoneinfo loads too (CET, GMT, Japan, ...)."""
        with self._conn() as conn:
            names = [r["name"] for r in conn.execute(self.q.list_timezones).fetchall()]
        usable = []
        for zone in names:
            try:
                cron.load_timezone(zone)
            except cron.TimezoneError:  # a name only the server knows is left out
                continue
            usable.append(zone)
        return usable

    # ---- console sign-in limits
    def begin_signin(self, username: str, client: str) -> tuple[int, datetime | None]:
        """Record a sign-in attempt before its password is checked: (attempt id, None) when the check may go
        ahead, or (attempt id, retry_at) when a limit is reached (the attempt is then `blocked` and audited).
        Recording first means attempts made in parallel count each other. Any role may call it."""
        username, client = username[:64], (client or "unknown")[:64]
        with self._conn() as conn:
            conn.execute(self.q.prune_signin_attempts)
            attempt_id: int = one(conn.execute(self.q.insert_signin_attempt,
                                               {"username": username, "client": client}))["id"]
            conn.commit()
            counts = one(conn.execute(self.q.signin_failures, {"username": username, "client": client,
                                                               "window": SIGNIN_WINDOW, "id": attempt_id}))
            retry_at: datetime | None = None
            if counts["user_failures"] >= SIGNIN_USER_FAILURES:
                retry_at = counts["user_retry_at"]
            if counts["client_failures"] >= SIGNIN_CLIENT_FAILURES:
                retry_at = max(filter(None, (retry_at, counts["client_retry_at"])))
            if retry_at is not None:
                conn.execute(self.q.set_signin_result, {"id": attempt_id, "result": "blocked"})
                self._audit(conn, "sign-in-blocked", "console-user", username, None,
                            {"client": client, "retry_at": retry_at})
            return attempt_id, retry_at

    def finish_signin(self, attempt_id: int, username: str, client: str, ok: bool) -> None:
        """Record the checked attempt's result (`ok` or `failed`) and audit it."""
        with self._conn() as conn:
            conn.execute(self.q.set_signin_result, {"id": attempt_id, "result": "ok" if ok else "failed"})
            self._audit(conn, "sign-in" if ok else "sign-in-failed", "console-user", username[:64], None,
                        {"client": (client or "unknown")[:64]})

    # ---- console reads
    # What the Streamlit console shows, each read bounded (a page, a LIMIT, a window with a cap) so a page
    # stays fast with millions of jobs. See the `console` section of pgjobs/queries.py.
    CONSOLE_SORTS = ("name", "task", "next_run", "last_slot")
    EXACT_COUNT_MAX_BYTES = 16 * 1024 * 1024

    def console_schedules(self, *, search: str | None = None, enabled: bool | None = None, sort: str = "name",
                          limit: int = 50, offset: int = 0, since: datetime | None = None,
                          runs: int = 200) -> list[dict[str, Any]]:
        """A page of schedules with the last run and `completed`/`failed` over the last `runs` runs since
        `since` (default 7 days): success rate = completed / (completed + failed)."""
        if sort not in self.CONSOLE_SORTS:
            raise AdminError(f"sort '{sort}': use one of {', '.join(self.CONSOLE_SORTS)}")
        with self._read_conn() as conn:
            since = since or self._db_now(conn) - timedelta(days=7)
            return conn.execute(self.q.console_schedules, {
                "search": f"%{search}%" if search else None, "enabled": enabled, "sort": sort,
                "limit": _int_in("limit", limit, 1, 1000), "offset": _int_in("offset", offset, 0, 10**9),
                "since": since, "runs": _int_in("runs", runs, 1, 10_000)}).fetchall()

    def schedule_names(self, search: str | None = None, limit: int = 1000) -> list[str]:
        with self._read_conn() as conn:
            rows = conn.execute(self.q.console_schedule_names, {
                "search": f"%{search}%" if search else None, "limit": _int_in("limit", limit, 1, 10_000)})
            return [r["name"] for r in rows]

    def job_state_counts(self) -> dict[str, Any]:
        """Jobs by state: exact while the table is small, else estimated from the planner's statistics
        (reltuples x the frequency of each state), so it never counts millions of rows."""
        table = f"{self.settings.schema}.jobs"
        with self._read_conn() as conn:
            size = conn.execute(self.q.console_jobs_size, {"table": table}).fetchone()
            if size is None or size["bytes"] <= self.EXACT_COUNT_MAX_BYTES:
                counts = {r["state"]: r["count"] for r in conn.execute(self.q.job_counts)}
                return {"counts": counts, "exact": True, "total": sum(counts.values())}
            # Big: finished states estimated (absent until the table was first analyzed), unfinished exact.
            counts = {r["state"]: r["count"] for r in conn.execute(
                self.q.console_state_estimates, {"table": table, "schema": self.settings.schema})}
            counts.update({r["state"]: r["count"] for r in conn.execute(self.q.unfinished_counts)})
            return {"counts": counts, "exact": False, "total": max(size["reltuples"], 0)}

    def recent_failures(self, *, since: datetime, limit: int = 20) -> list[dict[str, Any]]:
        with self._read_conn() as conn:
            return conn.execute(self.q.console_recent_failures, {
                "since": since, "limit": _int_in("limit", limit, 1, 1000)}).fetchall()

    def next_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        with self._read_conn() as conn:
            return conn.execute(self.q.next_runs, {"limit": _int_in("limit", limit, 1, 1000)}).fetchall()

    def recent_lateness(self, *, since: datetime, limit: int = 200) -> list[dict[str, Any]]:
        """Recent cron runs with how late they started after their slot (seconds)."""
        with self._read_conn() as conn:
            return conn.execute(self.q.recent_lateness, {
                "since": since, "limit": _int_in("limit", limit, 1, 10_000)}).fetchall()

    def _schedule_id(self, conn: psycopg.Connection[DictRow], name: str) -> int:
        sc = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
        if sc is None:
            raise NotFound(f"schedule '{name}' does not exist")
        schedule_id: int = sc["id"]
        return schedule_id

    def schedule_buckets(self, name: str, *, since: datetime, bucket_seconds: int,
                         cap: int = 20_000) -> list[dict[str, Any]]:
        """Runs of a schedule per time bucket (outcomes, duration avg/p95, lateness) over the newest `cap`
        runs since `since`."""
        with self._read_conn() as conn:
            return conn.execute(self.q.console_schedule_buckets, {
                "schedule_id": self._schedule_id(conn, name), "since": since,
                "bucket": _int_in("bucket_seconds", bucket_seconds, 1, 86400 * 31),
                "cap": _int_in("cap", cap, 1, 1_000_000)}).fetchall()

    def schedule_stats(self, name: str, *, since: datetime, cap: int = 20_000) -> dict[str, Any]:
        """Totals over the newest `cap` runs since `since`; `capped` says the cap was reached."""
        cap = _int_in("cap", cap, 1, 1_000_000)
        with self._read_conn() as conn:
            row = one(conn.execute(self.q.console_schedule_stats, {
                "schedule_id": self._schedule_id(conn, name), "since": since, "cap": cap}))
        finished = row["completed"] + row["failed"]
        return {**row, "success_rate": row["completed"] / finished if finished else None,
                "capped": row["total"] >= cap}

def _next_slot(expr: str, timezone: str, now: datetime) -> datetime:
    return cron.next_slot(cron.parse_cron(expr), cron.load_timezone(timezone), now.astimezone(UTC))


def enqueue(task: str, args: Any = None, *, conn: Any = None, settings: Settings | None = None,
            **options: Any) -> int:
    """Enqueue a job. Pass `conn` (psycopg connection or SQLAlchemy Session) to enqueue transactionally:
    the job exists only if the caller's transaction commits."""
    admin = Admin(settings or Settings.load(), actor="app")
    return admin.enqueue(task, args, conn=conn, **options)


def describe_horizon_holder(h: dict[str, Any]) -> str:
    """One line for an operator: what holds the xmin horizon, since when, and how to end it."""
    if h["kind"] == "replication slot":
        return (f"replication slot '{h['name']}' ({h['state']}) holds the xmin horizon {h['xid_age']:,} "
                f"transactions back: vacuum cannot remove dead job rows; if the slot is abandoned, drop it with "
                f"SELECT pg_drop_replication_slot('{h['name']}')")
    age = _duration_text(h["age_seconds"] or 0.0)
    if h["kind"] == "prepared transaction":
        return (f"prepared transaction '{h['name']}' holds the xmin horizon for {age} (since "
                f"{h['since']:%Y-%m-%d %H:%M:%S%z}): vacuum cannot remove dead job rows; end it with COMMIT "
                f"PREPARED or ROLLBACK PREPARED '{h['name']}'")
    where = f", client {h['client_addr']}" if h["client_addr"] else ""
    query = " ".join((h["query"] or "").split())[:80]
    return (f"transaction of pid {h['pid']} (application '{h['name'] or ''}'{where}, {h['state'] or 'unknown'}, "
            f"since {h['since']:%Y-%m-%d %H:%M:%S%z}) holds the xmin horizon for {age}: vacuum cannot remove "
            f"dead job rows while it lasts; last query: {query!r}; end it with SELECT pg_terminate_backend("
            f"{h['pid']})")


def _duration_text(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"
