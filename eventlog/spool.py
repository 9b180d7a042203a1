"""The spool: deliveries kept on local disk while the log cannot commit.

Mobio resends a delivery only when it could not connect (spec/webhooks.md): a 503 is an
event lost. So when the log fails or does not commit in time (a full disk, a PostgreSQL
server restarting), the receiver keeps each verified delivery here instead, and answers
200 once it is durable here. eventlog.drain moves what is spooled into the log, in the
order received, keeping each delivery's received_at.

One SQLite file (spool.db) in the instance's spool_dir, with synchronous=FULL. A row
holds what the log's request row needs, plus the merchants the app was allowed at
receipt: the drainer runs intake again on the raw body (it is pure), so the log gets
exactly what it would have got at receipt. Unlike the log, rows are deleted once drained.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import orjson

from eventlog.append import Delivery, Outcome
from eventlog.db import use_wal
from eventlog.intake import read_body
from eventlog.redaction import Scope, redact_body
from eventlog.transactions import immediate
from eventlog.writer import LogUnavailable

SPOOL_FILE = "spool.db"
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the order received
    received_at REAL NOT NULL,
    app_id TEXT NOT NULL,
    secret_fingerprint TEXT NOT NULL,
    signature TEXT NOT NULL,
    merchants TEXT,  -- JSON list the app could speak for at receipt; NULL: any
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    set_aside INTEGER NOT NULL DEFAULT 0  -- 1: neither the log nor its quarantine took it
)
"""


class SpoolFull(LogUnavailable):
    """The spool holds spool_max_bytes already: the delivery cannot be kept."""


@dataclass(frozen=True, slots=True)
class Spooled:
    """A spooled delivery as the drainer reads it back."""

    id: int
    delivery: Delivery
    attempts: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int  # every delivery in the spool, those set aside included
    oldest_received_at: float | None
    bytes: int
    set_aside: int = 0

    @property
    def waiting(self) -> int:
        """Deliveries the drainer still has to move."""
        return self.depth - self.set_aside

    def oldest_age_s(self, now: float | None = None) -> float:
        if self.oldest_received_at is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.oldest_received_at)


def open_spool_db(folder: Path | str) -> sqlite3.Connection:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / SPOOL_FILE, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    use_wal(conn)
    conn.execute("PRAGMA synchronous = FULL")  # answered 200 means on disk
    # A drained row is deleted: zero its bytes then, so that an erasure (notestore erase)
    # leaves no copy of a note's text in the spool's freed space.
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute(_SCHEMA)
    return conn


class Spool:
    """The spool of one instance. Thread-safe (one connection, one operation at a time).

    `append` has the log store's shape, so a GroupCommitWriter can batch spool writes
    too: every delivery of a batch in one fsync.
    """

    def __init__(self, folder: Path | str, max_bytes: int) -> None:
        self.path = Path(folder) / SPOOL_FILE
        self.max_bytes = max_bytes
        self.conn = open_spool_db(folder)
        self._lock = threading.Lock()
        self._bytes = spool_stats(self.conn).bytes  # kept as rows come and go: no scan per write

    def append(self, deliveries: list[Delivery]) -> list[Outcome | Exception]:
        """Keep the deliveries durably, in one transaction, as many as spool_max_bytes
        lets in (in order); each one past it is answered SpoolFull. Raises (nothing kept)
        if the transaction fails."""
        with self._lock:
            room = self.max_bytes - self._bytes
            kept = []
            for d in deliveries:
                if len(d.body) > room:
                    break  # the rest too: they must not overtake this one in the spool
                room -= len(d.body)
                kept.append(d)
            rows = [
                (
                    d.received_at, d.app_id, d.secret_fingerprint, d.signature,
                    _merchants_json(d.intake.allowed_merchants), d.body,
                )
                for d in kept
            ]  # fmt: skip
            if rows:
                with immediate(self.conn):
                    self.conn.executemany(
                        "INSERT INTO spooled (received_at, app_id, secret_fingerprint,"
                        " signature, merchants, body) VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                self._bytes += sum(len(d.body) for d in kept)
        full = SpoolFull(f"the spool holds spool_max_bytes ({self.max_bytes} bytes)")
        return [
            Outcome(accepted=len(d.intake.events), quarantined=len(d.intake.rejected))
            if i < len(kept)
            else full
            for i, d in enumerate(deliveries)
        ]

    def oldest(self, limit: int) -> list[Spooled]:
        """Up to `limit` spooled deliveries, in the order received."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, received_at, app_id, secret_fingerprint, signature, merchants, body,"
                " attempts FROM spooled WHERE set_aside = 0 ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [_spooled(row) for row in rows]

    def remove(self, ids: Collection[int]) -> None:
        if not ids:
            return
        with self._lock:
            with immediate(self.conn):
                self.conn.executemany("DELETE FROM spooled WHERE id = ?", [(i,) for i in ids])
                stats = spool_stats(self.conn)  # once per drained batch
                self._bytes = stats.bytes
            if stats.depth == 0:
                self._empty_wal()

    def _empty_wal(self) -> None:
        """The spool is empty: cut its WAL to nothing, so that the deliveries it held (their
        rows deleted, zeroed by secure_delete) leave no copy in spool.db-wal either (an
        erasure's text among them). Without waiting: a reader (`notestore status`) keeps
        it for the next time the spool empties, or for `notestore erase`'s scrub."""
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            pass
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def failed(self, spool_id: int, error: str) -> int:
        """Count one more failed attempt to drain a delivery; returns its attempts."""
        with self._lock, immediate(self.conn):
            self.conn.execute(
                "UPDATE spooled SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error, spool_id),
            )
            row = self.conn.execute(
                "SELECT attempts FROM spooled WHERE id = ?", (spool_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def set_aside(self, spool_id: int) -> None:
        """Keep a delivery nobody would take out of the drainer's way (status shows it)."""
        with self._lock, immediate(self.conn):
            self.conn.execute("UPDATE spooled SET set_aside = 1 WHERE id = ?", (spool_id,))

    def stats(self) -> SpoolStats:
        with self._lock:
            return spool_stats(self.conn)

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def redact_set_aside(folder: Path | str, erasure_id: int, scope: Scope) -> int:
    """An erasure reaches the deliveries set aside in this spool (those waiting to drain
    reach the log soon, and are stored redacted under a note's or merchant's tombstone; an
    --older-than erasure has none: docs/operations.md): each block
    the scope covers is replaced by the erasure's marker, as in the log's request bodies.
    They stay set aside (their signature no longer matches). Returns how many changed."""
    path = Path(folder) / SPOOL_FILE
    if not path.exists():
        return 0
    conn = open_spool_db(folder)
    try:
        with immediate(conn):
            rows = conn.execute("SELECT id, body FROM spooled WHERE set_aside = 1").fetchall()
            said = f"erased by erasure {erasure_id}"
            changed = [
                (new, said, said, spool_id)
                for spool_id, body in rows
                if (new := redact_body(bytes(body), [(erasure_id, scope)])) is not None
            ]
            conn.executemany(  # why it was set aside stays said
                "UPDATE spooled SET body = ?, last_error = CASE WHEN last_error IS NULL"
                " THEN ? ELSE last_error || '; ' || ? END WHERE id = ?",
                changed,
            )
        return len(changed)
    finally:
        conn.close()


def spool_stats(conn: sqlite3.Connection) -> SpoolStats:
    depth, oldest, size, aside = conn.execute(
        "SELECT count(*), min(received_at), coalesce(sum(length(body)), 0),"
        " coalesce(sum(set_aside), 0) FROM spooled"
    ).fetchone()
    return SpoolStats(int(depth), oldest, int(size), int(aside))


def read_stats(folder: Path | str) -> SpoolStats | None:
    """The spool's figures for `notestore status`, read-only; None when there is no spool."""
    path = Path(folder) / SPOOL_FILE
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return spool_stats(conn)
        except sqlite3.OperationalError:  # created but never written: no table yet
            return SpoolStats(0, None, 0)
    finally:
        conn.close()


def _merchants_json(merchants: Collection[str] | None) -> str | None:
    return None if merchants is None else orjson.dumps(sorted(merchants)).decode()


def _spooled(row: tuple[object, ...]) -> Spooled:
    spool_id, received_at, app_id, fingerprint, signature, merchants, body, attempts = row
    assert isinstance(body, bytes) and isinstance(received_at, float)
    allowed = None if merchants is None else frozenset(orjson.loads(str(merchants)))
    intake = read_body(body, str(app_id), received_at, allowed)
    delivery = Delivery(received_at, str(app_id), str(fingerprint), str(signature), body, intake)
    return Spooled(int(str(spool_id)), delivery, int(str(attempts)))
