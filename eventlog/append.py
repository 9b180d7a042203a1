"""Appending verified requests to the log: dedup, conflicts, quarantine, hash chain.

Everything for a batch of deliveries happens in one transaction, so a group
commit either stores all of them or none.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from eventlog import chain
from eventlog.intake import Intake, NewEvent, Rejected
from eventlog.tombstones import (
    INSERT_ERASED_ROW,
    INSERT_TOMBSTONE,
    ErasedRow,
    Tombstones,
    event_record,
    new_comment,
    read_tombstones,
    redact_event,
    redact_item,
    redact_received_body,
    request_record,
    with_comment,
)
from eventlog.transactions import immediate


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request whose signature verified, with what intake made of its body."""

    received_at: float
    app_id: str
    secret_fingerprint: str
    signature: str
    body: bytes
    intake: Intake
    # For the hash chain: computed before the writer (off its thread), not hashed there.
    body_digest: str = ""

    def __post_init__(self) -> None:
        if not self.body_digest:
            object.__setattr__(self, "body_digest", chain.digest(self.body))


@dataclass(slots=True)
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    seqs: list[int] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)  # of the accepted events
    reasons: list[str] = field(default_factory=list)  # one per quarantined item

    def as_answer(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
        }


def _head(conn: sqlite3.Connection, table: str, key: str) -> tuple[int, str]:
    """The last key and hash of a chained table (0 and the genesis hash when empty)."""
    row = conn.execute(f"SELECT {key}, hash FROM {table} ORDER BY {key} DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, chain.GENESIS)


class Batch:
    """Chain heads, next keys and tombstones, read once at the start of the write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seq, self.event_hash = _head(conn, "events", "seq")
        self.request_id, self.request_hash = _head(conn, "requests", "id")
        self.tombstones: Tombstones = read_tombstones(conn)

    def add_request(self, d: Delivery) -> int:
        self.request_id += 1
        d, record = under_tombstones(d, self.request_id, self.tombstones)
        values = request_values(self.request_id, d)
        self.request_hash = chain.link(self.request_hash, values, d.body_digest)
        self.conn.execute(
            "INSERT INTO requests (id, received_at, app_id, secret_fingerprint, signature,"
            " request_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, self.request_hash),
        )
        self._record(record)
        return self.request_id

    def _record(self, record: ErasedRow | None) -> None:
        if record is not None:
            self.conn.execute(INSERT_ERASED_ROW, record)

    def add_event(
        self, ev: NewEvent, app_id: str, request_id: str | None, ref: int, at: float
    ) -> int:
        self.seq += 1
        values = event_values(self.seq, ev, app_id, request_id, ref, at)
        self.event_hash = chain.link(self.event_hash, values, ev.block_digest)
        self.conn.execute(
            f"INSERT INTO events ({', '.join(chain.EVENT_COLUMNS)}, hash)"
            f" VALUES ({', '.join('?' * (len(values) + 1))})",
            (*values, self.event_hash),
        )
        if self.tombstones:
            self._record(event_record(self.seq, ev))
            if comment := new_comment(ev, self.tombstones):
                self.conn.execute(INSERT_TOMBSTONE, comment)
                self.tombstones = with_comment(self.tombstones, comment)
        return self.seq


def under_tombstones(
    d: Delivery, request_key: int, tombstones: Tombstones
) -> tuple[Delivery, ErasedRow | None]:
    """A delivery whose body a tombstone covers, with that body redacted (its digest, which
    the chain links, stays the received body's), and the record of its request row."""
    body = redact_received_body(d.body, tombstones) if tombstones else None
    if body is None:
        return d, None
    d = Delivery(
        d.received_at, d.app_id, d.secret_fingerprint, d.signature, body, d.intake, d.body_digest
    )
    return d, request_record(request_key, body, d.body_digest)


# The rows every backend writes, in one place: the hash chains link these very values, so
# the same deliveries give the same hashes on SQLite and PostgreSQL (eventlog.pg_log).


def request_values(request_id: int, d: Delivery) -> tuple[Any, ...]:
    """A request's columns before its hash, in the order the chain links them."""
    return (
        request_id, d.received_at, d.app_id, d.secret_fingerprint, d.signature,
        d.intake.request_id, d.body,
    )  # fmt: skip


def event_values(
    seq: int, ev: NewEvent, app_id: str, request_id: str | None, ref: int, at: float
) -> tuple[Any, ...]:
    """An event's columns before its hash, in chain.EVENT_COLUMNS order."""
    return (
        seq, ev.message_id, ev.content_hash, ev.event_type, ev.entity, ev.entity_id,
        ev.note_id, ev.merchant_id, app_id, request_id, ref, ev.action_time,
        ev.created_time, at, ev.block,
    )  # fmt: skip


def quarantine_values(item: Rejected, ref: int | None, at: float) -> tuple[Any, ...]:
    """A quarantine row's columns after its id."""
    return (
        item.content_hash, item.reason, item.detail, item.kind, item.message_id, item.payload,
        ref, at,
    )  # fmt: skip


def conflict(ev: NewEvent, logged_seq: int) -> Rejected:
    """What a message_id the merchant logged before, with other content, goes to quarantine as."""
    detail = f"message_id {ev.message_id} is in the log (seq {logged_seq}) with other content"
    return Rejected("conflict", detail, ev.block, "block", ev.message_id)


def quarantine(conn: sqlite3.Connection, item: Rejected, ref: int | None, at: float) -> None:
    """Keep a rejected item once per content (a redelivered bad body adds no row)."""
    # NOT EXISTS rather than ON CONFLICT: the no-replace trigger refuses any colliding insert.
    row = quarantine_values(item, ref, at)
    conn.execute(
        "INSERT INTO quarantine (content_hash, reason, detail, kind, message_id, payload,"
        " request_ref, received_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
        " WHERE NOT EXISTS (SELECT 1 FROM quarantine WHERE content_hash = ?)",
        (*row, item.content_hash),
    )


def existing_content(
    conn: sqlite3.Connection, message_id: str, merchant_id: str | None
) -> tuple[int, str] | None:
    """The seq and content hash of the merchant's event with this message_id, if logged.

    Per merchant: another merchant's event with the same id is another event.
    """
    row = conn.execute(
        "SELECT seq, content_hash FROM events"
        " WHERE message_id = ? AND coalesce(merchant_id, '') = ?",
        (message_id, merchant_id or ""),
    ).fetchone()
    return (row[0], row[1]) if row else None


def add_events(
    conn: sqlite3.Connection,
    batch: Batch,
    events: list[NewEvent],
    *,
    app_id: str,
    request_id: str | None,
    ref: int,
    at: float,
    outcome: Outcome,
) -> None:
    """Append new events; count duplicates; quarantine same-id-other-content as a conflict."""
    for ev in events:
        ev = redact_event(ev, batch.tombstones)
        seen = existing_content(conn, ev.message_id, ev.merchant_id)
        if seen is None:
            outcome.seqs.append(batch.add_event(ev, app_id, request_id, ref, at))
            outcome.event_types.append(ev.event_type)
            outcome.accepted += 1
        elif seen[1] == ev.content_hash:
            outcome.duplicates += 1
        else:
            quarantine(conn, conflict(ev, seen[0]), ref, at)
            outcome.quarantined += 1
            outcome.reasons.append("conflict")


def _store(conn: sqlite3.Connection, batch: Batch, d: Delivery) -> Outcome:
    outcome = Outcome()
    ref = batch.add_request(d)
    for item in d.intake.rejected:
        quarantine(conn, redact_item(item, batch.tombstones), ref, d.received_at)
        outcome.quarantined += 1
        outcome.reasons.append(item.reason)
    add_events(
        conn, batch, d.intake.events, app_id=d.app_id, request_id=d.intake.request_id,
        ref=ref, at=d.received_at, outcome=outcome,
    )  # fmt: skip
    return outcome


def append_deliveries(conn: sqlite3.Connection, deliveries: list[Delivery]) -> list[Outcome]:
    """Store every delivery in one transaction; returns each one's counts once committed."""
    with immediate(conn):
        batch = Batch(conn)
        outcomes = [_store(conn, batch, d) for d in deliveries]
    return outcomes
