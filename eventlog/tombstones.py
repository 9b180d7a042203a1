"""Tombstones: notes and merchants erased for good, so what arrives about them later (a new
event, a redelivery, a spooled delivery drained late) is stored already redacted.

Every append path reads the tombstones inside its write transaction (eventlog.append on
SQLite, eventlog.pg_log on PostgreSQL, quarantine replay), after the lock that serialises
appends: an erasure records its tombstone under the same lock, so a delivery either
committed before it (and the erasure's scan redacts it) or sees it.

A row stored redacted keeps the digest of what was received for its chain link, and gets an
erased_rows record under the tombstone's erasure, as a row redacted later would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from eventlog import chain
from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection
from eventlog.intake import NewEvent, Rejected
from eventlog.redaction import Scope, marker_erasure, redact_body, redact_payload, redacted_block

# The merchant is the erasure's (chained), not the tombstone row's: a row whose merchant
# differs from its erasure's (or whose erasure names none: --older-than leaves no tombstone)
# is ignored, so a stray row can neither widen nor move an erasure's tombstone.
TOMBSTONES = (
    "SELECT t.erasure_id, e.merchant_id, t.entity_id, e.note_id FROM tombstones t"
    " JOIN erasures e ON e.id = t.erasure_id"
    " WHERE e.merchant_id IS NOT NULL AND t.merchant_id = e.merchant_id"
    " AND e.before IS NULL ORDER BY t.erasure_id"
)
Tombstones = list[tuple[int, Scope]]
INSERT_TOMBSTONE = "INSERT INTO tombstones (erasure_id, merchant_id, entity_id) VALUES (?, ?, ?)"
INSERT_ERASED_ROW = (
    "INSERT INTO erased_rows (erasure_id, log_table, row_key, original_digest, redacted_digest)"
    " VALUES (?, ?, ?, ?, ?)"
)
ErasedRow = tuple[int, str, int, str, str]


def tombstones_of(rows: list[Any]) -> Tombstones:
    """Each erasure's tombstone as a scope: a merchant's, or a note's with its comments."""
    scopes: dict[int, Scope] = {}
    for erasure_id, merchant, entity, note in rows:
        held = scopes.get(int(erasure_id)) or Scope(merchant_id=merchant, note_id=note)
        if entity is not None and entity != note:
            held = dataclasses.replace(held, comments=held.comments | {entity})
        scopes[int(erasure_id)] = held
    return list(scopes.items())


def read_tombstones(conn: Connection) -> Tombstones:
    return tombstones_of(conn.execute(TOMBSTONES).fetchall())


def redact_event(ev: NewEvent, tombstones: Tombstones) -> NewEvent:
    """The event as the log keeps it: its block a marker when a tombstone covers it. The
    block digest stays the received block's (the chain links it), as content_hash does (so a
    redelivery is still a duplicate)."""
    for erasure_id, scope in tombstones:
        if scope.merchant_id != ev.merchant_id:
            continue
        block = loads_strict(ev.block)
        if scope.covers_block(block):  # a comment on the note included, by its object_id
            return dataclasses.replace(ev, block=redacted_block(block, erasure_id))
    return ev


def new_comment(ev: NewEvent, tombstones: Tombstones) -> tuple[int, str, str] | None:
    """The tombstone row of a comment stored redacted because it is on an erased note, when
    its id is not among the note's yet (created after the erasure): its later edits, which
    do not name the note, are then covered too."""
    if ev.entity != "comment" or ev.entity_id is None or ev.merchant_id is None:
        return None
    erasure_id = marker_erasure(ev.block[:40])
    for held, scope in tombstones:
        if held == erasure_id and scope.note_id is not None:
            return None if ev.entity_id in scope.entities else (held, ev.merchant_id, ev.entity_id)
    return None


def with_comment(tombstones: Tombstones, row: tuple[int, str, str]) -> Tombstones:
    """The tombstones once a comment's row (new_comment) is added to its erasure's."""
    erasure_id, _, comment = row
    return [
        (held, dataclasses.replace(s, comments=s.comments | {comment}) if held == erasure_id else s)
        for held, s in tombstones
    ]


def redact_item(item: Rejected, tombstones: Tombstones) -> Rejected:
    payload = redact_payload(item.payload, item.kind, tombstones, item.content_hash)
    return item if payload is None else dataclasses.replace(item, payload=payload)


def redact_received_body(body: bytes, tombstones: Tombstones) -> bytes | None:
    """The body with what tombstones cover redacted, None when they cover nothing. Only a
    body that names a tombstone's merchant is read again (most are not)."""
    if not any(scope.merchant_id and scope.merchant_id.encode() in body for _, scope in tombstones):
        return None
    return redact_body(body, tombstones)


def event_record(seq: int, ev: NewEvent) -> ErasedRow | None:
    """The erased_rows record of an event stored redacted (None for one stored as received)."""
    erasure_id = marker_erasure(ev.block[:40])
    if erasure_id is None:
        return None
    return (erasure_id, "events", seq, ev.block_digest, chain.digest(ev.block))


def request_record(request_id: int, body: bytes, received_digest: str) -> ErasedRow | None:
    erasure_id = marker_erasure(body)
    if erasure_id is None:
        return None
    return (erasure_id, "requests", request_id, received_digest, chain.digest(body))
