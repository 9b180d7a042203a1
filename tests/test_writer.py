"""The receiver's writer (eventlog.writer.GroupCommitWriter) over the log storage contract, on
SQLite and on PostgreSQL: group commit, a delivery the database cannot store quarantined
`unstorable` beside its group, failures of the database itself answered LogUnavailable (503)
within bounded waits, close() committing what it was handed.

The PostgreSQL cases use tests/pg.py (a database per test; skipped without a server locally,
failing with CI=true). The SQLite WAL's upkeep is tested in tests/test_operations.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from app import receiver
from app.config import Settings, fingerprint
from app.web import create_app
from eventlog import chain
from eventlog.append import Delivery, Outcome
from eventlog.intake import Intake, read_body
from eventlog.pg_log import PostgresLogStore
from eventlog.read import LogEvent
from eventlog.store import UNSTORABLE, LogStore, SQLiteLogStore
from eventlog.writer import CommitTimeout, GroupCommitWriter, LogUnavailable
from projections.storage import POSTGRESQL, SQLITE, Storage
from tests import pg
from tests.backends import held_write_lock
from tests.helpers import APP_A, encode, make_block, make_body, secret_for, signature, signed_post

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

NOW = 1_700_000_000.25
SHORT_WAIT_S = 0.3  # the lock timeout of the stores whose lock a test holds


@pytest.fixture(params=[SQLITE, POSTGRESQL])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A prepared (migrated) log of each backend; data_dir is tmp_path/data on both."""
    url = request.getfixturevalue("pg_url") if request.param == POSTGRESQL else None
    prepared = Storage(tmp_path / "data", url)
    prepared.prepare()
    return prepared


# --- deliveries, and what the log holds ---------------------------------------------------


def delivery(body: dict[str, Any] | bytes, at: float = NOW) -> Delivery:
    raw = encode(body)
    return Delivery(
        at, APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw,
        read_body(raw, APP_A, received_at=at),
    )  # fmt: skip


def unstorable_intake(intake: Intake) -> Intake:
    """The intake of a body, its one event's block holding a lone surrogate: text neither
    backend can store (intake never yields one: as tests/test_log_contract.py, by hand)."""
    [ev] = intake.events
    bad_block = ev.block.replace(f'"{ev.event_type}"', f'"{ev.event_type}\ud800"', 1)
    assert bad_block != ev.block
    digest = chain.digest(bad_block.encode("utf-8", "surrogatepass"))
    bad = dataclasses.replace(ev, block=bad_block, block_digest=digest)
    return Intake(intake.app_id, intake.request_id, [bad], [])


def unstorable(body: dict[str, Any]) -> Delivery:
    d = delivery(body)
    return dataclasses.replace(d, intake=unstorable_intake(d.intake))


def message_id(d: Delivery) -> str:
    return d.intake.events[0].message_id


def logged(storage: Storage) -> list[LogEvent]:
    store = storage.log_store()
    try:
        return store.read_from(0, limit=100_000)
    finally:
        store.close()


def log_rows(storage: Storage, query: str) -> list[tuple[Any, ...]]:
    conn = storage.log_reader()
    try:
        return [tuple(r) for r in conn.execute(query).fetchall()]
    finally:
        conn.close()


class Gated:
    """A log store whose appends wait until `opened` is set, noting each batch as it comes:
    what is handed to the writer meanwhile queues up for its next group commit."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.opened = threading.Event()
        self.batches: list[list[Delivery]] = []
        self.entered = threading.Event()  # an append is waiting at the gate

    def append(self, deliveries: list[Delivery]) -> list[Outcome]:
        self.batches.append(list(deliveries))
        self.entered.set()
        assert self.opened.wait(30), "the test never opened the gate"
        return self.store.append(deliveries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def writer_on(store: Any, **kwargs: Any) -> Iterator[GroupCommitWriter]:
    writer = GroupCommitWriter(store, **kwargs)
    try:
        yield writer
    finally:
        writer.close()


# --- the writer's contract, on both backends ----------------------------------------------


async def test_concurrent_deliveries_land_exactly_once_in_group_commits(storage: Storage) -> None:
    batches: list[int] = []
    commits: list[int] = []
    bodies = [make_body(make_block(), make_block("note_comment_update_data")) for _ in range(150)]
    with writer_on(
        storage.log_store(writer=True), on_commit=commits.append, on_batch=batches.append
    ) as writer:
        # every body twice, all at once: the second of each pair is a duplicate
        outcomes = await asyncio.gather(
            *(writer.append(delivery(b)) for b in bodies + bodies)
        )  # fmt: skip
        assert writer.healthy
    assert sum(o.accepted for o in outcomes) == 300
    assert sum(o.duplicates for o in outcomes) == 300
    assert sorted(s for o in outcomes for s in o.seqs) == list(range(1, 301))
    assert sum(batches) == 300 and max(batches) > 1  # grouped, each delivery once
    assert commits[-1] == 300 and commits == sorted(commits)
    events = logged(storage)
    assert [e.seq for e in events] == list(range(1, 301))
    assert len({e.message_id for e in events}) == 300


async def test_an_unstorable_delivery_is_quarantined_and_its_group_commit_accepted(
    storage: Storage,
) -> None:
    gated = Gated(storage.log_store(writer=True))
    first = delivery(make_body(make_block(note_id="first")))
    group = [
        delivery(make_body(make_block(note_id="before"))),
        unstorable(make_body(make_block(note_id="bad"))),
        delivery(make_body(make_block(note_id="after"))),
    ]
    with writer_on(gated) as writer:
        head = asyncio.ensure_future(writer.append(first))
        await wait_until(gated.entered.is_set)  # the writer holds `first` at the gate
        tasks = [asyncio.ensure_future(writer.append(d)) for d in group]
        await wait_until(lambda: writer._queue.qsize() == len(group))  # each one queued
        gated.opened.set()
        results = await asyncio.gather(head, *tasks)
        assert writer.healthy
    assert [[message_id(d) for d in b] for b in gated.batches] == [
        [message_id(first)],
        [message_id(d) for d in group],  # one group commit
    ]
    assert [(r.as_answer(), r.reasons) for r in results[1:]] == [
        ({"accepted": 1, "duplicates": 0, "quarantined": 0}, []),
        ({"accepted": 0, "duplicates": 0, "quarantined": 1}, [UNSTORABLE]),
        ({"accepted": 1, "duplicates": 0, "quarantined": 0}, []),
    ]
    stored = [e.message_id for e in logged(storage)]
    assert stored == [message_id(first), message_id(group[0]), message_id(group[2])]
    [(reason, kind, payload)] = log_rows(storage, "SELECT reason, kind, payload FROM quarantine")
    assert (reason, kind, payload) == (UNSTORABLE, "body", group[1].body.decode())
    assert len(log_rows(storage, "SELECT id FROM requests")) == 4  # its request is kept


def impatient_store(storage: Storage) -> LogStore:
    """The writer's store, waiting at most SHORT_WAIT_S for the log's write lock."""
    if storage.backend == SQLITE:
        lite = SQLiteLogStore(storage.data_dir, writer=True)
        lite.conn.execute(f"PRAGMA busy_timeout = {int(SHORT_WAIT_S * 1000)}")
        return lite
    assert storage.database_url
    return PostgresLogStore(storage.database_url, max_connections=1, lock_timeout_s=SHORT_WAIT_S)


async def test_a_lock_held_too_long_fails_the_batch_with_log_unavailable_then_it_recovers(
    storage: Storage,
) -> None:
    """A failure of the database itself (here: its write lock held past the timeout) is no bad
    row: every delivery of the batch is answered LogUnavailable, nothing of it is stored,
    the writer is unhealthy until a commit succeeds again. The wait is bounded."""
    deliveries = [delivery(make_body(make_block())) for _ in range(3)]
    with writer_on(impatient_store(storage)) as writer:
        with held_write_lock(storage):
            results = await asyncio.wait_for(  # a deadline: once or twice the timeout, never forever
                asyncio.gather(*(writer.append(d) for d in deliveries), return_exceptions=True),
                timeout=60,
            )
            assert all(isinstance(r, LogUnavailable) for r in results), results
            assert not writer.healthy
        assert logged(storage) == []
        assert log_rows(storage, "SELECT id FROM quarantine") == []
        assert log_rows(storage, "SELECT id FROM requests") == []
        outcome = await writer.append(deliveries[0])  # the lock is free: accepted again
        assert (outcome.accepted, outcome.seqs) == (1, [1])
        assert writer.healthy


async def test_a_value_error_of_our_own_code_is_not_a_bad_row(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: a ValueError while an event's row is hashed, before any database saw it)
    fails the batch as LogUnavailable: it is not quarantined `unstorable` as if the database
    had refused the delivery's content."""
    real_link = chain.link

    def link(previous: str, values: Any, last_digest: str | None = None) -> str:
        if len(values) == len(chain.EVENT_COLUMNS):
            raise ValueError("a bug of ours")
        return real_link(previous, values, last_digest)

    monkeypatch.setattr(chain, "link", link)
    with writer_on(storage.log_store(writer=True)) as writer:
        with pytest.raises(LogUnavailable, match="a bug of ours"):
            await writer.append(delivery(make_body(make_block())))
        assert not writer.healthy
    monkeypatch.setattr(chain, "link", real_link)
    assert log_rows(storage, "SELECT id FROM quarantine") == []
    assert log_rows(storage, "SELECT id FROM requests") == []


async def test_close_commits_what_it_was_handed_then_refuses_and_closes_the_store(
    storage: Storage,
) -> None:
    gated = Gated(storage.log_store(writer=True))
    writer = GroupCommitWriter(gated)
    first = delivery(make_body(make_block()))
    rest = [delivery(make_body(make_block())) for _ in range(5)]
    head = asyncio.ensure_future(writer.append(first))
    await wait_until(gated.entered.is_set)
    tasks = [asyncio.ensure_future(writer.append(d)) for d in rest]
    await wait_until(lambda: writer._queue.qsize() == len(rest))  # each one queued
    closing = asyncio.ensure_future(asyncio.to_thread(writer.close))
    # close() has queued its stop behind them, and waits for the writer held at the gate
    await wait_until(lambda: writer._queue.qsize() == len(rest) + 1)
    assert not closing.done()  # close() waits for the commits it was handed
    with pytest.raises(LogUnavailable, match="shutting down"):
        await writer.append(delivery(make_body(make_block())))
    gated.opened.set()
    await closing
    results = await asyncio.gather(head, *tasks)
    assert [r.seqs for r in results] == [[1], [2], [3], [4], [5], [6]]
    assert len(gated.batches) == 2
    assert [e.seq for e in logged(storage)] == [1, 2, 3, 4, 5, 6]
    with pytest.raises((sqlite3.ProgrammingError, psycopg.OperationalError)):
        gated.store.head_seq()  # closed with the writer


async def test_a_deadline_withdraws_a_waiting_delivery_and_flags_one_being_committed(
    storage: Storage,
) -> None:
    """Past its deadline, a delivery the writer has not taken is withdrawn (never stored by
    this writer: its caller may spool it); one the writer is committing may still land.
    flush() returns once everything handed over before it is settled."""
    gated = Gated(storage.log_store(writer=True))
    writer = GroupCommitWriter(gated)
    taken, waiting = delivery(make_body(make_block())), delivery(make_body(make_block()))
    try:
        late: list[Outcome] = []
        head = asyncio.ensure_future(writer.append(taken, timeout=0.05, on_late=late.append))
        await wait_until(gated.entered.is_set)
        with pytest.raises(CommitTimeout) as behind:
            await writer.append(waiting, timeout=0.05)
        assert behind.value.in_flight is False
        with pytest.raises(CommitTimeout) as first:
            await head
        assert first.value.in_flight is True
        flushed = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0)
        assert not flushed.done()  # the taken delivery is still at the gate
        gated.opened.set()
        await asyncio.wait_for(flushed, 10)
        assert [o.accepted for o in late] == [1]  # its outcome, to whoever asked for it
    finally:
        gated.opened.set()
        await asyncio.to_thread(writer.close)
    assert [message_id(taken)] == [e.message_id for e in logged(storage)]
    assert [len(b) for b in gated.batches] == [1]


# --- the writer's store on each backend ---------------------------------------------------


def test_the_sqlite_writer_store_checkpoints_off_the_commit_path(tmp_path: Path) -> None:
    """Storage.log_store(writer=True) on SQLite: no automatic checkpoint on a commit, a
    Checkpointer thread of its own instead, stopped by close()."""
    storage = Storage(tmp_path / "data")
    writer_store = storage.log_store(writer=True)
    plain = storage.log_store()
    try:
        assert isinstance(writer_store, SQLiteLogStore) and isinstance(plain, SQLiteLogStore)
        assert writer_store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert plain.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0
        assert "log-checkpointer" in {t.name for t in threading.enumerate()}
    finally:
        plain.close()
        writer_store.close()
    assert "log-checkpointer" not in {t.name for t in threading.enumerate()}


def test_postgres_connections_wait_for_locks_and_statements_a_bounded_time(pg_url: str) -> None:
    storage = Storage(Path("unused"), pg_url)
    storage.prepare()
    store = PostgresLogStore(pg_url, lock_timeout_s=1.5, statement_timeout_s=4)
    try:
        with store.pool.connection() as conn:
            lock = conn.execute("SHOW lock_timeout").fetchone()
            statement = conn.execute("SHOW statement_timeout").fetchone()
        assert (lock, statement) == (("1500ms",), ("4s",))
    finally:
        store.close()
    defaults = storage.log_store(writer=True)
    try:
        assert isinstance(defaults, PostgresLogStore)
        with defaults.pool.connection() as conn:
            assert conn.execute("SHOW lock_timeout").fetchone() == ("30s",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1min",)
    finally:
        defaults.close()


# --- through HTTP: the receiver answers 200, the delivery quarantined `unstorable` ---------


@pytest.fixture
def served(
    storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, list[Gated]]:
    """The app's settings on `storage`, its writer's store gated (Gated)."""
    gates: list[Gated] = []
    real_log_store = Storage.log_store

    def log_store(self: Storage, *, writer: bool = False) -> LogStore:
        store = real_log_store(self, writer=writer)
        if writer:
            gates.append(Gated(store))
            return gates[-1]  # type: ignore[return-value]
        return store

    monkeypatch.setattr(Storage, "log_store", log_store)
    # /metrics reports the free space under data_dir, which on PostgreSQL nothing creates
    storage.data_dir.mkdir(parents=True, exist_ok=True)
    on_storage = settings.model_copy(
        update={"data_dir": storage.data_dir, "database_url": storage.database_url}
    )
    return on_storage, gates


async def test_a_body_the_log_cannot_store_is_answered_200_and_quarantined_unstorable(
    aiohttp_client: Any, served: tuple[Settings, list[Gated]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real HTTP on 127.0.0.1. Intake lets a body through whose event the database refuses
    (made so by hand: see unstorable_intake); it reaches the writer in one group commit with
    two good neighbours: it is answered 200 with its body quarantined `unstorable`, they
    are accepted."""
    settings, gates = served
    bad_note = "bad-note"
    judged: list[bytes] = []

    def judge(raw: bytes, *args: Any, **kwargs: Any) -> Intake:
        intake = read_body(raw, *args, **kwargs)
        judged.append(raw)  # the handler queues the delivery right after, without awaiting
        return unstorable_intake(intake) if bad_note.encode() in raw else intake

    monkeypatch.setattr(receiver, "read_body", judge)
    client: TestClient = await aiohttp_client(create_app(settings, []))
    [gate] = gates
    first = asyncio.ensure_future(signed_post(client, make_body(make_block(note_id="first"))))
    await wait_until(gate.entered.is_set)
    bodies = [make_body(make_block(note_id=n)) for n in ("before", bad_note, "after")]
    posts = [asyncio.ensure_future(signed_post(client, b)) for b in bodies]
    await wait_until(lambda: len(judged) == 4)
    gate.opened.set()
    answers = await asyncio.gather(first, *posts)
    assert answers == [
        (200, {"accepted": 1, "duplicates": 0, "quarantined": 0}),
        (200, {"accepted": 1, "duplicates": 0, "quarantined": 0}),
        (200, {"accepted": 0, "duplicates": 0, "quarantined": 1}),
        (200, {"accepted": 1, "duplicates": 0, "quarantined": 0}),
    ]
    assert [len(b) for b in gate.batches] == [1, 3]  # the three in one group commit
    storage = settings.storage
    stored = [e.note_id for e in logged(storage)]
    assert stored == ["first", "before", "after"]
    [(reason, kind, payload)] = log_rows(storage, "SELECT reason, kind, payload FROM quarantine")
    assert (reason, kind) == (UNSTORABLE, "body") and bad_note in payload
    assert len(log_rows(storage, "SELECT id FROM requests")) == 4
    metrics = await (await client.get("/metrics")).text()
    assert 'notestore_quarantined_total{reason="unstorable"} 1.0' in metrics
    assert (await client.get("/healthz")).status == 200
