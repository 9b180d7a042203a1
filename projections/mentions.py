"""The mention feed: one row per (account, note) mentioned now, newest first.

Keeps its own fold of each note (mention_notes), so it needs no other view.
"""

from __future__ import annotations

from eventlog.models import NOTE_EVENTS
from projections.base import EntityProjector, Writes, doc_text, merchant_key, state_text, upsert
from projections.documents import mention_item, mentioned_accounts, note_document
from projections.fold import EntityState


class MentionsProjector(EntityProjector):
    name = "mentions"
    # 2: list fields that named no element stay out of extra; 3: keyed by (merchant, note)
    # 4: erased events are counted in the state (spec/views.md, "Erasure")
    version = 4
    event_types = NOTE_EVENTS
    tables = ("mention_notes", "mentions")
    state_table = "mention_notes"
    key_column = "note_id"

    def schema(self, suffix: str, generation: int) -> list[str]:
        g = f"g{generation}"
        return [
            f"""CREATE TABLE mention_notes{suffix} (
                merchant_id TEXT NOT NULL,
                note_id TEXT NOT NULL,
                state TEXT NOT NULL,
                PRIMARY KEY (merchant_id, note_id)
            )""",
            f"""CREATE TABLE mentions{suffix} (
                account_id TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                note_id TEXT NOT NULL,
                mentioned_at REAL NOT NULL,
                item TEXT NOT NULL,
                PRIMARY KEY (account_id, merchant_id, note_id)
            ) WITHOUT ROWID""",
            f"CREATE INDEX mentions_{g}_feed ON mentions{suffix}"
            " (account_id, mentioned_at DESC, note_id DESC, merchant_id DESC)",
            f"CREATE INDEX mentions_{g}_note ON mentions{suffix} (merchant_id, note_id)",
        ]

    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        merchant = merchant_key(state.merchant_id)
        upsert(
            writes,
            f"mention_notes{suffix}",
            ("merchant_id", "note_id"),
            {"merchant_id": merchant, "note_id": state.entity_id, "state": state_text(state)},
        )
        writes.execute(
            f"DELETE FROM mentions{suffix} WHERE merchant_id = ? AND note_id = ?",
            (merchant, state.entity_id),
        )
        accounts = mentioned_accounts(state)
        if not accounts:
            return
        note = note_document(state)
        writes.executemany(
            f"INSERT INTO mentions{suffix} VALUES (?, ?, ?, ?, ?)",
            [(account, merchant, state.entity_id, at, doc_text(mention_item(note, at)))
             for account, at in accounts.items()],
        )  # fmt: skip
