"""The most recently changed notes a token may read (the inspector's home page)."""

from __future__ import annotations

from typing import Any

from app.queries.paging import Cursor, newest_first
from app.queries.scope import Scope
from eventlog.dbapi import Connection


def recent_notes(
    views: Connection, scope: Scope, limit: int, cursor: Cursor | None
) -> dict[str, Any]:
    """Notes (deleted ones too) by last_action_time, newest first; each names its merchant."""
    where, params = scope.sql()
    return newest_first(
        views,
        "SELECT doc, last_action_time, note_id, merchant_id FROM notes",
        f"last_action_time IS NOT NULL AND {where}",
        params,
        ("last_action_time", "note_id", "merchant_id"),
        limit,
        cursor,
    )
