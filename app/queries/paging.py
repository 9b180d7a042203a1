"""Keyset pages: {"items", "next_cursor"}, with a cursor exactly when more items exist."""

from __future__ import annotations

import sqlite3
from typing import Any

from app.queries.params import encode_cursor
from eventlog.canonical import loads_strict


def newest_first(
    conn: sqlite3.Connection,
    select: str,
    where: str,
    params: tuple[object, ...],
    sort: tuple[str, str],
    limit: int,
    cursor: tuple[float, str] | None,
) -> dict[str, Any]:
    """A page of `select` (doc, sort value, id) rows, newest first by `sort` (value, id).

    Keyset: the next page starts strictly after the last item shown, so no item whose sort
    key is unchanged is skipped or repeated while new ones arrive.
    """
    value, key = sort
    if cursor is not None:
        where += f" AND ({value}, {key}) < (?, ?)"
        params = (*params, *cursor)
    rows = conn.execute(
        f"{select} WHERE {where} ORDER BY {value} DESC, {key} DESC LIMIT ?", (*params, limit + 1)
    ).fetchall()
    more = len(rows) > limit
    return {
        "items": [loads_strict(row[0]) for row in rows[:limit]],
        "next_cursor": encode_cursor([rows[limit - 1][1], rows[limit - 1][2]]) if more else None,
    }
