"""Where the views live (views.db under data_dir, or the `notestore_views` schema of a
PostgreSQL database), and each projector's position, version and last error."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql as pgsql

from eventlog import pg_conn
from eventlog.db import use_wal
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection
from eventlog.transactions import immediate

VIEWS_FILE = "views.db"
BUSY_TIMEOUT_MS = 30_000
# On PostgreSQL: the schema holding every view (the service role owns it: a rebuild's swap
# drops and renames tables), and the advisory lock that serialises its writers.
VIEWS_SCHEMA = "notestore_views"
VIEWS_WRITE_LOCK = 0x6E6F7465_76696577  # "noteview"

_BOOKKEEPING = [
    """CREATE TABLE IF NOT EXISTS projectors (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        checkpoint INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        built_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS rebuilds (
        name TEXT PRIMARY KEY,
        checkpoint INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        started_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS projector_errors (
        name TEXT PRIMARY KEY,
        seq INTEGER,
        message_id TEXT,
        error TEXT NOT NULL,
        at REAL NOT NULL
    )""",
    # how far each projector's target has folded in the erasures' ends
    # (eventlog.read.erasure_head; no row: none yet, and folding the entities of every
    # erasure again is harmless): up to `applied`, and the range (applied, upto] is being
    # folded in chunk by chunk, the rows of its erasures up to (done_erasure, done_seq) done
    """CREATE TABLE IF NOT EXISTS erasure_positions (
        positions TEXT NOT NULL,
        name TEXT NOT NULL,
        applied INTEGER NOT NULL,
        upto INTEGER,
        done_erasure INTEGER,
        done_seq INTEGER,
        PRIMARY KEY (positions, name)
    )""",
]


@dataclass(frozen=True)
class Target:
    """Where a projector writes: its live tables, or the ones a rebuild fills beside them."""

    suffix: str
    positions: str  # the table holding this target's checkpoint


LIVE = Target("", "projectors")
REBUILD = Target("__new", "rebuilds")


def open_views(data_dir: Path | str) -> sqlite3.Connection:
    path = Path(data_dir) / VIEWS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    use_wal(conn)
    # Views can be rebuilt from the log, but a checkpoint must never run ahead of its rows:
    # NORMAL keeps that (a lost tail loses both together) without an fsync per batch.
    conn.execute("PRAGMA synchronous = NORMAL")
    # An erasure (notestore erase) must leave no copy of erased text in freed space: SQLite
    # zeroes what a write frees only with secure_delete, and it is per connection.
    conn.execute("PRAGMA secure_delete = ON")
    for statement in _BOOKKEEPING:
        conn.execute(statement)
    return conn


def open_pg_views(url: str) -> PgConnection:
    """The views in `VIEWS_SCHEMA` of the database at `url`, created if missing."""
    raw = pg_conn.connect(url)
    try:
        conn = PgConnection(raw, write_lock=VIEWS_WRITE_LOCK, search_path=VIEWS_SCHEMA)
        made = raw.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{VIEWS_SCHEMA}.erasure_positions",)
        ).fetchone()
        if not (made and made[0]):  # only then take the write lock: a reader never waits
            with immediate(conn):  # two instances starting at once create them once
                schema = raw.execute("SELECT to_regnamespace(%s)", (VIEWS_SCHEMA,)).fetchone()
                if schema is None or schema[0] is None:  # (IF NOT EXISTS needs CREATE anyway)
                    raw.execute(
                        pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(VIEWS_SCHEMA))
                    )
                for statement in _BOOKKEEPING:
                    conn.execute(statement)
    except BaseException:
        raw.close()
        raise
    return conn


def position(conn: Connection, name: str, target: Target) -> int | None:
    row = conn.execute(
        f"SELECT checkpoint FROM {target.positions} WHERE name = ?", (name,)
    ).fetchone()
    return int(row[0]) if row else None


def set_position(conn: Connection, name: str, target: Target, seq: int) -> None:
    conn.execute(f"UPDATE {target.positions} SET checkpoint = ? WHERE name = ?", (seq, name))


@dataclass(frozen=True)
class ErasureState:
    """How far a target has folded in the erasures' ends (see erasure_positions)."""

    applied: int = 0
    upto: int | None = None  # a range (applied, upto] under way
    done: tuple[int, int] = (0, 0)  # its erasures' events up to (erasure id, seq) followed


def erasure_state(conn: Connection, name: str, target: Target) -> ErasureState:
    row = conn.execute(
        "SELECT applied, upto, done_erasure, done_seq FROM erasure_positions"
        " WHERE positions = ? AND name = ?",
        (target.positions, name),
    ).fetchone()
    if row is None:
        return ErasureState()
    applied, upto, erasure, seq = row
    return ErasureState(int(applied), upto, (erasure or 0, seq or 0))


def set_erasure_state(conn: Connection, name: str, target: Target, state: ErasureState) -> None:
    conn.execute(
        "INSERT INTO erasure_positions"
        " (positions, name, applied, upto, done_erasure, done_seq) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (positions, name) DO UPDATE SET applied = excluded.applied,"
        " upto = excluded.upto, done_erasure = excluded.done_erasure,"
        " done_seq = excluded.done_seq",
        (target.positions, name, state.applied, state.upto, *state.done),
    )


@dataclass(frozen=True)
class ProjectorRow:
    name: str
    version: int
    checkpoint: int
    generation: int
    built_at: float


def live_row(conn: Connection, name: str) -> ProjectorRow | None:
    row = conn.execute(
        "SELECT name, version, checkpoint, generation, built_at FROM projectors WHERE name = ?",
        (name,),
    ).fetchone()
    return ProjectorRow(*row) if row else None


@dataclass(frozen=True)
class ProjectorError:
    seq: int | None
    message_id: str | None
    error: str
    at: float


def record_error(
    conn: Connection, name: str, seq: int | None, message_id: str | None, error: str
) -> None:
    conn.execute(
        "INSERT INTO projector_errors (name, seq, message_id, error, at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, message_id = excluded.message_id,"
        " error = excluded.error, at = excluded.at",
        (name, seq, message_id, error, time.time()),
    )


def clear_error(conn: Connection, name: str) -> None:
    conn.execute("DELETE FROM projector_errors WHERE name = ?", (name,))


def last_error(conn: Connection, name: str) -> ProjectorError | None:
    row = conn.execute(
        "SELECT seq, message_id, error, at FROM projector_errors WHERE name = ?", (name,)
    ).fetchone()
    return ProjectorError(*row) if row else None
