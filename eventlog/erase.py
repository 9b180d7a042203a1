"""Erasing from the log: a note's or a merchant's personal data, or events older than a date.

One erasure, on either backend (eventlog.dbapi.Connection; on PostgreSQL the owner's
PgConnection, whose BEGIN IMMEDIATE takes the append lock):
1. `count` says what the scope covers (events, requests, quarantine items), for the
   operator to confirm.
2. `record_erasure` appends the erasure to its chain (id, when, scope, reason, counts) and,
   for a note or a merchant, its tombstone, in one transaction under the append lock: from
   then on every append stores what the scope covers already redacted (eventlog.tombstones).
3. `erase_rows` replaces content by the marker (eventlog.redaction) chunk by chunk, at most
   `chunk` rows a transaction, so appends wait for one chunk at most. Each replaced row first
   gets its erased_rows record (the digests of its content before and after): the database
   lets an UPDATE through only for such a row, with the marker of an erasure whose scope
   covers it (eventlog.migrations step 4, eventlog.pg_schema step 3). On PostgreSQL the
   transaction names the erasure (`notestore.erasure`) as well.
4. `end_erasure` records that it is done: the entry projectors read after the rows it
   redacted, to fold again each entity it touched (projections.engine).
Rows are redacted once: a row already a marker is left as it is. A run stopped between
chunks leaves its erasure recorded and part of its rows redacted; erasing the same scope
again records a new erasure that redacts the rest.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from eventlog import chain
from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection
from eventlog.redaction import (
    Scope,
    block_entities,
    is_marker,
    redact_body,
    redact_payload,
    redacted_block,
)
from eventlog.tombstones import INSERT_ERASED_ROW, INSERT_TOMBSTONE
from eventlog.transactions import immediate

# rows per transaction: on PostgreSQL an append waits for one chunk at most (with 50, the
# answers' p99 while erasing was 157 ms, with 200 4.2 s: scripts/erase_under_load.py,
# docs/operations.md "Erasing while serving")
CHUNK = 50
PAUSE_S = 0.002  # between chunks (see erase_rows)
Progress = Callable[[str, int], None]  # (table, rows redacted so far)
TABLES = ("events", "requests", "quarantine")


@dataclass(frozen=True)
class Erasure:
    id: int
    at: float
    scope: Scope
    reason: str
    counts: dict[str, int]


def _backend(conn: Connection) -> str:
    return str(getattr(conn, "backend", "sqlite"))


def _event_condition(conn: Connection, scope: Scope) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    if scope.merchant_id is not None:
        parts.append("merchant_id = ?")
        params.append(scope.merchant_id)
    if scope.note_id is not None:
        ids = sorted(scope.entities)
        marks = ", ".join("?" * len(ids))
        # a comment's events name no note: also those whose block holds the note's id (its
        # creation names the note in object_id; _redact_block keeps only those that do)
        parts.append(
            f"(note_id IN ({marks}) OR entity_id IN ({marks})"
            f" OR (entity = 'comment' AND {_contains(conn, 'block')}))"
        )
        params += [*ids, *ids, scope.note_id]
    if scope.before is not None:
        parts.append("action_time < ?")
        params.append(scope.before)
    return " AND ".join(parts) or "TRUE", params


def _names(conn: Connection, scope: Scope, column: str) -> tuple[str, list[Any]]:
    """Rows whose `column` (a body or payload) names the scope's ids: the rows the database
    would let this erasure redact; every row for an --older-than scope."""
    if scope.before is not None or scope.merchant_id is None:
        return "TRUE", []
    test = _contains(conn, column)
    condition, ids = test, [scope.merchant_id]
    if scope.note_id is not None:
        entities = sorted(scope.entities)
        condition += f" AND ({' OR '.join([test] * len(entities))})"
        ids += entities
    return condition, ids


def _contains(conn: Connection, column: str) -> str:
    """SQL: `column` (a body: bytes; a block or a payload: text) holds the parameter's text."""
    if _backend(conn) != "postgresql":
        return f"instr(CAST({column} AS BLOB), CAST(? AS BLOB)) > 0"
    if column == "body":
        return f"position(convert_to(?, 'UTF8') IN {column}) > 0"
    return f"strpos({column}, ?) > 0"


def with_comments(conn: Connection, scope: Scope) -> Scope:
    """A note's scope with the ids of the comments on it (comments name their note only in
    their diff's object_id, so their events are found through the comments' ids)."""
    if scope.note_id is None or scope.merchant_id is None:
        return scope
    rows = conn.execute(
        "SELECT entity_id, block FROM events WHERE merchant_id = ? AND entity = 'comment'"
        f" AND {_contains(conn, 'block')}",
        (scope.merchant_id, scope.note_id),
    ).fetchall()
    comments = {
        str(entity_id)
        for entity_id, block in rows
        if entity_id is not None
        and not is_marker(block)
        and scope.note_id in block_entities(loads_strict(block))
    }
    return dataclasses.replace(scope, comments=scope.comments | comments)


# --- what a scope covers ------------------------------------------------------------------


Change = tuple[Any, Any]  # a row's content now, and its redaction


def _redact_block(row: list[Any], erasure_id: int, scope: Scope) -> Change | None:
    block, note_id, entity_id = row
    if is_marker(block):
        return None
    parsed = loads_strict(block)
    by_id = scope.note_id is None or scope.entities.intersection((note_id, entity_id))
    if not by_id and scope.note_id not in block_entities(parsed):
        return None  # a comment whose block holds the note's id but is not on it
    return block, redacted_block(parsed, erasure_id)


def _redact_body(row: list[Any], erasure_id: int, scope: Scope) -> Change | None:
    body = bytes(row[0])
    redacted = redact_body(body, [(erasure_id, scope)])
    return None if redacted is None else (body, redacted)


def _redact_payload(row: list[Any], erasure_id: int, scope: Scope) -> Change | None:
    payload, kind, content_hash = row
    redacted = redact_payload(payload, kind, [(erasure_id, scope)], content_hash)
    return None if redacted is None else (payload, redacted)


@dataclass(frozen=True)
class _Content:
    """Where a log table keeps what an erasure redacts, and how it finds and redacts it."""

    key: str
    columns: str  # the content first, then what redacting it needs
    where: Callable[[Connection, Scope], tuple[str, list[Any]]]
    redact: Callable[[list[Any], int, Scope], Change | None]


CONTENT = {
    "events": _Content("seq", "block, note_id, entity_id", _event_condition, _redact_block),
    "requests": _Content("id", "body", partial(_names, column="body"), _redact_body),
    "quarantine": _Content(
        "id", "payload, kind, content_hash", partial(_names, column="payload"), _redact_payload
    ),
}


def _changes(
    conn: Connection, table: str, erasure_id: int, scope: Scope, after: int, limit: int
) -> tuple[int, list[tuple[int, Any, Any]]]:
    """(last key read, [(key, content, its redaction)]) of the next rows of `table` after
    `after` that the scope covers and are not redacted yet."""
    spec = CONTENT[table]
    condition, params = spec.where(conn, scope)
    rows = conn.execute(
        f"SELECT {spec.key}, {spec.columns} FROM {table}"
        f" WHERE {spec.key} > ? AND {condition} ORDER BY {spec.key} LIMIT ?",
        (after, *params, limit),
    ).fetchall()
    changes = []
    for key, *content in rows:
        if change := spec.redact(content, erasure_id, scope):
            changes.append((int(key), *change))
    return (int(rows[-1][0]) if rows else after), changes


UPDATES = {
    "events": "UPDATE events SET block = ? WHERE seq = ?",
    "requests": "UPDATE requests SET body = ? WHERE id = ?",
    "quarantine": "UPDATE quarantine SET payload = ? WHERE id = ?",
}


def _pages(
    conn: Connection, table: str, erasure_id: int, scope: Scope, limit: int
) -> Iterator[list[tuple[int, Any, Any]]]:
    after = 0
    while True:
        last, changes = _changes(conn, table, erasure_id, scope, after, limit)
        if last == after:
            return
        yield changes
        after = last


def count(conn: Connection, scope: Scope) -> dict[str, int]:
    """How many rows of each log table the scope would redact now (0: the erasure id is not
    known yet; the marker's id does not change what is covered)."""
    return {
        table: sum(len(page) for page in _pages(conn, table, 0, scope, 1000)) for table in TABLES
    }


# --- the erasure --------------------------------------------------------------------------


def record_erasure(
    conn: Connection, scope: Scope, reason: str, counts: dict[str, int], at: float | None = None
) -> Erasure:
    """Append the erasure (chained) and its tombstone (for a note or a merchant)."""
    at = time.time() if at is None else at
    counts_text = json.dumps(counts, sort_keys=True)
    with immediate(conn):
        # the note's comments found again under the lock: one created since the operator
        # was shown the counts is tombstoned (and redacted) with the others
        scope = with_comments(conn, scope)
        row = conn.execute("SELECT id, hash FROM erasures ORDER BY id DESC LIMIT 1").fetchone()
        last, previous = (int(row[0]), str(row[1])) if row else (0, chain.GENESIS)
        values = (last + 1, at, scope.merchant_id, scope.note_id, scope.before, reason, counts_text)
        conn.execute(
            f"INSERT INTO erasures ({', '.join(chain.ERASURE_COLUMNS)}, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, chain.link(previous, values)),
        )
        if scope.before is None:
            entities: list[str | None] = [*sorted(scope.entities)] or [None]
            conn.executemany(
                INSERT_TOMBSTONE, [(last + 1, scope.merchant_id, entity) for entity in entities]
            )
    return Erasure(last + 1, at, scope, reason, counts)


def erase_rows(
    conn: Connection, erasure: Erasure, chunk: int = CHUNK, progress: Progress | None = None
) -> dict[str, int]:
    """Redact every row the erasure covers, `chunk` rows a transaction; rows redacted per
    table. Each chunk finds its rows inside its own transaction, so rows appended meanwhile
    (stored redacted already, or not covered) are judged as they stand."""
    done = dict.fromkeys(TABLES, 0)
    for table in TABLES:
        after = 0
        while True:
            with immediate(conn):
                if _backend(conn) == "postgresql":
                    conn.execute(
                        "SELECT set_config('notestore.erasure', ?, true)", (str(erasure.id),)
                    )
                last, changes = _changes(conn, table, erasure.id, erasure.scope, after, chunk)
                _redact(conn, table, erasure.id, changes)
            done[table] += len(changes)
            if progress:
                progress(table, done[table])
            if last == after:
                break
            after = last
            # Let serve's writer in: a waiting SQLite writer does not queue for the lock, it
            # retries after growing sleeps, and would wait out the whole table otherwise
            # (deliveries' p99 1.1 s without the pause: scripts/erase_under_load.py).
            if _backend(conn) == "sqlite":  # PostgreSQL's append lock queues its waiters
                time.sleep(PAUSE_S)
    return done


def _redact(
    conn: Connection, table: str, erasure_id: int, changes: list[tuple[int, Any, Any]]
) -> None:
    """Record, then replace: the trigger lets the UPDATE through once the record exists."""
    conn.executemany(
        INSERT_ERASED_ROW,
        [
            (erasure_id, table, key, chain.digest(old), chain.digest(new))
            for key, old, new in changes
        ],
    )
    conn.executemany(UPDATES[table], [(new, key) for key, _, new in changes])


def end_erasure(conn: Connection, erasure_id: int, at: float | None = None) -> None:
    """Record that every row of the erasure is redacted: the entry projectors read to fold
    the entities it touched again (eventlog.read.erasure_head)."""
    with immediate(conn):
        conn.execute(
            "INSERT INTO erasure_ends (erasure_id, at) VALUES (?, ?)",
            (erasure_id, time.time() if at is None else at),
        )


def erased_counts(conn: Connection, erasure_id: int) -> dict[str, int]:
    """Rows recorded under an erasure, per table (rows stored redacted under its tombstone
    included)."""
    found = dict(
        conn.execute(
            "SELECT log_table, count(*) FROM erased_rows WHERE erasure_id = ? GROUP BY log_table",
            (erasure_id,),
        ).fetchall()
    )
    return {table: int(found.get(table, 0)) for table in TABLES}
