"""A note now or as of a time, notes related to a record, a note's comment thread."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from app.errors import NotFound
from app.queries.paging import newest_first
from app.queries.scope import Scope
from eventlog.models import NOTE_EVENTS
from eventlog.read import read_by_entity
from projections.documents import note_document
from projections.fold import EntityState
from projections.gc_pause import gc_paused


def get_note(views: sqlite3.Connection, scope: Scope, note_id: str) -> dict[str, Any]:
    row = views.execute("SELECT doc FROM notes WHERE note_id = ?", (note_id,)).fetchone()
    doc: dict[str, Any] | None = json.loads(row[0]) if row else None
    if doc is None or not scope.sees(doc["merchant_id"]):
        raise NotFound(f"no note {note_id}")
    return doc


@gc_paused()  # decodes and folds every event of the note
def note_as_of(log: sqlite3.Connection, scope: Scope, note_id: str, at: float) -> dict[str, Any]:
    """The note folded from its events with action_time <= at, with the projector's own fold."""
    events = [
        e
        for e in read_by_entity(log, [note_id])
        if e.event_type in NOTE_EVENTS and e.entity_id == note_id and e.action_time <= at
    ]
    state = EntityState(note_id)
    for event in events:
        state.fold(event)
    doc = note_document(state)
    if not events or not scope.sees(doc["merchant_id"]):
        raise NotFound(f"no note {note_id} as of {at}")
    return doc


def related_notes(
    views: sqlite3.Connection,
    scope: Scope,
    related_id: str,
    limit: int,
    cursor: tuple[float, str] | None,
) -> dict[str, Any]:
    """Live notes whose object_id or related_to lists hold related_id, newest first."""
    where, params = scope.sql("l.merchant_id")
    return newest_first(
        views,
        "SELECT n.doc, l.last_action_time, l.note_id"
        " FROM note_links l JOIN notes n USING (note_id)",
        f"l.related_id = ? AND {where}",
        (related_id, *params),
        ("l.last_action_time", "l.note_id"),
        limit,
        cursor,
    )


def note_known(views: sqlite3.Connection, scope: Scope, note_id: str) -> bool:
    row = views.execute("SELECT merchant_id FROM notes WHERE note_id = ?", (note_id,)).fetchone()
    return row is not None and scope.sees(row[0])


def comment_thread(
    views: sqlite3.Connection, scope: Scope, note_id: str, include_deleted: bool
) -> dict[str, Any]:
    where, params = scope.sql()
    rows = views.execute(
        f"SELECT doc, deleted FROM comments WHERE note_id = ? AND {where}"
        " ORDER BY created_time IS NULL, created_time, comment_id",
        (note_id, *params),
    ).fetchall()
    if not rows and not note_known(views, scope, note_id):
        raise NotFound(f"no note {note_id} and no comment on it")
    comments = [json.loads(doc) for doc, deleted in rows if include_deleted or not deleted]
    return {"note_id": note_id, "comments": comments}
