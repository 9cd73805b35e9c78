"""Cron/slot math: parsing, errors, DST rules and the properties the scheduler relies on. Pure: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgjobs.cron import (
    CronError,
    CronSpec,
    TimezoneError,
    _naive_next,
    describe,
    load_timezone,
    next_slot,
    parse_cron,
    preview,
    slots_between,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slots(expr: str, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    return slots_between(parse_cron(expr), tz, after, until)


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("expr", "kind", "has_seconds", "interval"),
    [
        ("* * * * *", "cron", False, None),
        ("  */5 1-3,7 1,15 JAN-mar mon-FRI  ", "cron", False, None),
        ("0 0 L * *", "cron", False, None),
        ("0 0 $ * *", "cron", False, None),
        ("0 0 ? * SUN", "cron", False, None),
        ("*/10 * * * * *", "cron", True, None),
        ("0 30 9 * * 1-5", "cron", True, None),
        ("@daily", "cron", False, None),
        ("'5 seconds'", "interval", True, 5),
        ("5 seconds", "interval", True, 5),
        ("1 second", "interval", True, 1),
        ("'59 SECONDS'", "interval", True, 59),
    ],
)
def test_valid_expressions_parse(expr: str, kind: str, has_seconds: bool, interval: int | None) -> None:
    spec = parse_cron(expr)
    assert isinstance(spec, CronSpec)
    assert (spec.expr, spec.kind, spec.has_seconds, spec.interval_seconds) == (
        expr.strip(),
        kind,
        has_seconds,
        interval,
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "cron '': empty expression"),
        ("   ", "cron '': empty expression"),
        ("* * *", "cron '* * *': expected 5 fields"),
        (
            "* * * * * * *",
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first",
        ),
        ("*/61 * * * *", "cron '*/61 * * * *': minute field '*/61': step '61' must be 1-59"),
        ("60 * * * *", "minute field '60': value 60 must be 0-59"),
        ("* 24 * * *", "hour field '24': value 24 must be 0-23"),
        ("* * 0 * *", "day-of-month field '0': value 0 must be 1-31"),
        ("* * 32 * *", "day-of-month field '32': value 32 must be 1-31"),
        ("* * * 13 *", "month field '13': value 13 must be 1-12"),
        ("* * * 0 *", "month field '0': value 0 must be 1-12"),
        ("* * * * 8", "day-of-week field '8': value 8 must be 0-7"),
        ("60 * * * * *", "second field '60': value 60 must be 0-59"),
        ("*/0 * * * *", "minute field '*/0': step '0' must be 1-59"),
        ("*/-1 * * * *", "minute field '*/-1': step '-1' must be 1-59"),
        ("* */25 * * *", "hour field '*/25': step '25' must be 1-23"),
        ("5-2 * * * *", "minute field '5-2': range 5-2 goes backwards"),
        ("x * * * *", "minute field 'x': 'x' is not a number"),
        ("* * * FOO *", "month field 'FOO': 'FOO' is not a number or a name"),
        ("MON * * * *", "minute field 'MON': 'MON' is not a number"),
        ("1,,2 * * * *", "minute field '1,,2': empty list item"),
        ("1, * * * *", "minute field '1,': empty list item"),
        ("? * * * *", "minute field '?': '?' is not a number"),
        ("* * * * 5L", "day-of-week field '5L': '5L' is not supported"),
        ("* * 15W * *", "day-of-month field '15W': '15W' is not supported"),
        ("* * * * 1#2", "day-of-week field '1#2': '1#2' is not supported"),
        ("0 0 30 2 *", "cron '0 0 30 2 *': day-of-month field '30': never fires"),
        ("0 0 31 4,6,9,11 *", "day-of-month field '31': never fires"),
        ("@reboot", "cron '@reboot': macro '@reboot': not supported: pgjobs has no boot event"),
        ("@often", "macro '@often': unknown macro"),
        ("0 seconds", "interval '0 seconds': seconds must be 1-59"),
        ("'60 seconds'", "interval '60 seconds': seconds must be 1-59"),
        ("-5 seconds", "interval '-5 seconds': seconds must be 1-59"),
        ("5 minutes", "interval '5 minutes': only seconds intervals are supported"),
    ],
)
def test_invalid_expressions_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError) and issubclass(TimezoneError, ValueError)


def test_feb_29_is_rare_but_valid() -> None:
    spec = parse_cron("0 0 29 2 *")
    assert next_slot(spec, UTC, utc(2026, 1, 1)) == utc(2028, 2, 29)


def test_equal_range_is_one_value() -> None:
    assert slots("5-5 * * * *", UTC, utc(2026, 1, 1), utc(2026, 1, 1, 2)) == [
        utc(2026, 1, 1, 0, 5),
        utc(2026, 1, 1, 1, 5),
    ]


def test_names_ranges_lists_and_steps() -> None:
    # 09:00 and 09:30 on weekdays in January
    got = slots("0/30 9 * jan MON-fri", UTC, utc(2026, 1, 1), utc(2026, 1, 6))
    days = [(s.day, s.hour, s.minute) for s in got]
    assert days == [(1, 9, 0), (1, 9, 30), (2, 9, 0), (2, 9, 30), (5, 9, 0), (5, 9, 30)]  # 3rd/4th: weekend


def test_day_of_week_7_is_sunday() -> None:
    assert parse_cron("0 0 * * 7") == parse_cron("0 0 * * 7")
    assert slots("0 0 * * 7", UTC, utc(2026, 3, 1), utc(2026, 3, 15)) == slots(
        "0 0 * * SUN", UTC, utc(2026, 3, 1), utc(2026, 3, 15)
    )


@pytest.mark.parametrize(
    ("macro", "expr"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros_mean_their_expansion(macro: str, expr: str) -> None:
    after, until = utc(2025, 12, 20), utc(2027, 1, 10)
    assert slots(macro, BERLIN, after, until) == slots(expr, BERLIN, after, until)
    assert parse_cron(macro).expr == macro


# ---------------------------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("tz", [UTC, BERLIN, LORD_HOWE])
def test_interval_slots_are_multiples_of_n_since_the_epoch(tz: ZoneInfo) -> None:
    spec = parse_cron("'7 seconds'")
    after = utc(2026, 3, 29, 0, 59, 58, 500)
    got = slots_between(spec, tz, after, after + timedelta(seconds=30))
    assert [int(s.timestamp()) % 7 for s in got] == [0] * len(got)
    assert got[0] - after < timedelta(seconds=7) and got[0] > after
    assert [b - a for a, b in zip(got, got[1:], strict=False)] == [timedelta(seconds=7)] * (len(got) - 1)
    assert len(got) in (4, 5)


def test_interval_next_slot_is_strictly_after_a_slot() -> None:
    spec = parse_cron("5 seconds")
    assert next_slot(spec, UTC, utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 15)
    assert next_slot(spec, UTC, utc(2026, 1, 1, 0, 0, 9, 999999)) == utc(2026, 1, 1, 0, 0, 10)
    assert next_slot(spec, UTC, utc(1969, 12, 31, 23, 59, 57)) == utc(1970, 1, 1)


def test_interval_windows_and_limit() -> None:
    spec = parse_cron("1 second")
    a = utc(2026, 1, 1)
    assert len(slots_between(spec, UTC, a, a + timedelta(days=1))) == 86400
    assert slots_between(spec, UTC, a, a + timedelta(days=1), limit=3) == [
        a + timedelta(seconds=i) for i in (1, 2, 3)
    ]
    assert slots_between(spec, UTC, a, a) == []


# -------------------------------------------------------------------------------- seconds, L/$, OR semantics


def test_six_fields_put_seconds_first() -> None:
    got = slots("*/10 * * * * *", UTC, utc(2026, 1, 1), utc(2026, 1, 1, 0, 1))
    assert got == [utc(2026, 1, 1, 0, 0, s) for s in (10, 20, 30, 40, 50)] + [utc(2026, 1, 1, 0, 1)]
    assert slots("15 30 9 * * *", UTC, utc(2026, 1, 1), utc(2026, 1, 2)) == [utc(2026, 1, 1, 9, 30, 15)]


@pytest.mark.parametrize("last", ["L", "$", "l"])
def test_last_day_of_month(last: str) -> None:
    got = slots(f"0 12 {last} * *", UTC, utc(2027, 12, 31, 13), utc(2028, 5, 1))
    assert got == [utc(2028, 1, 31, 12), utc(2028, 2, 29, 12), utc(2028, 3, 31, 12), utc(2028, 4, 30, 12)]


def test_last_day_in_a_list() -> None:
    got = slots("0 0 1,L * *", UTC, utc(2026, 1, 15), utc(2026, 3, 15))
    assert got == [utc(2026, 1, 31), utc(2026, 2, 1), utc(2026, 2, 28), utc(2026, 3, 1)]


def test_day_of_month_and_day_of_week_are_ored_when_both_restricted() -> None:
    got = slots("0 0 13 * 5", UTC, utc(2026, 2, 1), utc(2026, 3, 14))
    days = [s.date().isoformat() for s in got]
    # every Friday, and the 13th whatever weekday it is (2026-02-13 is a Friday itself)
    assert days == ["2026-02-06", "2026-02-13", "2026-02-20", "2026-02-27", "2026-03-06", "2026-03-13"]
    got = slots("0 0 13 * 1", UTC, utc(2026, 3, 31), utc(2026, 4, 21))
    assert [s.day for s in got] == [6, 13, 20]  # Mondays 6, 13, 20 and Monday the 13th once
    got = slots("0 0 14 * 1", UTC, utc(2026, 3, 31), utc(2026, 4, 21))
    assert [s.day for s in got] == [6, 13, 14, 20]


def test_a_star_day_field_leaves_only_the_other() -> None:
    assert [s.day for s in slots("0 0 13 * *", UTC, utc(2026, 1, 1), utc(2026, 3, 1))] == [13, 13]
    assert [s.day for s in slots("0 0 * * 5", UTC, utc(2026, 2, 1), utc(2026, 3, 1))] == [6, 13, 20, 27]
    assert [s.day for s in slots("0 0 ? * 5", UTC, utc(2026, 2, 1), utc(2026, 3, 1))] == [6, 13, 20, 27]


def test_full_range_day_of_week_still_counts_as_restricted() -> None:
    # POSIX/croniter: only a bare '*' is unrestricted, so '0-6' ORs with the 13th: every day
    assert len(slots("0 0 13 * 0-6", UTC, utc(2026, 2, 1), utc(2026, 3, 1))) == 28


# ---------------------------------------------------------------------------------------------- time zones


def test_load_timezone_accepts_iana_names() -> None:
    assert load_timezone("Europe/Berlin") == BERLIN
    assert load_timezone("UTC").key == "UTC"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mars/Base", "unknown timezone 'Mars/Base'"),
        ("", "timezone is empty"),
        ("  ", "timezone is empty"),
        ("America", "unknown timezone 'America'"),
        ("/etc/localtime", "not a path"),
        ("../../etc/passwd", "not a path"),
        ("Europe/../UTC", "not a path"),
        ("europe/berlin", "unknown timezone 'europe/berlin' (did you mean 'Europe/Berlin'?)"),
    ],
)
def test_load_timezone_rejects_bad_names(name: str, message: str) -> None:
    with pytest.raises(TimezoneError) as info:
        load_timezone(name)
    assert message in str(info.value)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slot(parse_cron("* * * * *"), UTC, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        slots_between(parse_cron("* * * * *"), UTC, utc(2026, 1, 1), datetime(2026, 1, 2))


def test_cron_is_evaluated_on_the_local_wall_clock() -> None:
    assert next_slot(parse_cron("0 9 * * *"), BERLIN, utc(2026, 1, 5)) == utc(2026, 1, 5, 8)  # CET
    assert next_slot(parse_cron("0 9 * * *"), BERLIN, utc(2026, 7, 6)) == utc(2026, 7, 6, 7)  # CEST
    assert next_slot(parse_cron("0 9 * * *"), NEW_YORK, utc(2026, 1, 5)) == utc(2026, 1, 5, 14)
    assert next_slot(parse_cron("0 0 * * 1"), LORD_HOWE, utc(2026, 1, 1)) == utc(
        2026, 1, 4, 13
    )  # Mon 00:00 +11


def test_next_slot_accepts_any_aware_after_and_returns_utc() -> None:
    after = datetime(2026, 1, 5, 9, 0, tzinfo=BERLIN)
    got = next_slot(parse_cron("0 9 * * *"), BERLIN, after)
    assert got == utc(2026, 1, 6, 8) and got.tzinfo is UTC


# ------------------------------------------------------------------------------------------------- DST


class TestBerlin:
    """2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC)."""

    def test_spring_forward_a_daily_job_in_the_gap_runs_once_at_0300(self) -> None:
        got = slots("30 2 * * *", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31))
        assert got == [
            utc(2026, 3, 27, 1, 30),
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 1),
            utc(2026, 3, 30, 0, 30),
        ]

    def test_spring_forward_every_minute_of_the_missing_hour_collapses_into_one_slot(self) -> None:
        assert slots("* 2 * * *", BERLIN, utc(2026, 3, 28, 23), utc(2026, 3, 29, 3)) == [utc(2026, 3, 29, 1)]

    def test_spring_forward_a_real_0300_and_a_skipped_0230_are_one_slot(self) -> None:
        got = slots("30 2,3 * * *", BERLIN, utc(2026, 3, 28, 23), utc(2026, 3, 29, 3))
        assert got == [utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30)]
        assert slots("0 2,3 * * *", BERLIN, utc(2026, 3, 28, 23), utc(2026, 3, 29, 3)) == [
            utc(2026, 3, 29, 1)
        ]

    def test_spring_forward_an_hourly_job_just_has_no_slot_in_the_gap(self) -> None:
        got = slots("30 * * * *", BERLIN, utc(2026, 3, 28, 23), utc(2026, 3, 29, 3))
        local = [s.astimezone(BERLIN).strftime("%H:%M %Z") for s in got]
        assert local == ["00:30 CET", "01:30 CET", "03:30 CEST", "04:30 CEST"]

    def test_spring_forward_with_seconds(self) -> None:
        assert slots("30 30 2 * * *", BERLIN, utc(2026, 3, 29), utc(2026, 3, 29, 3)) == [utc(2026, 3, 29, 1)]
        got = slots("*/20 * * * * *", BERLIN, utc(2026, 3, 29, 0, 59, 30), utc(2026, 3, 29, 1, 0, 30))
        assert got == [utc(2026, 3, 29, 0, 59, 40), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 0, 20)]

    def test_fall_back_a_daily_job_in_the_repeated_hour_runs_once_in_the_first_pass(self) -> None:
        got = slots("30 2 * * *", BERLIN, utc(2026, 10, 24), utc(2026, 10, 27))
        assert got == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
        assert slots("*/20 2 * * *", BERLIN, utc(2026, 10, 24, 23), utc(2026, 10, 25, 3)) == [
            utc(2026, 10, 25, 0, 0),
            utc(2026, 10, 25, 0, 20),
            utc(2026, 10, 25, 0, 40),
        ]

    def test_fall_back_an_hourly_job_runs_in_both_passes(self) -> None:
        got = slots("30 * * * *", BERLIN, utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
        assert got == [
            utc(2026, 10, 24, 23, 30),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 2, 30),
        ]
        local = [s.astimezone(BERLIN).strftime("%H:%M %Z") for s in got]
        assert local == ["01:30 CEST", "02:30 CEST", "02:30 CET", "03:30 CET"]

    def test_fall_back_next_slot_from_inside_the_first_pass_finds_the_second_pass(self) -> None:
        spec = parse_cron("15 * * * *")
        # 02:50 CEST (00:50 UTC): the next wall-clock 02:15 is the second pass, 01:15 UTC, before 03:15 CET
        assert next_slot(spec, BERLIN, utc(2026, 10, 25, 0, 50)) == utc(2026, 10, 25, 1, 15)
        # from inside the second pass, a restricted hour does not fire again
        assert next_slot(parse_cron("45 2 * * *"), BERLIN, utc(2026, 10, 25, 1, 10)) == utc(
            2026, 10, 26, 1, 45
        )


class TestNewYork:
    """2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC)."""

    def test_spring_forward(self) -> None:
        assert slots("30 2 * * *", NEW_YORK, utc(2026, 3, 8), utc(2026, 3, 9)) == [utc(2026, 3, 8, 7)]
        got = slots("*/15 * * * *", NEW_YORK, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 20))
        assert got == [utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 15)]
        local = [s.astimezone(NEW_YORK).strftime("%H:%M") for s in got]
        assert local == ["01:45", "03:00", "03:15"]

    def test_fall_back(self) -> None:
        assert slots("30 1 * * *", NEW_YORK, utc(2026, 11, 1), utc(2026, 11, 2)) == [utc(2026, 11, 1, 5, 30)]
        assert slots("30 * * * *", NEW_YORK, utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)) == [
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 1, 6, 30),
        ]

    def test_a_daily_job_keeps_its_local_time_across_the_year(self) -> None:
        got = slots("0 9 * * *", NEW_YORK, utc(2026, 3, 6), utc(2026, 3, 10))
        assert [s.hour for s in got] == [14, 14, 13, 13]


class TestLordHowe:
    """Shifts by 30 minutes. 2026-04-05 02:00 (+11) -> 01:30 (+10:30) at 15:00 UTC on 04-04;
    2026-10-04 02:00 (+10:30) -> 02:30 (+11) at 15:30 UTC on 10-03."""

    def test_fall_back_the_repeated_half_hour(self) -> None:
        assert slots("45 1 * * *", LORD_HOWE, utc(2026, 4, 4, 12), utc(2026, 4, 4, 18)) == [
            utc(2026, 4, 4, 14, 45)
        ]
        assert slots("45 * * * *", LORD_HOWE, utc(2026, 4, 4, 14), utc(2026, 4, 4, 16)) == [
            utc(2026, 4, 4, 14, 45),
            utc(2026, 4, 4, 15, 15),
        ]
        # 01:15 happens once (before the repeated half hour)
        assert slots("15 1 * * *", LORD_HOWE, utc(2026, 4, 4, 12), utc(2026, 4, 4, 18)) == [
            utc(2026, 4, 4, 14, 15)
        ]

    def test_spring_forward_the_missing_half_hour(self) -> None:
        assert slots("15 2 * * *", LORD_HOWE, utc(2026, 10, 3, 12), utc(2026, 10, 3, 18)) == [
            utc(2026, 10, 3, 15, 30)
        ]
        assert slots("45 2 * * *", LORD_HOWE, utc(2026, 10, 3, 12), utc(2026, 10, 3, 18)) == [
            utc(2026, 10, 3, 15, 45)
        ]
        got = slots("15 * * * *", LORD_HOWE, utc(2026, 10, 3, 14), utc(2026, 10, 3, 17))
        local = [s.astimezone(LORD_HOWE).strftime("%H:%M") for s in got]
        assert local == ["01:15", "03:15"]  # no 02:15 that day


def _every_hour(expr: str) -> bool:
    hours = croniter(expr).expanded[1]
    return hours == ["*"] or len(hours) == 24


def _model_slots(expr: str, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """The documented DST rules, computed the slow way: walk every UTC minute, group instants by local wall time,
    and let croniter (naive, calendar only) decide which wall times match."""
    margin = timedelta(hours=4)
    occurrences: dict[datetime, list[datetime]] = {}
    walk: list[tuple[datetime, datetime]] = []
    u = after - margin
    while u <= until + margin:
        wall = u.astimezone(tz).replace(tzinfo=None)
        occurrences.setdefault(wall, []).append(u)
        walk.append((u, wall))
        u += timedelta(minutes=1)
    every_hour = _every_hour(expr)
    expected: set[datetime] = set()
    walls = croniter(expr, min(occurrences) - timedelta(minutes=1))
    while (wall := walls.get_next(datetime)) <= max(occurrences):
        if wall in occurrences:
            expected.update(occurrences[wall] if every_hour else occurrences[wall][:1])
        elif not every_hour:  # skipped by a gap: the first instant whose wall clock is past it
            expected.add(next(u for u, w in walk if w > wall))
    return sorted(s for s in expected if after < s <= until)


TRANSITIONS = [
    (BERLIN, utc(2026, 3, 29, 1)),
    (BERLIN, utc(2026, 10, 25, 1)),
    (NEW_YORK, utc(2026, 3, 8, 7)),
    (NEW_YORK, utc(2026, 11, 1, 6)),
    (LORD_HOWE, utc(2026, 4, 4, 15)),
    (LORD_HOWE, utc(2026, 10, 3, 15, 30)),
]

MODEL_EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "15,45 * * * *",
    "0 * * * *",
    "30 * * * *",
    "* 1-3 * * *",
    "*/20 0-5 * * *",
    "0,15,30,45 2 * * *",
    "30 2 * * *",
    "45 1 * * *",
    "0 3 * * *",
    "10 */2 * * *",
]


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("expr", MODEL_EXPRESSIONS)
def test_slots_match_the_slow_model_around_real_transitions(
    expr: str, tz: ZoneInfo, transition: datetime
) -> None:
    after, until = transition - timedelta(hours=3), transition + timedelta(hours=3)
    assert slots(expr, tz, after, until) == _model_slots(expr, tz, after, until)


# ------------------------------------------------------------------------------------------ describe, preview


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("* * * * *", "every minute"),
        ("*/2 * * * *", "every 2 minutes"),
        ("0,30 * * * *", "every 30 minutes"),
        ("0 3 * * *", "at 03:00 every day"),
        ("@daily", "at 00:00 every day"),
        ("@hourly", "every hour"),
        ("30 * * * *", "every hour at minute 30"),
        ("0 */2 * * *", "every 2 hours"),
        ("15 10 * * 1-5", "at 10:15 on Monday through Friday"),
        ("0 9,17 * * MON-FRI", "at 09:00 and 17:00 on Monday through Friday"),
        ("@weekly", "at 00:00 on Sunday"),
        ("@monthly", "at 00:00 on day 1 of the month"),
        ("@yearly", "at 00:00 on day 1 in January"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 0 13 * 5", "at 00:00 on day 13 of the month or on Friday"),
        ("*/15 9-17 * * 1-5", "every 15 minutes during hours 9-17 on Monday through Friday"),
        ("* * * * * *", "every second"),
        ("*/5 * * * * *", "every 5 seconds"),
        ("30 0 3 * * *", "at 03:00:30 every day"),
        ("5 seconds", "every 5 seconds"),
        ("'1 second'", "every second"),
    ],
)
def test_describe(expr: str, text: str) -> None:
    assert describe(parse_cron(expr)) == text


def test_preview_returns_times_in_the_schedule_zone() -> None:
    got = preview("0 3 * * *", "Europe/Berlin", count=3, now=utc(2026, 3, 28, 12))
    assert [s.isoformat() for s in got] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T03:00:00+02:00",
        "2026-03-31T03:00:00+02:00",
    ]
    assert all(s.tzinfo == BERLIN for s in got)


def test_preview_shows_both_passes_of_a_repeated_hour() -> None:
    got = preview("30 * * * *", "America/New_York", count=3, now=utc(2026, 11, 1, 5))
    assert [(s.strftime("%H:%M"), s.fold, s.utcoffset()) for s in got] == [
        ("01:30", 0, timedelta(hours=-4)),
        ("01:30", 1, timedelta(hours=-5)),
        ("02:30", 0, timedelta(hours=-5)),
    ]


def test_preview_defaults_and_validation() -> None:
    assert len(preview("* * * * *", "UTC")) == 5
    assert preview("* * * * *", "UTC", count=0) == []
    with pytest.raises(CronError):
        preview("61 * * * *", "UTC")
    with pytest.raises(TimezoneError):
        preview("* * * * *", "Mars/Base")
    with pytest.raises(ValueError, match="timezone-aware"):
        preview("* * * * *", "UTC", now=datetime(2026, 1, 1))


# ------------------------------------------------------------------------------------------ properties


def _field(lo: int, hi: int, extra: list[str] | None = None) -> st.SearchStrategy[str]:
    value = st.integers(lo, hi)
    step = st.integers(1, hi)
    rng = st.tuples(st.integers(lo, hi - 1), st.integers(1, hi - lo)).map(
        lambda t: (t[0], min(hi, t[0] + t[1]))
    )
    item = st.one_of(
        value.map(str),
        rng.map(lambda r: f"{r[0]}-{r[1]}"),
        st.tuples(rng, step).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
        st.tuples(st.integers(lo, hi - 1), step).map(lambda t: f"{t[0]}/{t[1]}"),  # croniter: DOW '7/1' = all
    )
    options = [
        st.just("*"),
        step.map(lambda s: f"*/{s}"),
        item,
        st.lists(item, min_size=2, max_size=4).map(",".join),
    ]
    if extra:
        options.append(st.sampled_from(extra))
    return st.one_of(*options)


@st.composite
def expressions(draw: st.DrawFn, seconds: bool | None = None, every_day: bool = False) -> str:
    with_seconds = draw(st.booleans()) if seconds is None else seconds
    fields = [
        _field(0, 59),  # minute
        _field(0, 23),  # hour
        st.just("*") if every_day else _field(1, 31, ["L"]),  # day-of-month
        st.just("*") if every_day else _field(1, 12),  # month
        st.just("*") if every_day else _field(0, 7),  # day-of-week
    ]
    if with_seconds:
        fields.insert(0, _field(0, 59))
    expr = " ".join(draw(f) for f in fields)
    try:
        parse_cron(expr)
    except CronError:  # e.g. day 31 in a list of 30-day months
        assume(False)
    return expr


ZONES = [UTC, BERLIN, NEW_YORK, LORD_HOWE, ZoneInfo("Asia/Kolkata"), ZoneInfo("America/St_Johns")]


@st.composite
def instants(draw: st.DrawFn, tz: ZoneInfo) -> datetime:
    """Random instants, half of them within hours of a real DST transition of `tz`."""
    near = [t for z, t in TRANSITIONS if z is tz]
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near))
        return base + timedelta(
            seconds=draw(st.integers(-4 * 3600, 4 * 3600)), microseconds=draw(st.integers(0, 999_999))
        )
    seconds = draw(st.integers(0, 10 * 365 * 86400))
    return utc(2022, 1, 1) + timedelta(seconds=seconds, microseconds=draw(st.sampled_from([0, 1, 500_000])))


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(data=st.data(), expr=expressions())
def test_slots_are_increasing_and_chain_without_gaps_or_repeats(data: st.DataObject, expr: str) -> None:
    spec = parse_cron(expr)
    tz = data.draw(st.sampled_from(ZONES))
    a = data.draw(instants(tz))
    window = timedelta(minutes=20) if spec.has_seconds else timedelta(days=2)
    c = a + data.draw(st.timedeltas(timedelta(0), window))
    got = slots_between(spec, tz, a, c, limit=1500)
    assert all(x < y for x, y in zip(got, got[1:], strict=False))
    assert all(a < s <= c and s.tzinfo is UTC for s in got)
    if not got:
        assert next_slot(spec, tz, a) > c
        return
    assert next_slot(spec, tz, a) == got[0]
    for prev, nxt in list(zip(got, got[1:], strict=False))[:60]:
        assert next_slot(spec, tz, prev) == nxt  # nothing skipped or repeated between two slots
        assert next_slot(spec, tz, nxt - timedelta(microseconds=1)) == nxt


@PROPERTY_SETTINGS
@given(data=st.data(), expr=expressions())
def test_splitting_a_window_changes_nothing(data: st.DataObject, expr: str) -> None:
    spec = parse_cron(expr)
    tz = data.draw(st.sampled_from(ZONES))
    a = data.draw(instants(tz))
    window = timedelta(minutes=20) if spec.has_seconds else timedelta(days=2)
    c = a + data.draw(st.timedeltas(timedelta(0), window))
    b = a + (c - a) * data.draw(st.floats(0, 1))
    assert slots_between(spec, tz, a, c) == slots_between(spec, tz, a, b) + slots_between(spec, tz, b, c)


@settings(max_examples=150, deadline=None)
@given(expr=expressions(), start=st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1)))
def test_wall_clock_matching_agrees_with_croniter(expr: str, start: datetime) -> None:
    spec = parse_cron(expr)
    # croniter is inconsistent when a day field covers its whole range without being '*' (it sometimes treats it
    # as '*'); pgjobs follows POSIX there (only a bare '*' is unrestricted), tested above.
    assume(not (spec._dow_restricted and len(spec._dows) == 7))
    assume(not (spec._dom_restricted and len(spec._doms) == 31))
    it = croniter(expr, start, second_at_beginning=spec.has_seconds, day_or=True)
    expected = it.get_next(datetime)
    assert _naive_next(spec, start) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=expressions(seconds=False, every_day=True),
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-3 * 60, 3 * 60),
)
def test_random_expressions_match_the_slow_model_near_transitions(
    expr: str, transition: tuple[ZoneInfo, datetime], offset: int
) -> None:
    tz, at = transition
    after = at + timedelta(minutes=offset)
    until = after + timedelta(hours=4)
    assert slots(expr, tz, after, until) == _model_slots(expr, tz, after, until)
