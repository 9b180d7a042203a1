"""The comments view: one row per comment, indexed by the note whose thread it is in."""

from __future__ import annotations

from eventlog.models import COMMENT_EVENTS
from projections.base import EntityProjector, Writes, doc_text, merchant_key, state_text, upsert
from projections.documents import comment_document
from projections.fold import EntityState


class CommentsProjector(EntityProjector):
    name = "comments"
    # 2: list fields that named no element stay out of extra; 3: keyed by (merchant, comment)
    # 4: erased events are counted in the state (spec/views.md, "Erasure")
    version = 4
    event_types = COMMENT_EVENTS
    tables = ("comments",)
    state_table = "comments"
    key_column = "comment_id"

    def schema(self, suffix: str, generation: int) -> list[str]:
        g = f"g{generation}"
        return [
            f"""CREATE TABLE comments{suffix} (
                merchant_id TEXT NOT NULL,
                comment_id TEXT NOT NULL,
                note_id TEXT,
                deleted INTEGER NOT NULL,
                created_time REAL,
                doc TEXT NOT NULL,
                state TEXT NOT NULL,
                PRIMARY KEY (merchant_id, comment_id)
            )""",
            # A thread is one range of this index, already in display order: a comment is on
            # the note of its own merchant only.
            f"CREATE INDEX comments_{g}_thread ON comments{suffix}"
            " (merchant_id, note_id, (created_time IS NULL), created_time, comment_id)",
            f"CREATE INDEX comments_{g}_note ON comments{suffix} (note_id)",
        ]

    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        doc = comment_document(state)
        upsert(writes, f"comments{suffix}", ("merchant_id", "comment_id"), {
            "merchant_id": merchant_key(state.merchant_id),
            "comment_id": state.entity_id,
            "note_id": doc["note_id"],
            "deleted": int(state.deleted),
            "created_time": doc["created_time"],
            "doc": doc_text(doc),
            "state": state_text(state),
        })  # fmt: skip
