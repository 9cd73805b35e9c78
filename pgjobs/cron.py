"""Cron and interval schedules: parsing and slot math. Pure functions, no I/O, no clock reads.

A *slot* is an instant at which a schedule fires. Slots are returned as aware UTC datetimes (the database stores
UTC); the scheduler inserts each one under a unique (schedule, slot) constraint, so this module only has to compute
the same slots on every node, never to prevent duplicates itself.

Syntax
------
- 5 fields ``minute hour day-of-month month day-of-week``, or 6 fields with seconds FIRST (``*/10 * * * * *``).
  Each field takes ``*``, numbers, names (JAN-DEC, SUN-SAT, any case), ranges ``a-b``, lists ``a,b``, steps
  ``*/n``, ``a-b/n`` and ``a/n`` (= ``a-max/n``). Day-of-week 0 and 7 are both Sunday. ``?`` is ``*`` in the two
  day fields. ``L`` or ``$`` in day-of-month is the last day of the month (``$`` as in pg_cron).
- Macros ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight`` ``@hourly``. ``@reboot`` is
  rejected: pgjobs has no boot event.
- pg_cron intervals ``'N seconds'`` (quotes optional, ``1 second``), N in 1-59.

Day-of-month and day-of-week (POSIX/Vixie, same as croniter ``day_or=True``): when BOTH are restricted, a day
matches if EITHER matches (``0 0 13 * 5`` fires on every 13th and on every Friday); when one of them is ``*``, only
the other one counts. As in POSIX and croniter, a day field is unrestricted only when it is exactly ``*`` (or
``?``): ``*/2``, ``1-31`` or ``0-6`` are restricted, so ``0 0 13 * 0-6`` fires every day (Vixie's quirk of
treating any field that starts with ``*`` as unrestricted is not reproduced).

Time zones and DST
------------------
Cron fields are matched against the schedule's local wall clock (second resolution). Each matching wall time
becomes zero, one or two UTC slots:
- an ordinary wall time: the one instant it names;
- a wall time skipped by a spring-forward gap: if the hour field is restricted (not every hour), ONE slot at the
  first instant after the gap (02:30 in Berlin on 2026-03-29 -> 03:00 CEST = 01:00 UTC); if the hour field covers
  all 24 hours (``*``, ``*/1``, ``0-23``: runs every hour or more often), no slot: its next slot comes naturally;
- a wall time repeated by a fall-back: if the hour field is restricted, once, at the first occurrence (fold=0);
  if it covers all 24 hours, at both occurrences, so every real hour keeps running (like cronie).
The slots of a schedule are the set of these instants: strictly increasing in UTC, never repeated (several skipped
wall times and a real one can all map to the same post-gap instant; it is one slot).
Intervals ignore time zones: their slots are the multiples of N seconds since the Unix epoch (UTC), so every node
computes the same slots.

Implementation: fields are parsed into sorted tuples and matched with a small calendar search (no croniter object
per call; croniter serves as an independent oracle in the tests). ``parse_cron`` is cached per expression.
"""

from __future__ import annotations

import calendar
import functools
import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

__all__ = [
    "CronError",
    "CronSpec",
    "TimezoneError",
    "describe",
    "load_timezone",
    "next_slot",
    "parse_cron",
    "preview",
    "slots_between",
]


class CronError(ValueError):
    """A schedule expression that cannot be used; the message names the expression, the field and the problem."""


class TimezoneError(ValueError):
    """A time zone name that is empty, unknown or not a plain IANA key."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed schedule. Build it with :func:`parse_cron`; the underscored fields are private."""

    expr: str  # the text as given (stripped)
    kind: str  # 'cron' or 'interval'
    interval_seconds: int | None  # N for 'N seconds', else None
    has_seconds: bool  # 6-field form or interval
    _seconds: tuple[int, ...] = field(default=(0,), repr=False)
    _minutes: tuple[int, ...] = field(default=(), repr=False)
    _hours: tuple[int, ...] = field(default=(), repr=False)
    _doms: frozenset[int] = field(default=frozenset(), repr=False)
    _last_dom: bool = field(default=False, repr=False)  # L / $ in day-of-month
    _months: tuple[int, ...] = field(default=(), repr=False)
    _dows: frozenset[int] = field(default=frozenset(), repr=False)  # 0 = Sunday
    _dom_restricted: bool = field(default=False, repr=False)
    _dow_restricted: bool = field(default=False, repr=False)

    @property
    def _every_hour(self) -> bool:
        """True when the hour field covers all 24 hours (decides the DST behaviour, see the module docstring)."""
        return len(self._hours) == 24


# --------------------------------------------------------------------------------------------------- parsing

_MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DOW_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int  # largest value accepted
    names: dict[str, int]
    top: int  # where '*' and 'a/n' end: 6 for day-of-week, whose 7 is only an alias of Sunday


_SECOND = _Field("second", 0, 59, {}, 59)
_MINUTE = _Field("minute", 0, 59, {}, 59)
_HOUR = _Field("hour", 0, 23, {}, 23)
_DOM = _Field("day-of-month", 1, 31, {}, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, 12)
_DOW = _Field("day-of-week", 0, 7, _DOW_NAMES, 6)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_INTERVAL_RE = re.compile(r"^(?P<q>'?)\s*(?P<n>[+-]?\d+)\s*(?P<unit>[a-z]+)\s*(?P=q)$", re.IGNORECASE)
_INTERVAL_UNITS = {
    "second",
    "seconds",
    "sec",
    "secs",
    "s",
    "minute",
    "minutes",
    "min",
    "mins",
    "hour",
    "hours",
    "day",
    "days",
    "ms",
    "millisecond",
    "milliseconds",
}

# The Gregorian calendar repeats every 400 years, so a date pattern absent from 401 consecutive years never occurs.
_SEARCH_YEARS = 401
# Clocks are assumed never to go back by more than this at one transition (real zones: 30 min to 2 h).
_MAX_FALL_BACK = timedelta(hours=6)
_ONE_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1)


class _FieldError(Exception):
    """Internal: a problem inside one field; turned into CronError with the expression and field text."""


def _value(token: str, f: _Field) -> int:
    if token.isdigit():
        n = int(token)
    elif token.upper() in f.names:
        n = f.names[token.upper()]
    elif not token:
        raise _FieldError("empty value")
    else:
        kinds = "a number or a name" if f.names else "a number"
        raise _FieldError(f"'{token}' is not {kinds}")
    if not f.lo <= n <= f.hi:
        raise _FieldError(f"value {n} must be {f.lo}-{f.hi}")
    return n


def _parse_field(text: str, f: _Field) -> tuple[set[int], bool]:
    """Values of one field, and whether it contains L/$ (day-of-month only)."""
    values: set[int] = set()
    last = False
    for item in text.split(","):
        if not item:
            raise _FieldError("empty list item")
        if f is _DOM and item.upper() in ("L", "$"):
            last = True
            continue
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not 1 <= int(step_text) <= f.hi:
                raise _FieldError(f"step '{step_text}' must be 1-{f.hi}")
            step = int(step_text)
        if base == "*" or (base == "?" and (f is _DOM or f is _DOW)):
            lo, hi = f.lo, f.top
        elif "-" in base:
            start, _, end = base.partition("-")
            lo, hi = _value(start, f), _value(end, f)
            if lo > hi:
                raise _FieldError(f"range {base} goes backwards (start > end)")
        else:
            if base.upper() not in f.names and re.search(r"[LW#]", base, re.IGNORECASE):
                raise _FieldError(f"'{item}' is not supported (only a plain L or $ in day-of-month)")
            lo = _value(base, f)
            hi = max(lo, f.top) if slash else lo  # 'a/n' means a-max/n
        values.update(range(lo, hi + 1, step))
    if f is _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return values, last


def _fail(expr: str, what: str, value: str, problem: str) -> CronError:
    return CronError(f"cron '{expr}': {what} '{value}': {problem}")


def _parse_interval(expr: str, m: re.Match[str]) -> CronSpec:
    value = f"{m['n']} {m['unit']}"
    if m["unit"].lower() not in ("second", "seconds"):
        raise _fail(
            expr,
            "interval",
            value,
            "only seconds intervals are supported (1-59 seconds); use cron fields for minutes and longer",
        )
    n = int(m["n"])
    if not 1 <= n <= 59:
        raise _fail(expr, "interval", value, "seconds must be 1-59")
    return CronSpec(expr=expr, kind="interval", interval_seconds=n, has_seconds=True)


@functools.lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronSpec:
    """Parse a cron expression, macro or 'N seconds' interval; raise CronError naming the bad field."""
    if not isinstance(expr, str):
        raise CronError(f"cron {expr!r}: expected a string")
    expr = expr.strip()
    if not expr:
        raise CronError("cron '': empty expression")
    m = _INTERVAL_RE.match(expr)
    if m and m["unit"].lower() in _INTERVAL_UNITS:
        return _parse_interval(expr, m)
    text = expr
    if expr.startswith("@"):
        macro = expr.lower()
        if macro == "@reboot":
            raise _fail(expr, "macro", expr, "not supported: pgjobs has no boot event (use e.g. @daily)")
        if macro not in _MACROS:
            raise _fail(expr, "macro", expr, f"unknown macro (known: {', '.join(sorted(_MACROS))})")
        text = _MACROS[macro]
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
        has_seconds = False
    elif len(parts) == 6:
        has_seconds = True
    else:
        raise CronError(
            f"cron '{expr}': expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 with seconds first, got {len(parts)}"
        )
    parsed: list[set[int]] = []
    last_dom = False
    for part, f in zip(parts, (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW), strict=True):
        try:
            values, last = _parse_field(part, f)
        except _FieldError as e:
            raise _fail(expr, f"{f.name} field", part, str(e)) from None
        parsed.append(values)
        last_dom = last_dom or last
    seconds, minutes, hours, doms, months, dows = parsed
    dom_restricted = parts[3] not in ("*", "?")
    dow_restricted = parts[5] not in ("*", "?")
    spec = CronSpec(
        expr=expr,
        kind="cron",
        interval_seconds=None,
        has_seconds=has_seconds,
        _seconds=tuple(sorted(seconds)),
        _minutes=tuple(sorted(minutes)),
        _hours=tuple(sorted(hours)),
        _doms=frozenset(doms),
        _last_dom=last_dom,
        _months=tuple(sorted(months)),
        _dows=frozenset(dows),
        _dom_restricted=dom_restricted,
        _dow_restricted=dow_restricted,
    )
    # Bounded search (exact: the calendar repeats every 400 years): e.g. '0 0 30 2 *' (Feb 30) never fires.
    try:
        _naive_next(spec, datetime(2000, 1, 1))
    except _NoSlot:
        dom_text = parts[3]
        raise _fail(
            expr, "day-of-month field", dom_text, f"never fires: no month in '{parts[4]}' has that day"
        ) from None
    return spec


# ---------------------------------------------------------------------------------------------- time zones


@functools.lru_cache(maxsize=512)
def load_timezone(name: str) -> ZoneInfo:
    """The IANA zone `name` (e.g. 'Europe/Berlin', 'UTC'); raise TimezoneError for empty, unknown or path names."""
    if not isinstance(name, str) or not name.strip():
        raise TimezoneError("timezone is empty (use an IANA name such as 'UTC' or 'Europe/Berlin')")
    if name.startswith(("/", ".")) or ".." in name or "\\" in name or "\0" in name or name != name.strip():
        raise TimezoneError(
            f"unknown timezone '{name}' (expected an IANA name such as 'Europe/Berlin', not a path)"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    hint = next((z for z in sorted(available_timezones()) if z.lower() == name.lower()), None)
    suffix = f" (did you mean '{hint}'?)" if hint else ""
    raise TimezoneError(f"unknown timezone '{name}'{suffix}")


# ----------------------------------------------------------------------------------------------- slot math


class _NoSlot(Exception):
    """Internal: no matching wall time within the search bound."""


def _time_from(spec: CronSpec, h0: int, m0: int, s0: int) -> tuple[int, int, int] | None:
    """The first (hour, minute, second) of the spec at or after h0:m0:s0 on the same day, or None."""
    hours, minutes, seconds = spec._hours, spec._minutes, spec._seconds
    i = bisect_left(hours, h0)
    if i == len(hours):
        return None
    if hours[i] > h0:
        return hours[i], minutes[0], seconds[0]
    j = bisect_left(minutes, m0)
    if j < len(minutes):
        if minutes[j] > m0:
            return h0, minutes[j], seconds[0]
        k = bisect_left(seconds, s0)
        if k < len(seconds):
            return h0, m0, seconds[k]
        if j + 1 < len(minutes):
            return h0, minutes[j + 1], seconds[0]
    if i + 1 < len(hours):
        return hours[i + 1], minutes[0], seconds[0]
    return None


def _day_matches(spec: CronSpec, day: int, ndays: int, dow: int) -> bool:
    dom_ok = day in spec._doms or (spec._last_dom and day == ndays)
    dow_ok = dow in spec._dows
    if spec._dom_restricted and spec._dow_restricted:
        return dom_ok or dow_ok
    return dom_ok and dow_ok


def _naive_next(spec: CronSpec, t: datetime) -> datetime:
    """The first wall-clock time (naive, whole seconds) matching the cron fields strictly after naive `t`."""
    t = t.replace(microsecond=0) + _ONE_SECOND
    y0, mo0, d0 = t.year, t.month, t.day
    any_day = not spec._dom_restricted and not spec._dow_restricted
    for year in range(y0, min(y0 + _SEARCH_YEARS, 9999) + 1):
        for month in spec._months:
            if year == y0 and month < mo0:
                continue
            first_month = year == y0 and month == mo0
            weekday_of_1st, ndays = calendar.monthrange(year, month)  # Monday = 0
            for day in range(d0 if first_month else 1, ndays + 1):
                # cron day-of-week: Sunday = 0, so Monday (python 0) -> 1
                if not any_day and not _day_matches(spec, day, ndays, (weekday_of_1st + day) % 7):
                    continue
                if first_month and day == d0:
                    hms = _time_from(spec, t.hour, t.minute, t.second)
                    if hms is None:
                        continue
                else:
                    hms = spec._hours[0], spec._minutes[0], spec._seconds[0]
                return datetime(year, month, day, *hms)
    raise _NoSlot


def _utc_offset(tz: ZoneInfo, naive_utc: datetime) -> timedelta:
    return naive_utc.replace(tzinfo=UTC).astimezone(tz).utcoffset()  # type: ignore[return-value]


def _gap_end(tz: ZoneInfo, wall: datetime, off_before: timedelta, off_after: timedelta) -> datetime:
    """The transition instant (naive UTC) of the spring-forward gap that contains the non-existent `wall`."""
    lo = wall - off_after  # before the transition: offset there is off_before
    hi = wall - off_before  # after it
    n = int((hi - lo).total_seconds())
    while n > 1:  # tzdata transitions are whole seconds
        mid = lo + timedelta(seconds=n // 2)
        if _utc_offset(tz, mid) == off_before:
            lo = mid
        else:
            hi = mid
        n = int((hi - lo).total_seconds())
    return hi


def _instants(spec: CronSpec, tz: ZoneInfo, wall: datetime) -> tuple[tuple[datetime, timedelta], ...]:
    """The slots (naive UTC, offset there) of one matching wall time, ascending; the DST rules live here."""
    local = wall.replace(tzinfo=tz)
    off0 = local.utcoffset()
    off1 = local.replace(fold=1).utcoffset()
    assert off0 is not None and off1 is not None
    if off0 == off1:
        return ((wall - off0, off0),)
    if off0 > off1:  # the wall time happens twice (fall-back); fold=0 is the first pass
        if spec._every_hour:
            return ((wall - off0, off0), (wall - off1, off1))
        return ((wall - off0, off0),)
    if spec._every_hour:  # the wall time does not exist (spring-forward)
        return ()
    return ((_gap_end(tz, wall, off0, off1), off1),)


def _next_cron(spec: CronSpec, tz: ZoneInfo, after: datetime) -> datetime:
    local = after.astimezone(tz)
    off_after = local.utcoffset()
    assert off_after is not None
    after_utc = local.replace(tzinfo=None) - off_after
    # Scan matching wall times forward from `after`'s wall time; the first with an instant > after gives `best`.
    wall = local.replace(tzinfo=None)
    while True:
        wall = _naive_next(spec, wall)
        hit = next(((i, o) for i, o in _instants(spec, tz, wall) if i > after_utc), None)
        if hit is not None:
            best, best_off = hit
            best_wall = wall
            break
    # If clocks go back soon after `after`, the second pass of wall times at or before `after`'s wall time can
    # come earlier in UTC than `best`: rescan from the lowest offset in sight.
    lowest = min(best_off, _utc_offset(tz, after_utc + _MAX_FALL_BACK))
    if lowest < off_after:
        wall = after_utc + lowest
        while True:
            wall = _naive_next(spec, wall)
            if wall >= best_wall:
                break
            for i, _ in _instants(spec, tz, wall):
                if after_utc < i < best:
                    best = i
    return best.replace(tzinfo=UTC)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _seconds_since_epoch(dt: datetime) -> int:
    """Whole seconds since the epoch, rounded down (aware `dt`)."""
    delta = dt.astimezone(UTC).replace(tzinfo=None) - _EPOCH
    return delta.days * 86400 + delta.seconds


def next_slot(spec: CronSpec, tz: ZoneInfo, after: datetime) -> datetime:
    """The first slot strictly after aware `after`, as an aware UTC datetime."""
    _require_aware("after", after)
    if spec.kind == "interval":
        n = spec.interval_seconds
        assert n is not None
        k = _seconds_since_epoch(after) // n + 1
        return (_EPOCH + timedelta(seconds=k * n)).replace(tzinfo=UTC)
    try:
        return _next_cron(spec, tz, after)
    except (_NoSlot, OverflowError):
        raise CronError(f"cron '{spec.expr}': no slot after {after.isoformat()} before year 9999") from None


def slots_between(
    spec: CronSpec, tz: ZoneInfo, after: datetime, until: datetime, limit: int | None = None
) -> list[datetime]:
    """All slots s with after < s <= until, ascending, aware UTC; at most `limit` (the earliest ones) if given."""
    _require_aware("after", after)
    _require_aware("until", until)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    out: list[datetime] = []
    if until <= after or limit == 0:
        return out
    if spec.kind == "interval":
        n = spec.interval_seconds
        assert n is not None
        first = _seconds_since_epoch(after) // n + 1
        last = _seconds_since_epoch(until) // n
        if limit is not None:
            last = min(last, first + limit - 1)
        base = _EPOCH.replace(tzinfo=UTC)
        return [base + timedelta(seconds=k * n) for k in range(first, last + 1)]
    slot = after
    while limit is None or len(out) < limit:
        slot = next_slot(spec, tz, slot)
        if slot > until:
            break
        out.append(slot)
    return out


def count_slots(spec: CronSpec, tz: ZoneInfo, first: datetime, last: datetime, cap: int) -> int | None:
    """How many slots s with first <= s <= last; None when more than `cap` (a cron expression is counted by
    enumerating, so the cap bounds the time; an interval is counted by arithmetic, whatever its size)."""
    _require_aware("first", first)
    _require_aware("last", last)
    if last < first:
        return 0
    if spec.kind == "interval":
        n = spec.interval_seconds
        assert n is not None
        lo = next_slot(spec, tz, first - timedelta(microseconds=1))
        return max(0, _seconds_since_epoch(last) // n - _seconds_since_epoch(lo) // n + 1)
    found = len(slots_between(spec, tz, first - timedelta(microseconds=1), last, limit=cap + 1))
    return found if found <= cap else None


def preview(expr: str, tz_name: str, count: int = 5, now: datetime | None = None) -> list[datetime]:
    """The next `count` fire times after `now` (default: the current time), in the schedule's zone, for display.

    Validates both inputs (CronError, TimezoneError)."""
    spec = parse_cron(expr)
    tz = load_timezone(tz_name)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    now = datetime.now(UTC) if now is None else now
    _require_aware("now", now)
    out: list[datetime] = []
    slot = now
    for _ in range(count):
        slot = next_slot(spec, tz, slot)
        out.append(slot.astimezone(tz))
    return out


# ---------------------------------------------------------------------------------------------- describe

_DOW_FULL = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _list(values: list[int], name: Callable[[int], str] = str) -> str:
    """'1-5, 7 and 9' style text; runs of 3+ become ranges."""
    parts: list[str] = []
    for a, b in _runs(sorted(values)):
        if b - a >= 2:
            parts.append(f"{name(a)}-{name(b)}" if name is str else f"{name(a)} through {name(b)}")
        else:
            parts.extend(name(v) for v in range(a, b + 1))
    return _join(parts)


def _step(values: tuple[int, ...], lo: int, hi: int) -> int | None:
    """n if values == range(lo, hi + 1, n) with n > 1."""
    if len(values) < 2 or values[0] != lo:
        return None
    n = values[1] - values[0]
    return n if n > 1 and values == tuple(range(lo, hi + 1, n)) else None


def _plural(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def _describe_time(spec: CronSpec) -> str:
    s, m, h = spec._seconds, spec._minutes, spec._hours
    all_s, all_m, all_h = len(s) == 60, len(m) == 60, len(h) == 24
    if all_m and all_h and (all_s or _step(s, 0, 59)):
        return _plural(1 if all_s else _step(s, 0, 59) or 1, "second")
    sec_suffix = "" if s == (0,) else f", at second {_list(list(s))}"
    if all_m and all_h:
        text = "every minute"
    elif all_h and (_step(m, 0, 59) or len(m) == 1):
        text = (
            _plural(_step(m, 0, 59) or 1, "minute")
            if len(m) > 1
            else ("every hour" if m == (0,) else f"every hour at minute {m[0]}")
        )
    elif len(m) == 1 and _step(h, 0, 23):
        text = _plural(_step(h, 0, 23) or 1, "hour") + ("" if m == (0,) else f" at minute {m[0]}")
    elif len(m) * len(h) <= 6:
        if len(s) == 1 and s != (0,):
            times = [f"{hh:02d}:{mm:02d}:{s[0]:02d}" for hh in h for mm in m]
            sec_suffix = ""
        else:
            times = [f"{hh:02d}:{mm:02d}" for hh in h for mm in m]
        text = "at " + _join(times)
    elif all_h:
        text = f"at minute {_list(list(m))} of every hour"
    else:
        hours = f"hour {h[0]}" if len(h) == 1 else f"hours {_list(list(h))}"
        if all_m or _step(m, 0, 59):
            text = f"{_plural(_step(m, 0, 59) or 1, 'minute')} during {hours}"
        else:
            text = f"at minute {_list(list(m))} of {hours}"
    return text + sec_suffix


def _describe_days(spec: CronSpec) -> str:
    parts: list[str] = []
    if spec._dom_restricted:
        days = []
        if spec._doms:
            days.append(
                f"day {_list(sorted(spec._doms))}"
                if len(spec._doms) == 1
                else f"days {_list(sorted(spec._doms))}"
            )
        if spec._last_dom:
            days.append("the last day")
        of_the_month = " of the month" if len(spec._months) == 12 else ""
        parts.append(f"on {' and '.join(days)}{of_the_month}")
    if spec._dow_restricted:
        parts.append("on " + _list(sorted(spec._dows), lambda d: _DOW_FULL[d]))
    day_text = " or ".join(parts)  # both restricted: either matches (module docstring)
    if len(spec._months) < 12:
        months = "in " + _list(list(spec._months), lambda mo: calendar.month_name[mo])
        day_text = f"{day_text} {months}" if day_text else months
    return day_text


def describe(spec: CronSpec) -> str:
    """Human text such as 'every 2 minutes', 'at 03:00 every day', 'every 5 seconds'."""
    if spec.kind == "interval":
        return _plural(spec.interval_seconds or 1, "second")
    time_text = _describe_time(spec)
    day_text = _describe_days(spec)
    if day_text:
        return f"{time_text} {day_text}"
    if time_text.startswith("at ") and len(spec._hours) < 24:  # times of day: "at 03:00 every day"
        return f"{time_text} every day"
    return time_text
