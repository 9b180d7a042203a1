"""Search: the live notes whose text holds every word of a query, best match first.

A common word can match every note, so only the best candidates are ranked: matches are
taken newest first (by last change, then note id and merchant, as the search view keeps
them), CHUNK at a time (app/queries/search_match.py), and each chunk is ranked by relevance
(app/queries/search_rank.py: BM25 in Python, so both backends rank alike). A cursor names
the chunk (the candidate before it) and how far into its ranking the last page went.
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
from app.queries.search_match import DENSE, Boundary, Matcher
from app.queries.search_rank import ranked, weights
from app.queries.snippet import snippet
from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection
from projections import search_index
from projections.textfold import words

MAX_QUERY, MAX_TERMS = 500, 16
CHUNK = 200  # candidates ranked together: the cost of a page whatever the number of matches
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
    matcher = Matcher(views, table, terms)
    weight = weights({t: matcher.count([t]) for t in terms}, DENSE + 1) if len(terms) > 1 else {
        terms[0]: 1.0
    }  # fmt: skip
    boundary, offset = cursor
    keys: list[tuple[str, str]] = []
    while True:
        rows = matcher.newest(scope, boundary, CHUNK + 1)
        chunk, more = rows[:CHUNK], len(rows) > CHUNK
        best = ranked(views, [(merchant, note_id) for _, note_id, merchant in chunk], weight)
        taken = best[offset : offset + limit - len(keys)]
        keys += taken
        left = len(best) - offset - len(taken)
        if len(keys) == limit and left > 0:
            return keys, (boundary, offset + len(taken))
        if not more:
            return keys, None
        boundary, offset = chunk[-1], 0
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
