"""The log store's contract, one suite over every backend (SQLite and PostgreSQL).

Modelled on eventsourcing's recorder tests: whatever the backend, the same deliveries give
the same outcomes, the same events read back, and the same hash chains. The PostgreSQL
param uses tests/pg.py (a database per test; skipped without a server locally, failing with
CI=true).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import queue
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.config import fingerprint
from eventlog import chain, pg_schema
from eventlog.append import Delivery
from eventlog.canonical import compact_json
from eventlog.intake import Intake, read_body
from eventlog.pg_log import PostgresLogStore
from eventlog.read import LogEvent
from eventlog.store import UNSTORABLE, LogStore, SQLiteLogStore
from tests import pg
from tests.helpers import APP_A, MERCHANT, encode, make_block, make_body, secret_for, signature

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

NOW = 1_700_000_000.25
OTHER_MERCHANT = "7d1f4c2e-0b5a-4a47-9a53-3f2f6d0c8e11"
Store = SQLiteLogStore | PostgresLogStore


def open_postgres(url: str) -> PostgresLogStore:
    with psycopg.connect(url, autocommit=True) as owner:
        pg_schema.migrate(owner)
    return PostgresLogStore(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteLogStore(tmp_path / "data")
    else:
        opened = open_postgres(request.getfixturevalue("pg_url"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def both(tmp_path: Path, pg_url: str) -> Iterator[tuple[SQLiteLogStore, PostgresLogStore]]:
    lite, postgres = SQLiteLogStore(tmp_path / "data"), open_postgres(pg_url)
    try:
        yield lite, postgres
    finally:
        lite.close()
        postgres.close()


# --- building deliveries and reading rows back ------------------------------------------


def delivery(
    body: dict[str, Any] | bytes, at: float = NOW, intake: Intake | None = None
) -> Delivery:
    """A delivery of `body` whose signature verified for app A, judged by today's intake."""
    raw = encode(body)
    return Delivery(
        at, APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw,
        intake if intake is not None else read_body(raw, APP_A, received_at=at),
    )  # fmt: skip


def body_for(*blocks: dict[str, Any], merchant: str = MERCHANT) -> dict[str, Any]:
    body = make_body(*blocks)
    body["merchant_id"] = merchant
    return body


def block(event_type: str = "note_create", merchant: str = MERCHANT, **data: Any) -> dict[str, Any]:
    return make_block(event_type, merchant_id=merchant, **data)


def rows(store: Store, query: str) -> list[tuple[Any, ...]]:
    """Rows of a plain SQL query (no parameters), straight from the backend's database."""
    if isinstance(store, SQLiteLogStore):
        conn = sqlite3.connect(store.path)
        try:
            return [tuple(r) for r in conn.execute(query).fetchall()]
        finally:
            conn.close()
    with psycopg.connect(store.url) as pg_conn:
        return [tuple(r) for r in pg_conn.execute(query.encode()).fetchall()]


def chain_breaks(store: Store) -> list[str]:
    """Where the requests or events chain does not verify (keys contiguous from 1, each hash
    the link of the previous hash and the row's values)."""
    breaks = []
    for table, key, columns in (
        ("events", "seq", chain.EVENT_COLUMNS),
        ("requests", "id", chain.REQUEST_COLUMNS),
    ):
        previous, expected = chain.GENESIS, 1
        for row in rows(store, f"SELECT {', '.join(columns)}, hash FROM {table} ORDER BY {key}"):
            values, stored = row[:-1], row[-1]
            if values[0] != expected:
                breaks.append(f"{table}: {key} {values[0]} where {expected} was due")
            if chain.link(previous, values) != stored:
                breaks.append(f"{table}: {key} {values[0]} does not match its chain")
            previous, expected = stored, values[0] + 1
    return breaks


def unstorable_event(good: dict[str, Any]) -> Delivery:
    """A delivery whose intake holds an event no database can store: its block holds a lone
    surrogate (intake itself never yields one; this one is built by hand)."""
    d = delivery(good)
    [ev] = d.intake.events
    bad_block = ev.block.replace('"note_create"', '"note_create\ud800"')
    bad = dataclasses.replace(
        ev, block=bad_block, block_digest=chain.digest(bad_block.encode("utf-8", "surrogatepass"))
    )
    return dataclasses.replace(d, intake=Intake(APP_A, d.intake.request_id, [bad], []))


# --- the contract ------------------------------------------------------------------------


def test_both_backends_implement_the_protocol(store: Store) -> None:
    assert isinstance(store, LogStore)
    assert store.head_seq() == 0
    assert store.counts() == {"events": 0, "requests": 0, "quarantined": 0, "last_seq": 0}
    assert store.read_from(0) == [] and store.read_by_entity(["x"]) == []
    assert store.append([]) == []


def test_append_and_read_back(store: Store) -> None:
    note = block("note_create", note_id="note-1")
    comment = block("note_comment_create", comment_id="c-1", note_id="note-1")
    update = block("note_update_data", note_id="note-1", action_time=1669200500.0)
    other = block("note_create", merchant=OTHER_MERCHANT, note_id="note-2")
    first = delivery(body_for(note, comment, update))
    second = delivery(body_for(other, merchant=OTHER_MERCHANT), at=NOW + 1)

    outcomes = store.append([first, second])

    assert [o.as_answer() for o in outcomes] == [
        {"accepted": 3, "duplicates": 0, "quarantined": 0},
        {"accepted": 1, "duplicates": 0, "quarantined": 0},
    ]
    assert [o.seqs for o in outcomes] == [[1, 2, 3], [4]]
    assert outcomes[0].event_types == ["note_create", "note_comment_create", "note_update_data"]
    events = store.read_from(0)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    for event, ev, d in zip(
        events, [*first.intake.events, *second.intake.events], [first, first, first, second],
        strict=True,
    ):  # fmt: skip
        assert (
            event.message_id, event.event_type, event.entity, event.entity_id, event.note_id,
            event.merchant_id, event.app_id, event.request_id, event.action_time,
            event.created_time, event.received_at, event.block,
        ) == (
            ev.message_id, ev.event_type, ev.entity, ev.entity_id, ev.note_id, ev.merchant_id,
            APP_A, d.intake.request_id, ev.action_time, ev.created_time, d.received_at, ev.block,
        )  # fmt: skip
    assert events[1].data_event["comment_id"] == "c-1"

    # paging: after a seq, at most `limit`
    assert [e.seq for e in store.read_from(1, limit=2)] == [2, 3]
    assert [e.seq for e in store.read_from(3, limit=2)] == [4]
    assert store.read_from(4) == []
    # merchant scope
    assert [e.seq for e in store.read_from(0, merchants=frozenset({OTHER_MERCHANT}))] == [4]
    assert [e.seq for e in store.read_from(1, 1, frozenset({MERCHANT, OTHER_MERCHANT}))] == [2]
    assert [e.seq for e in store.read_from(0, 10, frozenset({MERCHANT}))] == [1, 2, 3]
    assert store.read_from(0, merchants=frozenset()) == []
    # by entity id, and by the note_id an event names
    assert [e.seq for e in store.read_by_entity(["note-1"])] == [1, 2, 3]
    assert [e.seq for e in store.read_by_entity(["c-1"])] == [2]
    assert [e.seq for e in store.read_by_entity(["note-2", "c-1", "c-1"])] == [2, 4]
    assert [e.seq for e in store.read_by_entity({"note-2", "nothing"})] == [4]

    assert store.head_seq() == 4
    assert store.counts() == {"events": 4, "requests": 2, "quarantined": 0, "last_seq": 4}
    assert chain_breaks(store) == []


def test_duplicates_are_counted_not_stored(store: Store) -> None:
    d = delivery(body_for(block(), block()))
    [first] = store.append([d])
    assert first.as_answer() == {"accepted": 2, "duplicates": 0, "quarantined": 0}

    # the same body again, in a later batch and twice within one batch
    again = store.append([d, delivery(d.body, at=NOW + 5)])
    assert [o.as_answer() for o in again] == [
        {"accepted": 0, "duplicates": 2, "quarantined": 0}
    ] * 2
    assert all(o.seqs == [] for o in again)
    twice = delivery(body_for(block()))
    assert [o.as_answer() for o in store.append([twice, twice])] == [
        {"accepted": 1, "duplicates": 0, "quarantined": 0},
        {"accepted": 0, "duplicates": 1, "quarantined": 0},
    ]
    # every request is kept; each event once
    assert store.counts() == {"events": 3, "requests": 5, "quarantined": 0, "last_seq": 3}
    assert chain_breaks(store) == []


def test_same_message_id_under_another_merchant_is_another_event(store: Store) -> None:
    mine = block(note_id="shared-note")
    theirs = block(merchant=OTHER_MERCHANT, note_id="shared-note")
    theirs["message_id"] = mine["message_id"]
    outcomes = store.append(
        [delivery(body_for(mine)), delivery(body_for(theirs, merchant=OTHER_MERCHANT))]
    )
    assert [o.accepted for o in outcomes] == [1, 1]
    assert [(e.message_id, e.merchant_id) for e in store.read_by_entity(["shared-note"])] == [
        (mine["message_id"], MERCHANT),
        (mine["message_id"], OTHER_MERCHANT),
    ]


def test_other_content_under_the_same_message_id_is_a_quarantined_conflict(store: Store) -> None:
    original = block(note_id="n")
    changed = block(note_id="n", action_time=1669200999.0)
    changed["message_id"] = original["message_id"]
    store.append([delivery(body_for(original))])

    # in a later batch, and within one batch (the earlier delivery of the batch wins)
    outcomes = store.append([delivery(body_for(changed)), delivery(body_for(changed))])
    fresh, fresh_changed = block(), block(action_time=1669200999.0)
    fresh_changed["message_id"] = fresh["message_id"]
    outcomes += store.append([delivery(body_for(fresh)), delivery(body_for(fresh_changed))])

    assert [(o.as_answer(), o.reasons) for o in outcomes] == [
        ({"accepted": 0, "duplicates": 0, "quarantined": 1}, ["conflict"]),
        ({"accepted": 0, "duplicates": 0, "quarantined": 1}, ["conflict"]),
        ({"accepted": 1, "duplicates": 0, "quarantined": 0}, []),
        ({"accepted": 0, "duplicates": 0, "quarantined": 1}, ["conflict"]),
    ]
    assert [e.block for e in store.read_by_entity(["n"])] == [compact_json(original)]
    # the conflicting content is kept once, with the reason and where it came from
    assert rows(
        store, "SELECT reason, kind, message_id, request_ref FROM quarantine ORDER BY id"
    ) == [
        ("conflict", "block", original["message_id"], 2),
        ("conflict", "block", fresh["message_id"], 5),
    ]
    assert store.counts() == {"events": 2, "requests": 5, "quarantined": 2, "last_seq": 2}


def test_rejected_items_are_quarantined_once_per_content(store: Store) -> None:
    good, bad = block(), block()
    bad["data_event"]["action_time"] = "not a number"
    d = delivery(body_for(good, bad))
    first, again = store.append([d]) + store.append([delivery(d.body, at=NOW + 1)])
    assert (first.as_answer(), first.reasons) == (
        {"accepted": 1, "duplicates": 0, "quarantined": 1},
        ["invalid_block"],
    )
    assert (again.as_answer(), again.reasons) == (
        {"accepted": 0, "duplicates": 1, "quarantined": 1},
        ["invalid_block"],
    )
    assert rows(store, "SELECT reason, kind, message_id, request_ref FROM quarantine") == [
        ("invalid_block", "block", bad["message_id"], 1)
    ]
    assert store.counts()["quarantined"] == 1


def test_nul_in_a_body_and_in_a_block_read_back_exactly(store: Store) -> None:
    with_nul = block(note_id="nul-note", text="a\u0000b", nested={"v": "\u0000"})
    json_body = encode(body_for(with_nul))
    assert b"\\u0000" in json_body
    not_json = b'{"block_event": [\x00\xff raw NUL and a byte that is not UTF-8'
    outcomes = store.append([delivery(json_body), delivery(not_json)])

    assert [(o.accepted, o.reasons) for o in outcomes] == [(1, []), (0, ["not_json"])]
    [event] = store.read_by_entity(["nul-note"])
    assert event.block == compact_json(with_nul)
    assert event.data_event["text"] == "a\x00b" and event.data_event["nested"] == {"v": "\x00"}
    assert rows(store, "SELECT id, body FROM requests ORDER BY id") == [
        (1, json_body),
        (2, not_json),
    ]
    # the not-JSON body's quarantine text: NUL written as \x00, like the byte that is not UTF-8
    [(payload,)] = rows(store, "SELECT payload FROM quarantine")
    assert payload == '{"block_event": [\\x00\\xff raw NUL and a byte that is not UTF-8'
    assert chain_breaks(store) == []


def test_a_row_that_fails_does_not_fail_its_batch(store: Store) -> None:
    before, after = delivery(body_for(block())), delivery(body_for(block()), at=NOW + 2)
    bad = unstorable_event(body_for(block(note_id="bad-note")))

    outcomes = store.append([before, bad, after])

    assert [(o.as_answer(), o.reasons) for o in outcomes] == [
        ({"accepted": 1, "duplicates": 0, "quarantined": 0}, []),
        ({"accepted": 0, "duplicates": 0, "quarantined": 1}, [UNSTORABLE]),
        ({"accepted": 1, "duplicates": 0, "quarantined": 0}, []),
    ]
    assert [o.seqs for o in outcomes] == [[1], [], [2]]
    assert [e.message_id for e in store.read_from(0)] == [
        before.intake.events[0].message_id,
        after.intake.events[0].message_id,
    ]
    # the bad delivery's request and raw body are kept, its body quarantined whole
    assert rows(store, "SELECT id, body FROM requests ORDER BY id") == [
        (1, before.body),
        (2, bad.body),
        (3, after.body),
    ]
    [(reason, kind, detail, payload, ref)] = rows(
        store, "SELECT reason, kind, detail, payload, request_ref FROM quarantine"
    )
    assert (reason, kind, payload, ref) == (UNSTORABLE, "body", bad.body.decode(), 2)
    assert "UnicodeEncodeError" in detail
    assert chain_breaks(store) == []
    # the batch after it is written as usual
    assert store.append([delivery(body_for(block()))])[0].seqs == [3]


def test_the_same_deliveries_give_the_same_chains_on_both_backends(
    both: tuple[SQLiteLogStore, PostgresLogStore],
) -> None:
    conflicting = block(note_id="n1")
    changed = dict(conflicting, data_event=dict(conflicting["data_event"], action_time=1.7e9))
    invalid = block()
    invalid["data_event"]["action_time"] = True
    other = block(merchant=OTHER_MERCHANT)
    other["message_id"] = conflicting["message_id"]
    d1 = delivery(body_for(conflicting, block("note_comment_create", note_id="n1"), invalid))
    batches = [
        [d1, delivery(body_for(block(text="é \u0000 ☃", created_time=-0.0)), at=NOW + 0.1)],
        [delivery(b"\x00 not json \xfe", at=NOW + 0.2)],
        [
            delivery(d1.body, at=NOW + 0.3),  # duplicates, and the same invalid block again
            delivery(body_for(changed), at=NOW + 0.4),  # a conflict
            delivery(body_for(other, merchant=OTHER_MERCHANT), at=NOW + 0.5),
            unstorable_event(body_for(block())),
            delivery(body_for(block("note_delete", note_id="n1")), at=NOW + 0.6),
        ],
    ]
    lite, postgres = both
    answers = [[(o.as_answer(), o.seqs, o.reasons) for o in s.append(b)] for b in batches
               for s in (lite, postgres)]  # fmt: skip
    assert answers[0::2] == answers[1::2]

    for query in (
        f"SELECT {', '.join(chain.EVENT_COLUMNS)}, hash FROM events ORDER BY seq",
        f"SELECT {', '.join(chain.REQUEST_COLUMNS)}, hash FROM requests ORDER BY id",
        "SELECT content_hash, reason, detail, kind, message_id, payload, request_ref,"
        " received_at FROM quarantine ORDER BY id",
    ):
        assert rows(lite, query) == rows(postgres, query)
    assert len(rows(lite, "SELECT hash FROM events")) == 5
    assert lite.counts() == postgres.counts()
    assert chain_breaks(lite) == chain_breaks(postgres) == []
    assert lite.read_from(0) == postgres.read_from(0)
    assert lite.read_by_entity(["n1"]) == postgres.read_by_entity(["n1"])


# --- PostgreSQL: concurrent appenders, a tailing reader ------------------------------------

PROCESSES, PER_PROCESS = 4, 50


def append_from_a_process(url: str, worker: int, start: Any, results: Any) -> None:
    """Append PER_PROCESS deliveries (one or two events each) in batches of 1 to 4, once
    every appender is ready; put the message ids sent (or the error) on `results`."""
    try:
        rng = random.Random(worker)
        store = PostgresLogStore(url, max_connections=1)
        sent: list[str] = []
        try:
            start.wait()
            pending: list[Delivery] = []
            for n in range(PER_PROCESS):
                blocks = [block(note_id=f"w{worker}-{n}") for _ in range(rng.choice((1, 2)))]
                pending.append(delivery(body_for(*blocks), at=time.time()))
                sent += [b["message_id"] for b in blocks]
                if len(pending) >= rng.randint(1, 4) or n == PER_PROCESS - 1:
                    for outcome in store.append(pending):
                        assert outcome.duplicates == outcome.quarantined == 0
                    pending = []
        finally:
            store.close()
        results.put((worker, sent))
    except BaseException as exc:
        results.put((worker, f"{type(exc).__name__}: {exc}"))
        raise


def test_concurrent_appender_processes_and_a_tailing_reader(pg_url: str) -> None:
    reader = open_postgres(pg_url)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    appenders = [
        context.Process(target=append_from_a_process, args=(pg_url, w, start, results))
        for w in range(PROCESSES)
    ]
    seen: list[LogEvent] = []
    sent: dict[int, list[str] | str] = {}
    try:
        for process in appenders:
            process.start()
        deadline = time.monotonic() + 300  # a hang fails the test rather than the run
        while True:
            with contextlib.suppress(queue.Empty):
                worker, outcome = results.get_nowait()
                sent[worker] = outcome
            # all results in before this read: every append has committed, none will follow
            finished = len(sent) == PROCESSES
            batch = reader.read_from(seen[-1].seq if seen else 0, limit=7)
            seen += batch
            if finished and not batch:
                break
            assert time.monotonic() < deadline, f"the appenders did not finish: {sent}"
        failed = {w: s for w, s in sent.items() if isinstance(s, str)}
        assert not failed
        all_sent = [m for s in sent.values() for m in s]
        assert [e.seq for e in seen] == list(range(1, len(all_sent) + 1))  # once each, in order
        assert sorted(e.message_id for e in seen) == sorted(all_sent)
        assert reader.counts()["requests"] == PROCESSES * PER_PROCESS
        assert chain_breaks(reader) == []
        # the appenders did take turns (else this test would prove little)
        writers = [e.note_id.split("-")[0] for e in seen if e.note_id]
        turns = sum(a != b for a, b in itertools.pairwise(writers))
        assert turns > PROCESSES - 1
    finally:
        for process in appenders:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
        reader.close()


def test_nul_in_indexed_text_loses_nothing_and_fails_no_batch(store: Store) -> None:
    """NUL decoded from JSON that would go into a column of its own (an envelope's request_id,
    a refused block's message_id): intake keeps it only in the body and the block, so both
    backends store the deliveries alike (PostgreSQL's text cannot hold a NUL)."""
    hostile_id = block()
    hostile_id["message_id"] = "m\u0000"
    with_good = delivery(body_for(block(note_id="neighbour-block"), hostile_id))
    request_id = body_for(block(note_id="request-id-nul"))
    request_id["request_id"] = "r\u0000"
    after = delivery(body_for(block(note_id="next-delivery")), at=NOW + 1)

    outcomes = store.append([with_good, delivery(request_id), after])

    assert rows(store, "SELECT body FROM requests ORDER BY id") == [
        (with_good.body,),
        (encode(request_id),),
        (after.body,),
    ]
    assert outcomes[2].accepted == 1
    assert {e.note_id for e in store.read_from(0)} == {"neighbour-block", "request-id-nul", "next-delivery"}
    assert rows(store, "SELECT reason, request_ref, message_id FROM quarantine") == [("invalid_block", 1, None)]
    assert rows(store, "SELECT request_id FROM requests ORDER BY id") == [(with_good.intake.request_id,), (None,), (after.intake.request_id,)]
    assert chain_breaks(store) == []


def test_a_connection_the_server_dropped_while_idle_costs_no_delivery(pg_url: str) -> None:
    """A PostgreSQL restart (here: the server ending the appender's session) between two
    batches: the next batch is written on a new connection, not refused."""
    store = open_postgres(pg_url)
    try:
        first = delivery(body_for(block()))
        assert store.append([first])[0].accepted == 1
        with psycopg.connect(pg_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert ended is not None and ended[0] >= 1
        second = delivery(body_for(block()))
        assert store.append([second])[0].accepted == 1
        assert store.counts()["events"] == 2 and not chain_breaks(store)
    finally:
        store.close()


def test_every_postgresql_session_bounds_its_waits(pg_url: str, tmp_path: Path) -> None:
    """A frozen or cut-off client holding the append lock inside a transaction is ended by the
    server, and dead peers are noticed by keepalives, on every connection notestore opens."""
    from eventlog.pg_conn import PgConnection
    from projections.storage import Storage

    storage = Storage(tmp_path / "data", pg_url)
    storage.prepare()
    store = storage.log_store(writer=True)
    opened = [storage.log_reader(), storage.views()]
    try:
        with store.pool.connection() as pooled:  # type: ignore[attr-defined]
            sessions = [pooled, *(c.raw for c in opened if isinstance(c, PgConnection))]
            for conn in sessions:
                shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in (
                    "idle_in_transaction_session_timeout", "tcp_keepalives_idle")}  # fmt: skip
                assert shown == {"idle_in_transaction_session_timeout": "30s",
                                 "tcp_keepalives_idle": "10"}, shown  # fmt: skip
        assert len(sessions) == 3
    finally:
        store.close()
        for conn in opened:
            conn.close()
