"""Events received per day, counted within a token's merchants (the inspector's status chart)."""

from __future__ import annotations

from typing import Any

from app.queries.scope import Scope
from eventlog.dbapi import Connection

DAY = 86_400


def events_per_day(log: Connection, scope: Scope, today_start: float, days: int = 30) -> list[int]:
    """Counts for the `days` UTC days ending with the one starting at `today_start`, oldest first.

    One statement, a CASE per day: the same SQL on SQLite and PostgreSQL (whose integer
    casts round where SQLite's truncate).
    """
    starts = [today_start - DAY * (days - 1 - i) for i in range(days)]
    sums = ", ".join(
        "coalesce(sum(CASE WHEN received_at >= ? AND received_at < ? THEN 1 ELSE 0 END), 0)"
        for _ in starts
    )
    bounds: list[Any] = [bound for start in starts for bound in (start, start + DAY)]
    where, params = scope.sql()
    row = log.execute(
        f"SELECT {sums} FROM events WHERE received_at >= ? AND {where}",
        (*bounds, starts[0], *params),
    ).fetchone()
    return [int(n) for n in row]
