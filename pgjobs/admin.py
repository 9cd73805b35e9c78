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
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgjobs import cron
from pgjobs import validation as v
from pgjobs.config import ConfigError, Settings, parse_queues
from pgjobs.queries import Queries, queries
from pgjobs.states import CATCHUP_POLICIES, JOB_STATES, OVERLAP_POLICIES
from pgjobs.tasks import TaskError, check_args, ensure_builtins, get_task
from pgjobs.validation import InvalidValue


class AdminError(InvalidValue):
    """A request the admin API refuses; the message is one line that says what to fix, `.field` names the
    failing field (None when the refusal is not about one field)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, field)


@contextmanager
def _refused() -> Iterator[None]:
    """Turn a validation refusal (or a task/config error) into an AdminError, keeping its field."""
    try:
        yield
    except AdminError:
        raise
    except InvalidValue as exc:
        raise AdminError(str(exc), exc.field) from None
    except (TaskError, ConfigError) as exc:
        raise AdminError(str(exc), getattr(exc, "field", None)) from None


class NotFound(AdminError):
    pass


class PermissionDenied(AdminError):
    pass


ROLES = ("admin", "viewer")
# The xmin horizon report: its first rows, oldest first, and when an active replication slot counts as
# holding the horizon back (an inactive one holding xmin always does).
HORIZON_LIMIT = 5
SLOT_XID_AGE = 1_000_000
_NAME_RE = re.compile(r"^[\w][\w .:/@+-]{0,199}$")
SCHEDULE_FIELDS = ("task", "args", "cron", "timezone", "enabled", "queue", "priority", "max_attempts",
                   "timeout_seconds", "catchup", "catchup_max", "overlap", "description")
DEFAULTS: dict[str, Any] = {
    "args": {}, "timezone": "UTC", "enabled": True, "queue": "default", "priority": 0, "max_attempts": 3,
    "timeout_seconds": None, "catchup": "latest", "catchup_max": 100, "overlap": "skip", "description": "",
}


# ---------------------------------------------------------------------- validation (pure)
def parse_args(value: Any) -> dict[str, Any]:
    """JSON text or a dict -> dict. Anything else is a one-line AdminError."""
    return args_json(value)[0]


def args_json(value: Any, max_bytes: int = v.ARGS_MAX_BYTES) -> tuple[dict[str, Any], str]:
    """`parse_args`, and the JSON text of the result: checking that args serialize produces the text that
    is sent, so a bulk enqueue encodes each job's args once. Limits: see `pgjobs.validation.json_args`."""
    with _refused():
        return v.json_args(value, max_bytes)


def validate_name(name: Any) -> str:
    with _refused():
        v.text("name", name, v.NAME_MAX)
    if name != name.strip() or not _NAME_RE.match(name):
        raise AdminError(f"schedule name {v.echo(name)}: use 1-200 letters, digits, spaces or _ . : / @ + -, "
                         "starting with a letter or digit", "name")
    return name


def _int_in(label: str, value: Any, lo: int, hi: int) -> int:
    with _refused():
        return v.integer(label, value, lo, hi)


def validate_schedule_fields(fields: dict[str, Any], max_args_bytes: int = v.ARGS_MAX_BYTES) -> dict[str, Any]:
    """Check and normalize schedule fields (a complete set); raises AdminError naming the bad field."""
    out = dict(fields)
    with _refused():
        v.text("cron", out["cron"], v.CRON_MAX)
        v.text("timezone", out["timezone"], 100)
        v.text("task", out["task"], v.TASK_MAX)
    try:
        spec = cron.parse_cron(str(out["cron"]))
    except cron.CronError as exc:
        raise AdminError(v.one_line(str(exc)), "cron") from None
    out["cron"] = spec.expr
    try:
        cron.load_timezone(out["timezone"])
    except cron.TimezoneError as exc:
        raise AdminError(v.one_line(str(exc)), "timezone") from None
    ensure_builtins()
    try:
        task = get_task(out["task"])
    except TaskError as exc:
        raise AdminError(str(exc), "task") from None
    out["args"] = args_json(out["args"], max_args_bytes)[0]
    try:
        check_args(task, out["args"])
    except TaskError as exc:
        raise AdminError(v.one_line(str(exc)), "args") from None
    with _refused():
        v.text("queue", str(out["queue"]), v.QUEUE_MAX)
    try:
        out["queue"] = parse_queues(out["queue"])[0] if "," not in str(out["queue"]) else _bad_queue(out["queue"])
    except ConfigError as exc:
        raise AdminError(v.one_line(str(exc)), "queue") from None
    with _refused():
        out["priority"] = v.integer("priority", out["priority"], -32768, 32767)
        out["max_attempts"] = v.integer("max_attempts", out["max_attempts"], 1, 1000)
        out["catchup_max"] = v.integer("catchup_max", out["catchup_max"], 1, 100_000)
        out["timeout_seconds"] = v.timeout("timeout_seconds", out["timeout_seconds"])
        if out["catchup"] not in CATCHUP_POLICIES:
            raise AdminError(f"catchup {v.echo(out['catchup'])}: use one of {', '.join(CATCHUP_POLICIES)}", "catchup")
        if out["overlap"] not in OVERLAP_POLICIES:
            raise AdminError(f"overlap {v.echo(out['overlap'])}: use one of {', '.join(OVERLAP_POLICIES)}", "overlap")
        v.boolean("enabled", out["enabled"])
        out["description"] = v.text("description", str(out.get("description") or ""), v.DESCRIPTION_MAX,
                                    empty=True)
    return out


def _bad_queue(value: Any) -> str:
    raise AdminError(f"queue {v.echo(value)}: a schedule targets exactly one queue", "queue")


def describe_cron(expr: str, timezone: str = "UTC", count: int = 5, now: datetime | None = None) -> dict[str, Any]:
    """Validate a cron + timezone; return its description and next fire times (in that timezone)."""
    with _refused():
        v.text("cron", expr, v.CRON_MAX)
        v.text("timezone", timezone, 100)
        count = v.count("count", count)
    try:
        spec = cron.parse_cron(expr)
        times = cron.preview(expr, timezone, count=count, now=now)
    except (cron.CronError, cron.TimezoneError) as exc:
        raise AdminError(str(exc)) from None
    return {"cron": spec.expr, "timezone": timezone, "description": cron.describe(spec), "next": times}


def connection_reason(exc: BaseException) -> str:
    """A refused connection's reason on one line: libpq's message lines (e.g. 'connection refused' and
    'Is the server running on that host...') joined, without the repeated 'connection failed' preamble."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines) or type(exc).__name__
    return v.one_line(text)[:300]


def default_actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "os:unknown"


def _jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return json.loads(json.dumps(row, default=str))


def _raw_connection(conn: Any) -> psycopg.Connection:
    """A psycopg connection from a psycopg connection, a SQLAlchemy Connection or a SQLAlchemy Session."""
    if isinstance(conn, psycopg.Connection):
        return conn
    sa_conn = conn.connection() if callable(getattr(conn, "connection", None)) else conn
    driver = getattr(getattr(sa_conn, "connection", None), "driver_connection", None)
    if isinstance(driver, psycopg.Connection):
        return driver
    raise AdminError("enqueue(conn=...) takes a psycopg connection or a SQLAlchemy Session/Connection (psycopg 3)")


# ---------------------------------------------------------------------- the API
class Admin:
    """Admin operations for one database. `role='viewer'` may read but not change anything."""

    def __init__(self, settings: Settings, *, actor: str | None = None, role: str = "admin", pool: Any = None):
        if role not in ROLES:
            raise AdminError(f"role '{role}': use admin or viewer")
        self.settings = settings
        self.q: Queries = queries(settings.schema)
        self.actor = actor or default_actor()
        self.role = role
        self._pool = pool
        self._shared: psycopg.Connection | None = None  # set on the Admin handed out by transaction()

    def as_user(self, actor: str, role: str) -> Admin:
        return Admin(self.settings, actor=actor, role=role, pool=self._pool)

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
    def _conn(self) -> Iterator[psycopg.Connection]:
        if self._shared is not None:
            yield self._shared
            return
        if self._pool is not None:
            with self._pool.connection() as conn:
                conn.row_factory = dict_row
                try:
                    yield conn
                finally:
                    conn.row_factory = psycopg.rows.tuple_row
            return
        try:
            conn = psycopg.connect(self.settings.require_database(), row_factory=dict_row, connect_timeout=10,
                                   application_name="pgjobs admin")
        except psycopg.OperationalError as exc:
            raise AdminError(f"cannot connect to the database: {connection_reason(exc)}") from None
        try:
            with conn:
                yield conn
        except psycopg.errors.UndefinedTable:
            raise AdminError(f"pgjobs tables not found in schema '{self.settings.schema}': run pgjobs migrate "
                             "(or alembic upgrade head) first") from None

    def _require_admin(self) -> None:
        if self.role != "admin":
            raise PermissionDenied(f"user '{self.actor}' has the viewer role and cannot change anything")

    def _audit(self, conn: psycopg.Connection, action: str, entity: str, name: str,
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        conn.execute(self.q.insert_audit, {
            "actor": self.actor, "action": action, "entity": entity, "entity_name": name,
            "before": Jsonb(_jsonable(before)) if before is not None else None,
            "after": Jsonb(_jsonable(after)) if after is not None else None,
        })

    def _notify(self, conn: psycopg.Connection, name: str) -> None:
        conn.execute(self.q.notify_schedules_changed, {"channel": self.q.schedules_channel, "payload": name[:200]})

    def _db_now(self, conn: psycopg.Connection) -> datetime:
        return conn.execute(self.q.db_now).fetchone()["now"]

    # ------------------------------------------------------------------ schedules
    def add_schedule(self, name: str, *, cron: str, task: str, **fields: Any) -> dict[str, Any]:
        """Create a schedule; its first slot is the first one after now."""
        self._require_admin()
        validate_name(name)
        unknown = set(fields) - set(SCHEDULE_FIELDS)
        if unknown:
            raise AdminError(f"unknown schedule field(s): {', '.join(sorted(unknown))}")
        values = validate_schedule_fields({**DEFAULTS, **{k: v for k, v in fields.items() if v is not None},
                                           "cron": cron, "task": task})
        with self._conn() as conn:
            now = self._db_now(conn)
            values["next_run_at"] = self._first_run(values, now)
            try:
                row = conn.execute(self.q.insert_schedule, {**values, "name": name, "args": Jsonb(values["args"])}
                                   ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise AdminError(f"schedule '{name}' already exists (use edit)") from None
            self._audit(conn, "create", "schedule", name, None, row)
            self._notify(conn, name)
        return row

    @staticmethod
    def _first_run(values: dict[str, Any], now: datetime) -> datetime:
        return _next_slot(values["cron"], values["timezone"], now)

    def edit_schedule(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change fields of a schedule; a new cron or timezone recomputes the next run from now."""
        self._require_admin()
        unknown = set(changes) - set(SCHEDULE_FIELDS)
        if unknown:
            raise AdminError(f"unknown schedule field(s): {', '.join(sorted(unknown))}")
        changes = {k: v for k, v in changes.items() if v is not None or k == "timeout_seconds"}
        with self._conn() as conn:
            before = conn.execute(self.q.get_schedule_for_update, {"name": name}).fetchone()
            if before is None:
                raise NotFound(f"schedule '{name}' does not exist")
            merged = validate_schedule_fields({**{k: before[k] for k in SCHEDULE_FIELDS}, **changes})
            next_run_at = before["next_run_at"]
            if (merged["cron"] != before["cron"] or merged["timezone"] != before["timezone"]
                    or next_run_at is None):
                next_run_at = self._first_run(merged, self._db_now(conn))
            row = conn.execute(self.q.update_schedule, {
                **merged, "id": before["id"], "args": Jsonb(merged["args"]), "next_run_at": next_run_at}).fetchone()
            action = "edit"
            if set(changes) == {"enabled"}:
                action = "resume" if merged["enabled"] else "pause"
            self._audit(conn, action, "schedule", name, before, row)
            self._notify(conn, name)
        return row

    def pause_schedule(self, name: str) -> dict[str, Any]:
        return self.edit_schedule(name, enabled=False)

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
            job_id = conn.execute(self.q.enqueue_job, {
                "queue": sc["queue"], "task": sc["task"], "args": Jsonb(sc["args"]), "priority": sc["priority"],
                "max_attempts": sc["max_attempts"], "timeout": sc["timeout_seconds"], "scheduled_at": None,
                "unique_key": None, "schedule_id": sc["id"]}).fetchone()["id"]
            self._audit(conn, "run-now", "schedule", name, None, {"job_id": job_id})
        return job_id

    def get_schedule(self, name: str) -> dict[str, Any]:
        with self._conn() as conn:
            row = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
        if row is None:
            raise NotFound(f"schedule '{name}' does not exist")
        return row

    def list_schedules(self, search: str | None = None, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
        pattern = f"%{search}%" if search else None
        with self._conn() as conn:
            return conn.execute(self.q.list_schedules, {
                "search": pattern, "limit": _int_in("limit", limit, 1, 10_000),
                "offset": _int_in("offset", offset, 0, 10**9)}).fetchall()

    def count_schedules(self, search: str | None = None) -> int:
        with self._conn() as conn:
            return conn.execute(self.q.count_schedules, {"search": f"%{search}%" if search else None}
                                ).fetchone()["count"]

    # ------------------------------------------------------------------ jobs
    def enqueue(self, task: str, args: Any = None, *, queue: str = "default", priority: int = 0,
                max_attempts: int | None = None, scheduled_at: datetime | None = None,
                unique_key: str | None = None, timeout: float | None = None, conn: Any = None) -> int:
        """Insert one job; see `pgjobs.enqueue`. With `conn`, the job commits with the caller's transaction."""
        self._require_admin()
        params = self._job_params(task, args, queue, priority, max_attempts, scheduled_at, unique_key, timeout)
        if conn is not None:
            return self._insert_job(_raw_connection(conn), params)
        with self._conn() as own:
            job_id = self._insert_job(own, params)
            self._audit(own, "enqueue", "job", task, None, {"job_id": job_id, "args": params["args"].obj})
            return job_id

    def _job_params(self, task: str, args: Any, queue: str, priority: int, max_attempts: int | None,
                    scheduled_at: Any, unique_key: str | None, timeout: Any,
                    check_task_args: bool = True) -> dict[str, Any]:
        """Validate one job's fields (pgjobs.validation owns the limits). `check_task_args=False` skips the
        task's own argument check, for a bulk enqueue that checks each job's args itself."""
        ensure_builtins()
        with _refused():
            v.text("task", task, v.TASK_MAX)
            v.text("queue", queue, v.QUEUE_MAX)
        try:
            t = get_task(task)
        except TaskError as exc:
            raise AdminError(str(exc), "task") from None
        parsed = args_json(args, self.settings.max_args_bytes)[0]
        if check_task_args:
            try:
                check_args(t, parsed)
            except TaskError as exc:
                raise AdminError(v.one_line(str(exc)), "args") from None
        try:
            queue = parse_queues(queue)[0]
        except ConfigError as exc:
            raise AdminError(v.one_line(str(exc)), "queue") from None
        with _refused():
            scheduled_at = v.aware_datetime("scheduled_at", scheduled_at)
            if unique_key is not None:
                v.text("unique_key", unique_key, v.UNIQUE_KEY_MAX)
            return {
                "queue": queue, "task": task, "args": Jsonb(parsed),
                "priority": v.integer("priority", priority, -32768, 32767),
                "max_attempts": v.integer("max_attempts",
                                          (t.max_attempts or 3) if max_attempts is None else max_attempts, 1, 1000),
                "timeout": v.timeout("timeout", timeout if timeout is not None else t.timeout),
                "scheduled_at": scheduled_at, "unique_key": unique_key, "schedule_id": None,
            }

    def _insert_job(self, conn: psycopg.Connection, params: dict[str, Any]) -> int:
        while True:
            row = conn.execute(self.q.enqueue_job, params).fetchone()
            if row is not None:
                return row["id"] if isinstance(row, dict) else row[0]
            existing = conn.execute(self.q.find_unique_job, {"unique_key": params["unique_key"]}).fetchone()
            if existing is not None:  # a duplicate: hand back the job that holds the key
                return existing["id"] if isinstance(existing, dict) else existing[0]

    def enqueue_many(self, task: str, args_list: Iterable[Any], *, queue: str = "default", priority: int = 0,
                     max_attempts: int | None = None) -> int:
        """Bulk insert with COPY; returns the number of jobs inserted."""
        self._require_admin()
        base = self._job_params(task, None, queue, priority, max_attempts, None, None, None, check_task_args=False)
        t = get_task(task)
        count = 0
        with self._conn() as conn:
            now = self._db_now(conn)
            with conn.cursor().copy(self.q.copy_jobs) as copy:
                for args in args_list:
                    parsed, text = args_json(args, self.settings.max_args_bytes)
                    try:
                        check_args(t, parsed)
                    except TaskError as exc:
                        raise AdminError(v.one_line(str(exc)), "args") from None
                    copy.write_row((base["queue"], task, text, base["priority"], base["max_attempts"],
                                    base["timeout"], now))
                    count += 1
            self._audit(conn, "enqueue-many", "job", task, None, {"count": count})
        return count

    def get_job(self, job_id: int) -> dict[str, Any]:
        with self._conn() as conn:
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
        with self._conn() as conn:
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
            revision = None
            try:
                with conn.transaction():
                    revision = conn.execute(self.q.schema_revision).fetchone()["version_num"]
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

    def _health(self, conn: psycopg.Connection, since: datetime) -> dict[str, Any]:
        """Lag: per queue, how long the oldest due job has waited; how far enabled schedules are behind
        (a slot more than 5 s overdue means no leader is scheduling); cron slot lateness since `since`."""
        queues = conn.execute(self.q.queue_health).fetchall()
        overdue = conn.execute(self.q.schedules_overdue, {"grace": 5.0}).fetchone()
        lateness = conn.execute(self.q.recent_slot_lateness, {"since": since}).fetchone()
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
        with self._conn() as conn:
            sc = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
            if sc is None:
                raise NotFound(f"schedule '{name}' does not exist")
            return conn.execute(self.q.schedule_history, {
                "schedule_id": sc["id"], "since": since, "limit": _int_in("limit", limit, 1, 100_000)}).fetchall()

    def audit(self, *, limit: int = 100, entity_name: str | None = None, before_id: int | None = None
              ) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return conn.execute(self.q.list_audit, {
                "limit": _int_in("limit", limit, 1, 10_000), "entity_name": entity_name,
                "before_id": before_id}).fetchall()

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
        with self._conn() as conn:
            since = since or self._db_now(conn) - timedelta(days=7)
            return conn.execute(self.q.console_schedules, {
                "search": f"%{search}%" if search else None, "enabled": enabled, "sort": sort,
                "limit": _int_in("limit", limit, 1, 1000), "offset": _int_in("offset", offset, 0, 10**9),
                "since": since, "runs": _int_in("runs", runs, 1, 10_000)}).fetchall()

    def schedule_names(self, search: str | None = None, limit: int = 1000) -> list[str]:
        with self._conn() as conn:
            rows = conn.execute(self.q.console_schedule_names, {
                "search": f"%{search}%" if search else None, "limit": _int_in("limit", limit, 1, 10_000)})
            return [r["name"] for r in rows]

    def job_state_counts(self) -> dict[str, Any]:
        """Jobs by state: exact while the table is small, else estimated from the planner's statistics
        (reltuples x the frequency of each state), so it never counts millions of rows."""
        table = f"{self.settings.schema}.jobs"
        with self._conn() as conn:
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
        with self._conn() as conn:
            return conn.execute(self.q.console_recent_failures, {
                "since": since, "limit": _int_in("limit", limit, 1, 1000)}).fetchall()

    def next_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return conn.execute(self.q.next_runs, {"limit": _int_in("limit", limit, 1, 1000)}).fetchall()

    def recent_lateness(self, *, since: datetime, limit: int = 200) -> list[dict[str, Any]]:
        """Recent cron runs with how late they started after their slot (seconds)."""
        with self._conn() as conn:
            return conn.execute(self.q.recent_lateness, {
                "since": since, "limit": _int_in("limit", limit, 1, 10_000)}).fetchall()

    def _schedule_id(self, conn: psycopg.Connection, name: str) -> int:
        sc = conn.execute(self.q.get_schedule, {"name": name}).fetchone()
        if sc is None:
            raise NotFound(f"schedule '{name}' does not exist")
        return sc["id"]

    def schedule_buckets(self, name: str, *, since: datetime, bucket_seconds: int,
                         cap: int = 20_000) -> list[dict[str, Any]]:
        """Runs of a schedule per time bucket (outcomes, duration avg/p95, lateness) over the newest `cap`
        runs since `since`."""
        with self._conn() as conn:
            return conn.execute(self.q.console_schedule_buckets, {
                "schedule_id": self._schedule_id(conn, name), "since": since,
                "bucket": _int_in("bucket_seconds", bucket_seconds, 1, 86400 * 31),
                "cap": _int_in("cap", cap, 1, 1_000_000)}).fetchall()

    def schedule_stats(self, name: str, *, since: datetime, cap: int = 20_000) -> dict[str, Any]:
        """Totals over the newest `cap` runs since `since`; `capped` says the cap was reached."""
        cap = _int_in("cap", cap, 1, 1_000_000)
        with self._conn() as conn:
            row = conn.execute(self.q.console_schedule_stats, {
                "schedule_id": self._schedule_id(conn, name), "since": since, "cap": cap}).fetchone()
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
