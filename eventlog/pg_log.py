"""The log on PostgreSQL (psycopg 3): the `LogStore` contract on eventlog.pg_schema's tables.

Appends are serialised across every process and host by a transaction-scoped advisory lock:
the chain heads are read, and `seq` and request ids assigned, only once it is held, and it is
released by the commit. So commit order is seq order, and a reader tailing `seq > last`
never skips an event that commits late. (Statements run at READ COMMITTED: each sees what
committed before it, so the heads read after the lock are those of the last commit.)

The rows and their chain hashes are computed exactly as eventlog.append does on SQLite (the
same values in the same order into `chain.link`), so the same deliveries give the same
`hash` columns on both backends. Each table's rows of a batch go in one `executemany`
(pipelined by psycopg). A batch the database refuses because of one delivery's content is
written again delivery by delivery, each in a savepoint; the one that still fails is stored
as its request with its body quarantined (`eventlog.store.unstorable`). Every connection
waits at most `lock_timeout` for a lock and `statement_timeout` for a statement: a stuck
lock surfaces as an error (the receiver answers 503), never as a writer waiting forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from eventlog import chain
from eventlog.append import (
    Delivery,
    Outcome,
    conflict,
    event_values,
    quarantine_values,
    request_values,
    under_tombstones,
)
from eventlog.db import BUSY_TIMEOUT_MS
from eventlog.intake import Rejected
from eventlog.pg_conn import CONNECT_OPTIONS
from eventlog.read import LogEvent
from eventlog.store import RequestKey, unstorable
from eventlog.tombstones import (
    INSERT_ERASED_ROW,
    INSERT_TOMBSTONE,
    TOMBSTONES,
    Tombstones,
    event_record,
    new_comment,
    redact_event,
    redact_item,
    tombstones_of,
    with_comment,
)

# pg_advisory_xact_lock key serialising appends ("noteappd")
APPEND_LOCK = 0x6E6F7465_61707064
# NOTIFY channel: each commit that appended events says so, with the last seq (projectors
# LISTEN, and poll only as a fallback)
LOG_CHANNEL = "notestore_log"
# How long an append waits for a pooled connection (the server unreachable): a quick 503
# rather than every queued delivery waiting psycopg_pool's default 30 s
POOL_WAIT_S = 5.0
EVENT_READ_COLUMNS = (
    "seq, message_id, event_type, entity, entity_id, note_id, merchant_id, app_id,"
    " request_id, action_time, created_time, received_at, block"
)
INSERT_REQUEST = (
    "INSERT INTO requests (id, received_at, app_id, secret_fingerprint, signature,"
    " request_id, body, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(chain.EVENT_COLUMNS)}, hash)"
    f" VALUES ({', '.join(['%s'] * (len(chain.EVENT_COLUMNS) + 1))})"
)
# once per content: a row with the same content_hash (earlier, or another appender's
# quarantine replay) is kept and this one dropped. DO NOTHING fires no UPDATE trigger.
INSERT_QUARANTINE = (
    "INSERT INTO quarantine (content_hash, reason, detail, kind, message_id, payload,"
    " request_ref, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (content_hash) DO NOTHING"
)
# What one delivery's content can make the database (or the encoding of a parameter)
# refuse: text with NUL or a lone surrogate, a number out of range, a constraint. Not any
# ValueError: one raised by our own code is a bug, and fails the batch as it is.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeEncodeError,  # a lone surrogate, encoding a parameter as UTF-8
    psycopg.DataError,  # NUL in text (refused by psycopg), a value out of range
    psycopg.errors.NotNullViolation,
)  # not a unique violation: under the append lock, that would be a bug, not a bad row
# Bounded waits, as SQLite's busy timeout: an append waits this long for the append lock
# (or any other lock) and then fails, and no statement runs longer than the other. The
# writer answers such a batch 503 rather than hang behind a stuck lock.
LOCK_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000
STATEMENT_TIMEOUT_S = 2 * LOCK_TIMEOUT_S


@dataclass
class _Heads:
    seq: int
    event_hash: str
    request_id: int
    request_hash: str


@dataclass
class _Rows:
    """A group's rows, their heads once written, and each delivery's outcome."""

    heads: _Heads
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    erased: list[tuple[Any, ...]] = field(default_factory=list)  # rows stored redacted
    tombstones: list[tuple[Any, ...]] = field(default_factory=list)  # comments on erased notes
    outcomes: list[Outcome] = field(default_factory=list)


def _plan(
    deliveries: list[Delivery],
    heads: _Heads,
    logged: dict[tuple[str, str], tuple[int, str]],
    tombstones: Tombstones,
) -> _Rows:
    """The rows of `deliveries` after `heads`, as eventlog.append would insert them (what
    `tombstones` cover redacted, eventlog.tombstones).

    `logged` maps (message_id, merchant or '') to (seq, content_hash) of the events already
    in the log; events of this group are added to it as they are planned.
    """
    rows = _Rows(_Heads(heads.seq, heads.event_hash, heads.request_id, heads.request_hash))
    h = rows.heads
    for d in deliveries:
        outcome = Outcome()
        h.request_id += 1
        ref = h.request_id
        d, record = under_tombstones(d, ref, tombstones)
        rows.erased += [record] if record else []
        values = request_values(ref, d)
        h.request_hash = chain.link(h.request_hash, values, d.body_digest)
        rows.requests.append((*values, h.request_hash))
        for item in d.intake.rejected:
            item = redact_item(item, tombstones)
            rows.quarantine.append(quarantine_values(item, ref, d.received_at))
            outcome.quarantined += 1
            outcome.reasons.append(item.reason)
        for ev in d.intake.events:
            ev = redact_event(ev, tombstones)
            key = (ev.message_id, ev.merchant_id or "")
            seen = logged.get(key)
            if seen is None:
                h.seq += 1
                ev_values = event_values(
                    h.seq, ev, d.app_id, d.intake.request_id, ref, d.received_at
                )
                h.event_hash = chain.link(h.event_hash, ev_values, ev.block_digest)
                rows.events.append((*ev_values, h.event_hash))
                if tombstones and (event_erased := event_record(h.seq, ev)):
                    rows.erased.append(event_erased)
                    if comment := new_comment(ev, tombstones):
                        rows.tombstones.append(comment)
                        tombstones = with_comment(tombstones, comment)
                logged[key] = (h.seq, ev.content_hash)
                outcome.seqs.append(h.seq)
                outcome.event_types.append(ev.event_type)
                outcome.accepted += 1
            elif seen[1] == ev.content_hash:
                outcome.duplicates += 1
            else:
                rows.quarantine.append(quarantine_values(conflict(ev, seen[0]), ref, d.received_at))
                outcome.quarantined += 1
                outcome.reasons.append("conflict")
        rows.outcomes.append(outcome)
    return rows


def _events(rows: Iterable[tuple[Any, ...]]) -> list[LogEvent]:
    return [LogEvent(*row) for row in rows]


# The chain heads in one statement (each an index lookup on the primary key).
HEADS = (
    "SELECT (SELECT seq FROM events ORDER BY seq DESC LIMIT 1),"
    " (SELECT hash FROM events ORDER BY seq DESC LIMIT 1),"
    " (SELECT id FROM requests ORDER BY id DESC LIMIT 1),"
    " (SELECT hash FROM requests ORDER BY id DESC LIMIT 1)"
)


def _heads_of(row: tuple[Any, ...] | None) -> _Heads:
    seq, event_hash, ref, request_hash = row or (None, None, None, None)
    if seq is None:
        seq, event_hash = 0, chain.GENESIS
    if ref is None:
        ref, request_hash = 0, chain.GENESIS
    return _Heads(int(seq), str(event_hash), int(ref), str(request_hash))


def _keys(deliveries: list[Delivery]) -> set[tuple[str, str]]:
    """(message_id, merchant or '') of every event the deliveries carry."""
    return {(ev.message_id, ev.merchant_id or "") for d in deliveries for ev in d.intake.events}


def _logged_query(keys: set[tuple[str, str]]) -> tuple[str, tuple[list[str], list[str]]]:
    """Which of `keys` the log already holds: their seq and content hash."""
    ids, merchants = zip(*keys, strict=True)
    return (
        "SELECT e.message_id, coalesce(e.merchant_id, ''), e.seq, e.content_hash"
        " FROM events e JOIN unnest(%s::text[], %s::text[]) AS k(message_id, merchant)"
        " ON e.message_id = k.message_id AND coalesce(e.merchant_id, '') = k.merchant",
        (list(ids), list(merchants)),
    )


def _logged_of(found: list[tuple[Any, ...]]) -> dict[tuple[str, str], tuple[int, str]]:
    return {(r[0], r[1]): (int(r[2]), str(r[3])) for r in found}


def _insert(conn: psycopg.Connection[Any], rows: _Rows) -> None:
    with conn.cursor() as cur:
        cur.executemany(INSERT_REQUEST, rows.requests)
        if rows.events:
            cur.executemany(INSERT_EVENT, rows.events)
        if rows.quarantine:
            cur.executemany(INSERT_QUARANTINE, rows.quarantine)
        if rows.erased:
            cur.executemany(INSERT_ERASED_ROW.replace("?", "%s"), rows.erased)
        if rows.tombstones:
            cur.executemany(INSERT_TOMBSTONE.replace("?", "%s"), rows.tombstones)


class _Stale(Exception):
    """The pooled connection was dead before the batch wrote anything: safe to retry."""


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """End a transaction a failed batch left open (the connection goes back to the pool)."""
    if conn.broken or conn.closed:
        return
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


class PostgresLogStore:
    """The log in a PostgreSQL database migrated by eventlog.pg_schema (as its owner).

    The service role suffices to use it: it only INSERTs and SELECTs the log tables.
    """

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    ) -> None:
        self.url = url
        timeouts = {
            "lock_timeout": f"{round(lock_timeout_s * 1000)}ms",
            "statement_timeout": f"{round(statement_timeout_s * 1000)}ms",
        }

        def configure(conn: psycopg.Connection[Any]) -> None:
            for name, value in timeouts.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))

        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, **CONNECT_OPTIONS},
            timeout=POOL_WAIT_S,
            configure=configure,
            name="notestore-log",
            open=True,
        )

    # --- appending ---------------------------------------------------------------------

    def append(self, deliveries: list[Delivery]) -> list[Outcome]:
        if not deliveries:
            return []
        try:
            return self._append_on_a_connection(deliveries)
        except _Stale:
            # the server dropped it while idle (a restart?): drop every dead one, once more
            self.pool.check()
            return self._append_on_a_connection(deliveries)

    def _append_on_a_connection(self, deliveries: list[Delivery]) -> list[Outcome]:
        with self.pool.connection() as conn:
            try:
                return self._append_batch(conn, deliveries)
            except _Stale:
                raise
            except ROW_ERRORS:
                _rollback(conn)  # written again one by one below, the bad one quarantined
            except BaseException:
                _rollback(conn)
                raise
            return self._append_isolated(conn, deliveries)

    @staticmethod
    def _append_batch(conn: psycopg.Connection[Any], deliveries: list[Delivery]) -> list[Outcome]:
        """The whole batch in one transaction and two round trips: the lock, the heads and
        the deduplication read pipelined; then every row and the COMMIT pipelined. (The
        server runs a pipeline's statements in order, so the heads are read once the lock
        is held.)"""
        keys = _keys(deliveries)
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                heads_read = conn.execute(HEADS)
                logged_read = conn.execute(*_logged_query(keys)) if keys else None
                tombstones_read = conn.execute(TOMBSTONES)
                heads = _heads_of(heads_read.fetchone())  # syncs the pipeline
                logged = _logged_of(logged_read.fetchall()) if logged_read else {}
                tombstones = tombstones_of(tombstones_read.fetchall())
        except psycopg.OperationalError as exc:
            if conn.broken:  # nothing was written: a connection the server dropped while idle
                raise _Stale from exc
            raise
        rows = _plan(deliveries, heads, logged, tombstones)
        with conn.pipeline():
            _insert(conn, rows)
            if rows.events:  # delivered at COMMIT, to every instance's listening projectors
                conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, str(rows.heads.seq)))
            conn.execute("COMMIT")
        return rows.outcomes

    def _append_isolated(
        self, conn: psycopg.Connection[Any], deliveries: list[Delivery]
    ) -> list[Outcome]:
        """Delivery by delivery, each in a savepoint: one the database refuses is stored as
        its request with its body quarantined (`unstorable`), its neighbours as they are."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            heads = _heads_of(conn.execute(HEADS).fetchone())
            outcomes = []
            for d in deliveries:
                try:
                    with conn.transaction():
                        rows = self._write(conn, [d], heads)
                except ROW_ERRORS as exc:
                    with conn.transaction():
                        rows = self._write(conn, [unstorable(d, exc)], heads)
                heads = rows.heads
                outcomes += rows.outcomes
            conn.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, str(heads.seq)))
            return outcomes

    @staticmethod
    def _write(conn: psycopg.Connection[Any], deliveries: list[Delivery], heads: _Heads) -> _Rows:
        keys = _keys(deliveries)
        logged = _logged_of(conn.execute(*_logged_query(keys)).fetchall()) if keys else {}
        tombstones = tombstones_of(conn.execute(TOMBSTONES).fetchall())
        rows = _plan(deliveries, heads, logged, tombstones)
        _insert(conn, rows)
        return rows

    # --- reading -----------------------------------------------------------------------

    def read_from(
        self, after_seq: int, limit: int = 1000, merchants: frozenset[str] | None = None
    ) -> list[LogEvent]:
        with self.pool.connection() as conn:
            if merchants is None:
                rows = conn.execute(
                    f"SELECT {EVENT_READ_COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
                    (after_seq, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {EVENT_READ_COLUMNS} FROM events"
                    " WHERE seq > %s AND merchant_id = ANY(%s) ORDER BY seq LIMIT %s",
                    (after_seq, sorted(merchants), limit),
                ).fetchall()
        return _events(rows)

    def read_by_entity(self, ids: list[str] | tuple[str, ...] | set[str]) -> list[LogEvent]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_READ_COLUMNS} FROM events"
                " WHERE entity_id = ANY(%s) OR note_id = ANY(%s) ORDER BY seq",
                (wanted, wanted),
            ).fetchall()
        return _events(rows)

    def head_seq(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(row[0]) if row else 0

    def probe(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            # what an append needs: the append lock, and a commit flushed (a transaction id)
            conn.execute("SELECT pg_advisory_xact_lock(%s), txid_current()", (APPEND_LOCK,))

    def quarantine(self, item: Rejected, received_at: float) -> None:
        with self.pool.connection() as conn, conn.transaction():
            # under the append lock, as every append: an erasure records its tombstone
            # under it, so this item either committed before (and is redacted by the
            # erasure's scan) or sees the tombstone
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            tombstones = tombstones_of(conn.execute(TOMBSTONES).fetchall())
            item = redact_item(item, tombstones)
            conn.execute(INSERT_QUARANTINE, quarantine_values(item, None, received_at))

    def logged(self, keys: list[RequestKey]) -> set[RequestKey]:
        times = sorted({at for at, _, _ in keys})
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT received_at, app_id, signature FROM requests WHERE received_at = ANY(%s)",
                (times,),
            ).fetchall()
        return {(float(a), str(b), str(c)) for a, b, c in rows} & set(keys)

    def counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM requests),"
                " (SELECT count(*) FROM quarantine), (SELECT coalesce(max(seq), 0) FROM events)"
            ).fetchone()
        assert row is not None
        return {
            "events": int(row[0]),
            "requests": int(row[1]),
            "quarantined": int(row[2]),
            "last_seq": int(row[3]),
        }

    def close(self) -> None:
        self.pool.close()
