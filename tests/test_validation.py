"""Every input bounded and validated once (pgjobs/validation.py): each refusal is one line naming the field,
echoing at most ~80 characters of the value, and writes nothing; settings that would make a worker spin are
refused at start."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgjobs import validation as v
from pgjobs.admin import Admin, AdminError, describe_cron
from pgjobs.cli import main
from pgjobs.config import SETTINGS, ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
URL = "postgresql://x@localhost/db"


def digest(db: psycopg.Connection) -> str:
    """One hash over every row of every pgjobs table: equal before and after means nothing was written."""
    tables = [r[0] for r in db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'pgjobs' "
        "AND table_type = 'BASE TABLE' ORDER BY 1")]
    parts = []
    for t in tables:
        parts.append(db.execute(psycopg.sql.SQL(
            "SELECT {t}, count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM pgjobs.{i} x"
        ).format(t=psycopg.sql.Literal(t), i=psycopg.sql.Identifier(t))).fetchone())
    return json.dumps(parts, default=str)


def assert_one_line(message: str, field: str | None = None) -> None:
    assert "\n" not in message and "\r" not in message and len(message) <= v.MESSAGE_CHARS, message
    if field:
        assert field in message, message


# ---------------------------------------------------------------------- pure rules
@pytest.mark.parametrize("bad", [-5, 0, float("nan"), float("inf"), "abc", 7 * 86400 + 1, True, "1" * 100])
def test_a_timeout_that_would_abandon_a_job_at_once_or_never_is_refused(bad) -> None:
    with pytest.raises(AdminError) as err:
        v.timeout(bad)
    assert err.value.field == "timeout"
    assert_one_line(str(err.value), "timeout")


def test_max_attempts_zero_is_refused_not_read_as_the_default() -> None:
    with pytest.raises(AdminError, match="max_attempts: 0 is outside 1..1000"):
        v.max_attempts(0)
    assert v.max_attempts(1) == 1


@pytest.mark.parametrize(("value", "problem"), [
    ('{"a": "\\u0000"}', "u0000"),
    ({"a\x00": 1}, "u0000"),
    ('{"a": "\\ud800"}', "lone surrogate"),
    ({"\ud800": 1}, "lone surrogate"),
    ("[" * 10_000 + "]" * 10_000, "deep"),
    ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "deep"),
    ({"a": float("nan")}, "not a JSON number"),
    ("[1]", "must be a JSON object"),
    ('{"n": ' + "9" * 5000 + "}", "invalid JSON"),
])
def test_args_postgres_jsonb_cannot_store_are_refused_in_one_line(value, problem) -> None:
    with pytest.raises(AdminError) as err:
        v.args(value)
    assert problem in str(err.value) and err.value.field == "args"
    assert_one_line(str(err.value), "args")


def test_args_nested_10000_deep_as_a_python_object_never_raise_recursion_error() -> None:
    deep: dict = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(AdminError, match="nested more than 64 deep"):
        v.args(deep)


def test_args_over_the_size_limit_are_refused_and_the_limit_is_configurable() -> None:
    big = {"x": "a" * (v.ARGS_MAX_BYTES + 1)}
    with pytest.raises(AdminError, match="PGJOBS_MAX_ARGS_BYTES"):
        v.args(big)
    with pytest.raises(AdminError, match="PGJOBS_MAX_ARGS_BYTES"):
        v.args(json.dumps(big))
    assert v.args({"x": "a" * 2000}, max_bytes=4096)[0] == {"x": "a" * 2000}
    with pytest.raises(AdminError):
        v.args({"x": "a" * 2000}, max_bytes=1024)


def test_an_error_echoes_at_most_80_characters_of_a_huge_bad_value() -> None:
    with pytest.raises(AdminError) as err:
        describe_cron("x" * 10_000_000)
    assert len(str(err.value)) < 200 and err.value.field == "cron"
    with pytest.raises(AdminError) as err:
        v.schedule_name("nightly\nrm -rf")
    assert_one_line(str(err.value), "name")


@pytest.mark.parametrize("count", [-1, 0, 1001, 10_000_000])
def test_schedule_check_count_is_bounded(count: int) -> None:
    with pytest.raises(AdminError, match="count"):
        v.count(count)


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize(("name", "bad"), [
    ("poll_interval", 0), ("poll_interval", -1), ("poll_interval", float("nan")), ("poll_interval", float("inf")),
    ("heartbeat_interval", 0), ("heartbeat_interval", float("nan")), ("maintenance_interval", 0),
    ("rescue_after", float("inf")), ("concurrency", 0), ("backoff_max", float("inf")),
    ("max_args_bytes", 10**12), ("log_level", "bogus"), ("poll_interval", "abc"),
])
def test_settings_that_would_make_a_worker_spin_or_never_act_are_refused_from_keywords(name, bad) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.load(database_url=URL, **{name: bad})
    assert_one_line(str(err.value), name)
    assert SETTINGS[name].env in str(err.value)


@pytest.mark.parametrize(("env", "raw"), [
    ("PGJOBS_POLL_INTERVAL", "0"), ("PGJOBS_HEARTBEAT_INTERVAL", "nan"), ("PGJOBS_MAINTENANCE_INTERVAL", "0"),
    ("PGJOBS_RESCUE_AFTER", "inf"), ("PGJOBS_LOG_LEVEL", "bogus"),
])
def test_pgjobs_worker_exits_2_with_one_line_naming_the_variable(env: str, raw: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pgjobs", "worker"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), "PGJOBS_DATABASE_URL": URL,
                                           env: raw})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and env in lines[0], proc.stderr


def test_a_settings_copy_is_checked_like_load() -> None:
    with pytest.raises(ConfigError, match="PGJOBS_POLL_INTERVAL"):
        Settings.load(database_url=URL).with_(poll_interval=0)


def test_good_settings_still_load() -> None:
    s = Settings.load(database_url=URL, poll_interval="0.5", log_level="debug")
    assert s.poll_interval == 0.5 and s.log_level == "DEBUG" and math.isfinite(s.rescue_after)


# ---------------------------------------------------------------------- the API and the CLI on a database
BAD_ENQUEUE = [
    ({"timeout": -5}, "timeout"), ({"timeout": 0}, "timeout"), ({"timeout": float("nan")}, "timeout"),
    ({"timeout": float("inf")}, "timeout"), ({"timeout": "abc"}, "timeout"), ({"max_attempts": 0}, "max_attempts"),
    ({"scheduled_at": "tomorrow"}, "scheduled_at"), ({"priority": 10**6}, "priority"),
    ({"args": '{"a": "\\u0000"}'}, "args"), ({"args": {"a": "\ud800"}}, "args"),
    ({"args": "[" * 10_000 + "]" * 10_000}, "args"), ({"queue": "a,b"}, "queue"),
    ({"unique_key": "k\n"}, "unique_key"),
]


@pytest.mark.parametrize(("options", "field"), BAD_ENQUEUE, ids=[f for _, f in BAD_ENQUEUE])
def test_admin_enqueue_refuses_with_one_line_and_writes_nothing(admin: Admin, db, options, field) -> None:
    before = digest(db)
    args = options.pop("args", None)
    with pytest.raises(AdminError) as err:
        admin.enqueue("pgjobs.noop", args, **options)
    assert err.value.field == field
    assert_one_line(str(err.value), field)
    assert digest(db) == before


@pytest.mark.parametrize("argv", [
    ["enqueue", "pgjobs.noop", "--timeout", "-5"], ["enqueue", "pgjobs.noop", "--timeout", "nan"],
    ["enqueue", "pgjobs.noop", "--timeout", "inf"], ["enqueue", "pgjobs.noop", "--max-attempts", "0"],
    ["enqueue", "pgjobs.noop", "--args", '{"a": "\\u0000"}'],
    ["schedule", "add", "x", "--cron", "* " * 500_000, "--task", "pgjobs.noop"],
    ["schedule", "add", "x\ny", "--cron", "* * * * *", "--task", "pgjobs.noop"],
    ["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.noop", "--timeout", "0"],
    ["schedule", "check", "* * * * * *", "--count", "10000000"], ["schedule", "check", "* * * * *", "--count", "-1"],
])
def test_cli_refuses_with_exit_2_one_line_and_writes_nothing(capsys, db_url, db, argv) -> None:
    before = digest(db)
    code = main(["--database-url", db_url, *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and len(err) < 600, err
    assert digest(db) == before


def test_schedules_file_error_names_the_field_from_admin_error_field(tmp_path) -> None:
    from pgjobs import declarative
    from pgjobs.declarative import ScheduleFileError

    path = tmp_path / "s.toml"
    path.write_text('[schedules.bad]\ncron = "@daily"\ntask = "pgjobs.noop"\ntimeout_seconds = -5\n')
    with pytest.raises(ScheduleFileError) as err:
        # an Admin on a database that does not exist: the file is refused before any connection
        declarative.apply_file(Admin(Settings.load(database_url="postgresql://nobody@127.0.0.1:1/none")), path)
    assert "schedule 'bad': timeout_seconds: " in str(err.value)


def test_cli_unexpected_exception_is_one_line_exit_1_traceback_only_with_debug(capsys, db_url, monkeypatch) -> None:
    def boom(self):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(Admin, "status", boom)
    assert main(["--database-url", db_url, "status"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "pgjobs: error: unexpected RuntimeError: kaboom (run with --debug for the traceback)"]
    assert main(["--debug", "--database-url", db_url, "status"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_refused_connection_keeps_the_first_line_of_the_reason(capsys) -> None:
    code = main(["--database-url", "postgresql://nobody@127.0.0.1:1/nodb", "jobs", "list"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "127.0.0.1" in err and "refused" in err.lower(), err


def test_jobs_list_into_a_closed_pipe_exits_quietly(db_url, admin: Admin) -> None:
    admin.enqueue_many("pgjobs.noop", [{}] * 3000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(f"{sys.executable} -m pgjobs --database-url '{db_url}' jobs list --limit 3000 | head -1",
                          shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.startswith("ID") and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("argv", [
    ["--help"], ["worker", "--help"], ["schedule", "--help"], ["schedule", "add", "--help"],
    ["schedule", "check", "--help"], ["schedule", "backfill", "--help"], ["enqueue", "--help"],
    ["jobs", "list", "--help"], ["jobs", "cancel", "--help"], ["status", "--help"], ["audit", "list", "--help"],
    ["tasks", "--help"], ["demo", "--help"], ["migrate", "--help"],
])
def test_help_works_on_every_subcommand(capsys, argv) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "usage: pgjobs" in capsys.readouterr().out


# ---------------------------------------------------------------------- the two bulk-enqueue bugs
def test_refresh_materialized_view_can_be_bulk_enqueued(admin: Admin, db) -> None:
    # enqueue_many checked the task against empty args ({}), which refresh_materialized_view refuses.
    assert admin.enqueue_many("pgjobs.refresh_materialized_view", [{"view": "a"}, {"view": "b"}]) == 2
    views = [r[0] for r in db.execute("SELECT args->>'view' FROM pgjobs.jobs ORDER BY id")]
    assert views == ["a", "b"]


def test_one_bad_job_in_a_bulk_enqueue_refuses_them_all_and_writes_nothing(admin: Admin, db) -> None:
    before = digest(db)
    with pytest.raises(AdminError, match="job 2: .*view"):
        admin.enqueue_many("pgjobs.refresh_materialized_view", [{"view": "a"}, {}])
    assert digest(db) == before


def test_a_bulk_enqueued_job_keeps_its_tasks_registered_timeout(admin: Admin, db) -> None:
    from pgjobs.tasks import task

    @task("tests.validation_timed", timeout=42.0)
    def timed() -> None:
        return None

    admin.enqueue_many("tests.validation_timed", [{}, {}])
    assert [r[0] for r in db.execute("SELECT timeout_seconds FROM pgjobs.jobs ORDER BY id")] == [42.0, 42.0]
    admin.enqueue_many("tests.validation_timed", [{}], timeout=7)
    assert db.execute("SELECT timeout_seconds FROM pgjobs.jobs ORDER BY id DESC LIMIT 1").fetchone()[0] == 7.0


def test_a_schedules_file_is_held_to_the_configured_args_limit() -> None:
    """`schedule apply` checks a file's args against PGJOBS_MAX_ARGS_BYTES, not the built-in default."""
    from pgjobs.declarative import ScheduleFileError, validate_entries

    entries = {"big": {"cron": "*/5 * * * *", "task": "pgjobs.noop", "args": {"pad": "x" * 200}}}
    assert validate_entries(entries)["big"]["args"] == {"pad": "x" * 200}
    with pytest.raises(ScheduleFileError, match="schedule 'big': args: .*limit of 100") as exc:
        validate_entries(entries, max_args_bytes=100)
    assert "\n" not in str(exc.value)
