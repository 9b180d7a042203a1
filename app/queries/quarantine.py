"""What quarantine holds, each item with its payload and its latest replay (for "*" tokens)."""

from __future__ import annotations

from typing import Any

from eventlog.dbapi import Connection

_KEYS = (
    "id", "reason", "detail", "kind", "message_id", "received_at", "payload",
    "last_replay", "last_replay_detail",
)  # fmt: skip


def quarantined(log: Connection, limit: int, before: int | None) -> dict[str, Any]:
    """Newest first, `limit` items with id < `before`; `next_before` when more exist."""
    rows = log.execute(
        "SELECT q.id, q.reason, q.detail, q.kind, q.message_id, q.received_at, q.payload,"
        " r.outcome, r.detail FROM quarantine q LEFT JOIN quarantine_replays r ON r.id ="
        " (SELECT max(r2.id) FROM quarantine_replays r2 WHERE r2.quarantine_id = q.id)"
        " WHERE q.id < ? ORDER BY q.id DESC LIMIT ?",
        (before if before is not None else 2**62, limit + 1),
    ).fetchall()
    items = [dict(zip(_KEYS, row, strict=True)) for row in rows[:limit]]
    return {"items": items, "next_before": items[-1]["id"] if len(rows) > limit else None}
