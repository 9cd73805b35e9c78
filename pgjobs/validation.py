"""Every value a user can hand pgjobs is checked here, once: its type, its bounds and its size.

The admin API, the Python API, the CLI, the schedules file, the settings and the console all call these
functions, so a limit is stated in one place (and documented in docs/configuration.md). A refusal is an
`InvalidValue` carrying the failing field in `.field`; its message is one line that names the field and
echoes at most `ECHO_CHARS` characters of the bad value, with any newline from user data escaped.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

# ---------------------------------------------------------------------- the limits
ECHO_CHARS = 80            # at most this much of a bad value is echoed in an error
NAME_MAX = 200             # schedule names
CRON_MAX = 300             # a cron expression
TASK_MAX = 200             # a task name
QUEUE_MAX = 100            # a queue name
UNIQUE_KEY_MAX = 500
DESCRIPTION_MAX = 2000
ARGS_MAX_BYTES = 1_000_000  # default for settings.max_args_bytes
ARGS_MAX_DEPTH = 64         # nesting of objects/arrays inside args
COUNT_MAX = 1000            # previews and other user-chosen counts
TIMEOUT_MAX = 7 * 86400     # a job's timeout, seconds


class InvalidValue(ValueError):
    """A refused value; `.field` names what was wrong, the message is one line."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(one_line(message))
        self.field = field


def one_line(text: str) -> str:
    """`text` with newlines and other control characters escaped, so an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def echo(value: Any) -> str:
    """A short one-line rendering of a bad value for an error message (never the whole of a huge one)."""
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str):
        shown = one_line(text[:ECHO_CHARS])
        return f"'{shown}'" + ("..." if len(text) > ECHO_CHARS else "")
    shown = one_line(text[:ECHO_CHARS])
    return shown + ("..." if len(text) > ECHO_CHARS else "")


def fail(field: str, message: str, value: Any = None, *, show: bool = True) -> InvalidValue:
    return InvalidValue(f"{field}: {message}" + (f", got {echo(value)}" if show else ""), field)


# ---------------------------------------------------------------------- scalars
def integer(field: str, value: Any, lo: int, hi: int) -> int:
    """A whole number in lo..hi (an integral float or a numeric string is accepted; bools are not)."""
    if isinstance(value, bool):
        raise fail(field, "expected a whole number", value)
    try:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            number = int(value)
        elif isinstance(value, str):
            if len(value) > 40:
                raise ValueError
            number = int(value.strip())
        else:
            number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise fail(field, "expected a whole number", value) from None
    if not lo <= number <= hi:
        raise InvalidValue(f"{field}: {echo(number)} is outside {lo}..{hi}", field)
    return number


def count(field: str, value: Any, hi: int = COUNT_MAX) -> int:
    return integer(field, value, 1, hi)


def number(field: str, value: Any, *, lo: float = 0.0, hi: float, lo_open: bool = True) -> float:
    """A finite number of seconds (or other unit) in (lo, hi] (or [lo, hi] with lo_open=False)."""
    if isinstance(value, bool):
        raise fail(field, "expected a number", value)
    try:
        if isinstance(value, str) and len(value) > 40:
            raise ValueError
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise fail(field, "expected a number", value) from None
    if not math.isfinite(result) or result > hi or result < lo or (lo_open and result == lo):
        bound = f"{'more than' if lo_open else 'at least'} {lo:g} and at most {hi:g}"
        raise fail(field, f"must be {bound}", value)
    return result


def timeout(field: str, value: Any) -> float | None:
    """A job timeout in seconds: None (no timeout) or 0 < t <= TIMEOUT_MAX."""
    if value is None:
        return None
    return number(field, value, lo=0.0, hi=TIMEOUT_MAX)


def text(field: str, value: Any, max_chars: int, *, empty: bool = False) -> str:
    """A string of at most max_chars characters, without NUL or lone surrogates (Postgres refuses both)."""
    if not isinstance(value, str):
        raise fail(field, "expected text", value)
    if not empty and not value.strip():
        raise fail(field, "is empty", value, show=False)
    if len(value) > max_chars:
        raise fail(field, f"is {len(value)} characters, at most {max_chars} allowed", value)
    _storable(field, value)
    return value


def _storable(field: str, s: str) -> None:
    if "\x00" in s:
        raise fail(field, "contains a NUL character (\\u0000), which Postgres cannot store", s)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise fail(field, "contains a lone surrogate (invalid Unicode)", s) from None


def aware_datetime(field: str, value: Any) -> datetime | None:
    """None, a timezone-aware datetime, or ISO 8601 text with an offset."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > 64:
            raise fail(field, "expected an ISO 8601 time with a timezone", value)
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail(field, "expected an ISO 8601 time with a timezone like 2026-01-01T09:00+00:00",
                       value) from None
    if not isinstance(value, datetime):
        raise fail(field, "expected a timezone-aware datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise fail(field, "must be timezone-aware", value.isoformat())
    return value


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(field, "expected true or false", value)
    return value


# ---------------------------------------------------------------------- JSON args
def json_args(value: Any, max_bytes: int = ARGS_MAX_BYTES, field: str = "args") -> tuple[dict[str, Any], str]:
    """JSON text or a dict -> (dict, its JSON text), storable as Postgres jsonb.

    Refused before any database work: not an object, invalid JSON, NaN/Infinity, NUL or lone surrogates
    anywhere (keys too), nesting deeper than ARGS_MAX_DEPTH, or more than max_bytes of JSON text.
    """
    if value is None or value == "":
        return {}, "{}"
    if isinstance(value, (str, bytes)):
        if len(value) > max_bytes:
            raise fail(field, f"is {len(value)} bytes of JSON, at most {max_bytes} allowed", show=False)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise fail(field, "is not UTF-8 text", show=False) from None
        _check_text_depth(field, value)
        try:
            value = json.loads(value, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise fail(field, f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                       show=False) from None
        except (ValueError, RecursionError) as exc:
            raise fail(field, str(exc) if isinstance(exc, ValueError) else "nested too deeply",
                       show=False) from None
    if not isinstance(value, dict):
        raise fail(field, f"must be a JSON object like {{\"key\": \"value\"}}, not {type(value).__name__}",
                   show=False)
    _walk(field, value)
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail(field, f"not representable as JSON ({one_line(str(exc))[:ECHO_CHARS]})", show=False) from None
    except RecursionError:
        raise fail(field, f"nested deeper than {ARGS_MAX_DEPTH} levels", show=False) from None
    if len(encoded.encode("utf-8")) > max_bytes:
        raise fail(field, f"is {len(encoded.encode('utf-8'))} bytes of JSON, at most {max_bytes} allowed",
                   show=False)
    return value, encoded


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON for Postgres")


def _check_text_depth(field: str, s: str) -> None:
    """Refuse deep nesting in JSON text before json.loads can recurse (brackets inside strings are
    counted too, which only errs on the side of a clear refusal for pathological strings)."""
    depth = 0
    in_string = escaped = False
    for c in s:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > ARGS_MAX_DEPTH:
                raise fail(field, f"nested deeper than {ARGS_MAX_DEPTH} levels", show=False)
        elif c in "]}":
            depth -= 1


def _walk(field: str, root: Any) -> None:
    """Iteratively check every key and value: depth, NaN/Infinity, NUL and surrogates, JSON types."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > ARGS_MAX_DEPTH:
                raise fail(field, f"nested deeper than {ARGS_MAX_DEPTH} levels", show=False)
            for key, item in node.items():
                if not isinstance(key, str):
                    raise fail(field, f"object keys must be text, got {echo(key)}", show=False)
                _storable(f"{field} key", key)
                stack.append((item, depth + 1))
        elif isinstance(node, (list, tuple)):
            if depth > ARGS_MAX_DEPTH:
                raise fail(field, f"nested deeper than {ARGS_MAX_DEPTH} levels", show=False)
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            _storable(field, node)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise fail(field, f"{node} is not valid JSON", show=False)
        elif node is None or isinstance(node, (bool, int)):
            continue
        else:
            raise fail(field, f"a {type(node).__name__} is not representable as JSON", show=False)
