"""Quarantine replay (SQLite and PostgreSQL) and backup/restore (SQLite files), called
in-process: tests/test_quarantine_backup.py drives them through the `notestore` command in a
subprocess, which mutation testing cannot attribute. Each test checks the rows the operation
leaves (what was appended where, what each replay recorded), not only counts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from app.config import fingerprint
from eventlog import replay as replay_module
from eventlog.append import Delivery
from eventlog.backup import backup, restore, verify_file
from eventlog.canonical import compact_json
from eventlog.db import LOG_FILE, open_log
from eventlog.dbapi import Connection
from eventlog.intake import Intake, Rejected, read_body
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import APPEND_LOCK
from eventlog.replay import Held, held_items, replay
from tests import pg
from tests.helpers import APP_A, APP_B, MERCHANT, make_block, make_body, secret_for, signature
from tests.ops_kit import Backend, backend_for, held_deliveries, migrate, tamper
from tests.test_mutants_storage_verify import run_verify

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

OTHER = "7d1f4c2e-0b5a-4a47-9a53-3f2f6d0c8e11"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    found = backend_for(request, tmp_path)
    if found.url is not None:
        migrate(found.url)
    return found


def writer(backend: Backend) -> Connection:
    """The connection `notestore quarantine replay` appends through."""
    if backend.url is None:
        return open_log(backend.data_dir)
    return PgConnection.connect(backend.url, write_lock=APPEND_LOCK)


def query(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    conn = backend.storage.log_reader()
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def do_replay(backend: Backend, ids: list[int] | None = None, **kwargs: Any) -> dict[str, int]:
    conn = writer(backend)
    try:
        return replay(conn, held_items(conn, ids), **kwargs)
    finally:
        conn.close()


def held(backend: Backend, ids: list[int] | None = None) -> list[Held]:
    conn = writer(backend)
    try:
        return held_items(conn, ids)
    finally:
        conn.close()


def replays(backend: Backend) -> list[tuple[Any, ...]]:
    return query(
        backend, "SELECT quarantine_id, outcome, detail FROM quarantine_replays ORDER BY id"
    )


def raw_delivery(body: dict[str, Any], intake: Intake, at: float | None = None) -> Delivery:
    raw = json.dumps(body).encode()
    app_id = body.get("app_id", APP_A)
    return Delivery(at or time.time(), app_id, fingerprint(secret_for(app_id)),
                    signature(raw, app_id), raw, intake)  # fmt: skip


def fresh_delivery(block: dict[str, Any]) -> Delivery:
    """A delivery of one block, judged by today's intake."""
    body = make_body(block)
    return raw_delivery(body, read_body(json.dumps(body).encode(), APP_A, time.time()))


def held_block(block: dict[str, Any], envelope: dict[str, Any] | None = None,
               reason: str = "invalid_block") -> Delivery:  # fmt: skip
    """A delivery whose one block an older version quarantined for `reason`."""
    body = envelope or make_body(block)
    rejected = Rejected(reason, "older rule", compact_json(block), "block", block["message_id"])
    return raw_delivery(body, Intake(app_id=body.get("app_id", APP_A), rejected=[rejected]))


# --- what is held ----------------------------------------------------------------------


def test_held_items_are_every_row_in_id_order_with_their_columns(backend: Backend) -> None:
    blocks, deliveries = held_deliveries(3)
    backend.append(deliveries)
    items = held(backend)
    assert [i.id for i in items] == [1, 2, 3]
    assert [i.request_ref for i in items] == [1, 2, 3]
    assert {(i.reason, i.kind) for i in items} == {("invalid_block", "block")}
    assert [json.loads(i.payload) for i in items] == blocks


def test_held_items_by_id_keep_only_those(backend: Backend) -> None:
    backend.append(held_deliveries(4)[1])
    assert [i.id for i in held(backend, [3, 1])] == [1, 3]
    assert [i.id for i in held(backend, [9])] == []
    assert [i.id for i in held(backend, [])] == [1, 2, 3, 4]  # no ids: all


def test_an_item_replayed_into_the_log_is_no_longer_held_one_still_failing_is(
    backend: Backend,
) -> None:
    good = make_block()
    bad = {"message_id": "still-bad"}
    backend.append([held_block(good), held_block(bad, make_body(good))])
    assert do_replay(backend) == {"appended": 1, "still_failing": 1}
    assert [i.id for i in held(backend)] == [2]


# --- replaying -------------------------------------------------------------------------


def test_a_replayed_block_is_appended_to_the_request_it_came_in(backend: Backend) -> None:
    backend.append(held_deliveries(1)[1])  # request 1, quarantined
    block = make_block()
    body = make_body(block, app_id=APP_B)
    d = raw_delivery(body, Intake(app_id=APP_B, request_id="req-b", rejected=[
        Rejected("invalid_block", "older rule", compact_json(block), "block", block["message_id"])
    ]))  # fmt: skip
    backend.append([d])  # request 2, quarantine item 2
    before = time.time()
    assert do_replay(backend, [2]) == {"appended": 1}
    after = time.time()
    [(seq, message_id, app_id, request_id, request_ref, received_at, merchant)] = query(
        backend,
        "SELECT seq, message_id, app_id, request_id, request_ref, received_at, merchant_id"
        " FROM events",
    )
    assert (seq, message_id, app_id, request_ref, merchant) == (
        1, block["message_id"], APP_B, 2, MERCHANT,
    )  # fmt: skip
    assert request_id == "req-b"
    assert before <= received_at <= after  # appended at the replay's time
    assert replays(backend) == [(2, "appended", "1 event(s) appended")]
    assert query(backend, "SELECT count(*) FROM requests") == [(2,)]  # no new request


def test_replays_are_recorded_appended_duplicate_and_still_failing(backend: Backend) -> None:
    first, again = make_block(), make_block()
    bad = make_block()
    bad["data_event"]["action_time"] = "never"
    backend.append([held_block(first), held_block(again), held_block(bad)])
    assert do_replay(backend, [1]) == {"appended": 1}
    # item 2's block is logged meanwhile (e.g. redelivered): replaying it is a duplicate
    backend.append([fresh_delivery(again)])
    assert do_replay(backend) == {"duplicate": 1, "still_failing": 1}
    rows = replays(backend)
    assert rows[0] == (1, "appended", "1 event(s) appended")
    assert rows[1] == (2, "duplicate", "already in the log")
    assert rows[2][:2] == (3, "still_failing") and rows[2][2] == "invalid_block"
    assert do_replay(backend) == {"still_failing": 1}  # held until it passes
    assert len(replays(backend)) == 4
    assert query(backend, "SELECT count(*) FROM quarantine") == [(3,)]  # never removed


def test_a_replay_that_conflicts_is_still_failing_as_a_conflict(backend: Backend) -> None:
    block = make_block()
    backend.append([held_block(block)])
    other = json.loads(json.dumps(block))
    other["data_event"]["action_time"] = 1669200440.0
    backend.append([fresh_delivery(other)])
    assert do_replay(backend) == {"still_failing": 1}
    assert replays(backend) == [(1, "still_failing", "conflict")]
    # the conflict is the held block itself: kept once per content, so no new row
    assert query(backend, "SELECT count(*) FROM quarantine") == [(1,)]


def test_a_replay_is_judged_against_the_apps_merchants_today(backend: Backend) -> None:
    block = make_block()
    backend.append([held_block(block)])
    assert do_replay(backend, merchants_of=lambda app: {OTHER}) == {"still_failing": 1}
    assert replays(backend) == [(1, "still_failing", "merchant_not_allowed")]
    calls: list[str] = []

    def merchants_of(app_id: str) -> set[str]:
        calls.append(app_id)
        return {MERCHANT}

    assert do_replay(backend, merchants_of=merchants_of) == {"appended": 1}
    assert calls == [APP_A]


def test_a_block_without_a_merchant_takes_its_envelopes(backend: Backend) -> None:
    block = make_block()
    del block["data_event"]["merchant_id"]
    envelope = make_body(block)
    envelope["merchant_id"] = OTHER
    backend.append([held_block(block, envelope)])
    assert do_replay(backend) == {"appended": 1}
    assert query(backend, "SELECT merchant_id FROM events") == [(OTHER,)]


def test_a_block_without_a_merchant_in_an_unreadable_envelope_has_none(backend: Backend) -> None:
    block = make_block()
    del block["data_event"]["merchant_id"]
    rejected = Rejected("invalid_block", "older", compact_json(block), "block", block["message_id"])
    d = raw_delivery(make_body(block), Intake(app_id=APP_A, rejected=[rejected]))
    backend.append([Delivery(d.received_at, d.app_id, d.secret_fingerprint, d.signature,
                             b"{not json", d.intake)])  # fmt: skip
    assert do_replay(backend) == {"appended": 1}
    assert query(backend, "SELECT merchant_id FROM events") == [(None,)]


def test_a_block_is_judged_at_the_time_its_request_was_received(backend: Backend) -> None:
    """A block timed 1 h after its receipt was plausible then; a replay today must not
    refuse it as in the future (nor accept one that was in the future then)."""
    received = 1_669_200_000.0
    fine, future = (
        make_block(action_time=received + 3600),
        make_block(action_time=received + 2 * 86400),
    )
    backend.append([held_block(fine), held_block(future)])
    _set_received(backend, received)  # both requests came in at `received`
    assert do_replay(backend) == {"appended": 1, "still_failing": 1}
    assert replays(backend)[1] == (2, "still_failing", "implausible_time")


def _set_received(backend: Backend, received: float) -> None:
    if backend.url is None:
        tamper(backend.data_dir / LOG_FILE, f"UPDATE requests SET received_at = {received}")
    else:
        backend.tamper(f"UPDATE requests SET received_at = {received}")


def test_a_quarantined_body_is_read_again_whole(backend: Backend) -> None:
    blocks = [make_block(), make_block()]
    body = make_body(*blocks)
    raw = json.dumps(body).encode()
    rejected = Rejected("unstorable", "older", raw.decode(), "body")
    backend.append([raw_delivery(body, Intake(app_id=APP_A, request_id=body["request_id"],
                                               rejected=[rejected]))])  # fmt: skip
    assert do_replay(backend) == {"appended": 1}
    assert replays(backend) == [(1, "appended", "2 event(s) appended")]
    assert query(backend, "SELECT message_id, request_id FROM events ORDER BY seq") == [
        (blocks[0]["message_id"], body["request_id"]),
        (blocks[1]["message_id"], body["request_id"]),
    ]


def test_a_quarantined_body_is_judged_at_the_time_it_was_received(backend: Backend) -> None:
    """Two days after an old receipt was in the future then (implausible), though it is in
    the past now: a replay judges it as on arrival, so it is still refused."""
    received = 1_669_200_000.0
    body = make_body(make_block(action_time=received + 2 * 86400))
    raw = json.dumps(body).encode()
    rejected = Rejected("unstorable", "older", raw.decode(), "body")
    backend.append([raw_delivery(body, Intake(app_id=APP_A, rejected=[rejected]))])
    _set_received(backend, received)
    assert do_replay(backend) == {"still_failing": 1}
    assert replays(backend) == [(1, "still_failing", "implausible_time")]


def test_a_body_with_a_duplicate_and_a_bad_block_is_still_failing(backend: Backend) -> None:
    logged = make_block()
    backend.append([fresh_delivery(logged)])
    bad = make_block(action_time=1.0)
    body = make_body(logged, bad)
    raw = json.dumps(body).encode()
    rejected = Rejected("unstorable", "older", raw.decode(), "body")
    backend.append([raw_delivery(body, Intake(app_id=APP_A, rejected=[rejected]))])
    assert do_replay(backend) == {"still_failing": 1}
    assert replays(backend) == [(1, "still_failing", "implausible_time")]
    # the bad block is quarantined on its own now, naming the request it came in
    [(reason, kind, message_id, ref)] = query(
        backend, "SELECT reason, kind, message_id, request_ref FROM quarantine WHERE id = 2"
    )
    assert (reason, kind, message_id, ref) == ("implausible_time", "block", bad["message_id"], 2)


def test_a_quarantined_body_judged_against_the_apps_merchants(backend: Backend) -> None:
    body = make_body(make_block())
    raw = json.dumps(body).encode()
    rejected = Rejected("unstorable", "older", raw.decode(), "body")
    backend.append([raw_delivery(body, Intake(app_id=APP_A, rejected=[rejected]))])
    assert do_replay(backend, merchants_of=lambda app: {OTHER}) == {"still_failing": 1}
    assert replays(backend) == [(1, "still_failing", "merchant_not_allowed")]


def test_a_body_that_yields_nothing_is_still_failing_with_nothing_to_append(
    backend: Backend,
) -> None:
    raw = json.dumps({"app_id": APP_A, "block_event": []}).encode()
    rejected = Rejected("no_blocks", "older", raw.decode(), "body")
    d = raw_delivery(
        {"app_id": APP_A, "block_event": []}, Intake(app_id=APP_A, rejected=[rejected])
    )
    backend.append([d])
    assert do_replay(backend) == {"still_failing": 1}
    [(_, outcome, detail)] = replays(backend)
    assert outcome == "still_failing" and detail in ("no_blocks", "nothing to append")


def test_still_failing_names_each_reason_once_sorted(backend: Backend) -> None:
    blocks = [{"message_id": "a"}, {"message_id": "b"}, make_block(action_time=1.0)]
    body = make_body(*blocks)
    raw = json.dumps(body).encode()
    rejected = Rejected("unstorable", "older", raw.decode(), "body")
    backend.append([raw_delivery(body, Intake(app_id=APP_A, rejected=[rejected]))])
    assert do_replay(backend) == {"still_failing": 1}
    assert replays(backend) == [(1, "still_failing", "implausible_time, invalid_block")]


def test_replays_run_in_short_transactions_and_miss_no_item(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks, deliveries = held_deliveries(5)
    backend.append(deliveries)
    monkeypatch.setattr(replay_module, "TRANSACTION_ROWS", 2)
    assert do_replay(backend) == {"appended": 5}
    assert [r[0] for r in replays(backend)] == [1, 2, 3, 4, 5]
    assert [r[0] for r in query(backend, "SELECT message_id FROM events ORDER BY seq")] == [
        b["message_id"] for b in blocks
    ]
    assert query(backend, "SELECT count(DISTINCT replayed_at) FROM quarantine_replays") == [(3,)]


def test_replayed_events_extend_both_chains_so_the_log_verifies(backend: Backend) -> None:
    backend.append(held_deliveries(3)[1])
    do_replay(backend, [2])
    backend.append([fresh_delivery(make_block())])
    do_replay(backend)
    conn = backend.storage.log_reader()
    try:
        from eventlog.verify import verify_log

        report = verify_log(conn, lambda app, fp, body: None)
    finally:
        conn.close()
    assert report.ok and report.events.rows == 4


def test_nothing_held_replays_nothing(backend: Backend) -> None:
    backend.append([])
    assert do_replay(backend) == {}
    assert replays(backend) == []


# --- backup and restore (SQLite files) -------------------------------------------------


def log_some(data_dir: Path, count: int) -> list[str]:
    blocks = [make_block() for _ in range(count)]
    Backend(data_dir).append([fresh_delivery(b) for b in blocks])
    return [b["message_id"] for b in blocks]


def ids_in(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT message_id FROM events ORDER BY seq")]
    finally:
        conn.close()


def test_a_backup_is_a_verified_copy_in_a_new_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = log_some(data, 4)
    dest = tmp_path / "new" / "deeper" / "copy.db"
    report = backup(data, dest)
    assert report.ok and report.events.rows == 4 and report.requests.rows == 4
    assert ids_in(dest) == ids
    assert verify_file(dest).events.head == report.events.head
    with pytest.raises(FileExistsError, match="exists; choose a new file"):
        backup(data, dest)
    assert ids_in(dest) == ids
    assert not list(data.glob("*.replaced-*"))  # the live log is untouched


def test_a_backup_of_a_tampered_log_does_not_verify(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log_some(data, 3)
    tamper(data / LOG_FILE, "UPDATE events SET action_time = 1 WHERE seq = 2")
    report = backup(data, tmp_path / "copy.db")
    assert not report.ok and report.events.first_bad == 2
    assert report.unverifiable == 3  # a backup checks chains, not signatures


def test_restore_puts_the_backup_in_place_and_keeps_the_old_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kept_ids = log_some(data, 2)
    backup(data, tmp_path / "copy.db")
    later = log_some(data, 3)
    (data / "views.db").write_bytes(b"views")
    (data / "views.db-wal").write_bytes(b"wal")
    (data / "other.txt").write_text("kept")
    kept = restore(tmp_path / "copy.db", data)
    assert kept is not None and kept.parent == data
    assert kept.name.startswith(f"{LOG_FILE}.replaced-") and len(kept.name) == len(
        f"{LOG_FILE}.replaced-20260101T000000"
    )
    assert ids_in(kept) == kept_ids + later  # complete on its own: the WAL folded in
    assert not Path(f"{kept}-wal").exists() or Path(f"{kept}-wal").stat().st_size == 0
    assert ids_in(data / LOG_FILE) == kept_ids
    assert not Path(f"{data / LOG_FILE}-wal").exists()
    assert not Path(f"{data / LOG_FILE}-shm").exists()
    assert not (data / "views.db").exists() and not (data / "views.db-wal").exists()
    assert (data / "other.txt").read_text() == "kept"
    assert verify_file(data / LOG_FILE).ok


def test_restore_into_an_empty_place_keeps_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log_some(data, 2)
    backup(data, tmp_path / "copy.db")
    target = tmp_path / "fresh" / "data"
    stale_wal = Path(f"{target / LOG_FILE}-wal")
    target.mkdir(parents=True)
    stale_wal.write_bytes(b"stale")
    Path(f"{target / LOG_FILE}-shm").write_bytes(b"stale")
    assert restore(tmp_path / "copy.db", target) is None
    assert ids_in(target / LOG_FILE) == ids_in(data / LOG_FILE)
    assert not stale_wal.exists() and not Path(f"{target / LOG_FILE}-shm").exists()
    assert restore(tmp_path / "copy.db", tmp_path / "made" / "here") is None
    assert (tmp_path / "made" / "here" / LOG_FILE).exists()


def test_a_backup_of_a_missing_log_fails_and_creates_none(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(sqlite3.OperationalError):
        backup(data, tmp_path / "copy.db")
    assert not (data / LOG_FILE).exists()


def test_verify_file_opens_the_copy_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log_some(data, 1)
    copy = tmp_path / "copy.db"
    backup(data, copy)
    assert verify_file(copy).ok
    conn = sqlite3.connect(copy)
    try:  # VACUUM INTO writes a rollback-journal file; a writable open would make it WAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
    with pytest.raises(sqlite3.OperationalError):
        verify_file(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(make_body(make_block())),  # an ordinary delivery
        json.dumps(make_block()),  # a body that is itself a valid block
        "not json at all",
    ],
)
def test_a_delivery_the_spool_quarantined_whole_is_never_replayed_half(
    backend: Backend, body: str
) -> None:
    """The drainer quarantines a delivery the log refused (`undrainable`) with its body only,
    no request: replay leaves it held, says why, and appends nothing; the log verifies."""
    backend.append(held_deliveries(1)[1])  # an ordinary held block beside it (request 1)
    store = backend.storage.log_store()
    try:
        store.quarantine(Rejected("undrainable", "refused 5 times", body, "body"), time.time())
    finally:
        store.close()
    [item] = [i for i in held(backend) if i.reason == "undrainable"]
    assert item.request_ref is None
    assert do_replay(backend, [item.id]) == {"still_failing": 1}
    assert replays(backend) == [(item.id, "still_failing", replay_module.NO_REQUEST)]
    assert query(backend, "SELECT count(*) FROM events") == [(0,)]
    assert item.id in [i.id for i in held(backend)]
    assert run_verify(backend).ok
