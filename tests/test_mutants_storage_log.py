"""The log stores' edges that tests/test_log_contract.py leaves open, on both backends: what
is kept of a delivery neither backend can store (its app and request ids, the detail), the
default read limit, reads with and without a merchant scope on an empty and a full log."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eventlog import pg_schema
from eventlog.append import Delivery
from eventlog.intake import Intake
from eventlog.pg_log import LOG_CHANNEL, PostgresLogStore
from eventlog.store import UNSTORABLE, SQLiteLogStore, _printable, storable_text, unstorable
from tests import pg
from tests.helpers import APP_A
from tests.test_log_contract import block, body_for, delivery, rows, unstorable_event

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
