"""Opening the log database with the pragmas every connection needs."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from eventlog.migrations import migrate

LOG_FILE = "events.db"
BUSY_TIMEOUT_MS = 30_000  # other writers (CLI replay) keep transactions short; wait them out
# When a checkpoint has reset the WAL, the next commit cuts the file back to this size
# (without it the -wal file keeps the size of its largest moment for good).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def use_wal(conn: sqlite3.Connection, timeout_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Put the database in WAL mode. Two connections doing it at once to a new file (a
    serve's projectors starting together) get "database is locked" at once: SQLite does
    not call the busy handler for it. So it is tried again until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are always explicit (BEGIN ... COMMIT)."""
    if readonly:
        uri = f"file:{Path(path).resolve()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        use_wal(conn)
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    # Acknowledged means durable: fsync the WAL on every commit.
    conn.execute("PRAGMA synchronous = FULL")
    # An erasure (notestore erase) must leave no copy of erased text in freed space: SQLite
    # zeroes what a write frees only with secure_delete, and it is per connection, so every
    # connection that may write the log has it (a read-only one frees nothing).
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def open_log(data_dir: Path | str) -> sqlite3.Connection:
    """Create data_dir and the log if needed, bring the schema up to date."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = connect(data_dir / LOG_FILE)
    migrate(conn)
    return conn


def wal_path(path: Path | str) -> Path:
    """The WAL file beside a SQLite database."""
    return Path(f"{path}-wal")


def file_sizes(path: Path | str) -> tuple[int, int]:
    """Bytes on disk of a SQLite database and of its WAL (0 for a file that is not there)."""
    sizes = []
    for p in (Path(path), wal_path(path)):
        try:
            sizes.append(p.stat().st_size)
        except FileNotFoundError:
            sizes.append(0)
    return sizes[0], sizes[1]
