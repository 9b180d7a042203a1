"""The search view's full-text index: an FTS5 table on SQLite, a tsvector column with a GIN
index on PostgreSQL, one table per generation of the view (`search_words_g<N>`).

Why not sqlite-utils' `enable_fts`/`search`: they make `<table>_fts` as an external-content
table whose `content=` names the docs table, kept in step by triggers. A rebuild fills
`search_docs__new` and the swap renames it over `search_docs` (projections/rebuild.py):
FTS5 keeps the old name in its `content=` option, so after the swap the index would read a
table that no longer exists, and `<table>_fts` cannot be told apart per rebuild. The index
cannot be one of the view's `tables` either: Projector.schema() is not told the backend,
and those tables must be the same on both (the view contract compares their rows with
SQLite's). So the text lives in `search_docs` (plain SQL, both backends) and this index
lives beside it under the view's generation number: the swap, which moves the projector's
row to the new generation in the same transaction as the rename, switches the index too,
and the batch that writes a document writes its index row (rule 3 of DESIGN.md). A
generation's table is created by the first batch that writes to it, and the tables of
generations that are neither live nor being rebuilt are dropped by the live projector.

The index holds only the folded words (projections/textfold.py), so both engines match
the same notes: FTS5 by the phrases of a query, each word quoted; PostgreSQL by
plainto_tsquery('simple', …), which has no syntax at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from eventlog.dbapi import Connection
from projections.store import LIVE, REBUILD

NAME = "search"
PREFIX = "search_words_g"
_GENERATION_TABLE = re.compile(rf"{PREFIX}([0-9]+)")


def is_postgresql(conn: Connection) -> bool:
    return getattr(conn, "backend", "sqlite") == "postgresql"


def generation(conn: Connection, suffix: str) -> int | None:
    """The generation of the view's tables at `suffix` (live, or the rebuild's)."""
    positions = LIVE.positions if suffix == LIVE.suffix else REBUILD.positions
    row = conn.execute(f"SELECT generation FROM {positions} WHERE name = ?", (NAME,)).fetchone()
    return None if row is None else int(row[0])


def table_name(gen: int) -> str:
    return f"{PREFIX}{gen}"


def exists(conn: Connection, table: str) -> bool:
    if is_postgresql(conn):
        row = conn.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
        return bool(row[0])
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return found is not None


def _tables(conn: Connection) -> list[str]:
    if is_postgresql(conn):
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return [row[0] for row in conn.execute(sql) if _GENERATION_TABLE.fullmatch(row[0])]


GIN_PENDING_KB = 256


def create(conn: Connection, table: str) -> None:
    if is_postgresql(conn):
        conn.execute(
            f"CREATE TABLE {table} (merchant_id TEXT NOT NULL, note_id TEXT NOT NULL,"
            " words tsvector NOT NULL, PRIMARY KEY (merchant_id, note_id))"
        )
        # GIN gathers new entries in a pending list that every lookup reads whole, up to 4 MB
        # by default: a word of one note took 1.2 ms, not 0.1 (scripts/bench_query.py's
        # ratio large/small 2.9 x on 1M events). 256 kB bounds that at ~0.2 ms for ~40 µs
        # more per document written (measured, 2026-11-30).
        conn.execute(
            f"CREATE INDEX {table}_words ON {table} USING GIN (words)"
            f" WITH (gin_pending_list_limit = {GIN_PENDING_KB})"
        )
    else:  # the rowid is the document's rowid in search_docs
        # the words are folded already: FTS5 only splits them at the spaces
        conn.execute(
            f"CREATE VIRTUAL TABLE {table} USING fts5(words,"
            " tokenize = 'unicode61 remove_diacritics 0')"
        )


def drop_stale(conn: Connection) -> None:
    """Drop the index tables of every generation that is neither live nor being rebuilt."""
    keep = {generation(conn, LIVE.suffix), generation(conn, REBUILD.suffix)}
    for table in _tables(conn):
        match = _GENERATION_TABLE.fullmatch(table)
        if match and int(match.group(1)) not in keep:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def fts5_query(words: Sequence[str]) -> str:
    """An FTS5 query of every word, each a quoted phrase: no operator, column filter,
    prefix or NEAR can come from the words (they hold letters and digits only, and a quote
    would be doubled anyway)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def optimize(conn: Connection) -> list[str]:
    """SQLite: merge each generation's FTS5 index into a single segment, so that no old
    segment keeps the words of a document deleted from it (FTS5 only adds a delete entry
    until its segments are merged; with secure_delete the freed pages are zeroed). Inside
    the caller's transaction; returns the tables merged. PostgreSQL: nothing to do here
    (VACUUM removes the dead index entries)."""
    if is_postgresql(conn):
        return []
    tables = _tables(conn)
    for table in tables:
        conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
    return tables
