"""Built-in tasks: `pgjobs.refresh_materialized_view`, `pgjobs.noop`, and (when enabled) `pgjobs.sql`.

The refresh task is what replaces pg_cron's `REFRESH MATERIALIZED VIEW CONCURRENTLY otel_trace_summaries`:
- identifiers are quoted by psycopg (`sql.Identifier`), never pasted into SQL text;
- a missing view, a relation that is not a materialized view, or a view without the unique index that
  CONCURRENTLY needs fail with an error that says so;
- a view that was never populated cannot be refreshed concurrently: the task does a plain first refresh and
  says so in the job's result;
- two refreshes of one view never pile up: the second finds the view's advisory lock taken and ends `skipped`,
  and `lock_timeout` bounds the wait for a refresh started outside pgjobs.
"""

from __future__ import annotations

import time
from typing import Any

from pgjobs import queries as Q
from pgjobs.tasks import JobContext, SkipJob, task

VIEW_LOCK_CLASS = 0x706B
_IDENT_MAX = 63
_REFRESH_KEYS = {"view", "schema", "concurrently", "lock_timeout"}


def _check_identifier(kind: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty string")
    if len(value.encode()) > _IDENT_MAX:
        raise ValueError(f"{kind} '{value}' is longer than {_IDENT_MAX} bytes")
    if "\x00" in value:
        raise ValueError(f"{kind} contains a NUL byte")


def validate_refresh_args(args: dict[str, Any]) -> None:
    unknown = set(args) - _REFRESH_KEYS
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))}; expected view, schema, concurrently, lock_timeout")
    if "view" not in args:
        raise ValueError('missing "view" (the materialized view to refresh)')
    _check_identifier("view", args["view"])
    if args.get("schema") is not None:
        _check_identifier("schema", args["schema"])
    if not isinstance(args.get("concurrently", True), bool):
        raise ValueError('"concurrently" must be true or false')
    lock_timeout = args.get("lock_timeout", 10)
    if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or lock_timeout <= 0:
        raise ValueError('"lock_timeout" must be a positive number of seconds')


@task("pgjobs.refresh_materialized_view", pass_context=True, validate=validate_refresh_args)
def refresh_materialized_view(
    ctx: JobContext,
    view: str,
    schema: str | None = None,
    concurrently: bool = True,
    lock_timeout: float = 10,
) -> dict[str, Any]:
    """REFRESH MATERIALIZED VIEW [CONCURRENTLY] a view; readers are not blocked when concurrent."""
    validate_refresh_args({"view": view, "schema": schema, "concurrently": concurrently, "lock_timeout": lock_timeout})
    q = ctx.queries or Q.queries()
    with ctx.connection() as conn:
        info = conn.execute(q.matview_info, {"qualified": Q.qualified_name(schema, view)}).fetchone()
        conn.commit()  # the refresh below runs in a transaction of its own, not a savepoint of this one
        shown = f"{schema}.{view}" if schema else view
        if info is None:
            raise LookupError(f"materialized view '{shown}' does not exist")
        oid, view_schema, view_name, relkind, populated, has_unique = info
        if relkind != "m":
            kinds = {"r": "a table", "v": "a view", "p": "a partitioned table", "f": "a foreign table"}
            raise TypeError(f"'{view_schema}.{view_name}' is {kinds.get(relkind, 'not a materialized view')}, "
                            "not a materialized view")
        mode = "concurrent" if concurrently else "plain"
        note = None
        if concurrently and not populated:
            mode, note = "plain", "view was never populated: did a plain first refresh (CONCURRENTLY needs data)"
        elif concurrently and not has_unique:
            raise ValueError(
                f"materialized view '{view_schema}.{view_name}' has no unique index on plain columns without a "
                "WHERE clause; REFRESH ... CONCURRENTLY needs one (CREATE UNIQUE INDEX ON ... (key columns))"
            )
        with conn.transaction():
            got = conn.execute(q.try_view_lock, {"cls": VIEW_LOCK_CLASS, "oid": int(oid) & 0x7FFFFFFF}).fetchone()
            if not got[0]:
                raise SkipJob(f"a refresh of {view_schema}.{view_name} is already running")
            conn.execute(q.set_local_lock_timeout, {"ms": str(int(float(lock_timeout) * 1000))})
            started = time.monotonic()
            conn.execute(Q.refresh_matview(view_schema, view_name, mode == "concurrent"))
            seconds = time.monotonic() - started
    result: dict[str, Any] = {"view": f"{view_schema}.{view_name}", "mode": mode, "seconds": round(seconds, 4)}
    if note:
        result["note"] = note
    return result


@task("pgjobs.noop")
def noop(**_: Any) -> None:
    """Does nothing; for demos, health checks and benchmarks."""


def _validate_sleep(args: dict[str, Any]) -> None:
    seconds = args.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 86400:
        raise ValueError('"seconds" must be a number between 0 and 86400')


@task("pgjobs.sleep", pass_context=True, validate=_validate_sleep)
def sleep(ctx: JobContext, seconds: float = 1, fail: bool = False) -> None:
    """Waits `seconds` (cancellable); with fail=true raises afterwards. For demos and tests."""
    if ctx.cancel_event.wait(seconds):
        ctx.check_cancelled()
    if fail:
        raise RuntimeError(f"pgjobs.sleep failed on purpose after {seconds}s")


# ---------------------------------------------------------------------- pgjobs.sql (off unless enabled)
def _validate_sql(args: dict[str, Any]) -> None:
    unknown = set(args) - {"sql"}
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))}; expected sql")
    if not isinstance(args.get("sql"), str) or not args["sql"].strip():
        raise ValueError('"sql" must be a non-empty SQL string')


def run_sql(ctx: JobContext, sql: str) -> dict[str, Any]:
    """Runs SQL text (e.g. a command imported from pg_cron) as pg_cron does: one autocommit round trip, so
    VACUUM works and several statements run in one implicit transaction. Bounded by the job's timeout
    (statement_timeout) and cancellable like any SQL task."""
    with ctx.connection() as conn:
        conn.autocommit = True
        try:
            cur = conn.execute(sql.encode())  # bytes, no parameters: sent as is, '%' is not a placeholder
            while cur.nextset():  # several statements: report the last one
                pass
            result = {"status": cur.statusmessage, "rows": cur.rowcount}
        finally:
            conn.autocommit = False
    return result


def enable_sql_task() -> None:
    """Register `pgjobs.sql`. Arbitrary SQL is opt-in: this runs at import when Settings.sql_tasks
    (PGJOBS_SQL_TASKS=1) is on, so only such workers (and CLIs) know the task."""
    task("pgjobs.sql", pass_context=True, validate=_validate_sql)(run_sql)


def _sql_tasks_configured() -> bool:
    from pgjobs.config import ConfigError, Settings

    try:
        return Settings.load().sql_tasks
    except ConfigError:
        return False


if _sql_tasks_configured():
    enable_sql_task()
