"""The search view: one document per live note, (merchant, note id), holding its words.

A note's document is the text of its description (HTML tags stripped), its type and
result, and the descriptions of its comments that are not deleted (a comment on the note of
its own merchant, by its current note_id), folded for search (projections/textfold.py).
A deleted note, or one with no words, has no document. The view keeps its own fold of
notes (search_notes) and comments (search_comments), so it needs no other view; the
full-text index beside search_docs is projections/search_index.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from eventlog.dbapi import Connection
from eventlog.models import COMMENT_EVENTS, NOTE_EVENTS
from eventlog.read import LogEvent
from projections import search_index
from projections.base import (
    IDS_PER_QUERY,
    EntityProjector,
    Key,
    ProjectionFailed,
    Writes,
    doc_text,
    merchant_key,
    state_text,
    upsert,
)
from projections.fold import EntityState
from projections.textfold import indexed_words, plain_text
from projections.values import ALIASES


def _chunks(ids: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), IDS_PER_QUERY):
        yield ordered[start : start + IDS_PER_QUERY]


def _marks(chunk: Sequence[object]) -> str:
    return ", ".join("?" * len(chunk))


def _text(value: Any) -> str | None:
    """A register's value as text to index: a string (its HTML as plain text), or a number."""
    if isinstance(value, str):
        return plain_text(value) or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def note_of(comment: EntityState) -> str | None:
    """The note a comment is on (spec/views.md: its object_id register, when a string)."""
    object_id = comment.register("object_id")
    return object_id if isinstance(object_id, str) else None


class NoteStates(EntityProjector):
    """The notes folded for search (only its loading, folding and saving are used)."""

    name = search_index.NAME
    version = 0
    event_types = NOTE_EVENTS
    tables = ()
    state_table = "search_notes"
    key_column = "note_id"

    def schema(self, suffix: str, generation: int) -> list[str]:
        return []

    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        upsert(writes, f"search_notes{suffix}", ("merchant_id", "note_id"), {
            "merchant_id": merchant_key(state.merchant_id),
            "note_id": state.entity_id,
            "state": state_text(state),
        })  # fmt: skip


class CommentStates(NoteStates):
    """The comments folded for search, each with its note and its text while not deleted."""

    event_types = COMMENT_EVENTS
    state_table = "search_comments"
    key_column = "comment_id"

    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        description = None if state.deleted else _text(state.register("description"))
        upsert(writes, f"search_comments{suffix}", ("merchant_id", "comment_id"), {
            "merchant_id": merchant_key(state.merchant_id),
            "comment_id": state.entity_id,
            "note_id": note_of(state),
            "text": description,
            "state": state_text(state),
        })  # fmt: skip


Document = tuple[float, str, str, str]  # last_action_time, words, text, item


def document(note: EntityState, comments: list[str]) -> Document | None:
    """A live note's document, or None (deleted, erased, or no word to find it by)."""
    if note.deleted or note.erased:
        return None
    info = note.register("information")
    info = info if isinstance(info, dict) else {}
    parts = [_text(note.register("description")), _text(info.get("type")),
             _text(info.get("result")), *comments]  # fmt: skip
    text = "\n".join(part for part in parts if part)
    words = indexed_words(text)
    if not words:
        return None
    item = {
        "note_id": note.entity_id,
        "merchant_id": note.merchant_id,
        "type": info.get("type"),
        "result": info.get("result"),
        "created_by": note.register("created_by"),
        "last_action_time": note.last_action_time,
    }
    return (note.last_action_time or 0.0, words, text, doc_text(item))


# The fields a document is made of: the fold keeps only these (the same registers, from
# the same diff items, as a fold of every field; no set field, so far less to fold and store)
KEPT = frozenset({"description", "information", "object_id", "created_by"})


_KEPT_KEYS = KEPT | {alias for alias, name in ALIASES.items() if name in KEPT}


@dataclass(slots=True)
class _Slim:
    """What EntityState.fold reads of a LogEvent, with only the diff items of KEPT fields."""

    event_type: str
    action_time: float
    stamp: tuple[float, str]
    data_event: dict[str, Any]
    erased: bool = False


def _slim(event: LogEvent) -> LogEvent:
    """The event as the search fold sees it: only the diff items of KEPT fields."""
    if event.erased:
        return event  # folds into a count only
    detail = event.data_event.get("event_detail") or ()
    kept = [item for item in detail if item["field_key"] in _KEPT_KEYS]
    if len(kept) == len(detail):
        return event
    return cast(LogEvent, _Slim(event.event_type, event.action_time, event.stamp,
                                {"event_detail": kept}))  # fmt: skip


COMMENT = "\x00"  # a comment's key in a batch: (merchant, COMMENT + id); no id holds a NUL


def _is_comment(key: Key) -> bool:
    return key[1].startswith(COMMENT)


def _key(event: LogEvent) -> Key:
    prefix = COMMENT if event.event_type in COMMENT_EVENTS else ""
    return (merchant_key(event.merchant_id), prefix + (event.entity_id or ""))


class SearchProjector(EntityProjector):
    """One pass of a rebuild folds it with the other views (projections/rebuild.py): its
    batch of held states mixes notes and comments, each comment under COMMENT + its id."""

    name = search_index.NAME
    version = 3  # 2: only the fields of a document are folded; 3: erased events counted
    event_types = NOTE_EVENTS | COMMENT_EVENTS
    tables = ("search_notes", "search_comments", "search_docs")
    state_table, key_column = "search_notes", "note_id"

    def __init__(self) -> None:
        self.notes = NoteStates()
        self.comments = CommentStates()
        self._cleaned: int | None = None  # the live generation whose stale indexes were dropped
        # (suffix, comment key) -> the note the stored comment was on, until its batch is saved
        self._before: dict[tuple[str, Key], str | None] = {}

    def schema(self, suffix: str, generation: int) -> list[str]:
        g = f"search_g{generation}"
        return [
            f"""CREATE TABLE search_notes{suffix} (
                merchant_id TEXT NOT NULL,
                note_id TEXT NOT NULL,
                state TEXT NOT NULL,
                PRIMARY KEY (merchant_id, note_id)
            )""",
            f"CREATE INDEX {g}_notes_id ON search_notes{suffix} (note_id)",
            f"""CREATE TABLE search_comments{suffix} (
                merchant_id TEXT NOT NULL,
                comment_id TEXT NOT NULL,
                note_id TEXT,
                text TEXT,
                state TEXT NOT NULL,
                PRIMARY KEY (merchant_id, comment_id)
            )""",
            f"CREATE INDEX {g}_comments_id ON search_comments{suffix} (comment_id)",
            f"CREATE INDEX {g}_comments_note ON search_comments{suffix} (note_id, merchant_id)",
            # not WITHOUT ROWID: on SQLite the FTS5 index's rowid is a document's rowid
            f"""CREATE TABLE search_docs{suffix} (
                merchant_id TEXT NOT NULL,
                note_id TEXT NOT NULL,
                last_action_time REAL NOT NULL,
                words TEXT NOT NULL,
                text TEXT NOT NULL,
                item TEXT NOT NULL,
                PRIMARY KEY (merchant_id, note_id)
            )""",
            f"CREATE INDEX {g}_docs_id ON search_docs{suffix} (note_id)",
            f"CREATE INDEX {g}_docs_recent ON search_docs{suffix}"
            " (last_action_time DESC, note_id DESC, merchant_id DESC)",
        ]

    def fold_into(
        self,
        conn: Connection,
        events: Sequence[LogEvent],
        suffix: str,
        states: dict[Key, EntityState],
    ) -> None:
        """Fold notes and comments into `states` (a comment keyed by COMMENT + its id),
        loading each the first time it is met, and remembering the note each comment was
        on as stored: save_all rewrites that note's document too."""
        first: dict[Key, LogEvent] = {}
        for event in events:
            if event.entity_id is not None and (key := _key(event)) not in states:
                first.setdefault(key, event)
        notes = self.notes.load_many(conn, suffix, [k for k in first if not _is_comment(k)])
        comments = self.comments.load_many(
            conn, suffix, [(m, i[len(COMMENT) :]) for m, i in first if _is_comment((m, i))]
        )
        for key, event in first.items():
            if _is_comment(key):
                stored = comments.get((key[0], event.entity_id or ""))
                self._before[(suffix, key)] = None if stored is None else note_of(stored)
            else:
                stored = notes.get(key)
            states[key] = stored or EntityState(event.entity_id or "", event.merchant_id)
        for event in events:
            if event.entity_id is not None:
                try:
                    states[_key(event)].fold(_slim(event))
                except Exception as exc:
                    raise ProjectionFailed(self.name, event, exc) from exc

    def refold(self, conn: Connection, events: Sequence[LogEvent], suffix: str) -> None:
        """As EntityProjector.refold, notes and comments alike; a comment's note as stored is
        remembered, so that the document it was part of is written again (without it)."""
        states = {
            _key(e): EntityState(e.entity_id, e.merchant_id)
            for e in events
            if e.entity_id is not None
        }
        comments = [(m, i[len(COMMENT) :]) for m, i in states if _is_comment((m, i))]
        for (merchant, comment_id), stored in self.comments.load_many(
            conn, suffix, comments
        ).items():
            self._before[(suffix, (merchant, COMMENT + comment_id))] = note_of(stored)
        self.fold_into(conn, events, suffix, states)
        self.save_all(conn, suffix, states)

    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        raise TypeError("the search view saves a whole batch at once (save_all): a note's "
                        "document needs its comments")  # fmt: skip

    def save_all(self, conn: Connection, suffix: str, states: dict[Key, EntityState]) -> None:
        """Write the folded notes and comments, then the documents of every note they touch."""
        notes = {k: state for k, state in states.items() if not _is_comment(k)}
        comments = {(k[0], state.entity_id): state for k, state in states.items()
                     if _is_comment(k)}  # fmt: skip
        affected = set(notes)
        for key, comment in comments.items():
            before = self._before.pop((suffix, (key[0], COMMENT + key[1])), None)
            for note_id in (before, note_of(comment)):
                if note_id is not None:
                    affected.add((key[0], note_id))
        self.notes.save_all(conn, suffix, notes)
        self.comments.save_all(conn, suffix, comments)
        if affected:
            self._write_documents(conn, suffix, affected, notes)

    def _comment_texts(
        self, conn: Connection, suffix: str, notes: set[Key]
    ) -> dict[Key, list[str]]:
        """The texts of the live comments on each note, by comment id."""
        found: dict[Key, list[tuple[str, str]]] = {}
        for chunk in _chunks(note_id for _, note_id in notes):
            for merchant, note_id, comment_id, text in conn.execute(
                f"SELECT merchant_id, note_id, comment_id, text FROM search_comments{suffix}"
                f" WHERE note_id IN ({_marks(chunk)}) AND text IS NOT NULL",
                chunk,
            ):
                if (merchant, note_id) in notes:
                    found.setdefault((merchant, note_id), []).append((comment_id, text))
        return {key: [text for _, text in sorted(texts)] for key, texts in found.items()}

    def _write_documents(
        self, conn: Connection, suffix: str, affected: set[Key], notes: dict[Key, EntityState]
    ) -> None:
        states = dict(notes)
        states.update(self.notes.load_many(conn, suffix, affected - notes.keys()))
        texts = self._comment_texts(conn, suffix, affected)
        docs: dict[Key, Document | None] = {}
        for key in affected:
            state = states.get(key)
            docs[key] = None if state is None else document(state, texts.get(key, []))
        index = DocumentIndex(conn, suffix)
        old = index.stored_words(affected)
        writes = Writes()
        for key, doc in docs.items():
            if doc is None:
                writes.execute(
                    f"DELETE FROM search_docs{suffix} WHERE merchant_id = ? AND note_id = ?", key
                )
                continue
            at, words, text, item = doc
            upsert(writes, f"search_docs{suffix}", ("merchant_id", "note_id"), {
                "merchant_id": key[0], "note_id": key[1], "last_action_time": at,
                "words": words, "text": text, "item": item,
            })  # fmt: skip
        gone = [key for key, doc in docs.items() if doc is None and key in old]
        changed = {
            key: doc[1]
            for key, doc in docs.items()
            if doc is not None and (key not in old or old[key][1] != doc[1])
        }
        if gone or changed:
            self._cleaned = index.prepare(self._cleaned)
        index.remove(gone, old)  # before the documents (SQLite: by their rowids)
        writes.run(conn)
        index.put(changed, old)


class DocumentIndex:
    """Writes of one batch to the full-text index of the tables at `suffix`."""

    def __init__(self, conn: Connection, suffix: str) -> None:
        self.conn, self.suffix = conn, suffix
        self.pg = search_index.is_postgresql(conn)
        self.table = ""

    def stored_words(self, keys: set[Key]) -> dict[Key, tuple[int | None, str]]:
        """(rowid on SQLite, words) of the documents of `keys` that exist."""
        rowid = "NULL" if self.pg else "rowid"
        found: dict[Key, tuple[int | None, str]] = {}
        for chunk in _chunks(note_id for _, note_id in keys):
            for merchant, note_id, row, words in self.conn.execute(
                f"SELECT merchant_id, note_id, {rowid}, words FROM search_docs{self.suffix}"
                f" WHERE note_id IN ({_marks(chunk)})",
                chunk,
            ):
                if (merchant, note_id) in keys:
                    found[(merchant, note_id)] = (row, words)
        return found

    def prepare(self, cleaned: int | None) -> int | None:
        """Create this generation's index table if it is missing; on the live tables, drop
        the indexes of other generations once per generation. Returns the generation whose
        stale indexes are dropped."""
        gen = search_index.generation(self.conn, self.suffix)
        if gen is None:
            raise RuntimeError(f"the search view has no tables at {self.suffix!r}")
        self.table = search_index.table_name(gen)
        if not search_index.exists(self.conn, self.table):
            search_index.create(self.conn, self.table)
            search_index.drop_stale(self.conn)
        elif self.suffix == "" and cleaned != gen:
            search_index.drop_stale(self.conn)
        return gen if self.suffix == "" else cleaned

    def remove(self, keys: list[Key], old: dict[Key, tuple[int | None, str]]) -> None:
        if not keys:
            return
        if self.pg:
            self.conn.executemany(
                f"DELETE FROM {self.table} WHERE merchant_id = ? AND note_id = ?", keys
            )
        else:
            self.conn.executemany(
                f"DELETE FROM {self.table} WHERE rowid = ?", [(old[key][0],) for key in keys]
            )

    def put(self, words: dict[Key, str], old: dict[Key, tuple[int | None, str]]) -> None:
        if not words:
            return
        if self.pg:
            self.conn.executemany(
                f"INSERT INTO {self.table} (merchant_id, note_id, words)"
                " VALUES (?, ?, to_tsvector('simple', ?)) ON CONFLICT (merchant_id, note_id)"
                " DO UPDATE SET words = excluded.words",
                [(*key, text) for key, text in words.items()],
            )
            return
        new = {key for key in words if key not in old}
        rowids = {key: row for key, (row, _) in old.items()}
        if new:
            rowids.update((key, row) for key, (row, _) in self.stored_words(new).items())
        self.conn.executemany(
            f"INSERT OR REPLACE INTO {self.table} (rowid, words) VALUES (?, ?)",
            [(rowids[key], text) for key, text in words.items()],
        )
