"""The log refuses UPDATE, DELETE and INSERT OR REPLACE on its rows."""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import sample, signed_post

ATTEMPTS = [
    "UPDATE events SET event_type = 'x' WHERE seq = 1",
    "DELETE FROM events WHERE seq = 1",
    "INSERT OR REPLACE INTO events SELECT * FROM events WHERE seq = 1",
    # a new seq with the message_id (and merchant) of seq 1: replacing would delete seq 1
    "REPLACE INTO events (seq, message_id, merchant_id, content_hash, event_type, app_id,"
    " request_ref, action_time, received_at, block, hash) VALUES (99,"
    " '35d0213a-6b1c-11ed-b77f-2e5611c3fe96', '1b99bdcf-d582-4f49-9715-1b61dfff3924',"
    " 'h', 't', 'a', 1, 1, 1, '{}', 'h')",
    "UPDATE requests SET body = x'00'",
    "DELETE FROM requests",
    "INSERT OR REPLACE INTO requests SELECT * FROM requests WHERE id = 1",
    "DELETE FROM quarantine",
    "UPDATE quarantine SET reason = 'x'",
]


@pytest.mark.parametrize("sql", ATTEMPTS)
async def test_log_rows_cannot_be_changed(client, settings, sql):
    await signed_post(client, sample("note_create"))
    await signed_post(client, b"not json")
    conn = sqlite3.connect(settings.events_path, isolation_level=None)
    before = conn.execute("SELECT * FROM events").fetchall()
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(sql)
    assert conn.execute("SELECT * FROM events").fetchall() == before
    assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1
    conn.close()
