"""A note now or as of a time, notes related to a record, a note's comment thread."""

from __future__ import annotations

import json
from typing import Any

from app.errors import Gone
from app.queries.merchants import choose_merchant
from app.queries.paging import Cursor, newest_first
from app.queries.scope import Scope
from eventlog.dbapi import Connection
from eventlog.models import NOTE_EVENTS
from eventlog.read import read_by_entity
from projections.base import merchant_key
from projections.documents import note_document
from projections.fold import EntityState


def get_note(
    views: Connection, scope: Scope, note_id: str, merchant: str | None = None
) -> dict[str, Any]:
    rows = views.execute(
        "SELECT merchant_id, doc, erased FROM notes WHERE note_id = ?", (note_id,)
    ).fetchall()
    docs = {merchant_id: (doc, erased) for merchant_id, doc, erased in rows}
    chosen = choose_merchant(docs, scope, merchant, f"note {note_id}")
    text, erased = docs[chosen]
    if erased:
        raise Gone(f"note {note_id} was erased")
    doc: dict[str, Any] = json.loads(text)
    return doc


def refuse_erased(views: Connection, merchant: str, note_id: str) -> None:
    """Gone when the merchant's note was erased (after scope and ambiguity: spec/views.md)."""
    row = views.execute(
        "SELECT erased FROM notes WHERE merchant_id = ? AND note_id = ?", (merchant, note_id)
    ).fetchone()
    if row is not None and row[0]:
        raise Gone(f"note {note_id} was erased")


def note_as_of(
    views: Connection | None,
    log: Connection,
    scope: Scope,
    note_id: str,
    at: float,
    merchant: str | None = None,
) -> dict[str, Any]:
    """The note folded from its events with action_time <= at, with the projector's own fold.
    Gone when the note is erased now (at any time asked), or every event of it until then
    was (after --older-than). `views` None: the notes view is not built yet, so the log
    alone answers (an erased note's events are all erased: Gone, unless none is that old)."""
    events = [
        e
        for e in read_by_entity(log, [note_id])
        if e.event_type in NOTE_EVENTS and e.entity_id == note_id and e.action_time <= at
    ]
    erased = set()
    if views is not None:
        erased = {
            str(row[0])
            for row in views.execute(
                "SELECT merchant_id FROM notes WHERE note_id = ? AND erased = 1", (note_id,)
            )
        }
    held_by = {merchant_key(e.merchant_id) for e in events} | erased
    chosen = choose_merchant(held_by, scope, merchant, f"note {note_id} as of {at}")
    if chosen in erased:
        raise Gone(f"note {note_id} was erased")
    state = EntityState(note_id, chosen or None)
    for event in events:
        if merchant_key(event.merchant_id) == chosen:
            state.fold(event)
    if state.erased:  # every event of it until then was erased
        raise Gone(f"note {note_id} as of {at} was erased")
    return note_document(state)


def related_notes(
    views: Connection,
    scope: Scope,
    related_id: str,
    limit: int,
    cursor: Cursor | None,
) -> dict[str, Any]:
    """Live notes whose object_id or related_to lists hold related_id, newest first.

    Spans merchants for a "*" token: each item names its merchant.
    """
    where, params = scope.sql("l.merchant_id")
    return newest_first(
        views,
        "SELECT n.doc, l.last_action_time, l.note_id, l.merchant_id"
        " FROM note_links l JOIN notes n USING (merchant_id, note_id)",
        f"l.related_id = ? AND {where}",
        (related_id, *params),
        ("l.last_action_time", "l.note_id", "l.merchant_id"),
        limit,
        cursor,
    )


def comment_thread(
    views: Connection,
    scope: Scope,
    note_id: str,
    include_deleted: bool,
    merchant: str | None = None,
) -> dict[str, Any]:
    """The comments on the note of one merchant (a comment is on its own merchant's note)."""
    held_by = [
        row[0]
        for row in views.execute(
            "SELECT merchant_id FROM notes WHERE note_id = ?"
            " UNION SELECT merchant_id FROM comments WHERE note_id = ?",
            (note_id, note_id),
        )
    ]
    chosen = choose_merchant(held_by, scope, merchant, f"note {note_id} and no comment on it")
    refuse_erased(views, chosen, note_id)
    rows = views.execute(
        "SELECT doc, deleted FROM comments WHERE merchant_id = ? AND note_id = ?"
        " ORDER BY created_time IS NULL, created_time, comment_id",
        (chosen, note_id),
    ).fetchall()
    comments = [json.loads(doc) for doc, deleted in rows if include_deleted or not deleted]
    return {"note_id": note_id, "comments": comments}
