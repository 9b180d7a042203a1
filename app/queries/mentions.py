"""An account's mention feed: notes that mention it now, newest mention first."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from app.queries.paging import page
from app.queries.scope import Scope


def mention_feed(
    views: sqlite3.Connection,
    scope: Scope,
    account_id: str,
    limit: int,
    cursor: tuple[float, str] | None,
) -> dict[str, Any]:
    where, params = scope.sql()
    after = ""
    if cursor is not None:
        # keyset: strictly after the last item shown, so nothing is skipped or repeated
        after = " AND (mentioned_at, note_id) < (?, ?)"
        params = (*params, *cursor)
    rows = views.execute(
        f"SELECT item, mentioned_at, note_id FROM mentions WHERE account_id = ? AND {where}{after}"
        " ORDER BY mentioned_at DESC, note_id DESC LIMIT ?",
        (account_id, *params, limit + 1),
    ).fetchall()
    return page([json.loads(r[0]) for r in rows], [(r[1], r[2]) for r in rows], limit)
