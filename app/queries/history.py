"""The audit history of a note, and the log itself as a paged feed."""

from __future__ import annotations

from typing import Any

from app.queries.merchants import choose_merchant
from app.queries.notes import refuse_erased
from app.queries.scope import Scope
from eventlog.dbapi import Connection
from eventlog.read import LogEvent, read_by_entity, read_from
from projections.base import merchant_key
from projections.fold import own_candidates

_ACTOR_FIELDS = frozenset({"updated_by", "created_by"})


def actor(event: LogEvent) -> Any:
    """The event's own candidate for updated_by, else created_by (aliases folded, deletes too)."""
    own = own_candidates(event, _ACTOR_FIELDS)
    updated = own.get("updated_by")
    return updated if updated is not None else own.get("created_by")


def history_item(event: LogEvent) -> dict[str, Any]:
    item: dict[str, Any] = {
        "seq": event.seq,
        "message_id": event.message_id,
        "event_type": event.event_type,
        "entity": event.entity,
        "entity_id": event.entity_id,
        "merchant_id": event.merchant_id,
        "action_time": event.action_time,
        "received_at": event.received_at,
    }
    if event.erased:  # spec/views.md: listed as erased, with no changes and no actor
        return {**item, "erased": True}
    data = event.data_event
    return {
        **item,
        "created_time": data.get("created_time"),
        "request_id": event.request_id,
        "app_id": event.app_id,
        "actor": actor(event),
        "changes": data.get("event_detail"),
    }


def note_history(
    views: Connection,
    log: Connection,
    scope: Scope,
    note_id: str,
    merchant: str | None = None,
) -> dict[str, Any]:
    """Every event about one merchant's note and that merchant's comments on it, by stamp.

    The merchant is chosen first, from who holds the id, so that nothing another merchant
    sends (comments on this note id, say) is ever read to answer this one.
    """
    held_by = [
        row[0]
        for row in views.execute(
            "SELECT DISTINCT merchant_id FROM comments WHERE note_id = ?", (note_id,)
        )
    ]
    held_by += [
        merchant_key(row[0])
        for row in log.execute(
            "SELECT DISTINCT merchant_id FROM events"
            " WHERE (entity = 'note' AND entity_id = ?) OR (entity IS NULL AND note_id = ?)",
            (note_id, note_id),
        )
    ]
    chosen = choose_merchant(held_by, scope, merchant, f"history for note {note_id}")
    refuse_erased(views, chosen, note_id)
    comments = {
        row[0]
        for row in views.execute(
            "SELECT comment_id FROM comments WHERE merchant_id = ? AND note_id = ?",
            (chosen, note_id),
        )
    }
    events = sorted(
        (
            e
            for e in read_by_entity(log, [note_id, *comments])
            if merchant_key(e.merchant_id) == chosen and _about(e, note_id, comments)
        ),
        key=lambda e: e.stamp,
    )
    return {"note_id": note_id, "events": [history_item(e) for e in events]}


def _about(event: LogEvent, note_id: str, comments: set[str]) -> bool:
    if event.entity == "comment":
        # (of the chosen merchant) now on the note; an erased one by the note it named
        return event.entity_id in comments or (event.erased and event.note_id == note_id)
    # note events by their id, and events of unknown types whose note_id names the note
    return event.entity_id == note_id or (event.entity is None and event.note_id == note_id)


def log_page(log: Connection, scope: Scope, after: int, limit: int) -> dict[str, Any]:
    events = read_from(log, after, limit + 1, scope.sql())
    more = len(events) > limit
    events = events[:limit]
    return {
        "events": [history_item(e) for e in events],
        "next_after": events[-1].seq if more else None,
    }
