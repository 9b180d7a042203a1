"""The log's schema, as numbered steps applied in order (PRAGMA user_version)."""

from __future__ import annotations

import sqlite3

from eventlog import chain
from eventlog.redaction import MARKER_PREFIX
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

def _same(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns)


def _mentions(column: str, what: str) -> str:
    return f"instr(CAST(OLD.{column} AS BLOB), CAST({what} AS BLOB)) > 0"


def _erasure_only(table: str, key: str, columns: tuple[str, ...], covers: str) -> str:
    """The one UPDATE a log table lets through: its content (the last of `columns`) replaced
    by the marker of a recorded erasure that names the row (erased_rows) and whose scope
    covers it; every other column (and the hash of a chained table) unchanged."""
    content = columns[-1]
    unchanged = (*columns[:-1], "hash") if table != "quarantine" else columns[:-1]
    marker = f"'{MARKER_PREFIX}' || e.id || ', '"
    starts = (
        f"instr(CAST(NEW.{content} AS BLOB), CAST({marker} AS BLOB)) > 0"
        if table == "requests"
        else f"substr(NEW.{content}, 1, length({marker})) = {marker}"
    )
    return f"""
    DROP TRIGGER {table}_no_update;
    CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
    WHEN NOT ({_same(unchanged)} AND EXISTS (
        SELECT 1 FROM erased_rows r JOIN erasures e ON e.id = r.erasure_id
        WHERE r.log_table = '{table}' AND r.row_key = OLD.{key} AND {starts} AND {covers}))
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {table} rows cannot be updated'); END;
    """


_QUARANTINE_COLUMNS = (
    "id", "content_hash", "reason", "detail", "kind", "message_id", "request_ref", "received_at",
    "payload",
)  # fmt: skip


def _scope_named_in(column: str) -> str:
    """An erasure's merchant and one of its entities (a note, a comment on it) are named in
    content the database cannot read as events (a body, a payload)."""
    return (
        f"(e.merchant_id IS NULL OR {_mentions(column, 'e.merchant_id')})"
        " AND (e.note_id IS NULL OR EXISTS (SELECT 1 FROM tombstones t WHERE t.erasure_id = e.id"
        f" AND {_mentions(column, 't.entity_id')}))"
    )


def _not_marker(column: str) -> str:
    """SQL: OLD's content is not a marker already (a row is redacted once)."""
    prefix = f"CAST('{MARKER_PREFIX}' AS BLOB)"
    return f"substr(CAST(OLD.{column} AS BLOB), 1, length({prefix})) IS NOT {prefix}"


def _names_exactly(column: str, what: str) -> str:
    """SQL: OLD's content names `what` as a whole JSON string ("m1", never inside "m10")."""
    return _mentions(column, f"'\"' || {what} || '\"'")


def _exact_scope(column: str) -> str:
    """Step 5: the erasure's merchant and one of its entities, each named as a whole JSON
    string, in content the database cannot read as events (a body, a payload)."""
    return (
        f"(e.merchant_id IS NULL OR {_names_exactly(column, 'e.merchant_id')})"
        " AND (e.note_id IS NULL OR EXISTS (SELECT 1 FROM tombstones t WHERE t.erasure_id = e.id"
        f" AND {_names_exactly(column, 't.entity_id')}))"
    )


def _older_blocks(text: str) -> str:
    """SQL: an envelope (`text`) holds a block whose action_time is before e.before."""
    return (
        f"(CASE WHEN NOT json_valid({text}) THEN 0"
        f" WHEN json_type({text}, '$.block_event') IS NOT 'array' THEN 0"
        f" ELSE EXISTS (SELECT 1 FROM json_each({text}, '$.block_event') b"
        " WHERE json_type(b.value, '$.data_event.action_time') IN ('integer', 'real')"
        " AND json_extract(b.value, '$.data_event.action_time') < e.before) END)"
    )


def _spliced(column: str) -> str:
    """SQL: NEW's content is the old envelope with blocks spliced out (valid JSON, as many
    blocks as before, holding the erasure's marker). CASE: a JSON function given text that
    is not JSON raises an error rather than answering false."""
    new, old = f"CAST(NEW.{column} AS TEXT)", f"CAST(OLD.{column} AS TEXT)"
    marker = f"'{MARKER_PREFIX}' || e.id || ', '"
    return (
        f"(instr(CAST(NEW.{column} AS BLOB), CAST({marker} AS BLOB)) > 0"
        f" AND CASE WHEN json_valid({new}) THEN json_type({new}, '$.block_event') IS 'array'"
        f" AND json_array_length({new}, '$.block_event')"
        f" = json_array_length({old}, '$.block_event') ELSE 0 END)"
    )


def _envelope_or_whole(column: str) -> str:
    """SQL: an envelope of blocks (OLD) may only be spliced; anything else becomes a marker."""
    old = f"CAST(OLD.{column} AS TEXT)"
    return (
        f"(CASE WHEN NOT json_valid({old}) THEN {_whole_marker(column)}"
        f" WHEN json_type({old}, '$.block_event') IS 'array' THEN {_spliced(column)}"
        f" ELSE {_whole_marker(column)} END)"
    )


def _whole_marker(column: str) -> str:
    marker = f"'{MARKER_PREFIX}' || e.id || ', '"
    return (
        f"(substr(CAST(NEW.{column} AS BLOB), 1, length(CAST({marker} AS BLOB)))"
        f" = CAST({marker} AS BLOB))"
    )


def _redaction_only(table: str, key: str, columns: tuple[str, ...], allowed: str) -> str:
    """Step 5's UPDATE trigger: only the content changes, a row not redacted yet, recorded
    in erased_rows by an erasure for which `allowed` holds (e: the erasure). The digest of
    the new content cannot be checked in a trigger here (no sha256 in SQLite): `verify`
    checks it, and the marker's shape, against the erasure's record and scope."""
    content = columns[-1]
    unchanged = (*columns[:-1], "hash") if table != "quarantine" else columns[:-1]
    return f"""
    DROP TRIGGER {table}_no_update;
    CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
    WHEN NOT ({_same(unchanged)} AND {_not_marker(content)} AND EXISTS (
        SELECT 1 FROM erased_rows r JOIN erasures e ON e.id = r.erasure_id
        WHERE r.log_table = '{table}' AND r.row_key = OLD.{key} AND {allowed}))
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only: {table} rows cannot be updated'); END;
    """


_EVENT_REDACTION = (
    f"{_whole_marker('block')}"
    " AND CASE WHEN json_valid(NEW.block)"
    " THEN json_extract(NEW.block, '$.message_id') IS OLD.message_id"
    " AND json_extract(NEW.block, '$.event_type') IS OLD.event_type ELSE 0 END"
    " AND (e.merchant_id IS NULL OR e.merchant_id = OLD.merchant_id)"
    " AND (e.note_id IS NULL OR EXISTS (SELECT 1 FROM tombstones t WHERE t.erasure_id = e.id"
    "      AND t.entity_id IN (OLD.note_id, OLD.entity_id)))"
    " AND (e.before IS NULL OR OLD.action_time < e.before)"
)
_REQUEST_REDACTION = (
    f"{_envelope_or_whole('body')}"
    f" AND (e.before IS NULL OR {_older_blocks('CAST(OLD.body AS TEXT)')})"
    f" AND (e.before IS NOT NULL OR ({_exact_scope('body')}))"
)
_QUARANTINE_REDACTION = (
    f"(CASE WHEN OLD.kind = 'block' THEN {_whole_marker('payload')}"
    f" ELSE {_envelope_or_whole('payload')} END)"
    " AND (e.before IS NULL OR CASE WHEN OLD.kind = 'block' THEN"
    "      CASE WHEN json_valid(OLD.payload) THEN"
    "      json_type(OLD.payload, '$.data_event.action_time') IN ('integer', 'real')"
    "      AND json_extract(OLD.payload, '$.data_event.action_time') < e.before ELSE 0 END"
    f"      ELSE {_older_blocks('OLD.payload')} END)"
    f" AND (e.before IS NOT NULL OR ({_exact_scope('payload')}))"
)


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
    # 4: erasure (eventlog.erase): the erasures (chained), the rows each one redacted with
    # the digests of their content before and after, the tombstones of erased notes and
    # merchants; the one UPDATE the log tables let through (a recorded erasure's marker)
    """
    CREATE TABLE erasures (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        merchant_id TEXT,
        note_id TEXT,
        before REAL,
        reason TEXT NOT NULL,
        counts TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE erased_rows (
        erasure_id INTEGER NOT NULL REFERENCES erasures(id),
        log_table TEXT NOT NULL CHECK (log_table IN ('events', 'requests', 'quarantine')),
        row_key INTEGER NOT NULL,
        original_digest TEXT NOT NULL,
        redacted_digest TEXT NOT NULL,
        PRIMARY KEY (log_table, row_key, erasure_id)
    );
    CREATE TABLE tombstones (
        erasure_id INTEGER NOT NULL REFERENCES erasures(id),
        merchant_id TEXT NOT NULL,
        entity_id TEXT  -- a note or one of its comments; NULL: the whole merchant
    );
    CREATE UNIQUE INDEX tombstones_by_erasure ON tombstones(erasure_id, coalesce(entity_id, ''));
    """
    + _APPEND_ONLY.format(table="erasures")
    + _APPEND_ONLY.format(table="erased_rows")
    + _APPEND_ONLY.format(table="tombstones")
    + _NO_REPLACE.format(table="erasures", key="id", pk="id")
    + """
    CREATE TRIGGER tombstones_no_replace BEFORE INSERT ON tombstones
    WHEN EXISTS (SELECT 1 FROM tombstones WHERE erasure_id = NEW.erasure_id
                 AND coalesce(entity_id, '') = coalesce(NEW.entity_id, ''))
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only: tombstones row already exists');
    END;
    CREATE TRIGGER erased_rows_no_replace BEFORE INSERT ON erased_rows
    WHEN EXISTS (SELECT 1 FROM erased_rows WHERE log_table = NEW.log_table
                 AND row_key = NEW.row_key AND erasure_id = NEW.erasure_id)
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only: erased_rows row already exists');
    END;
    """
    + _erasure_only(
        "events", "seq", chain.EVENT_COLUMNS,
        "(e.merchant_id IS NULL OR e.merchant_id = OLD.merchant_id)"
        " AND (e.note_id IS NULL OR EXISTS (SELECT 1 FROM tombstones t WHERE t.erasure_id = e.id"
        "      AND t.entity_id IN (OLD.note_id, OLD.entity_id)))"
        " AND (e.before IS NULL OR OLD.action_time < e.before)",
    )  # fmt: skip
    + _erasure_only("requests", "id", chain.REQUEST_COLUMNS, _scope_named_in("body"))
    + _erasure_only("quarantine", "id", _QUARANTINE_COLUMNS, _scope_named_in("payload")),
    # 5: the erasure's UPDATE, tightened: a row already redacted is not rewritten; ids are
    # matched exactly (whole JSON strings, not substrings); a body or a body payload may only
    # become the same envelope with blocks spliced out (a whole marker only when it cannot be
    # read); an --older-than erasure only touches what holds an event older than its date
    _redaction_only("events", "seq", chain.EVENT_COLUMNS, _EVENT_REDACTION)
    + _redaction_only("requests", "id", chain.REQUEST_COLUMNS, _REQUEST_REDACTION)
    + _redaction_only("quarantine", "id", _QUARANTINE_COLUMNS, _QUARANTINE_REDACTION),
    # 6: an erasure's end (eventlog.erase): the entry projectors read after the rows it
    # redacted, to fold the entities it touched again (projections.engine); and the status
    # chart's count of events received per day reads a range of received_at
    """
    CREATE TABLE erasure_ends (
        position INTEGER PRIMARY KEY,  -- the order erasures ended in (rows are never deleted)
        erasure_id INTEGER NOT NULL UNIQUE REFERENCES erasures(id),
        at REAL NOT NULL
    );
    CREATE INDEX erased_rows_by_erasure ON erased_rows(erasure_id, log_table, row_key);
    CREATE INDEX events_by_received_at ON events(received_at);
    """
    + _APPEND_ONLY.format(table="erasure_ends")
    + _NO_REPLACE.format(table="erasure_ends", key="erasure_id", pk="position"),
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
