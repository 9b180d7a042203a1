"""eventlog.verify called in-process, on SQLite and PostgreSQL (tests/test_verify.py runs the
`notestore verify` command in a subprocess, which mutation testing cannot attribute): the
report's exact counts, heads, problems and first bad keys for each kind of edit, forged rows
chained correctly, stored signatures, the expected head, streaming in batches and progress.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from app.config import fingerprint
from app.signing import sign
from eventlog import chain, pg_schema, verify
from eventlog.append import Delivery
from eventlog.canonical import compact_json, event_content_hash
from eventlog.intake import read_body
from eventlog.verify import VerifyReport, verify_log
from tests import pg
from tests.helpers import APP_A, APP_B, SECRETS, make_block, make_body, secret_for
from tests.ops_kit import Backend, backend_for, tamper

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

NOW = 1_700_000_000.5
BY_FINGERPRINT = {(app, fingerprint(s)): s for app, secrets in SECRETS.items() for s in secrets}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Backend:
    return backend_for(request, tmp_path)


def signer(app_id: str, stored_fingerprint: str, body: bytes) -> str | None:
    secret = BY_FINGERPRINT.get((app_id, stored_fingerprint))
    return sign(app_id, body, secret) if secret is not None else None


def delivery(body: dict[str, Any], signature: str | None = None) -> Delivery:
    raw = json.dumps(body).encode()
    app_id = body["app_id"]
    secret = secret_for(app_id)
    return Delivery(NOW, app_id, fingerprint(secret), signature or sign(app_id, raw, secret), raw,
                    read_body(raw, app_id, NOW))  # fmt: skip


def bodies(count: int, blocks_each: int = 2, app_id: str = APP_A) -> list[Delivery]:
    return [
        delivery(make_body(*(make_block() for _ in range(blocks_each)), app_id=app_id))
        for _ in range(count)
    ]


def run_verify(backend: Backend, **kwargs: Any) -> VerifyReport:
    conn = backend.storage.log_reader()
    try:
        return verify_log(conn, kwargs.pop("signer", signer), **kwargs)
    finally:
        conn.close()


def query(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    conn = backend.storage.log_reader()
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def edit(backend: Backend, statement: str, params: tuple[Any, ...] = ()) -> None:
    """A raw edit (triggers off), with `?` parameters on either backend."""
    if backend.url is None:
        import sqlite3

        tamper(backend.data_dir / "events.db")  # drops the triggers
        lite = sqlite3.connect(backend.data_dir / "events.db", isolation_level=None)
        lite.execute(statement, params)
        lite.close()
        return
    with psycopg.connect(backend.url, autocommit=True) as conn, conn.transaction():
        for table in pg_schema.LOG_TABLES:
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        conn.execute(statement.replace("?", "%s").encode(), params)
        for table in pg_schema.LOG_TABLES:
            conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only")


def last_hash(backend: Backend, table: str = "events", key: str = "seq") -> str:
    return str(query(backend, f"SELECT hash FROM {table} ORDER BY {key} DESC LIMIT 1")[0][0])


def hash_at(backend: Backend, seq: int) -> str:
    return str(query(backend, f"SELECT hash FROM events WHERE seq = {seq}")[0][0])


def forge_event(backend: Backend, **changes: Any) -> int:
    """Append an event row copied from the last one with `changes`, chained correctly (under
    another merchant unless `changes` names one: a message_id is unique per merchant)."""
    columns = ", ".join(chain.EVENT_COLUMNS)
    [last] = query(backend, f"SELECT {columns}, hash FROM events ORDER BY seq DESC LIMIT 1")
    row = dict(zip(chain.EVENT_COLUMNS, last[:-1], strict=True))
    row.update({"merchant_id": "forged-merchant", **changes}, seq=row["seq"] + 1)
    values = tuple(row[c] for c in chain.EVENT_COLUMNS)
    marks = ", ".join("?" * (len(values) + 1))
    edit(backend, f"INSERT INTO events ({columns}, hash) VALUES ({marks})",
         (*values, chain.link(last[-1], values)))  # fmt: skip
    return int(row["seq"])


def forged_block(message_id: str) -> tuple[str, str]:
    """A valid block no request carried, and its content hash."""
    block = make_block()
    block["message_id"] = message_id
    return compact_json(block), event_content_hash(
        message_id, block["event_type"], block["data_event"]
    )


# --- an intact log ---------------------------------------------------------------------


def test_an_intact_log_reports_its_rows_heads_and_nothing_bad(backend: Backend) -> None:
    backend.append(bodies(3, 2) + bodies(2, 1, app_id=APP_B))
    report = run_verify(backend)
    assert report.ok
    assert (report.events.rows, report.requests.rows) == (8, 5)
    assert (report.events.table, report.requests.table) == ("events", "requests")
    assert report.events.head == last_hash(backend)
    assert report.requests.head == last_hash(backend, "requests", "id")
    assert report.events.first_bad is None and report.requests.first_bad is None
    assert report.events.problems == [] and report.requests.problems == []
    assert report.unverifiable == 0 and report.expect_head is None
    assert not report.events.saw_expected_head


def test_an_empty_log_verifies_to_the_genesis_head(backend: Backend) -> None:
    backend.append([])
    report = run_verify(backend)
    assert report.ok and report.events.rows == 0 and report.requests.rows == 0
    assert report.events.head == chain.GENESIS == report.requests.head


def test_a_log_longer_than_a_batch_is_read_whole_with_progress(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.append(bodies(7, 1))
    monkeypatch.setattr(verify, "BATCH", 3)
    seen: list[tuple[int, int]] = []
    report = run_verify(backend, progress=lambda done, total: seen.append((done, total)))
    assert report.ok and report.events.rows == 7 and report.requests.rows == 7
    assert report.events.head == last_hash(backend)
    assert seen == [(3, 7), (6, 7), (7, 7)]  # every BATCH rows, then once at the end


def test_without_progress_nothing_is_reported_and_the_result_is_the_same(backend: Backend) -> None:
    backend.append(bodies(2))
    assert run_verify(backend, progress=None).ok


# --- edits -----------------------------------------------------------------------------


def test_an_altered_block_is_named_by_seq_with_both_problems(backend: Backend) -> None:
    backend.append(bodies(3, 2))
    edit(backend, "UPDATE events SET block = replace(block, 'note_create', 'note_forged')"
                  " WHERE seq = 4")  # fmt: skip
    report = run_verify(backend)
    assert not report.ok and report.events.first_bad == 4 and report.requests.first_bad is None
    assert report.events.problems == [
        "events seq 4: content does not match its hash chain",
        "events seq 4: its block does not match its content hash",
    ]
    assert report.events.rows == 6  # the walk goes on past the bad row
    assert report.events.head == last_hash(backend)


def test_a_deleted_row_is_a_gap_from_its_seq(backend: Backend) -> None:
    backend.append(bodies(4, 2))
    edit(backend, "DELETE FROM events WHERE seq IN (3, 4)")
    report = run_verify(backend)
    assert report.events.first_bad == 3 and not report.ok
    assert report.events.problems == [
        "events seq 3 to 4 missing",
        "events seq 5: content does not match its hash chain",
    ]
    assert report.events.rows == 6


def test_at_most_twenty_problems_are_kept_and_the_first_bad_is_the_first(
    backend: Backend,
) -> None:
    backend.append(bodies(13, 2))
    edit(backend, "UPDATE events SET action_time = action_time + 1 WHERE seq > 1")
    report = run_verify(backend)
    assert report.events.first_bad == 2
    assert len(report.events.problems) == 20
    assert report.events.problems[0] == "events seq 2: content does not match its hash chain"
    assert report.events.problems[-1] == "events seq 21: content does not match its hash chain"


def test_an_altered_request_body_fails_its_chain_and_its_signature(backend: Backend) -> None:
    backend.append(bodies(3, 1))
    edit(backend, "UPDATE requests SET received_at = received_at + 1 WHERE id = 3")
    report = run_verify(backend)
    assert report.requests.first_bad == 3 and report.events.first_bad is None
    assert report.requests.problems == ["requests id 3: content does not match its hash chain"]
    assert not report.ok


def test_a_stored_signature_is_compared_trimmed_and_lowercase(backend: Backend) -> None:
    body = make_body(make_block())
    raw = json.dumps(body).encode()
    good = sign(APP_A, raw, secret_for(APP_A))
    backend.append([delivery(body, signature=f"  {good.upper()}\n")])
    assert run_verify(backend).ok


def test_a_wrong_stored_signature_is_tampering_of_that_request(backend: Backend) -> None:
    body = make_body(make_block())
    backend.append(bodies(1, 1) + [delivery(body, signature="0" * 64)] + bodies(1, 1))
    report = run_verify(backend)
    assert report.requests.first_bad == 2 and report.events.first_bad is None
    assert report.requests.problems == ["requests id 2: stored signature does not match its body"]
    assert not report.ok and report.unverifiable == 0


def test_requests_whose_secret_is_gone_are_counted_unverifiable_not_bad(backend: Backend) -> None:
    backend.append(bodies(2, 1) + bodies(3, 1, app_id=APP_B))

    def only_app_a(app_id: str, stored_fingerprint: str, body: bytes) -> str | None:
        return signer(app_id, stored_fingerprint, body) if app_id == APP_A else None

    report = run_verify(backend, signer=only_app_a)
    assert report.ok and report.unverifiable == 3 and report.requests.first_bad is None


def test_the_signer_is_given_the_app_fingerprint_and_body_of_each_request(
    backend: Backend,
) -> None:
    deliveries = bodies(2, 1) + bodies(1, 1, app_id=APP_B)
    backend.append(deliveries)
    calls: list[tuple[str, str, bytes]] = []

    def recording(app_id: str, stored_fingerprint: str, body: bytes) -> str | None:
        calls.append((app_id, stored_fingerprint, body))
        return signer(app_id, stored_fingerprint, body)

    assert run_verify(backend, signer=recording).ok
    assert calls == [(d.app_id, d.secret_fingerprint, d.body) for d in deliveries]
    assert all(type(body) is bytes for _, _, body in calls)


# --- forged rows, chained correctly ----------------------------------------------------


def test_a_forged_event_chained_correctly_but_carried_by_no_request_is_caught(
    backend: Backend,
) -> None:
    backend.append(bodies(2, 2))
    block, content = forged_block("forged-message")
    seq = forge_event(backend, message_id="forged-message", content_hash=content, block=block,
                      request_ref=1)  # fmt: skip
    report = run_verify(backend)
    assert report.events.first_bad == seq == 5
    assert report.events.problems == ["events seq 5: not carried by the request it names (id 1)"]
    assert report.requests.first_bad is None and not report.ok


def test_a_forged_copy_of_a_genuine_event_naming_another_request_is_caught(
    backend: Backend,
) -> None:
    backend.append(bodies(2, 1))
    [(message_id, content, block)] = query(
        backend, "SELECT message_id, content_hash, block FROM events WHERE seq = 1"
    )
    forge_event(backend, message_id=message_id, content_hash=content, block=block, request_ref=2)
    report = run_verify(backend)
    assert report.events.problems == ["events seq 3: not carried by the request it names (id 2)"]


def test_a_forged_event_whose_block_is_not_its_content_hash_is_caught(backend: Backend) -> None:
    backend.append(bodies(2, 1))
    [(message_id, block)] = query(backend, "SELECT message_id, block FROM events WHERE seq = 2")
    seq = forge_event(backend, message_id=message_id, content_hash="0" * 64, block=block,
                      request_ref=2)  # fmt: skip
    report = run_verify(backend)
    assert report.events.problems == [
        f"events seq {seq}: its block does not match its content hash"
    ]


@pytest.mark.parametrize(
    "block", ["not json", "[]", '{"event_type": "note_create"}', '{"data_event": {}}']
)
def test_a_forged_event_with_an_unreadable_block_is_caught_not_raised(
    backend: Backend, block: str
) -> None:
    backend.append(bodies(1, 1))
    seq = forge_event(backend, block=block)
    report = run_verify(backend)
    assert report.events.problems == [
        f"events seq {seq}: its block does not match its content hash"
    ]


def test_an_event_naming_a_missing_request_is_not_carried(backend: Backend) -> None:
    if backend.url is not None:
        pytest.skip("PostgreSQL's foreign key keeps even a superuser from naming no request")
    backend.append(bodies(1, 1))
    [(message_id, content, block)] = query(
        backend, "SELECT message_id, content_hash, block FROM events WHERE seq = 1"
    )
    forge_event(backend, message_id=message_id + "x", content_hash=content, block=block,
                request_ref=99)  # fmt: skip
    report = run_verify(backend)
    assert report.events.first_bad == 2  # either problem: the block no longer matches its id


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"block_event": [{"message_id": "m"}]}', b'{"other": 1}'],
)
def test_a_request_body_that_cannot_be_read_carries_no_event(backend: Backend, body: bytes) -> None:
    """A request whose body holds no readable block_event: an event naming it is forged."""
    backend.append(bodies(1, 1))
    edit(backend, "UPDATE requests SET body = ? WHERE id = 1", (body,))
    report = run_verify(backend)
    assert "events seq 1: not carried by the request it names (id 1)" in report.events.problems
    assert report.requests.first_bad == 1  # its chain and signature break too


# --- the expected head -----------------------------------------------------------------


def test_the_expected_head_is_seen_anywhere_along_the_chain(backend: Backend) -> None:
    backend.append(bodies(5, 1))
    for seq in (1, 3, 5):
        report = run_verify(backend, expect_head=hash_at(backend, seq))
        assert report.ok and report.events.saw_expected_head
        assert report.expect_head == hash_at(backend, seq)


def test_a_head_the_chain_does_not_extend_fails_verification(backend: Backend) -> None:
    backend.append(bodies(5, 1))
    head = last_hash(backend)
    edit(backend, "DELETE FROM events WHERE seq > 3")
    assert run_verify(backend).ok  # a clean cut is a consistent chain...
    report = run_verify(backend, expect_head=head)
    assert not report.ok and not report.events.saw_expected_head  # ...the head exposes
    assert report.events.first_bad is None


def test_a_request_hash_is_not_an_event_head(backend: Backend) -> None:
    backend.append(bodies(2, 1))
    report = run_verify(backend, expect_head=last_hash(backend, "requests", "id"))
    assert not report.ok
