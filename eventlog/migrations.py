"""The log's schema, as numbered steps applied in order (PRAGMA user_version)."""

from __future__ import annotations

import sqlite3

from eventlog.transactions import immediate

_APPEND_ONLY = """
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {table} rows cannot be updated'); END;
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {table} rows cannot be deleted'); END;
"""

# INSERT OR REPLACE deletes the old row without firing delete triggers (unless
# recursive_triggers is on), so refuse any insert that collides with a key.
_NO_REPLACE = """
CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table}
WHEN EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key} OR {pk} = NEW.{pk})
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {table} row already exists'); END;
"""

MIGRATIONS: list[str] = [
    # 1: requests, events, quarantine
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        received_at REAL NOT NULL,
        app_id TEXT NOT NULL,
        secret_fingerprint TEXT NOT NULL,
        signature TEXT NOT NULL,
        request_id TEXT,
        body BLOB NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        content_hash TEXT NOT NULL,
        event_type TEXT NOT NULL,
        entity TEXT,
        entity_id TEXT,
        note_id TEXT,
        merchant_id TEXT,
        app_id TEXT NOT NULL,
        request_id TEXT,
        request_ref INTEGER NOT NULL REFERENCES requests(id),
        action_time REAL NOT NULL,
        created_time REAL,
        received_at REAL NOT NULL,
        block TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX events_by_entity ON events(entity_id) WHERE entity_id IS NOT NULL;
    CREATE INDEX events_by_note ON events(note_id) WHERE note_id IS NOT NULL;
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        content_hash TEXT NOT NULL UNIQUE,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        kind TEXT NOT NULL,
        message_id TEXT,
        payload TEXT NOT NULL,
        request_ref INTEGER REFERENCES requests(id),
        received_at REAL NOT NULL
    );
    CREATE TABLE quarantine_replays (
        id INTEGER PRIMARY KEY,
        quarantine_id INTEGER NOT NULL REFERENCES quarantine(id),
        replayed_at REAL NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """
    + _APPEND_ONLY.format(table="requests")
    + _APPEND_ONLY.format(table="events")
    + _APPEND_ONLY.format(table="quarantine")
    + _APPEND_ONLY.format(table="quarantine_replays")
    + _NO_REPLACE.format(table="events", key="message_id", pk="seq")
    + _NO_REPLACE.format(table="quarantine", key="content_hash", pk="id")
    + _NO_REPLACE.format(table="requests", key="id", pk="id"),
    # 2: a message_id is unique per merchant, not across merchants: one merchant's signed
    # events cannot take another's message ids (and so turn its genuine events into
    # conflicts). The events table is rebuilt without its UNIQUE (message_id); rows, seqs
    # and hashes are copied as they are, so the chain verifies as before.
    """
    CREATE TABLE events_v2 (
        seq INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        event_type TEXT NOT NULL,
        entity TEXT,
        entity_id TEXT,
        note_id TEXT,
        merchant_id TEXT,
        app_id TEXT NOT NULL,
        request_id TEXT,
        request_ref INTEGER NOT NULL REFERENCES requests(id),
        action_time REAL NOT NULL,
        created_time REAL,
        received_at REAL NOT NULL,
        block TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO events_v2 SELECT * FROM events ORDER BY seq;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE UNIQUE INDEX events_by_message ON events(message_id, coalesce(merchant_id, ''));
    CREATE INDEX events_by_entity ON events(entity_id) WHERE entity_id IS NOT NULL;
    CREATE INDEX events_by_note ON events(note_id) WHERE note_id IS NOT NULL;
    """
    + _APPEND_ONLY.format(table="events")
    + """
    CREATE TRIGGER events_no_replace BEFORE INSERT ON events
    WHEN EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq OR (message_id = NEW.message_id
                 AND coalesce(merchant_id, '') = coalesce(NEW.merchant_id, '')))
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events row already exists'); END;
    """,
    # 3: the spool's drainer (eventlog.drain) finds a delivery the log already holds by its
    # receipt time and signature, and probes that the log commits by writing a heartbeat
    # row (not a log table: it is overwritten)
    """
    CREATE INDEX requests_by_received_at ON requests(received_at);
    CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every step newer than the database's user_version; returns the version."""
    with immediate(conn):
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= current:
                continue
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """Split a script on complete statements (triggers hold inner semicolons)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    return statements
