"""An account's mention feed: notes that mention it now, newest mention first."""

from __future__ import annotations

from typing import Any

from app.queries.paging import Cursor, newest_first
from app.queries.scope import Scope
from eventlog.dbapi import Connection


def mention_feed(
    views: Connection,
    scope: Scope,
    account_id: str,
    limit: int,
    cursor: Cursor | None,
) -> dict[str, Any]:
    where, params = scope.sql()
    return newest_first(
        views,
        "SELECT item, mentioned_at, note_id, merchant_id FROM mentions",
        f"account_id = ? AND {where}",
        (account_id, *params),
        ("mentioned_at", "note_id", "merchant_id"),
        limit,
        cursor,
    )
