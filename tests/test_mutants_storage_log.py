"""The log stores' edges that tests/test_log_contract.py leaves open, on both backends: what
is kept of a delivery neither backend can store (its app and request ids, the detail), the
default read limit, reads with and without a merchant scope on an empty and a full log."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from eventlog import chain, pg_log, pg_schema
from eventlog.append import Delivery
from eventlog.canonical import compact_json
from eventlog.db import open_log
from eventlog.erase import record_erasure
from eventlog.intake import Intake, Rejected
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import APPEND_LOCK, LOG_CHANNEL, PostgresLogStore
from eventlog.redaction import Scope, marker_erasure, redacted_text
from eventlog.store import UNSTORABLE, SQLiteLogStore, _printable, storable_text, unstorable
from eventlog.verify import verify_log
from tests import pg
from tests.helpers import APP_A, MERCHANT
from tests.test_log_contract import (
    NOW,
    OTHER_MERCHANT,
    block,
    body_for,
    delivery,
    rows,
    unstorable_event,
)

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

Store = SQLiteLogStore | PostgresLogStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteLogStore(tmp_path / "data")
    else:
        url = request.getfixturevalue("pg_url")
        with psycopg.connect(url, autocommit=True) as owner:
            pg_schema.migrate(owner)
        opened = PostgresLogStore(url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("value", "storable"),
    [
        (None, True),
        ("", True),
        ("plain", True),
        ("Nội dung é 漢字 😀", True),
        ("a\x00b", False),
        ("\x00", False),
        ("lone \ud800 surrogate", False),
        ("\udfff", False),
    ],
)
def test_storable_text(value: str | None, storable: bool) -> None:
    assert storable_text(value) is storable


def test_printable_escapes_what_cannot_be_stored_and_keeps_the_rest() -> None:
    assert _printable("a\ud800b\x00c é") == "a\\ud800b\\x00c é"
    assert _printable("plain") == "plain"


def with_request_id(d: Delivery, request_id: str | None) -> Delivery:
    return dataclasses.replace(
        d, intake=Intake(d.intake.app_id, request_id, d.intake.events, d.intake.rejected)
    )


def test_unstorable_keeps_the_request_and_app_ids_it_can_store() -> None:
    bad = with_request_id(unstorable_event(body_for(block())), "req-1")
    kept = unstorable(bad, UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert (kept.intake.app_id, kept.intake.request_id) == (APP_A, "req-1")
    assert kept.intake.events == []
    [rejected] = kept.intake.rejected
    assert (rejected.reason, rejected.kind, rejected.message_id) == (UNSTORABLE, "body", None)
    assert rejected.payload == bad.body.decode()
    assert rejected.detail == (
        "the log could not store this delivery: UnicodeEncodeError: 'utf-8' codec can't encode"
        " character '\\ud800' in position 0: surrogates not allowed"
    )
    assert (kept.received_at, kept.app_id, kept.secret_fingerprint, kept.signature, kept.body) == (
        bad.received_at, bad.app_id, bad.secret_fingerprint, bad.signature, bad.body,
    )  # fmt: skip
    assert kept.body_digest == bad.body_digest


def test_a_request_id_the_backend_cannot_store_is_dropped_with_its_delivery_kept(
    store: Store,
) -> None:
    """NUL in text: PostgreSQL refuses it (SQLite stores it). Intake never yields one (it
    drops control characters from request_id): built by hand, as the surrogate blocks are."""
    if isinstance(store, SQLiteLogStore):
        pytest.skip("SQLite stores NUL in text")
    request_id = "nul\x00id"
    good = delivery(body_for(block()))
    bad = with_request_id(delivery(body_for(block())), request_id)
    outcomes = store.append([good, bad])
    assert [o.reasons for o in outcomes] == [[], [UNSTORABLE]]
    assert rows(store, "SELECT id, app_id, request_id FROM requests ORDER BY id") == [
        (1, APP_A, good.intake.request_id),
        (2, APP_A, None),
    ]
    [(reason, detail, ref)] = rows(store, "SELECT reason, detail, request_ref FROM quarantine")
    assert (reason, ref) == (UNSTORABLE, 2)
    assert detail.startswith("the log could not store this delivery: ")
    assert "\x00" not in detail


def test_an_unstorable_delivery_keeps_its_storable_request_id(store: Store) -> None:
    bad = with_request_id(unstorable_event(body_for(block())), "req-kept")
    store.append([bad])
    assert rows(store, "SELECT request_id, app_id FROM requests") == [("req-kept", APP_A)]


def test_reading_reads_at_most_a_thousand_by_default(store: Store) -> None:
    store.append([delivery(body_for(*(block() for _ in range(1001))))])
    assert store.head_seq() == 1001
    assert [e.seq for e in store.read_from(0)] == list(range(1, 1001))
    assert [
        e.seq for e in store.read_from(0, merchants=frozenset({body_for()["merchant_id"]}))
    ] == (list(range(1, 1001)))
    assert [e.seq for e in store.read_from(1000)] == [1001]


def test_an_empty_log_reads_nothing_and_counts_zero(store: Store) -> None:
    assert store.head_seq() == 0
    assert store.read_from(0, merchants=frozenset({"m"})) == []
    assert store.read_by_entity([]) == []
    assert store.counts() == {"events": 0, "requests": 0, "quarantined": 0, "last_seq": 0}


def test_read_by_entity_finds_by_entity_and_note_id_once_each(store: Store) -> None:
    note = block(note_id="n-1")
    comment = block("comment_create", comment_id="c-1", note_id="n-1")
    other = block(note_id="n-2")
    store.append([delivery(body_for(note, comment, other))])
    found: list[Any] = store.read_by_entity(["n-1", "n-1"])
    assert [e.seq for e in found] == [1, 2]  # the note by entity and by note_id, once
    assert [(e.entity_id, e.note_id) for e in found] == [("n-1", "n-1"), (None, "n-1")]
    assert [e.seq for e in store.read_by_entity(("n-2",))] == [3]
    assert [e.seq for e in store.read_by_entity({"nothing", "n-2"})] == [3]


def merchantless_delivery(blocks: list[dict[str, Any]]) -> Delivery:
    for b in blocks:
        del b["data_event"]["merchant_id"]
    body = body_for(*blocks)
    del body["merchant_id"]
    return delivery(body)


def test_an_event_without_a_merchant_is_a_duplicate_when_delivered_again(store: Store) -> None:
    first = merchantless_delivery([block()])
    assert [e.merchant_id for e in first.intake.events] == [None]
    again = dataclasses.replace(first, received_at=first.received_at + 5)
    outcomes = store.append([first]) + store.append([again])
    assert [o.as_answer() for o in outcomes] == [
        {"accepted": 1, "duplicates": 0, "quarantined": 0},
        {"accepted": 0, "duplicates": 1, "quarantined": 0},
    ]
    assert store.counts()["events"] == 1 and store.counts()["quarantined"] == 0


def test_every_rejected_item_of_a_delivery_is_counted(store: Store) -> None:
    d = delivery(body_for({"message_id": "bad-1"}, {"message_id": "bad-2"}, block()))
    assert len(d.intake.rejected) == 2
    [outcome] = store.append([d])
    assert outcome.as_answer() == {"accepted": 1, "duplicates": 0, "quarantined": 2}
    assert outcome.reasons == ["invalid_block", "invalid_block"]


def test_a_batch_written_one_by_one_notifies_its_new_head(pg_url: str) -> None:
    """PostgreSQL: readers tailing the log are woken with the head seq of each append, also
    when one delivery of the batch was unstorable and the rest were written one by one."""
    with psycopg.connect(pg_url, autocommit=True) as owner:
        pg_schema.migrate(owner)
    store = PostgresLogStore(pg_url)
    listener = psycopg.connect(pg_url, autocommit=True)
    try:
        listener.execute(f"LISTEN {LOG_CHANNEL}")
        store.append([delivery(body_for(block()))])
        store.append(
            [
                delivery(body_for(block())),
                unstorable_event(body_for(block())),
                delivery(body_for(block(), block())),
            ]
        )
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
    finally:
        listener.close()
        store.close()
    assert payloads == ["1", "4"]


def test_a_plain_sqlite_store_runs_no_checkpointer(tmp_path: Path) -> None:
    plain = SQLiteLogStore(tmp_path)
    try:
        assert plain._checkpointer is None
    finally:
        plain.close()


def test_a_writer_store_checkpoints_what_it_wrote_when_it_closes(tmp_path: Path) -> None:
    """Its connection never checkpoints on commit: close() folds the WAL into events.db
    (a reader still open keeps SQLite from doing it itself when the connection closes)."""
    store = SQLiteLogStore(tmp_path, writer=True)
    reader = sqlite3.connect(tmp_path / "events.db")
    try:
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (0,)
        store.append([delivery(body_for(block())), delivery(body_for(block()))])
        store.close()
        main_file = sqlite3.connect(f"file:{tmp_path / 'events.db'}?immutable=1", uri=True)
        try:  # immutable: the main file alone, the WAL ignored
            assert main_file.execute("SELECT count(*) FROM events").fetchone() == (2,)
        finally:
            main_file.close()
    finally:
        reader.close()


def test_every_conflict_of_a_delivery_is_counted(store: Store) -> None:
    first, second = block(), block()
    store.append([delivery(body_for(first, second))])
    changed = [
        dict(b, data_event=dict(b["data_event"], action_time=1669200440.0)) for b in (first, second)
    ]
    [outcome] = store.append([delivery(body_for(*changed))])
    assert outcome.as_answer() == {"accepted": 0, "duplicates": 0, "quarantined": 2}
    assert outcome.reasons == ["conflict", "conflict"]


# --- what the spool and the health check ask of the log ----------------------------------


def test_a_probe_commits_and_stores_nothing_of_the_log(store: Store) -> None:
    store.append([delivery(body_for(block()))])
    before = store.counts()
    store.probe()
    store.probe()
    assert store.counts() == before
    if isinstance(store, SQLiteLogStore):  # one heartbeat row, rewritten
        [(key, at)] = rows(store, "SELECT id, at FROM heartbeat")
        assert key == 1 and abs(at - time.time()) < 60


def test_an_item_quarantined_on_its_own_names_no_request_and_is_kept_once(store: Store) -> None:
    item = Rejected("unstorable", "the detail", '{"x": 1}', "body", "m-1")
    store.quarantine(item, NOW)
    store.quarantine(item, NOW + 1)
    store.quarantine(Rejected("unstorable", "other", "[2]", "block"), NOW + 2)
    assert rows(store, "SELECT content_hash, reason, detail, kind, message_id, payload,"
                       " request_ref, received_at FROM quarantine ORDER BY id") == [
        (item.content_hash, "unstorable", "the detail", "body", "m-1", '{"x": 1}', None, NOW),
        (Rejected("", "", "[2]", "block").content_hash, "unstorable", "other", "block", None,
         "[2]", None, NOW + 2),
    ]  # fmt: skip
    assert store.counts()["requests"] == 0 and store.counts()["quarantined"] == 2


def key_of(d: Delivery) -> tuple[float, str, str]:
    return (d.received_at, d.app_id, d.signature)


def test_logged_finds_the_requests_the_log_holds_among_many_receipt_times(store: Store) -> None:
    """SQLite asks 500 receipt times a query: the first request's time is the 501st."""
    first = delivery(body_for(block()), at=NOW)
    second = delivery(body_for(block()), at=NOW + 1000)
    store.append([first, second])
    earlier = [(NOW - 1 - i, APP_A, first.signature) for i in range(500)]
    later = [(NOW + 1 + i, APP_A, second.signature) for i in range(600)]
    others = [(NOW, APP_A, "another signature"), (NOW, "another app", first.signature)]
    keys = [*earlier, key_of(first), *others, key_of(second), *later]
    assert store.logged(keys) == {key_of(first), key_of(second)}
    assert store.logged([key_of(second)]) == {key_of(second)}
    assert store.logged(others) == set()
    assert store.logged([]) == set()


# --- appends under a tombstone (a note erased before they arrive) ----------------------


def record_note_erasure(store: Store, note_id: str) -> None:
    """The erasure of a note the log does not hold yet: its tombstone, nothing to redact."""
    conn: Any = (
        open_log(store.path.parent)
        if isinstance(store, SQLiteLogStore)
        else PgConnection.connect(store.url, write_lock=APPEND_LOCK)
    )
    try:
        record_erasure(conn, Scope(merchant_id=MERCHANT, note_id=note_id), "a request", {})
    finally:
        conn.close()


def comment_on(note_id: str, comment_id: str) -> dict[str, Any]:
    detail = {"field_key": "object_id", "add": [note_id], "change": [], "remove": []}
    return block("note_comment_create", comment_id=comment_id, event_detail=[detail])


@pytest.mark.parametrize("batches", ["each alone", "together", "with an unstorable one"])
def test_what_a_tombstone_covers_is_stored_redacted_and_recorded(
    store: Store, batches: str
) -> None:
    """The note's event, a comment created on it (its id joins the tombstone, in the same
    batch as its edit), the edits, a rejected block about the note: stored as markers of
    the erasure, with erased_rows records; the other note, and the note's id under another
    merchant, stored as received. The log verifies, listing the erased rows."""
    record_note_erasure(store, "n-gone")
    bad = {"data_event": {"note_id": "n-gone", "merchant_id": MERCHANT}}  # no message_id
    a = delivery(body_for(block(note_id="n-gone"), block(note_id="n-kept"), bad))
    b = delivery(body_for(comment_on("n-gone", "c-new")))
    c = delivery(body_for(block("note_comment_update_data", comment_id="c-new")))
    d = delivery(body_for(block("note_comment_update_data", comment_id="c-new")))
    e = delivery(body_for(block("note_create", merchant=OTHER_MERCHANT,
                                note_id="n-gone"), merchant=OTHER_MERCHANT))  # fmt: skip
    [rejected] = a.intake.rejected
    if batches == "each alone":
        outcomes = [*store.append([a]), *store.append([b, c]), *store.append([d, e])]
    elif batches == "together":
        outcomes = store.append([a, b, c, d, e])
    else:
        # NUL in a request id: PostgreSQL refuses that delivery, and writes them one by one
        nul = with_request_id(delivery(body_for(block())), "nul\x00id")
        outcomes = store.append([a, b, c, d, e, nul])[:5]
    assert [o.as_answer() for o in outcomes] == [
        {"accepted": 2, "duplicates": 0, "quarantined": 1},
        *[{"accepted": 1, "duplicates": 0, "quarantined": 0}] * 4,
    ]
    events = rows(store, "SELECT seq, entity_id, block FROM events ORDER BY seq")[:6]
    assert [(seq, entity, marker_erasure(blk[:40])) for seq, entity, blk in events] == [
        (1, "n-gone", 1), (2, "n-kept", None), (3, "c-new", 1), (4, "c-new", 1),
        (5, "c-new", 1), (6, "n-gone", None),
    ]  # fmt: skip
    bodies = rows(store, "SELECT id, body FROM requests ORDER BY id")[:5]
    assert [(i, marker_erasure(bytes(body))) for i, body in bodies] == [
        (1, 1), (2, 1), (3, 1), (4, 1), (5, None),
    ]  # fmt: skip
    assert b"n-kept" in bytes(bodies[0][1])  # the other note's block kept as received
    assert rows(store, "SELECT erasure_id, log_table, row_key FROM erased_rows"
                       " ORDER BY log_table, row_key") == [
        (1, "events", 1), (1, "events", 3), (1, "events", 4), (1, "events", 5),
        (1, "requests", 1), (1, "requests", 2), (1, "requests", 3), (1, "requests", 4),
    ]  # fmt: skip
    # each record keeps the digest of what was received: the chain links that, not the marker
    before = {
        (table, key): digest
        for table, key, digest in rows(
            store, "SELECT log_table, row_key, original_digest FROM erased_rows"
        )
    }
    assert before[("requests", 1)] == chain.digest(a.body)
    assert before[("requests", 3)] == chain.digest(c.body)
    assert before[("events", 1)] == a.intake.events[0].block_digest
    assert sorted(rows(store, "SELECT erasure_id, merchant_id, entity_id FROM tombstones")) == [
        (1, MERCHANT, "c-new"), (1, MERCHANT, "n-gone"),
    ]  # fmt: skip
    [(payload, ref)] = rows(store, "SELECT payload, request_ref FROM quarantine"
                                   " WHERE reason = 'invalid_block'")  # fmt: skip
    assert (payload, ref) == (redacted_text(1, "block", rejected.content_hash), 1)
    reader: Any = (
        sqlite3.connect(store.path)
        if isinstance(store, SQLiteLogStore)
        else PgConnection.connect(store.url, write_lock=0)
    )
    try:
        report = verify_log(reader, lambda *_: None)
    finally:
        reader.close()
    assert report.ok, (report.events.problems, report.requests.problems)
    assert report.events.erased == {1: [1, 3, 4, 5]}
    assert report.requests.erased == {1: [1, 2, 3, 4]}


def test_an_item_quarantined_on_its_own_under_a_tombstone_is_stored_redacted(
    store: Store,
) -> None:
    record_note_erasure(store, "n-gone")
    covered = Rejected("invalid_block", "d", compact_json(block(note_id="n-gone")), "block", "m")
    kept = Rejected("invalid_block", "d", compact_json(block(note_id="n-kept")), "block", "m")
    store.quarantine(covered, NOW)
    store.quarantine(kept, NOW)
    assert rows(store, "SELECT payload, request_ref FROM quarantine ORDER BY id") == [
        (redacted_text(1, "block", covered.content_hash), None),
        (kept.payload, None),
    ]


def test_an_append_waits_for_a_pooled_connection_only_pool_wait_s(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, the server unreachable or every connection busy: a quick failure (the
    writer answers 503) rather than psycopg_pool's default 30 s wait."""
    with psycopg.connect(pg_url, autocommit=True) as owner:
        pg_schema.migrate(owner)
    monkeypatch.setattr(pg_log, "POOL_WAIT_S", 0.3)
    store = PostgresLogStore(pg_url, max_connections=1)
    try:
        with store.pool.connection():  # the only connection, busy
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                store.append([delivery(body_for(block()))])
            assert time.monotonic() - started < 5
    finally:
        store.close()
