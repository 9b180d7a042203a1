"""Search: the live notes whose text holds every word of a query, best match first.

A common word can match every note, so only the best candidates are ranked: matches are
taken newest first (by last change, then note id and merchant, as the search view keeps
them), CHUNK at a time, and each chunk is ranked by relevance (FTS5's bm25 on SQLite,
ts_rank on PostgreSQL: the order within a chunk may differ between backends, the set of
matches and the chunks cannot). A cursor names the chunk (the candidate before it) and how
far into its ranking the last page went.
"""

from __future__ import annotations

import base64
import math
import re
import sqlite3
from typing import Any

import psycopg

from app.errors import BadRequest
from app.queries.params import encode_cursor
from app.queries.scope import Scope
from app.queries.snippet import snippet
from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection
from projections import search_index
from projections.textfold import words

MAX_QUERY, MAX_TERMS = 500, 16
CHUNK = 200  # candidates ranked together: the cost of a page whatever the number of matches
Boundary = tuple[float, str, str]  # (last_action_time, note_id, merchant): after it, older
SearchCursor = tuple[Boundary | None, int]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def query_terms(q: str | None) -> list[str]:
    """The folded words of a query (a user's words, never search syntax), or a BadRequest."""
    if q is None or len(q) > MAX_QUERY:
        raise BadRequest(f"q is required: 1 to {MAX_QUERY} characters of words to find")
    terms = list(dict.fromkeys(words(q)))
    if not terms:
        raise BadRequest("q holds no word to search for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise BadRequest(f"q may hold at most {MAX_TERMS} different words")
    return terms


def encode(cursor: SearchCursor) -> str:
    boundary, offset = cursor
    return encode_cursor([*(boundary or (None, "", "")), offset])


def decode(value: str | None) -> SearchCursor:
    if value is None:
        return None, 0
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        at, note_id, merchant, offset = loads_strict(raw)
        if not isinstance(note_id, str) or not isinstance(merchant, str):
            raise ValueError
        if _CONTROL.search(note_id + merchant) or type(offset) is not int or offset < 0:
            raise ValueError
        if at is None:
            return None, offset
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise ValueError
        return (float(at), note_id, merchant), offset
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError):
        raise BadRequest("cursor is not one this server gave out") from None


def _candidates(
    views: Connection, table: str, terms: list[str], scope: Scope, after: Boundary | None
) -> list[tuple[float, str, str, int | None]]:
    """Up to CHUNK + 1 matches after `after`, newest first: (time, note, merchant, rowid)."""
    where, params = scope.sql("d.merchant_id")
    if after is not None:
        where += " AND (d.last_action_time, d.note_id, d.merchant_id) < (?, ?, ?)"
        params = (*params, *after)
    if search_index.is_postgresql(views):
        source = (f"{table} w JOIN search_docs d USING (merchant_id, note_id)"
                  " WHERE w.words @@ plainto_tsquery('simple', ?)")  # fmt: skip
        rowid, match = "NULL", " ".join(terms)
    else:
        source = (f"{table} CROSS JOIN search_docs d ON d.rowid = {table}.rowid"
                  f" WHERE {table} MATCH ?")  # fmt: skip
        rowid, match = "d.rowid", search_index.fts5_query(terms)
    rows = views.execute(
        f"SELECT d.last_action_time, d.note_id, d.merchant_id, {rowid} FROM {source}"
        f" AND {where} ORDER BY d.last_action_time DESC, d.note_id DESC, d.merchant_id DESC"
        " LIMIT ?",
        (match, *params, CHUNK + 1),
    ).fetchall()
    return [tuple(row) for row in rows]


def _ranked(
    views: Connection, table: str, terms: list[str], chunk: list[tuple[float, str, str, Any]]
) -> list[tuple[str, str]]:
    """The chunk's (merchant, note) best first; ties by note id, then merchant."""
    marks = ", ".join("?" * len(chunk))
    scores: dict[tuple[str, str], float] = {}
    if search_index.is_postgresql(views):
        rows = views.execute(
            f"SELECT merchant_id, note_id, ts_rank(words, plainto_tsquery('simple', ?))"
            f" FROM {table} WHERE note_id IN ({marks})",
            (" ".join(terms), *[c[1] for c in chunk]),
        )
        scores = {(m, n): float(s) for m, n, s in rows}
    else:
        by_rowid = {c[3]: (c[2], c[1]) for c in chunk}
        rows = views.execute(
            f"SELECT rowid, -bm25({table}) FROM {table} WHERE {table} MATCH ?"
            f" AND rowid IN ({marks})",
            (search_index.fts5_query(terms), *by_rowid),
        )
        scores = {by_rowid[r]: float(s) for r, s in rows}
    keys = [(c[2], c[1]) for c in chunk]
    return sorted(keys, key=lambda k: (-scores.get(k, 0.0), k[1], k[0]))


def _live_table(views: Connection) -> str | None:
    gen = search_index.generation(views, "")
    if gen is None:
        return None
    table = search_index.table_name(gen)
    return table if search_index.exists(views, table) else None


def search_notes(
    views: Connection, scope: Scope, terms: list[str], limit: int, cursor: SearchCursor
) -> dict[str, Any]:
    """A page of {"items", "next_cursor"}; each item the note's summary and a snippet."""
    for attempt in (1, 2):
        table = _live_table(views)
        if table is None:
            return {"items": [], "next_cursor": None}
        try:
            keys, following = _page(views, table, terms, scope, limit, cursor)
            break
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            if attempt == 2:  # a rebuild swapped the view in between, twice: say so
                raise
    return {
        "items": _items(views, keys, set(terms)),
        "next_cursor": None if following is None else encode(following),
    }


def _page(
    views: Connection, table: str, terms: list[str], scope: Scope, limit: int,
    cursor: SearchCursor,
) -> tuple[list[tuple[str, str]], SearchCursor | None]:  # fmt: skip
    boundary, offset = cursor
    keys: list[tuple[str, str]] = []
    while True:
        rows = _candidates(views, table, terms, scope, boundary)
        chunk, more = rows[:CHUNK], len(rows) > CHUNK
        ranked = _ranked(views, table, terms, chunk) if chunk else []
        taken = ranked[offset : offset + limit - len(keys)]
        keys += taken
        left = len(ranked) - offset - len(taken)
        if len(keys) == limit and left > 0:
            return keys, (boundary, offset + len(taken))
        if not more:
            return keys, None
        boundary, offset = chunk[-1][:3], 0
        if len(keys) == limit:
            return keys, (boundary, 0)


def _items(views: Connection, keys: list[tuple[str, str]], terms: set[str]) -> list[Any]:
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    found = {
        (merchant, note_id): (text, item)
        for merchant, note_id, text, item in views.execute(
            f"SELECT merchant_id, note_id, text, item FROM search_docs WHERE note_id IN ({marks})",
            [note_id for _, note_id in keys],
        )
    }
    items = []
    for key in keys:
        if key in found:  # (a note deleted between the two reads is left out)
            text, item = found[key]
            items.append({**loads_strict(item), "snippet": snippet(text, terms)})
    return items
