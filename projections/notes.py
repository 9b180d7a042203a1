"""The notes view: one row per note, plus the ids each live note is related to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from eventlog.models import NOTE_EVENTS
from projections.base import EntityProjector, Writes, doc_text, merchant_key, state_text, upsert
from projections.documents import note_document
from projections.fold import EntityState


def related_ids(doc: dict[str, Any]) -> Iterator[str]:
    """object_id and every id in the lists inside related_to: what ?related_to= matches."""
    if isinstance(doc["object_id"], str):
        yield doc["object_id"]
    related = doc["related_to"]
    if isinstance(related, dict):
        for ids in related.values():
            if isinstance(ids, list):
                yield from (i for i in ids if isinstance(i, str))


class NotesProjector(EntityProjector):
    name = "notes"
    # 2: list fields that named no element stay out of extra; 3: keyed by (merchant, note);
    # 4: erased notes are kept as such (they answer 410), recent notes have an index
    version = 4
    event_types = NOTE_EVENTS
    tables = ("notes", "note_links")
    state_table = "notes"
    key_column = "note_id"

    def schema(self, suffix: str, generation: int) -> list[str]:
        g = f"g{generation}"
        return [
            f"""CREATE TABLE notes{suffix} (
                merchant_id TEXT NOT NULL,
                note_id TEXT NOT NULL,
                deleted INTEGER NOT NULL,
                last_action_time REAL,
                doc TEXT NOT NULL,
                state TEXT NOT NULL,
                erased INTEGER NOT NULL,
                PRIMARY KEY (merchant_id, note_id)
            )""",
            f"CREATE INDEX notes_{g}_id ON notes{suffix} (note_id)",
            f"CREATE INDEX notes_{g}_recent ON notes{suffix}"
            " (last_action_time DESC, note_id DESC, merchant_id DESC)",
            f"""CREATE TABLE note_links{suffix} (
                related_id TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                note_id TEXT NOT NULL,
                last_action_time REAL,
                PRIMARY KEY (related_id, merchant_id, note_id)
            ) WITHOUT ROWID""",
            f"CREATE INDEX note_links_{g}_recent ON note_links{suffix}"
            " (related_id, last_action_time DESC, note_id DESC, merchant_id DESC)",
            f"CREATE INDEX note_links_{g}_note ON note_links{suffix} (merchant_id, note_id)",
        ]

    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        doc = note_document(state)
        merchant = merchant_key(state.merchant_id)
        upsert(writes, f"notes{suffix}", ("merchant_id", "note_id"), {
            "merchant_id": merchant,
            "note_id": state.entity_id,
            "deleted": int(state.deleted),
            "erased": int(state.erased),
            "last_action_time": state.last_action_time,
            "doc": doc_text(doc),
            "state": state_text(state),
        })  # fmt: skip
        writes.execute(
            f"DELETE FROM note_links{suffix} WHERE merchant_id = ? AND note_id = ?",
            (merchant, state.entity_id),
        )
        if not state.deleted:
            writes.executemany(
                f"INSERT INTO note_links{suffix} VALUES (?, ?, ?, ?)",
                [(rid, merchant, state.entity_id, state.last_action_time)
                 for rid in set(related_ids(doc))],
            )  # fmt: skip
