"""Schedules from outside the database: a schedules file (`pgjobs schedule apply`) and pg_cron's `cron.job`
(`pgjobs schedule import-pg-cron`).

Both go through the admin API, so a schedule from a file or from pg_cron passes the same validation and is
audited like one typed into the console. The format of the file is documented in docs/schedules-file.md.

Apply, in three steps:
1. load and validate EVERY entry (admin's `validate_name` / `validate_schedule_fields`, the one place the
   rules live); any invalid entry is a one-line error naming the file, the schedule and the field, and
   nothing is written;
2. diff against the database: create, update (only the changed fields), remove (with `prune`), unchanged;
3. unless `dry_run`, apply the diff in ONE transaction (`Admin.transaction()`): all of it or none.
Applying the same file twice changes nothing the second time (idempotent). `enabled` is only managed when
the file says it: a schedule an operator paused stays paused across deploys that do not mention it.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from pgjobs.admin import DEFAULTS, SCHEDULE_FIELDS, Admin, AdminError, validate_name, validate_schedule_fields
from pgjobs.queries import queries
from pgjobs.rows import one
from pgjobs.tasks import TaskError, get_task
from pgjobs.validation import ARGS_MAX_BYTES, echo


class ScheduleFileError(AdminError):
    """The schedules file cannot be read or one of its entries is invalid; nothing was written."""


@dataclass
class Change:
    """One line of the diff: `action` is create, update, remove or unchanged."""

    action: str
    name: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (before, after)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "name": self.name,
                "changes": {k: {"before": b, "after": a} for k, (b, a) in self.changes.items()}}


# ---------------------------------------------------------------------------------------------- loading
def load_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) schedules file into {name: fields} (not yet validated)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ScheduleFileError(f"{p}: unknown file type '{suffix or '(none)'}': use .toml, .yaml or .yml")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScheduleFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScheduleFileError(f"{p}: invalid TOML: {exc}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            hint = " (quote cron expressions: a YAML value cannot start with '*')" if "alias" in str(exc) else ""
            raise ScheduleFileError(f"{p}: invalid YAML{where}: {problem}{hint}") from None
    return parse_document(data, str(p))


def parse_document(data: Any, source: str = "schedules file") -> dict[str, dict[str, Any]]:
    """`{"schedules": {name: {...}}}` or `{"schedules": [{"name": ..., ...}]}` -> {name: fields}."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScheduleFileError(f"{source}: expected a table/mapping with a 'schedules' key at the top")
    extra = set(data) - {"schedules"}
    if extra:
        raise ScheduleFileError(f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, extra)))}; "
                                "only 'schedules' is allowed")
    raw = data.get("schedules", {})
    entries: dict[str, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for name, fields in raw.items():
            if not isinstance(fields, dict):
                raise ScheduleFileError(f"{source}: schedule '{name}': expected a table of fields")
            if "name" in fields and fields["name"] != name:
                raise ScheduleFileError(f"{source}: schedule '{name}': field 'name' differs from its key")
            entries[str(name)] = {k: v for k, v in fields.items() if k != "name"}
    elif isinstance(raw, list):
        for i, fields in enumerate(raw, 1):
            if not isinstance(fields, dict) or "name" not in fields:
                raise ScheduleFileError(f"{source}: schedule #{i}: needs a 'name'")
            name = str(fields["name"])
            if name in entries:
                raise ScheduleFileError(f"{source}: schedule '{name}' appears twice")
            entries[name] = {k: v for k, v in fields.items() if k != "name"}
    else:
        raise ScheduleFileError(f"{source}: 'schedules' must be a table keyed by name or a list of tables")
    return entries


def validate_entries(entries: dict[str, dict[str, Any]], source: str = "schedules file",
                     max_args_bytes: int = ARGS_MAX_BYTES) -> dict[str, dict[str, Any]]:
    """Every entry checked by the admin API's rules; returns normalized fields, or raises ScheduleFileError
    listing every invalid entry (one line: 'file: schedule 'x': field: problem; ...')."""
    errors: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    for name, fields in entries.items():
        try:
            validate_name(name)
            unknown = sorted(set(fields) - set(SCHEDULE_FIELDS))
            if unknown:
                raise AdminError(f"{unknown[0]}: unknown field (known: name, {', '.join(SCHEDULE_FIELDS)})",
                                 field=unknown[0])
            for required in ("cron", "task"):
                if fields.get(required) in (None, ""):
                    raise AdminError(f"{required}: required", field=required)
            normalized = validate_schedule_fields({**DEFAULTS, **fields}, max_args_bytes=max_args_bytes)
            if "enabled" not in fields:
                normalized.pop("enabled")  # not managed by this file: keep what the database has
            out[name] = normalized
        except AdminError as exc:
            msg = str(exc)
            where = exc.field
            if where and not msg.startswith(where) and not msg.startswith(f"{where}:"):
                msg = f"{where}: {msg}"
            errors.append(f"schedule {echo(name)}: {msg}")
    if errors:
        raise ScheduleFileError(f"{source}: {'; '.join(errors)}; nothing was written")
    return out


# ---------------------------------------------------------------------------------------------- diff + apply
def _all_schedules(admin: Admin) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = admin.list_schedules(limit=1000, offset=offset)
        rows.update({r["name"]: r for r in page})
        if len(page) < 1000:
            return rows
        offset += 1000


FIELD_ORDER = ("cron", "task", "args", *(f for f in SCHEDULE_FIELDS if f not in ("cron", "task", "args")))


def diff(desired: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], *, prune: bool) -> list[Change]:
    """Changes that turn `current` (database rows) into `desired` (validated file entries). Pure."""
    changes: list[Change] = []
    for name, unordered in desired.items():
        want = {k: unordered[k] for k in FIELD_ORDER if k in unordered}
        have = current.get(name)
        if have is None:
            changes.append(Change("create", name, {k: (None, v) for k, v in want.items()}))
            continue
        delta = {k: (have[k], v) for k, v in want.items() if _differs(have[k], v)}
        changes.append(Change("update" if delta else "unchanged", name, delta))
    if prune:
        changes += [Change("remove", name) for name in sorted(current) if name not in desired]
    return changes


def _differs(before: Any, after: Any) -> bool:
    if isinstance(before, int | float) and isinstance(after, int | float) and not isinstance(before, bool):
        return float(before) != float(after)
    return json.dumps(before, sort_keys=True, default=str) != json.dumps(after, sort_keys=True, default=str)


def apply_entries(admin: Admin, desired: dict[str, dict[str, Any]], *, prune: bool = False,
                  dry_run: bool = False) -> list[Change]:
    """Diff validated entries against the database and (unless dry_run) apply it in one transaction."""
    changes = diff(desired, _all_schedules(admin), prune=prune)
    if dry_run or all(c.action == "unchanged" for c in changes):
        return changes
    with admin.transaction() as tx:
        for c in changes:
            if c.action == "create":
                fields = dict(desired[c.name])
                tx.add_schedule(c.name, cron=fields.pop("cron"), task=fields.pop("task"), **fields)
            elif c.action == "update":
                tx.edit_schedule(c.name, **{k: after for k, (_, after) in c.changes.items()})
            elif c.action == "remove":
                tx.remove_schedule(c.name)
    return changes


def apply_file(admin: Admin, path: str | Path, *, prune: bool = False, dry_run: bool = False) -> list[Change]:
    """`pgjobs schedule apply FILE [--prune] [--dry-run]`: validate all, then apply all or nothing."""
    limit = admin.settings.max_args_bytes if admin is not None else ARGS_MAX_BYTES  # None: validate only
    desired = validate_entries(load_file(path), str(path), limit)
    return apply_entries(admin, desired, prune=prune, dry_run=dry_run)


def _short(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True) if not isinstance(value, str) else repr(value)


def format_changes(changes: list[Change], *, dry_run: bool) -> list[str]:
    lines = []
    for c in changes:
        if c.action == "create":
            shown = ", ".join(f"{k}={_short(a)}" for k, (_, a) in c.changes.items()
                              if k in ("cron", "task", "args", "timezone") or a != DEFAULTS.get(k))
            lines.append(f"create     {c.name}: {shown}")
        elif c.action == "update":
            shown = "; ".join(f"{k}: {_short(b)} -> {_short(a)}" for k, (b, a) in c.changes.items())
            lines.append(f"update     {c.name}: {shown}")
        elif c.action == "remove":
            lines.append(f"remove     {c.name}")
    n = {a: sum(1 for c in changes if c.action == a) for a in ("create", "update", "remove", "unchanged")}
    if dry_run:
        lines.append(f"dry run, nothing written: {n['create']} to create, {n['update']} to update, "
                     f"{n['remove']} to remove, {n['unchanged']} unchanged")
    else:
        lines.append(f"applied: {n['create']} created, {n['update']} updated, {n['remove']} removed, "
                     f"{n['unchanged']} unchanged")
    return lines


# ---------------------------------------------------------------------------------------------- pg_cron import
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_REFRESH_RE = re.compile(
    rf"^\s*REFRESH\s+MATERIALIZED\s+VIEW\s+(?P<conc>CONCURRENTLY\s+)?(?P<a>{_IDENT})(?:\s*\.\s*(?P<b>{_IDENT}))?"
    r"(?:\s+WITH\s+DATA)?\s*;?\s*$", re.IGNORECASE | re.DOTALL)


def _ident(token: str) -> str:
    """An SQL identifier as Postgres reads it: quoted keeps case (\"\" is a quote), unquoted folds to lower."""
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


def parse_refresh(command: str) -> dict[str, Any] | None:
    """`REFRESH MATERIALIZED VIEW [CONCURRENTLY] [schema.]view [WITH DATA][;]` -> refresh task args, else None."""
    m = _REFRESH_RE.match(command)
    if m is None:
        return None
    args: dict[str, Any] = {"view": _ident(m["b"] or m["a"]), "concurrently": bool(m["conc"])}
    if m["b"]:
        args["schema"] = _ident(m["a"])
    return args


@dataclass
class PgCronJob:
    jobid: int
    schedule: str
    command: str
    database: str
    username: str
    active: bool
    jobname: str | None


@dataclass
class ImportItem:
    """What happens to one pg_cron job: `import`, `exists` (name taken) or `skip` (with the reason)."""

    job: PgCronJob
    outcome: str
    name: str
    reason: str = ""
    task: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def read_pg_cron(admin: Admin) -> tuple[list[PgCronJob], str, str]:
    """The rows of `cron.job` (pg_cron or a stand-in table), and the current database and user."""
    q = queries(admin.settings.schema)
    with psycopg.connect(admin.settings.require_database(), autocommit=True, connect_timeout=10,
                         application_name="pgjobs import-pg-cron") as conn:
        row: tuple[bool, str, str] = one(conn.execute(q.pg_cron_present))
        present, database, user = row
        if not present:
            raise AdminError(f"no pg_cron job table here: cron.job does not exist in database '{database}'")
        rows = conn.execute(q.pg_cron_jobs).fetchall()
    return [PgCronJob(*r) for r in rows], database, user


def plan_pg_cron_import(admin: Admin, jobs: list[PgCronJob], database: str, user: str) -> list[ImportItem]:
    """Decide, for every pg_cron job, the equivalent schedule or why there is none. Validates through the
    admin API's rules; writes nothing."""
    existing = set(_all_schedules(admin))
    sql_enabled = _sql_task_enabled(admin)
    items: list[ImportItem] = []
    taken: set[str] = set()
    for job in jobs:
        name = job.jobname or f"pg_cron-{job.jobid}"
        if job.database != database:
            items.append(ImportItem(job, "skip", name, f"runs in database '{job.database}'; pgjobs here runs "
                                    f"in '{database}' (import it from a pgjobs installed there)"))
            continue
        refresh = parse_refresh(job.command)
        if refresh is not None:
            task, args, overlap = "pgjobs.refresh_materialized_view", refresh, "skip"
        elif sql_enabled:
            # pg_cron never runs two instances of a job at once: at most one run waits, as 'buffer_one' does.
            task, args, overlap = "pgjobs.sql", {"sql": job.command}, "buffer_one"
        else:
            items.append(ImportItem(job, "skip", name, "not a REFRESH MATERIALIZED VIEW and SQL tasks are disabled "
                                    "(set PGJOBS_SQL_TASKS=1 to import it as a pgjobs.sql task)"))
            continue
        if name in existing or name in taken:
            items.append(ImportItem(job, "exists", name, f"a schedule named '{name}' already exists"))
            continue
        fields = {"cron": job.schedule.strip(), "task": task, "args": args, "timezone": "UTC",
                  "enabled": bool(job.active), "overlap": overlap,
                  "description": f"imported from pg_cron job {job.jobid}: {' '.join(job.command.split())}"[:500]}
        try:
            validate_name(name)
            fields = validate_schedule_fields({**DEFAULTS, **fields})
        except AdminError as exc:
            items.append(ImportItem(job, "skip", name, str(exc)))
            continue
        reason = ""
        if job.username != user:
            reason = f"ran as '{job.username}' in pg_cron; pgjobs runs it as '{user}'"
        taken.add(name)
        items.append(ImportItem(job, "import", name, reason, task, fields))
    return items


def _sql_task_enabled(admin: Admin) -> bool:
    if not admin.settings.sql_tasks:
        return False
    from pgjobs.builtin import enable_sql_task

    enable_sql_task()
    try:
        get_task("pgjobs.sql")
    except TaskError:
        return False
    return True


def import_pg_cron(admin: Admin, *, dry_run: bool = False) -> list[ImportItem]:
    """`pgjobs schedule import-pg-cron [--dry-run]`: create the schedules (one transaction) and report."""
    jobs, database, user = read_pg_cron(admin)
    items = plan_pg_cron_import(admin, jobs, database, user)
    todo = [i for i in items if i.outcome == "import"]
    if todo and not dry_run:
        with admin.transaction() as tx:
            for item in todo:
                fields = dict(item.fields)
                tx.add_schedule(item.name, cron=fields.pop("cron"), task=fields.pop("task"), **fields)
    return items


def format_import(items: list[ImportItem], *, dry_run: bool) -> list[str]:
    lines = []
    verb = "would import" if dry_run else "imported"
    for i in items:
        label = f"pg_cron job {i.job.jobid}" + (f" '{i.job.jobname}'" if i.job.jobname else "")
        if i.outcome == "import":
            paused = "" if i.fields["enabled"] else ", paused (inactive in pg_cron)"
            note = f"; note: {i.reason}" if i.reason else ""
            lines.append(f"{verb:12} {label} -> schedule '{i.name}' ({i.task}, '{i.fields['cron']}' UTC{paused}){note}")
        elif i.outcome == "exists":
            lines.append(f"{'exists':12} {label}: {i.reason}; not imported")
        else:
            lines.append(f"{'not imported':12} {label}: {i.reason}")
    done = [i for i in items if i.outcome == "import"]
    lines.append(f"{'dry run, nothing written: ' if dry_run else ''}{len(done)} {verb}, "
                 f"{sum(1 for i in items if i.outcome == 'exists')} already existed, "
                 f"{sum(1 for i in items if i.outcome == 'skip')} not imported")
    if done:
        lines.append("Once pgjobs runs them, stop them in pg_cron" + (" (after the real import)" if dry_run else "")
                     + ":")
        lines += [f"  SELECT cron.unschedule({i.job.jobid});" for i in done]
    return lines
