"""Events received per day, counted within a token's merchants (the inspector's status chart)."""

from __future__ import annotations

from app.queries.scope import Scope
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection

DAY = 86_400


def events_per_day(log: Connection, scope: Scope, today_start: float, days: int = 30) -> list[int]:
    """Counts for the `days` UTC days ending with the one starting at `today_start`, oldest first.

    One pass over the events received since the first day (UTC midnight, `days - 1` days
    before `today_start`), grouped by day number: the index events_by_received_at finds them,
    so older events are not read.
    """
    first = today_start - DAY * (days - 1)
    # the day's number from 0: PostgreSQL's integer cast rounds where SQLite's truncates
    day = "floor({0})" if isinstance(log, PgConnection) else "CAST({0} AS INTEGER)"
    number = day.format("(received_at - ?) / 86400")
    where, params = scope.sql()
    rows = log.execute(
        f"SELECT {number} AS n, count(*) FROM events WHERE received_at >= ? AND {where} GROUP BY n",
        (first, first, *params),
    ).fetchall()
    counts = [0] * days
    for n, count in rows:
        if 0 <= int(n) < days:
            counts[int(n)] = int(count)
    return counts
