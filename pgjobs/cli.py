"""`python -m pgjobs` / `pgjobs`: the command line, a thin layer over the admin API (no SQL here).

Contract: every list/show/status command takes `--json`; a bad cron, timezone, task, JSON, URL, name or number
(the rules are pgjobs/validation.py) exits with status 2 and one line on stderr (`pgjobs: error: ...`), and
writes nothing; anything unexpected is one line and exit 1 (the traceback with --debug).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

import psycopg

from pgjobs.admin import Admin, AdminError, describe_cron, describe_horizon_holder, parse_time
from pgjobs.config import SETTINGS, ConfigError, Settings, flag_help
from pgjobs.states import OVERLAP_ALIASES, OVERLAP_POLICIES
from pgjobs.tasks import TaskError, ensure_builtins, import_modules
from pgjobs.validation import count, first_line, one_line


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=_json_default, indent=2, sort_keys=False))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, dict | list):
        return json.dumps(value, default=_json_default)
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _age(seconds: float | None) -> str:
    """A heartbeat age for people: '0.4s ago', '12s ago', '3m ago'."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s ago"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago"


def _show(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(row)
        return
    for k, v in row.items():
        print(f"{k:16} {_fmt(v)}")


JOB_JSON_FIELDS = ["id", "task", "state", "schedule", "slot", "attempt", "max_attempts", "queue", "inserted_at",
                   "started_at", "finished_at", "worker", "last_error"]


def _job_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in JOB_JSON_FIELDS}
    out["error"] = out.pop("last_error")
    return out


# ---------------------------------------------------------------------- argument parser
def _schedule_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--cron", required=required, help="5/6-field cron, @macro, or 'N seconds'")
    p.add_argument("--task", required=required, help="registered task name, e.g. pgjobs.refresh_materialized_view")
    p.add_argument("--args", help="task arguments as a JSON object")
    p.add_argument("--timezone", help="IANA timezone the cron is read in (default UTC)")
    p.add_argument("--queue")
    p.add_argument("--priority", type=int, help="lower runs first (default 0)")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--timeout", type=float, help="seconds a run may take")
    p.add_argument("--catchup", choices=["latest", "all", "none"], help="what to run after downtime")
    p.add_argument("--catchup-max", type=int, help="with --catchup all: at most this many missed slots")
    p.add_argument("--overlap", choices=[*OVERLAP_POLICIES, *OVERLAP_ALIASES],
                   help="a slot while the last run is unfinished (queue = buffer_all)")
    p.add_argument("--catchup-window", metavar="DURATION",
                   help="after downtime, slots older than this are not run (recorded as missed), e.g. 1h")
    p.add_argument("--jitter", metavar="DURATION",
                   help="each slot's job starts at an offset in [0, DURATION) derived from (schedule, slot)")
    p.add_argument("--pause-after-failures", type=int, metavar="N",
                   help="pause the schedule after N consecutive failed slots")
    p.add_argument("--description")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line and exit 2 like every other refusal (`--help` shows usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pgjobs: error: {one_line(message)} (see {self.prog} --help)\n")


def _setting_flag(parser: argparse.ArgumentParser, name: str) -> None:
    """A flag that overrides a setting: its name, type, choices and help come from the setting's definition
    (config.Settings), as the configuration reference's do."""
    spec = SETTINGS[name]
    assert spec.flag, name
    kwargs: dict[str, Any] = {"dest": name, "help": flag_help(name)}
    if spec.kind in ("int", "float"):
        kwargs["type"] = int if spec.kind == "int" else float
        kwargs["metavar"] = "N" if spec.kind == "int" else "SECONDS"
    if spec.choices:
        kwargs["choices"] = list(spec.choices)
    parser.add_argument(spec.flag, **kwargs)


# The settings each parser's flags override (their flags are defined once, in config.Settings).
GLOBAL_SETTING_FLAGS = ("database_url", "schema")
WORKER_SETTING_FLAGS = ("concurrency", "async_concurrency", "queues", "metrics_port", "log_format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgjobs", description="Postgres-native cron scheduler and job system.")
    for name in GLOBAL_SETTING_FLAGS:
        _setting_flag(parser, name)
    import_help = "import a module that registers tasks (repeatable; " + flag_help("imports").split("(", 1)[1]
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help=import_help)
    parser.add_argument("--debug", action="store_true", help="on an unexpected error, print its traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")

    w = sub.add_parser("worker", help="run a worker process (leader election, scheduling, jobs)")
    for name in WORKER_SETTING_FLAGS:
        _setting_flag(w, name)
    w.add_argument("--import", dest="worker_imports", action="append", default=[], metavar="MODULE",
                   help=import_help)

    s = sub.add_parser("schedule", help="manage cron schedules").add_subparsers(dest="action", required=True)
    add = s.add_parser("add", help="create a schedule")
    add.add_argument("name")
    _schedule_options(add, required=True)
    add.add_argument("--disabled", action="store_true", help="create it paused")
    ls = s.add_parser("list", help="list schedules")
    ls.add_argument("--search")
    ls.add_argument("--json", action="store_true")
    for action in ("show", "pause", "resume", "remove", "run-now"):
        a = s.add_parser(action)
        a.add_argument("name")
        if action == "show":
            a.add_argument("--json", action="store_true")
    sl = s.add_parser("slots", help="the slot ledger: every slot with its outcome, and why a slot did not run")
    sl.add_argument("name")
    sl.add_argument("--since", help="ISO 8601 time (no zone = UTC) or a duration ago (2h); default: the latest")
    sl.add_argument("--limit", type=int, default=100)
    sl.add_argument("--json", action="store_true")
    od = s.add_parser("overdue", help="enabled schedules with no success within N intervals (exit 1 if any)")
    od.add_argument("--intervals", type=float, help="default PGJOBS_OVERDUE_INTERVALS (3)")
    od.add_argument("--json", action="store_true")
    bf = s.add_parser("backfill", help="create jobs for the past slots in [--from, --to) that have none")
    bf.add_argument("name")
    bf.add_argument("--from", dest="start", required=True, help="ISO 8601 time (no zone = UTC) or a duration ago")
    bf.add_argument("--to", dest="end", required=True, help="ISO 8601 time (no zone = UTC) or a duration ago")
    bf.add_argument("--overlap", choices=[*OVERLAP_POLICIES, *OVERLAP_ALIASES],
                    help="the overlap policy for this backfill (default: the schedule's)")
    bf.add_argument("--dry-run", action="store_true", help="show what it would create; write nothing")
    bf.add_argument("--json", action="store_true")
    edit = s.add_parser("edit", help="change a schedule (only the given options)")
    edit.add_argument("name")
    _schedule_options(edit, required=False)
    check = s.add_parser("check", help="validate a cron expression and show its next fire times")
    check.add_argument("cron")
    check.add_argument("--timezone", default="UTC")
    check.add_argument("--count", type=int, default=5)
    check.add_argument("--json", action="store_true")
    ap = s.add_parser("apply", help="create/update the schedules in a TOML or YAML file (docs/schedules-file.md)")
    ap.add_argument("file")
    ap.add_argument("--prune", action="store_true", help="also remove schedules that are not in the file")
    ap.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    ap.add_argument("--json", action="store_true")
    ip = s.add_parser("import-pg-cron", help="create schedules equivalent to pg_cron's cron.job entries")
    ip.add_argument("--dry-run", action="store_true", help="print what would be imported, write nothing")

    e = sub.add_parser("enqueue", help="enqueue one job")
    e.add_argument("task")
    e.add_argument("--args")
    e.add_argument("--queue", default="default")
    e.add_argument("--priority", type=int, default=0)
    e.add_argument("--max-attempts", type=int)
    e.add_argument("--unique-key")
    e.add_argument("--timeout", type=float)
    e.add_argument("--scheduled-at", help="run at this time (ISO 8601, no zone = UTC), not now")

    j = sub.add_parser("jobs", help="inspect and manage jobs").add_subparsers(dest="action", required=True)
    jl = j.add_parser("list")
    jl.add_argument("--schedule")
    jl.add_argument("--state")
    jl.add_argument("--queue")
    jl.add_argument("--task")
    jl.add_argument("--limit", type=int, default=50)
    jl.add_argument("--json", action="store_true")
    js = j.add_parser("show")
    js.add_argument("id", type=int)
    js.add_argument("--json", action="store_true")
    for action in ("cancel", "retry", "delete"):
        ja = j.add_parser(action)
        ja.add_argument("ids", type=int, nargs="+")

    st = sub.add_parser("status", help="leader, workers and queue health")
    st.add_argument("--json", action="store_true")

    au = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    al = au.add_parser("list")
    al.add_argument("--limit", type=int, default=50)
    al.add_argument("--name", help="only changes to this schedule or job")
    al.add_argument("--json", action="store_true")

    t = sub.add_parser("tasks", help="list registered tasks")
    t.add_argument("--json", action="store_true")

    d = sub.add_parser("demo", help="run pgjobs with demo data, workers and the console (see pgjobs/demo.py)")
    d.add_argument("--workers", type=int, default=2, help="worker processes to start (default 2)")
    d.add_argument("--data-dir", default=".pgjobs-data", help="embedded Postgres data and logs (default .pgjobs-data)")
    d.add_argument("--console-port", type=int, default=8501, help="console port on 127.0.0.1 (default 8501)")
    d.add_argument("--no-console", action="store_true", help="do not start the Streamlit console")
    d.add_argument("--setup-only", action="store_true", help="migrate and create the demo data, then exit")
    return parser


# ---------------------------------------------------------------------- commands
def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    imports = tuple(args.imports) + tuple(getattr(args, "worker_imports", []) or [])
    base = Settings.load(**{name: getattr(args, name) for name in GLOBAL_SETTING_FLAGS}, **extra)
    if imports:
        base = base.with_(imports=tuple(dict.fromkeys(base.imports + imports)))
    return base


def cmd_migrate(args: argparse.Namespace) -> int:
    from pgjobs import migrations

    settings = _settings(args)
    settings.require_database()
    migrations.upgrade(settings)
    print(f"pgjobs schema '{settings.schema}' is at revision {migrations.head_revision(settings)}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pgjobs.logs import setup_logging
    from pgjobs.worker import Worker

    settings = _settings(args, **{name: getattr(args, name) for name in WORKER_SETTING_FLAGS})
    settings.require_database()
    setup_logging(settings)
    ensure_builtins()
    import_modules(settings.imports)
    worker = Worker(settings)
    if settings.metrics_port:
        from pgjobs.metrics import serve_metrics

        serve_metrics(worker, settings.metrics_port)
    _startup_checks(settings)
    worker.run()
    return worker.exit_code


def _startup_checks(settings: Settings) -> None:
    """Before a worker runs: its schema is not older than its code (one-line error, exit 1), and its lock URL
    is not pooled (exit 2). While the database is unreachable, or shutting down or starting up under either
    check, it waits and tries again, so workers may start before Postgres or during a restart."""
    import logging
    import time

    from pgjobs import migrations
    from pgjobs.leadership import check_lock_connection
    from pgjobs.logs import Outage
    from pgjobs.queries import queries

    log = logging.getLogger("pgjobs.worker")
    outage = Outage(log, "database unavailable at start")
    delay = 0.1
    schema_checked = False
    while True:
        try:
            if not schema_checked:
                try:
                    problem = migrations.check_schema(settings)
                except migrations.MigrationError as exc:  # no alembic.ini: the head revision is unknown here
                    log.warning("schema check skipped: %s", exc)
                    problem = None
                if problem:
                    raise migrations.MigrationError(problem)
                schema_checked = True
            pooled = check_lock_connection(settings.lock_url, queries(settings.schema))
            outage.ok()
            break
        except psycopg.OperationalError as exc:
            # Tried every second at most, so a worker started during an outage runs within a second of its end.
            outage.failed(first_line(exc))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    if pooled:
        raise ConfigError(pooled)


def _schedule_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "args": args.args, "timezone": args.timezone, "queue": args.queue, "priority": args.priority,
        "max_attempts": args.max_attempts, "timeout_seconds": args.timeout, "catchup": args.catchup,
        "catchup_max": args.catchup_max, "overlap": args.overlap, "description": args.description,
        "catchup_window_seconds": args.catchup_window, "jitter_seconds": args.jitter,
        "pause_after_failures": args.pause_after_failures,
    }


SCHEDULE_COLUMNS = ["name", "task", "cron", "timezone", "enabled", "catchup", "overlap", "next_run_at",
                    "last_state", "last_run_at"]


def cmd_schedule(args: argparse.Namespace, admin: Admin) -> int:
    a = args.action
    if a == "check":
        info = describe_cron(args.cron, args.timezone, count=count(args.count, "--count"))
        if args.json:
            _print_json(info)
        else:
            print(f"{info['cron']}: {info['description']} ({info['timezone']})")
            for t in info["next"]:
                print(f"  {t.isoformat()}")
        return 0
    if a == "add":
        fields = _schedule_fields(args)
        fields["enabled"] = not args.disabled
        row = admin.add_schedule(args.name, cron=args.cron, task=args.task, **fields)
        print(f"schedule '{row['name']}' created; next run {_fmt(row['next_run_at'])}")
    elif a == "edit":
        changes = {k: v for k, v in _schedule_fields(args).items() if v is not None}
        if args.cron is not None:
            changes["cron"] = args.cron
        if args.task is not None:
            changes["task"] = args.task
        if not changes:
            raise AdminError("edit: give at least one option to change (see --help)")
        row = admin.edit_schedule(args.name, **changes)
        print(f"schedule '{row['name']}' updated; next run {_fmt(row['next_run_at'])}")
    elif a == "list":
        rows = admin.list_schedules(search=args.search)
        if args.json:
            _print_json(rows)
        else:
            _table(rows, SCHEDULE_COLUMNS)
    elif a == "show":
        _show(admin.get_schedule(args.name), args.json)
    elif a == "slots":
        since = parse_time("--since", args.since) if args.since else None
        rows = admin.schedule_slots(args.name, since=since, limit=args.limit)
        if args.json:
            _print_json(rows)
        else:
            _table([_slot_line(r) for r in rows], ["slot", "outcome", "slots", "started_at", "late", "job", "reason"])
    elif a == "overdue":
        report = admin.overdue_schedules(intervals=args.intervals)
        if args.json:
            _print_json({"intervals": report["intervals"], "checked_at": report["checked_at"],
                         "overdue": report["overdue"]})
        elif report["overdue"]:
            _table([{**r, "behind": f"{r['overdue_seconds']:.0f}s"} for r in report["overdue"]],
                   ["name", "cron", "last_success_at", "deadline", "behind"])
        else:
            print(f"no schedule is overdue ({len(report['schedules'])} enabled, "
                  f"{report['intervals']:g} intervals)")
        return 1 if report["overdue"] else 0
    elif a == "backfill":
        result = admin.backfill(args.name, start=parse_time("--from", args.start), end=parse_time("--to", args.end),
                                dry_run=args.dry_run, overlap=args.overlap)
        if args.json:
            _print_json(result)
        else:
            verb = "would create" if args.dry_run else "created"
            print(f"backfill of '{args.name}' [{_fmt(result['from'])}, {_fmt(result['to'])}), overlap "
                  f"{result['overlap']}: {result['slots']} slot(s), {result['existing']} already had a job; "
                  f"{verb} {len(result['created'])} job(s)"
                  + (f", {len(result['skipped'])} recorded skipped" if result["skipped"] else ""))
    elif a == "pause":
        admin.pause_schedule(args.name)
        print(f"schedule '{args.name}' paused")
    elif a == "resume":
        row = admin.resume_schedule(args.name)
        print(f"schedule '{args.name}' resumed; next run {_fmt(row['next_run_at'])}")
    elif a == "remove":
        admin.remove_schedule(args.name)
        print(f"schedule '{args.name}' removed (its job history is kept)")
    elif a == "run-now":
        job_id = admin.run_now(args.name)
        print(f"enqueued job {job_id} for schedule '{args.name}'")
    elif a == "apply":
        from pgjobs import declarative

        diff = declarative.apply_file(admin, args.file, prune=args.prune, dry_run=args.dry_run)
        if args.json:
            _print_json({"dry_run": args.dry_run, "changes": [c.as_dict() for c in diff]})
        else:
            print("\n".join(declarative.format_changes(diff, dry_run=args.dry_run)))
    elif a == "import-pg-cron":
        from pgjobs import declarative

        items = declarative.import_pg_cron(admin, dry_run=args.dry_run)
        print("\n".join(declarative.format_import(items, dry_run=args.dry_run)))
    return 0


def _slot_line(r: dict[str, Any]) -> dict[str, Any]:
    """One ledger row for the table: a range shows its last slot and count."""
    outcome = r["outcome"] or "unknown"
    if r["backfilled"]:
        outcome += " (backfilled)"
    slots = "1"
    if r["last_slot"] is not None:
        count = r["slot_count"] if r["slot_count"] is not None else "many"
        slots = f"{count} until {_fmt(r['last_slot'])}"
    late = f"{r['lateness']:.3f}s" if r["lateness"] is not None else None
    return {"slot": r["slot"], "outcome": outcome, "slots": slots, "started_at": r["started_at"], "late": late,
            "job": r["job_id"], "reason": (r["reason"] or "")[:120] or None}


def cmd_enqueue(args: argparse.Namespace, admin: Admin) -> int:
    scheduled_at = parse_time("--scheduled-at", args.scheduled_at) if args.scheduled_at else None
    job_id = admin.enqueue(args.task, args.args, queue=args.queue, priority=args.priority,
                           max_attempts=args.max_attempts, unique_key=args.unique_key, timeout=args.timeout,
                           scheduled_at=scheduled_at)
    print(f"enqueued job {job_id}")
    return 0


def cmd_jobs(args: argparse.Namespace, admin: Admin) -> int:
    a = args.action
    if a == "list":
        rows = admin.list_jobs(schedule=args.schedule, state=args.state, queue=args.queue, task=args.task,
                               limit=args.limit)
        if args.json:
            _print_json([_job_json(r) for r in rows])
        else:
            _table(rows, ["id", "task", "state", "schedule", "slot", "attempt", "started_at", "finished_at",
                          "worker", "last_error"])
    elif a == "show":
        _show(admin.get_job(args.id), args.json)
    elif a == "cancel":
        res = admin.cancel_jobs(args.ids)
        print(f"cancelled {res['cancelled'] or 'none'}; cancel requested for running {res['requested'] or 'none'}")
    elif a == "retry":
        print(f"retrying {admin.retry_jobs(args.ids) or 'none (only finished jobs can be retried)'}")
    elif a == "delete":
        print(f"deleted {admin.delete_jobs(args.ids) or 'none (running jobs cannot be deleted)'}")
    return 0


def cmd_status(args: argparse.Namespace, admin: Admin) -> int:
    st = admin.status()
    if args.json:
        _print_json(st)
        return 0
    leader, foreign = st["leader"], st["foreign_lock_holder"]
    if leader:
        print(f"leader:   {leader['name']} (worker {leader['id']}, since {_fmt(leader['leader_since'])})")
    elif foreign:
        print(f"leader:   NONE: the leader lock is held by backend {foreign['pid']} (application_name "
              f"'{foreign['application_name']}', client {foreign['client_addr'] or 'local socket'}, connected since "
              f"{_fmt(foreign['backend_start'])}), which is not a live pgjobs worker; no cron slots are scheduled "
              f"until it ends: {foreign['clear_with']}")
    else:
        print("leader:   NONE (no worker holds the leader lock: no cron slots are being scheduled)")
    print(f"jobs:     {st['counts']['available']} waiting, {st['counts']['running']} running, "
          f"~{st['jobs_estimate']} rows")
    last = st["last_24h"]
    print(f"last 24h: {last.get('completed', 0)} completed, {last.get('failed', 0)} failed, "
          f"{last.get('skipped', 0)} skipped, {last.get('cancelled', 0)} cancelled")
    late = st["slot_lateness"]
    print(f"lag:      oldest due job waited {st['lag_seconds']:.1f}s; cron slots started "
          f"{late['p50']:.3f}s late (p50, max {late['max']:.3f}s, last {late['runs']} runs in 10 min)")
    if st["schedules_overdue"]:
        print(f"behind:   {st['schedules_overdue']} schedule(s) overdue by up to {st['max_overdue_seconds']:.0f}s "
              "(is a leader running? see docs/troubleshooting.md)")
    for holder in st["horizon_holders"]:
        print(f"horizon:  {describe_horizon_holder(holder)}")
    if len(st["queues"]) > 1:
        _table(st["queues"], ["queue", "available", "scheduled", "running", "lag"])
    print(f"schema:   revision {st['schema_revision'] or 'not migrated'}")
    dead = sum(1 for w in st["workers"] if not w.get("alive", True))
    print(f"workers:  {len(st['workers']) - dead} live" + (f", {dead} dead (jobs being rescued)" if dead else ""))
    leader_id = leader["id"] if leader else None
    _table([{"id": w["id"], "name": w["name"], "queues": ", ".join(w["queues"] or []),
             "threads": w["concurrency"], "running": w["running"],
             "state": "stopping" if w.get("stopping") else "live" if w.get("alive", True) else "dead",
             "heartbeat": _age(w["heartbeat_age"]), "role": "leader" if w["id"] == leader_id else ""}
            for w in st["workers"]], ["id", "name", "queues", "threads", "running", "state", "heartbeat", "role"])
    return 0


def cmd_audit(args: argparse.Namespace, admin: Admin) -> int:
    rows = admin.audit(limit=args.limit, entity_name=args.name)
    if args.json:
        _print_json(rows)
    else:
        _table(rows, ["id", "at", "actor", "action", "entity", "entity_name"])
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from pgjobs.tasks import registered

    rows = [{"name": t.name, "description": t.description.splitlines()[0] if t.description else ""}
            for t in registered()]
    if args.json:
        _print_json(rows)
    else:
        _table(rows, ["name", "description"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit 0 on success, 2 with one line for anything the user can fix, 1 with one line
    for anything else (the traceback only with --debug); a closed stdout (`| head`) ends quietly."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (AdminError, ConfigError, TaskError) as exc:
        _error(str(exc))
        return 2
    except psycopg.errors.UndefinedTable:
        _error("pgjobs tables not found: run `pgjobs migrate` (or `alembic upgrade head`) first")
        return 2
    except psycopg.OperationalError as exc:
        _error(f"database unavailable: {first_line(exc)}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except Exception as exc:  # the last resort: one line, never a traceback unless asked for
        if type(exc).__name__ == "MigrationError":
            _error(str(exc))
            return 1
        if args.debug:
            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)")
        return 1


def _error(message: str) -> None:
    try:
        print(f"pgjobs: error: {one_line(message)}", file=sys.stderr)
    except (BrokenPipeError, OSError):
        pass


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _run(args: argparse.Namespace) -> int:
    ensure_builtins()
    if args.command == "worker":
        return cmd_worker(args)
    settings = _settings(args)
    import_modules(settings.imports)
    if args.command == "migrate":
        return cmd_migrate(args)
    if args.command == "demo":
        from pgjobs import demo

        return demo.run(args, settings)
    if args.command == "tasks":
        return cmd_tasks(args)
    if args.command == "schedule" and args.action == "check":
        return cmd_schedule(args, None)  # type: ignore[arg-type]
    settings.require_database()
    admin = Admin(settings)
    handler = {"schedule": cmd_schedule, "enqueue": cmd_enqueue, "jobs": cmd_jobs, "status": cmd_status,
               "audit": cmd_audit}[args.command]
    return handler(args, admin)
