"""Property tests: the admin API and the CLI driven with random and hostile strings, numbers and JSON. The only
acceptable outcomes are success, or an AdminError (exit 2 from the CLI) with one line, and after an error the
pgjobs tables are unchanged. Example counts are bounded so the file runs in seconds."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validation import assert_one_line, digest

from pgjobs.admin import Admin, AdminError
from pgjobs.cli import main

EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HOSTILE = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\ud800", "\n", "a\nb", "\r\n", "'; DROP TABLE pgjobs.jobs; --", "%(queue)s", "{}",
    "x" * 10_000, "é" * 300, "nan", "inf", "-inf", "-5", "0", "1e309", "9" * 50, "*/61 * * * *", "@reboot",
    "* * * * * *", "Mars/Base", "UTC", "default", "pgjobs.noop", "\u2028", "\x7f",
])
TEXT = st.one_of(HOSTILE, st.text(max_size=40), st.text(max_size=400))
NUMBER = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                   HOSTILE, st.none(), st.booleans())
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT)
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(TEXT, kids, max_size=4)), max_leaves=12)
ARGS = st.one_of(st.dictionaries(TEXT, JSON, max_size=4), JSON, TEXT,
                 st.integers(1, 3).map(lambda k: "[" * (30 * k) + "]" * (30 * k)),
                 st.just('{"a": ' + "[" * 5000 + "]" * 5000 + "}"))


def _cli_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


@EXAMPLES
@given(task=st.one_of(st.just("pgjobs.noop"), TEXT), args=ARGS, queue=st.one_of(st.just("default"), TEXT),
       priority=NUMBER, max_attempts=NUMBER, timeout=NUMBER, scheduled_at=st.one_of(st.none(), TEXT))
def test_admin_enqueue_succeeds_or_refuses_in_one_line_writing_nothing(admin: Admin, db, task, args, queue, priority,
                                                                       max_attempts, timeout, scheduled_at) -> None:
    before = digest(db)
    try:
        admin.enqueue(task, args, queue=queue, priority=priority, max_attempts=max_attempts, timeout=timeout,
                      scheduled_at=scheduled_at)
    except AdminError as exc:
        assert_one_line(str(exc))
        assert exc.field, str(exc)
        assert digest(db) == before


@EXAMPLES
@given(name=st.one_of(st.just("fuzz"), TEXT), cron=st.one_of(st.just("* * * * *"), TEXT),
       timezone=st.one_of(st.just("UTC"), TEXT), args=ARGS, max_attempts=NUMBER, timeout=NUMBER,
       priority=NUMBER)
def test_admin_add_schedule_succeeds_or_refuses_in_one_line_writing_nothing(admin: Admin, db, name, cron, timezone,
                                                                            args, max_attempts, timeout,
                                                                            priority) -> None:
    before = digest(db)
    try:
        admin.add_schedule(name, cron=cron, task="pgjobs.noop", timezone=timezone, args=args,
                           max_attempts=max_attempts, timeout_seconds=timeout, priority=priority)
    except AdminError as exc:
        assert_one_line(str(exc))
        assert digest(db) == before
    else:
        admin.remove_schedule(name)


@EXAMPLES
@given(args=ARGS, timeout=NUMBER, max_attempts=NUMBER, queue=st.one_of(st.just("default"), TEXT))
def test_cli_enqueue_exits_0_or_2_with_one_line_writing_nothing(capsys, db_url, db, args, timeout, max_attempts,
                                                                queue) -> None:
    argv = ["--database-url", db_url, "enqueue", "pgjobs.noop", "--args", _cli_text(args), "--queue", _cli_text(queue)]
    if timeout is not None:
        argv += [f"--timeout={_cli_text(timeout)}"]
    if max_attempts is not None:
        argv += [f"--max-attempts={_cli_text(max_attempts)}"]
    if any("\x00" in a for a in argv):
        return  # an argv element cannot hold NUL (execve); in-process it is still refused, covered by the API test
    before = digest(db)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a value of the wrong type
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and len(err) <= 2100, err
        assert digest(db) == before


@EXAMPLES
@given(cron=TEXT, timezone=TEXT, count=NUMBER)
def test_cli_schedule_check_exits_0_or_2_with_one_line(capsys, cron, timezone, count) -> None:
    argv = ["schedule", "check", cron, f"--timezone={timezone}", f"--count={_cli_text(count)}"]
    if any("\x00" in a for a in argv):
        return
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    else:
        assert len(out.splitlines()) <= 1001


@pytest.mark.parametrize("argv", [["enqueue", "pgjobs.noop", "--timeout", "abc"], ["jobs", "show", "x"]])
def test_an_argparse_type_error_is_one_line_exit_2(capsys, argv) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
