"""The one row of a statement that always returns exactly one: a SELECT of a function or an aggregate
(`SELECT pg_backend_pid()`, `SELECT count(*)`), or an INSERT ... RETURNING that cannot skip its row.

`cursor.fetchone()` is typed `Row | None` because in general a statement may return nothing; for these
statements no row means the statement or the schema is not what this code was written for, so `one` raises
instead of letting a `None` travel on.
"""

from __future__ import annotations

from typing import TypeVar

import psycopg

Row = TypeVar("Row")


class NoRow(RuntimeError):
    """A statement that always returns one row returned none."""


def one(cursor: psycopg.Cursor[Row]) -> Row:
    row = cursor.fetchone()
    if row is None:
        raise NoRow("a statement that always returns one row returned none")
    return row


async def one_async(cursor: psycopg.AsyncCursor[Row]) -> Row:
    row = await cursor.fetchone()
    if row is None:
        raise NoRow("a statement that always returns one row returned none")
    return row
