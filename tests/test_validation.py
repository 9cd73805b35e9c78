"""Every input bounded and validated once (pgjobs.validation): hostile values are one-line AdminErrors that
name the field and change nothing; settings that would spin a worker are refused."""

from __future__ import annotations

import math

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pgjobs import validation as v
from pgjobs.admin import Admin, AdminError
from pgjobs.config import ConfigError, Settings
from pgjobs.tasks import task


@task("tests.validation.timed", timeout=42.0)
def _timed() -> None:
    pass


def _digest(db: psycopg.Connection) -> tuple:
    return db.execute("SELECT (SELECT count(*) FROM pgjobs.schedules), (SELECT count(*) FROM pgjobs.jobs), "
                      "(SELECT count(*) FROM pgjobs.audit)").fetchone()


def _one_line(exc: AdminError) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text and len(text) < 400, text
    return text


HOSTILE_ARGS = [
    ('{"a": "x\\u0000y"}', "NUL"),
    ({"a": "x\x00y"}, "NUL"),
    ('{"a": "\\ud800"}', "surrogate"),
    ({"\ud800": 1}, "surrogate"),
    ("[" * 10_000 + "]" * 10_000, "nested deeper"),
    ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "nested deeper"),
    ({"a": "x" * 1_100_000}, "at most 1000000"),
    ('{"a": NaN}', "NaN"),
    ({"a": math.inf}, "inf"),
    ("[1]", "JSON object"),
    ("{not json", "invalid JSON"),
]


@pytest.mark.parametrize(("args", "message"), HOSTILE_ARGS, ids=[m for _, m in HOSTILE_ARGS])
def test_unstorable_args_are_refused_before_the_database(admin: Admin, db, args, message) -> None:
    before = _digest(db)
    with pytest.raises(AdminError) as info:
        admin.enqueue("pgjobs.noop", args)
    assert message in _one_line(info.value) and info.value.field in ("args", "args key")
    assert _digest(db) == before


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"timeout": -5}, "timeout"), ({"timeout": 0}, "timeout"), ({"timeout": math.nan}, "timeout"),
    ({"timeout": math.inf}, "timeout"), ({"timeout": "abc"}, "timeout"), ({"max_attempts": 0}, "max_attempts"),
    ({"scheduled_at": "tomorrow"}, "scheduled_at"), ({"priority": "x" * 10_000}, "priority"),
    ({"queue": "q\nq"}, "queue"), ({"unique_key": "k" * 501}, "unique_key"),
])
def test_out_of_range_job_fields_name_the_field(admin: Admin, db, kwargs, field) -> None:
    before = _digest(db)
    with pytest.raises(AdminError) as info:
        admin.enqueue("pgjobs.noop", {}, **kwargs)
    assert info.value.field == field and _one_line(info.value).startswith(field)
    assert len(str(info.value)) < 200
    assert _digest(db) == before


def test_a_huge_bad_cron_echoes_a_short_one_line_error(admin: Admin, db) -> None:
    before = _digest(db)
    for cron in ("x" * 1_000_000, "* * *\n* * x"):
        with pytest.raises(AdminError) as info:
            admin.add_schedule("s", cron=cron, task="pgjobs.noop")
        assert info.value.field == "cron" and len(_one_line(info.value)) < 200
    with pytest.raises(AdminError) as info:
        admin.add_schedule("bad\nname", cron="@daily", task="pgjobs.noop")
    assert info.value.field == "name"
    _one_line(info.value)
    assert _digest(db) == before


def test_enqueue_many_bulk_enqueues_a_task_whose_args_are_required(admin: Admin, db) -> None:
    db.execute("CREATE MATERIALIZED VIEW mv_bulk AS SELECT 1 AS x")
    db.commit()
    assert admin.enqueue_many("pgjobs.refresh_materialized_view", [{"view": "mv_bulk"}] * 3) == 3
    with pytest.raises(AdminError) as info:
        admin.enqueue_many("pgjobs.refresh_materialized_view", [{"view": "mv_bulk"}, {}])
    assert info.value.field == "args"


def test_enqueue_many_keeps_the_task_timeout(admin: Admin, db) -> None:
    admin.enqueue_many("tests.validation.timed", [{}, {}])
    rows = db.execute("SELECT timeout_seconds FROM pgjobs.jobs WHERE task = 'tests.validation.timed'").fetchall()
    assert [r[0] for r in rows] == [42.0, 42.0]


@pytest.mark.parametrize("name", ["poll_interval", "heartbeat_interval", "maintenance_interval", "rescue_after"])
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf])
def test_settings_that_would_spin_or_never_act_are_refused(name, value) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(**{name: value})
    assert str(info.value).startswith(name) and "\n" not in str(info.value)


def test_settings_from_the_environment_are_checked_the_same_way(monkeypatch) -> None:
    for env, value in [("PGJOBS_POLL_INTERVAL", "0"), ("PGJOBS_HEARTBEAT_INTERVAL", "nan"),
                       ("PGJOBS_MAINTENANCE_INTERVAL", "0"), ("PGJOBS_RESCUE_AFTER", "inf"),
                       ("PGJOBS_LOG_LEVEL", "bogus"), ("PGJOBS_MAX_ARGS_BYTES", "10")]:
        monkeypatch.setenv(env, value)
        with pytest.raises(ConfigError):
            Settings.load()
        monkeypatch.delenv(env)
    assert Settings.load(log_level="debug").log_level == "DEBUG"


def test_the_args_limit_is_a_setting(settings: Settings, db) -> None:
    small = Admin(settings.with_(max_args_bytes=1000))
    with pytest.raises(AdminError, match="at most 1000"):
        small.enqueue("pgjobs.noop", {"a": "x" * 2000})


def test_echo_is_short_and_one_line() -> None:
    assert v.echo("a\nb") == "'a\\nb'"
    assert len(v.echo("x" * 10_000)) < v.ECHO_CHARS + 10


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=20)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=_json | st.text(max_size=200), queue=st.text(max_size=20), priority=st.integers() | st.floats(),
       timeout=st.none() | st.floats() | st.text(max_size=10))
def test_random_hostile_enqueues_succeed_or_refuse_in_one_line_changing_nothing(
        admin: Admin, db, args, queue, priority, timeout) -> None:
    before = _digest(db)
    try:
        admin.enqueue("pgjobs.noop", args, queue=queue or "default", priority=priority, timeout=timeout)
    except AdminError as exc:
        _one_line(exc)
        assert exc.field is not None
        assert _digest(db) == before
