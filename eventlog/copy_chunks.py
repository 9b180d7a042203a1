"""Copying the rows of a SQLite log into PostgreSQL, chunk by chunk (eventlog.copy runs it).

Every table of the log is copied with its keys (`requests.id`, `events.seq`, the ids of
quarantine rows and replays) and its stored hashes as they are, so the chains verify on
PostgreSQL exactly as on SQLite. A run copies up to the source's heads taken when it
started (what arrives later is left to the next run):

- A chunk is read in one SQLite read transaction (a snapshot: a reader never takes the
  write lock, so a `serve` receiving meanwhile is never kept waiting) and written in one
  PostgreSQL transaction under the log's append lock, after checking that the target's
  heads are still where this run left them.
- A chunk holds the next rows of each table whose parents (the request of an event or a
  quarantine row, the quarantine row of a replay) are in the same chunk or before it: a
  run stopped at any instant leaves a prefix of the log, and the next run continues from
  the target's heads.
- Rows go in with COPY; the identity sequences of quarantine and its replays are moved
  to the last copied id, so `serve` on PostgreSQL appends after them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

from psycopg import sql

from eventlog import chain
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import APPEND_LOCK


@dataclass(frozen=True)
class Table:
    """A log table as copy-log reads and writes it: its key first among `columns`."""

    name: str
    key: str
    columns: tuple[str, ...]
    parent: tuple[str, str] | None = None  # (column, table) whose row must be copied first
    chained: bool = False
    sequence: str | None = None  # the identity sequence PostgreSQL draws its ids from


TABLES: tuple[Table, ...] = (
    Table("requests", "id", (*chain.REQUEST_COLUMNS, "hash"), chained=True),
    Table("events", "seq", (*chain.EVENT_COLUMNS, "hash"), ("request_ref", "requests"), True),
    Table(
        "quarantine", "id",
        ("id", "content_hash", "reason", "detail", "kind", "message_id", "payload",
         "request_ref", "received_at"),
        ("request_ref", "requests"), sequence="quarantine_id_seq",
    ),
    Table(
        "quarantine_replays", "id", ("id", "quarantine_id", "replayed_at", "outcome", "detail"),
        ("quarantine_id", "quarantine"), sequence="quarantine_replays_id_seq",
    ),
)  # fmt: skip

# Tables of the log not copied yet: erasures (eventlog.erase) and the rows that record them.
# An erasure redacts rows in place, which a copy would have to carry to the rows it copied
# before; until it does, a log holding an erasure is refused (eventlog.copy_check), and a
# chunk whose snapshot holds one stops the run before writing anything of it: every row
# read before was read unredacted, so the target stays a verified prefix of the log as it
# was before the erasure.
ERASURE_TABLES: tuple[str, ...] = ("erasures", "erased_rows", "tombstones", "erasure_ends")

Heads = dict[str, int]  # table -> the last key copied (0: none)
Chunk = dict[str, list[tuple[Any, ...]]]
# (phase, done, total): phases are "verifying the source", "checking the target",
# "copying" (rows) and "verifying the target" (events)
Progress = Callable[[str, int, int], None]
CHUNK_ROWS = 5000


class CopyRefused(Exception):
    """The copy cannot go ahead (the target holds another log, the source a table this code
    does not know or an erasure). `written`: whole chunks were copied before it stopped
    (the target then holds a prefix of the log); else nothing was written."""

    def __init__(self, message: str, *, written: bool = False) -> None:
        super().__init__(message)
        self.written = written


def heads(conn: Connection) -> Heads:
    """Every table's last key, read in one statement (one snapshot on either backend)."""
    row = conn.execute(
        "SELECT " + ", ".join(f"(SELECT coalesce(max({t.key}), 0) FROM {t.name})" for t in TABLES)
    ).fetchone()
    return {t.name: int(value) for t, value in zip(TABLES, row, strict=True)}


def rows_between(start: Heads, end: Heads) -> int:
    return sum(end[t.name] - start[t.name] for t in TABLES)


def read_chunk(source: sqlite3.Connection, start: Heads, end: Heads, rows: int) -> Chunk:
    """The next rows after `start`, up to `end`, at most `rows` a table, in one snapshot; a
    row whose parent is not copied by then (`start`, or this chunk) waits for a later one."""
    reached = dict(start)
    chunk: Chunk = {}
    source.execute("BEGIN")  # deferred: a read transaction, never the write lock
    try:
        refuse_erasures(source)
        for t in TABLES:
            found = source.execute(
                f"SELECT {', '.join(t.columns)} FROM {t.name}"
                f" WHERE {t.key} > ? AND {t.key} <= ? ORDER BY {t.key} LIMIT ?",
                (start[t.name], end[t.name], rows),
            ).fetchall()
            if t.parent is not None:
                found = _with_parents(found, t.columns.index(t.parent[0]), reached[t.parent[1]])
            chunk[t.name] = found
            if found:
                reached[t.name] = int(found[-1][0])
    finally:
        source.execute("COMMIT")
    return chunk


def refuse_erasures(source: sqlite3.Connection) -> None:
    """CopyRefused if the SQLite log holds an erasure (see ERASURE_TABLES)."""
    exists = source.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'erasures'"
    ).fetchone()[0]
    if exists and source.execute("SELECT EXISTS (SELECT 1 FROM erasures)").fetchone()[0]:
        raise CopyRefused(
            "the SQLite log holds erasures, which this copy-log cannot carry to PostgreSQL"
            " yet (it would have to redact rows it already copied)"
        )


def _with_parents(rows: list[tuple[Any, ...]], at: int, bound: int) -> list[tuple[Any, ...]]:
    """The rows before the first whose parent (column `at`) is past `bound`."""
    return list(takewhile(lambda r: r[at] is None or r[at] <= bound, rows))


def reached_by(start: Heads, chunk: Chunk) -> Heads:
    return {t.name: chunk[t.name][-1][0] if chunk[t.name] else start[t.name] for t in TABLES}


def write_chunk(target: PgConnection, chunk: Chunk, start: Heads) -> None:
    """One transaction under the append lock: the target still at `start`, then the rows."""
    with target.raw.transaction():
        target.execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))
        now = heads(target)
        if now != start:
            raise CopyRefused(
                f"the target changed while copying (its heads were {start}, now {now}):"
                " is another copy-log, or a serve on PostgreSQL, writing to it?"
            )
        with target.raw.cursor() as cur:
            for t in TABLES:
                if not chunk[t.name]:
                    continue
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(t.name), sql.SQL(", ").join(map(sql.Identifier, t.columns))
                )
                with cur.copy(statement) as copy:
                    for row in chunk[t.name]:
                        copy.write_row(row)
                if t.sequence is not None:
                    cur.execute("SELECT setval(%s, %s)", (t.sequence, int(chunk[t.name][-1][0])))


def copy_rows(
    source: sqlite3.Connection,
    target: PgConnection,
    start: Heads,
    end: Heads,
    *,
    rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> Heads:
    """Copy every row after `start` up to `end`, chunk by chunk; the heads reached."""
    at, total = dict(start), rows_between(start, end)
    while at != end:
        try:
            chunk = read_chunk(source, at, end, rows)
            reached = reached_by(at, chunk)
            if reached == at:  # the source lost rows under `end`: an append-only log cannot
                raise CopyRefused(f"the source holds no rows after {at} up to {end}")
            write_chunk(target, chunk, at)
        except CopyRefused as exc:
            if at == start:
                raise
            raise CopyRefused(
                f"{exc}; stopped once the target held the rows up to {at}", written=True
            ) from None
        at = reached
        if progress is not None:
            progress("copying", rows_between(start, at), total)
    return at
