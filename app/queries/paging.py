"""Keyset pages: {"items", "next_cursor"}, with a cursor exactly when more items exist."""

from __future__ import annotations

from typing import Any

from app.queries.params import Cursor, encode_cursor
from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection


def newest_first(
    conn: Connection,
    select: str,
    where: str,
    params: tuple[object, ...],
    sort: tuple[str, str, str],
    limit: int,
    cursor: Cursor | None,
) -> dict[str, Any]:
    """A page of `select` (doc, sort value, id, merchant) rows, newest first by `sort`.

    Keyset: the next page starts strictly after the last item shown, so no item whose sort
    key is unchanged is skipped or repeated while new ones arrive. The merchant is the last
    tie-breaker: one id may be held by several merchants.
    """
    columns = ", ".join(sort)
    if cursor is not None:
        where += f" AND ({columns}) < (?, ?, ?)"
        params = (*params, *cursor)
    order = ", ".join(f"{column} DESC" for column in sort)
    rows = conn.execute(
        f"{select} WHERE {where} ORDER BY {order} LIMIT ?", (*params, limit + 1)
    ).fetchall()
    more = len(rows) > limit
    return {
        "items": [loads_strict(row[0]) for row in rows[:limit]],
        "next_cursor": encode_cursor(list(rows[limit - 1][1:4])) if more else None,
    }
