"""Input validation: the one place that owns each field's type, bounds, size limit and error text.

Every surface (the admin API, the CLI, the schedules file, the console) checks a value here before it
reaches the database, so a bad value is refused the same way everywhere: an `AdminError` whose message is one
line, names the field (`.field`) and echoes at most `ECHO_CHARS` characters of the bad value. Nothing here does
I/O, so a refused value has touched nothing.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

ECHO_CHARS = 80            # at most this much of a bad value is echoed in an error
MESSAGE_CHARS = 2000       # no error line is longer than this
NAME_MAX = 200             # schedule names (also the audit's entity name)
TASK_NAME_MAX = 200
CRON_MAX = 300             # a cron expression or an 'N seconds' interval
TIMEZONE_MAX = 64
UNIQUE_KEY_MAX = 500
TIMEOUT_MAX = 7 * 86400.0  # a job's timeout: more than 0, at most a week
MAX_ATTEMPTS_MAX = 1000
PRIORITY_MIN, PRIORITY_MAX = -32768, 32767
COUNT_MAX = 1000           # `schedule check --count`
ARGS_MAX_BYTES = 1024 * 1024  # default for PGJOBS_MAX_ARGS_BYTES
ARGS_MAX_DEPTH = 64

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NAME_RE = re.compile(r"^[\w][\w .:/@+-]*$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class AdminError(ValueError):
    """A request the admin API refuses; the message is one line that says what to fix. `field` names the
    input it is about (None when it is about no single field)."""

    def __init__(self, message: Any = "", *, field: str | None = None):
        super().__init__(one_line(str(message)))
        self.field = field


def one_line(message: str) -> str:
    """`message` on one line, at most MESSAGE_CHARS long."""
    text = " ".join(message.split()) if _CONTROL.search(message) else message
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def echo(value: Any) -> str:
    """A bad value as it is shown in an error: repr (so control characters are escaped), at most ECHO_CHARS."""
    if isinstance(value, str) and len(value) > ECHO_CHARS:
        return repr(value[:ECHO_CHARS]) + f"... ({len(value)} characters)"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= ECHO_CHARS + 2 else text[:ECHO_CHARS] + "..."


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (libpq puts the reason first), bounded."""
    for line in str(exc).splitlines():
        if line.strip():
            return one_line(line.strip())
    return type(exc).__name__


def fail(field: str, problem: str) -> AdminError:
    return AdminError(f"{field}: {problem}", field=field)


# ---------------------------------------------------------------------- scalars
def text(field: str, value: Any, max_chars: int, *, allow_empty: bool = False) -> str:
    """A string without control characters (no newlines), at most `max_chars`."""
    if not isinstance(value, str):
        raise fail(field, f"expected text, got {type(value).__name__} {echo(value)}")
    if not value and not allow_empty:
        raise fail(field, "must not be empty")
    if len(value) > max_chars:
        raise fail(field, f"{len(value)} characters is more than {max_chars}: {echo(value)}")
    if _CONTROL.search(value) or _SURROGATE.search(value):
        raise fail(field, f"contains a control character or a lone surrogate: {echo(value)}")
    return value


def integer(field: str, value: Any, lo: int, hi: int) -> int:
    """A whole number in lo..hi (an int, a whole float or digits as text)."""
    if isinstance(value, bool):
        raise fail(field, f"expected a whole number, got {echo(value)}")
    try:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str) and len(value) <= 40:
            number = int(value.strip())
        else:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise fail(field, f"expected a whole number, got {echo(value)}") from None
    if not lo <= number <= hi:
        raise fail(field, f"{echo(number)} is outside {lo}..{hi}")
    return number


def number(field: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, unit: str = "") -> float:
    """A finite number in lo..hi (lo excluded when `lo_open`); numeric text is accepted."""
    if isinstance(value, bool):
        raise fail(field, f"expected a number, got {echo(value)}")
    try:
        if isinstance(value, str) and len(value) > 40:
            raise ValueError
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise fail(field, f"expected a number, got {echo(value)}") from None
    below = result <= lo if lo_open else result < lo
    if not math.isfinite(result) or below or result > hi:
        bound = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
        raise fail(field, f"{echo(value)} must be finite, {bound} and at most {hi:g}{unit}")
    return result


def timeout(value: Any, field: str = "timeout") -> float | None:
    """A job's timeout in seconds: None (no timeout) or finite, more than 0, at most a week."""
    if value is None:
        return None
    return number(field, value, 0.0, TIMEOUT_MAX, lo_open=True, unit=" seconds")


def max_attempts(value: Any, field: str = "max_attempts") -> int:
    """At least 1 (0 is refused, never read as 'the default'), at most MAX_ATTEMPTS_MAX."""
    return integer(field, value, 1, MAX_ATTEMPTS_MAX)


def priority(value: Any, field: str = "priority") -> int:
    return integer(field, value, PRIORITY_MIN, PRIORITY_MAX)


def count(value: Any, field: str = "count") -> int:
    return integer(field, value, 1, COUNT_MAX)


def schedule_name(value: Any, field: str = "name") -> str:
    if isinstance(value, str) and not value.strip():
        raise fail(field, "schedule name is empty")
    name = text(field, value, NAME_MAX)
    if name != name.strip() or not _NAME_RE.match(name):
        raise fail(field, f"schedule name {echo(name)}: use 1-{NAME_MAX} letters, digits, spaces or _ . : / @ + -, "
                          "starting with a letter or digit")
    return name


def task_name(value: Any, field: str = "task") -> str:
    return text(field, value, TASK_NAME_MAX)


def cron_text(value: Any, field: str = "cron") -> str:
    """The raw text of a cron expression or interval, bounded before it is parsed (cron.parse_cron)."""
    return text(field, value, CRON_MAX)


def timezone(value: Any, field: str = "timezone") -> str:
    return text(field, value, TIMEZONE_MAX)


def queue(value: Any, field: str = "queue") -> str:
    if not isinstance(value, str) or not _QUEUE_RE.match(value):
        raise AdminError(f"{field} {echo(value)}: use 1-64 letters, digits, '_', '.', ':' or '-'", field=field)
    return value


def unique_key(value: Any, field: str = "unique_key") -> str | None:
    return None if value is None else text(field, value, UNIQUE_KEY_MAX)


def aware_time(field: str, value: Any) -> datetime:
    """A timezone-aware datetime; ISO 8601 text is parsed (no zone = UTC)."""
    if isinstance(value, str):
        if len(value) > 64:
            raise fail(field, f"expected an ISO 8601 time, got {echo(value)}")
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail(field, f"expected an ISO 8601 time like 2026-12-01T09:00:00+00:00, got {echo(value)}") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if not isinstance(value, datetime):
        raise fail(field, f"expected a datetime or ISO 8601 text, got {type(value).__name__} {echo(value)}")
    if value.tzinfo is None:
        raise fail(field, "must be timezone-aware")
    return value


# ---------------------------------------------------------------------- JSON args
def args(value: Any, max_bytes: int = ARGS_MAX_BYTES, field: str = "args") -> tuple[dict[str, Any], str]:
    """JSON text or a dict -> (dict, its JSON text), representable in Postgres jsonb: an object, at most
    `max_bytes` of JSON, nested at most ARGS_MAX_DEPTH deep, no NUL and no lone surrogate in any key or string,
    no NaN or infinity. The text returned is what is sent, so args are encoded once."""
    if value is None or value == "":
        return {}, "{}"
    if isinstance(value, bytes | bytearray):
        raise fail(field, "expected a JSON object or JSON text, got bytes")
    if isinstance(value, str):
        if len(value) > max_bytes:
            raise fail(field, f"{len(value)} characters of JSON is more than the limit of {max_bytes} bytes "
                              "(PGJOBS_MAX_ARGS_BYTES)")
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise fail(field, f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except RecursionError:
            raise fail(field, f"nested more than {ARGS_MAX_DEPTH} deep") from None
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            raise fail(field, f"invalid JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise fail(field, f'must be a JSON object like {{"key": "value"}}, got {type(value).__name__}')
    _check_tree(value, field)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail(field, f"not representable as JSON ({first_line(exc)})") from None
    except RecursionError:
        raise fail(field, f"nested more than {ARGS_MAX_DEPTH} deep") from None
    size = len(encoded.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise fail(field, f"{size} bytes of JSON is more than the limit of {max_bytes} (PGJOBS_MAX_ARGS_BYTES)")
    return value, encoded


def _check_tree(root: dict[str, Any], field: str) -> None:
    """Walk the value without recursion: depth, key types, strings jsonb can store, finite floats."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > ARGS_MAX_DEPTH:
            raise fail(field, f"nested more than {ARGS_MAX_DEPTH} deep")
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise fail(field, f"object keys must be strings, got {type(key).__name__} {echo(key)}")
                _check_string(key, field, "a key")
                stack.append((item, depth + 1))
        elif isinstance(node, list | tuple):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            _check_string(node, field, "a string")
        elif isinstance(node, float) and not math.isfinite(node):
            raise fail(field, f"{node!r} is not a JSON number")
        elif node is not None and not isinstance(node, bool | int | float):
            raise fail(field, f"{type(node).__name__} is not a JSON value")


def _check_string(s: str, field: str, what: str) -> None:
    if "\x00" in s:
        raise fail(field, f"{what} contains \\u0000, which Postgres jsonb cannot store: {echo(s)}")
    if _SURROGATE.search(s):
        raise fail(field, f"{what} contains a lone surrogate, which is not valid Unicode: {echo(s)}")
