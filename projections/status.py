"""Where each projector stands: version, checkpoint, lag, last error."""

from __future__ import annotations

from typing import Any

from eventlog.dbapi import Connection
from eventlog.read import head_seq
from projections.base import Projector
from projections.store import last_error, live_row


def projector_status(
    views: Connection, projector: Projector, log_head: int
) -> dict[str, Any]:
    row = live_row(views, projector.name)
    error = last_error(views, projector.name)
    rebuilding = views.execute(
        "SELECT checkpoint FROM rebuilds WHERE name = ?", (projector.name,)
    ).fetchone()
    checkpoint = row.checkpoint if row else None
    return {
        "name": projector.name,
        "version": projector.version,
        "stored_version": row.version if row else None,
        "checkpoint": checkpoint,
        # seq is dense (the log never deletes), so the lag is a subtraction
        "lag": log_head - checkpoint if checkpoint is not None else log_head,
        "rebuilding_at": rebuilding[0] if rebuilding else None,
        "error": None
        if error is None
        else {
            "seq": error.seq,
            "message_id": error.message_id,
            "error": error.error,
            "at": error.at,
        },
    }


def all_status(
    views: Connection, log: Connection, projectors: list[Projector]
) -> list[dict[str, Any]]:
    head = head_seq(log)
    return [projector_status(views, p, head) for p in projectors]
