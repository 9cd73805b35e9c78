"""The CLI's edges: refused input is one line and exit 2, anything unexpected one line and exit 1, a closed
pipe is quiet, --help works everywhere, an unmigrated or unreachable database says what to do."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pgjobs.cli import build_parser, main


def _counts(db: psycopg.Connection) -> tuple:
    return db.execute("SELECT (SELECT count(*) FROM pgjobs.schedules), (SELECT count(*) FROM pgjobs.jobs), "
                      "(SELECT count(*) FROM pgjobs.audit)").fetchone()


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(child, (*prefix, name))


def test_help_works_on_every_subcommand(capsys) -> None:
    commands = list(_subcommands(build_parser()))
    assert len(commands) > 10
    for command in commands:
        try:
            main([*command, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, command
        out, _ = capsys.readouterr()
        assert "usage: pgjobs" in out, command


def test_schedule_check_count_is_bounded(capsys) -> None:
    for count in ("-1", "0", "10000000"):
        code, _, err = _run(capsys, "schedule", "check", "* * * * *", "--count", count)
        assert code == 2 and err.count("\n") == 1 and "count" in err, err
    code, out, _ = _run(capsys, "schedule", "check", "* * * * *", "--count", "1000")
    assert code == 0


def test_a_bad_log_level_is_refused_at_worker_start(capsys, db_url, monkeypatch) -> None:
    monkeypatch.setenv("PGJOBS_LOG_LEVEL", "bogus")
    code, _, err = _run(capsys, "--database-url", db_url, "worker")
    assert code == 2 and err.count("\n") == 1 and "log_level" in err, err


def test_a_spinning_poll_interval_is_refused_at_worker_start(capsys, db_url, monkeypatch) -> None:
    monkeypatch.setenv("PGJOBS_POLL_INTERVAL", "0")
    code, _, err = _run(capsys, "--database-url", db_url, "worker")
    assert code == 2 and err.count("\n") == 1 and "poll_interval" in err, err


def test_status_on_an_unmigrated_database_says_run_migrate(capsys, empty_db_url) -> None:
    code, _, err = _run(capsys, "--database-url", empty_db_url, "status")
    assert code == 2 and err.count("\n") == 1 and "run pgjobs migrate" in err, err


def test_a_refused_connection_keeps_its_reason_on_one_line(capsys) -> None:
    code, _, err = _run(capsys, "--database-url", "postgresql://postgres@127.0.0.1:1/x", "status")
    assert code in (1, 2) and err.count("\n") == 1, err
    assert "connection refused" in err.lower(), err


def test_an_unexpected_error_is_one_line_exit_1_and_traceback_only_with_debug(capsys, monkeypatch) -> None:
    import pgjobs.cli as cli

    def boom(args):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(cli, "cmd_tasks", boom)
    code, _, err = _run(capsys, "tasks")
    assert code == 1 and err.count("\n") == 1 and "kaboom" in err and "--debug" in err, err
    code, _, err = _run(capsys, "--debug", "tasks")
    assert code == 1 and "Traceback" in err


def _env(db_url: str) -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": root, "PGJOBS_DATABASE_URL": db_url}


def test_a_closed_pipe_exits_quietly(db_url, admin) -> None:
    admin.enqueue_many("pgjobs.noop", [{}] * 300)
    proc = subprocess.run(f"{sys.executable} -m pgjobs jobs list --limit 300 | head -1", shell=True,
                          capture_output=True, text=True, env=_env(db_url), timeout=60)
    assert proc.stderr == "", proc.stderr


def test_hostile_args_through_a_real_process_are_one_line_exit_2(db_url, db) -> None:
    before = _counts(db)
    for args in ('{"a": "\\u0000"}', "[" * 10_000, '{"a": "\\ud800"}'):
        proc = subprocess.run([sys.executable, "-m", "pgjobs", "enqueue", "pgjobs.noop", "--args", args],
                              capture_output=True, text=True, env=_env(db_url), timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert _counts(db) == before


_hostile = st.text(max_size=40) | st.sampled_from(["-1", "0", "nan", "inf", "-inf", "1e400", "\x00", "\ud800",
                                                    "'; DROP TABLE pgjobs.jobs; --", "[" * 200, "x" * 1000])


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timeout=_hostile, attempts=_hostile, priority=_hostile, args=_hostile, queue=_hostile)
def test_random_hostile_enqueue_flags_succeed_or_exit_2_in_one_line(
        capsys, db_url, db, timeout, attempts, priority, args, queue) -> None:
    before = _counts(db)
    argv = ["--database-url", db_url, "enqueue", "pgjobs.noop", "--args", args, "--queue", queue,
            "--priority", priority, "--max-attempts", attempts, "--timeout", timeout]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing a flag value: exit 2 with usage
        assert exc.code == 2
        capsys.readouterr()
        assert _counts(db) == before
        return
    _, err = capsys.readouterr()
    if code != 0:
        assert code == 2 and err.count("\n") == 1 and err.startswith("pgjobs: error: "), (code, err)
        assert _counts(db) == before


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_hostile, cron=_hostile, tz=_hostile, count=_hostile)
def test_random_hostile_schedule_input_succeeds_or_exits_2_in_one_line(capsys, db_url, db, name, cron, tz,
                                                                         count) -> None:
    before = _counts(db)
    for argv in (["schedule", "check", cron, "--timezone", tz, "--count", count],
                 ["schedule", "add", name, "--cron", cron, "--task", "pgjobs.noop", "--timezone", tz]):
        try:
            code = main(["--database-url", db_url, *argv])
        except SystemExit as exc:
            assert exc.code == 2
            capsys.readouterr()
            continue
        _, err = capsys.readouterr()
        if code != 0:
            assert code == 2 and err.count("\n") == 1 and err.startswith("pgjobs: error: "), (code, err)
            assert _counts(db) == before
        else:
            before = _counts(db)
