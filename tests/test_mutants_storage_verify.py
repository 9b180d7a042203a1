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
from eventlog.canonical import compact_json, event_content_hash, loads_strict
from eventlog.db import open_log
from eventlog.erase import count, end_erasure, erase_rows, record_erasure
from eventlog.intake import read_body
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import APPEND_LOCK
from eventlog.redaction import Scope, marker_start, redacted_text
from eventlog.verify import VerifyReport, verify_log
from tests import pg
from tests.helpers import APP_A, APP_B, MERCHANT, SECRETS, make_block, make_body, secret_for
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


# --- erased rows (eventlog.erase run in process) ---------------------------------------

NOTE, OTHER_NOTE, COMMENT = "note-erased", "note-kept", "comment-erased"
OTHER_MERCHANT = "7d1f4c2e-0b5a-4a47-9a53-3f2f6d0c8e11"
NOT_MARKER = "erased content is not the marker of its erasure"


def detail(key: str, value: Any) -> dict[str, Any]:
    return {"field_key": key, "add": [value], "change": [], "remove": []}


def erase(backend: Backend, scope: Scope) -> int:
    """An erasure as `notestore erase` runs it (recorded, its rows redacted, ended); its id."""
    conn: Any = (
        open_log(backend.data_dir)
        if backend.url is None
        else PgConnection.connect(backend.url, write_lock=APPEND_LOCK)
    )
    try:
        erasure = record_erasure(conn, scope, "a request", count(conn, scope), at=NOW + 60)
        erase_rows(conn, erasure)
        end_erasure(conn, erasure.id, NOW + 61)
        return erasure.id
    finally:
        conn.close()


def erased_note_log(backend: Backend, both: bool = False) -> None:
    """Request 1 carries the note (event 1) and the other note (event 2), request 2 a comment
    on the note (event 3); the note erased (erasure 1: events 1 and 3, requests 1 and 2), and
    with `both` the other note too (erasure 2: event 2, request 1 a second time)."""
    note = make_block(note_id=NOTE, event_detail=[detail("description", "call me")])
    other = make_block(note_id=OTHER_NOTE, event_detail=[detail("description", "stays")])
    comment = make_block("note_comment_create", comment_id=COMMENT,
                         event_detail=[detail("object_id", NOTE), detail("description", "hi")])  # fmt: skip
    backend.append([delivery(make_body(note, other)), delivery(make_body(comment))])
    assert erase(backend, Scope(merchant_id=MERCHANT, note_id=NOTE)) == 1
    if both:
        assert erase(backend, Scope(merchant_id=MERCHANT, note_id=OTHER_NOTE)) == 2


def raw(backend: Backend, statement: str, params: tuple[Any, ...] = ()) -> None:
    """A raw edit with every trigger and foreign key off (the erasure tables' too)."""
    if backend.url is None:
        edit(backend, statement, params)  # tamper() drops every trigger; no foreign keys
        return
    with psycopg.connect(backend.url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for table, name in conn.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal"
        ).fetchall():
            conn.execute(f'ALTER TABLE {table} DISABLE TRIGGER "{name}"'.encode())
        conn.execute(statement.replace("?", "%s").encode(), params)


def content_of(backend: Backend, table: str, key: int) -> Any:
    column, key_column = ("block", "seq") if table == "events" else ("body", "id")
    [(value,)] = query(backend, f"SELECT {column} FROM {table} WHERE {key_column} = {key}")
    return value if table == "events" else bytes(value)


def forge_erased(
    backend: Backend, table: str, key: int, content: str | bytes, erasure_id: int | None = None
) -> None:
    """Give a row `content` and make its erasure records agree with it, as a forger holding
    the database would: the last record's digest after changed, or, with `erasure_id`, a new
    record of that erasure from the row's present content."""
    column, key_column = ("block", "seq") if table == "events" else ("body", "id")
    if erasure_id is None:
        [(last,)] = query(backend, f"SELECT max(erasure_id) FROM erased_rows"
                                   f" WHERE log_table = '{table}' AND row_key = {key}")  # fmt: skip
        raw(backend, "UPDATE erased_rows SET redacted_digest = ?"
                     " WHERE log_table = ? AND row_key = ? AND erasure_id = ?",
            (chain.digest(content), table, key, last))  # fmt: skip
    else:
        before = chain.digest(content_of(backend, table, key))
        raw(backend, "INSERT INTO erased_rows (erasure_id, log_table, row_key,"
                     " original_digest, redacted_digest) VALUES (?, ?, ?, ?, ?)",
            (erasure_id, table, key, before, chain.digest(content)))  # fmt: skip
    raw(backend, f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?", (content, key))


def marker(erasure_id: int, rest: dict[str, Any]) -> str:
    """Marker text as eventlog.redaction writes it: its prefix, then compact JSON."""
    return marker_start(erasure_id) + compact_json(rest)[1:]


def erased_block(backend: Backend, seq: int) -> dict[str, Any]:
    """The marker an event holds, read back without its `erased` key."""
    parsed = loads_strict(content_of(backend, "events", seq))
    del parsed["erased"]
    return dict(parsed)


def test_an_erased_log_verifies_and_says_which_erasure_erased_which_rows(
    backend: Backend,
) -> None:
    erased_note_log(backend, both=True)
    calls: list[bytes] = []

    def recording(app_id: str, stored_fingerprint: str, body: bytes) -> str | None:
        calls.append(body)
        return signer(app_id, stored_fingerprint, body)

    report = run_verify(backend, signer=recording)
    assert report.ok, (report.events.problems, report.requests.problems)
    assert report.events.problems == [] and report.requests.problems == []
    assert calls == []  # an erased request's signature is not checked
    assert report.events.erased == {1: [1, 3], 2: [2]} and report.events.erased_rows == 3
    assert report.requests.erased == {1: [2], 2: [1]} and report.requests.erased_rows == 2
    assert report.erasures is not None
    assert (report.erasures.table, report.erasures.rows) == ("erasures", 2)
    assert report.erasures.first_bad is None and report.erasures.problems == []
    assert report.erasure_lines() == [
        "3 events erased: their origin can no longer be re-checked"
        " (their content matches its erasure record)",
        "  erased by erasure 1: events seq 1, 3",
        "  erased by erasure 2: events seq 2",
        "2 requests erased: their signature can no longer be re-checked"
        " (their content matches its erasure record)",
        "  erased by erasure 1: requests id 2",
        "  erased by erasure 2: requests id 1",
    ]


def test_a_log_with_nothing_erased_says_nothing_of_erasures(backend: Backend) -> None:
    backend.append(bodies(2, 1))
    report = run_verify(backend)
    assert report.ok and report.erasure_lines() == []
    assert report.events.erased == {} and report.events.erased_rows == 0
    assert report.erasures is not None and report.erasures.rows == 0


def test_at_most_twenty_erased_keys_are_listed_per_erasure_and_all_are_counted(
    backend: Backend,
) -> None:
    backend.append([delivery(make_body(*(make_block() for _ in range(22))))])
    assert erase(backend, Scope(merchant_id=MERCHANT)) == 1
    report = run_verify(backend)
    assert report.ok and report.events.erased_rows == 22
    assert report.events.erased == {1: list(range(1, 21))}
    assert report.erasure_lines()[:2] == [
        "22 events erased: their origin can no longer be re-checked"
        " (their content matches its erasure record)",
        "  erased by erasure 1: events seq " + ", ".join(map(str, range(1, 21))),
    ]


def test_a_log_from_before_erasure_verifies_without_an_erasures_report(backend: Backend) -> None:
    backend.append(bodies(2, 1))
    raw(backend, "DROP TABLE erased_rows" + ("" if backend.url is None else " CASCADE"))
    report = run_verify(backend)
    assert report.ok and report.erasures is None and report.erasure_lines() == []


def test_an_altered_erasure_fails_the_erasures_chain(backend: Backend) -> None:
    erased_note_log(backend)
    raw(backend, "UPDATE erasures SET reason = 'another reason' WHERE id = 1")
    report = run_verify(backend)
    assert not report.ok
    assert report.erasures is not None and report.erasures.first_bad == 1
    assert report.erasures.problems == ["erasures id 1: content does not match its hash chain"]
    assert report.events.first_bad is None and report.requests.first_bad is None


def test_erased_content_changed_after_its_record_is_caught(backend: Backend) -> None:
    erased_note_log(backend)
    raw(backend, "UPDATE events SET block = ? WHERE seq = 3",
        (content_of(backend, "events", 3) + " ",))  # fmt: skip
    report = run_verify(backend)
    assert not report.ok and report.events.first_bad == 3
    assert report.events.problems == [
        "events seq 3: erased content does not match its erasure record"
    ]
    assert report.events.erased == {1: [1, 3]}  # still listed as erased


def test_erasure_records_that_do_not_follow_one_another_are_caught(backend: Backend) -> None:
    erased_note_log(backend, both=True)
    raw(backend, "UPDATE erased_rows SET original_digest = ?"
                 " WHERE log_table = 'requests' AND row_key = 1 AND erasure_id = 2",
        ("0" * 64,))  # fmt: skip
    report = run_verify(backend)
    assert report.requests.problems == [
        "requests id 1: erased content does not match its erasure record"
    ]
    assert report.requests.first_bad == 1 and report.events.first_bad is None


def test_an_erased_row_links_into_its_chain_with_its_first_records_digest(
    backend: Backend,
) -> None:
    erased_note_log(backend, both=True)
    raw(backend, "UPDATE erased_rows SET original_digest = ?"
                 " WHERE log_table = 'requests' AND row_key = 1 AND erasure_id = 1",
        ("0" * 64,))  # fmt: skip
    report = run_verify(backend)
    assert report.requests.problems == ["requests id 1: content does not match its hash chain"]


@pytest.mark.parametrize(
    ("seq", "change"),
    [
        (1, {"message_id": "another-message"}),
        (1, {"event_type": "note_update_data"}),
        (1, {"data_event": {"note_id": OTHER_NOTE}}),
        (1, {"data_event": {"merchant_id": OTHER_MERCHANT}}),
        (3, {"data_event": {"comment_id": "another-comment"}}),
        (3, {"data_event": {"note_id": NOTE}}),
        (1, {"data_event": {"action_time": 1669200440.5}}),
        (1, {"data_event": {"action_time": "1669200439.5"}}),
        (1, {"data_event": {"action_time": None}}),
        (1, {"data_event": {"event_detail": [{"field_key": "description", "add": ["x"]}]}}),
        (1, {"data_event": {"event_detail": ["description"]}}),
        (1, {"data_event": {"description": "call me"}}),
        (1, {"text": "call me"}),
    ],
)
def test_an_erased_event_must_hold_the_very_marker_of_its_erasure(
    backend: Backend, seq: int, change: dict[str, Any]
) -> None:
    erased_note_log(backend)
    forged = erased_block(backend, seq)
    forged.update({k: v for k, v in change.items() if k != "data_event"})
    forged["data_event"].update(change.get("data_event", {}))
    forge_erased(backend, "events", seq, marker(1, forged))
    report = run_verify(backend)
    assert report.events.problems == [f"events seq {seq}: {NOT_MARKER}"]
    assert report.events.first_bad == seq and report.requests.first_bad is None


@pytest.mark.parametrize(
    "text",
    [
        '{"erased":1,"message_id":"m"}',  # not the marker's prefix
        '{ "erased": 1, oops',  # the prefix, then no JSON
        "plain text that was never erased",
    ],
)
def test_an_erased_event_whose_content_is_no_marker_is_caught(backend: Backend, text: str) -> None:
    erased_note_log(backend)
    forge_erased(backend, "events", 1, text)
    assert run_verify(backend).events.problems == [f"events seq 1: {NOT_MARKER}"]


def test_an_erased_events_marker_must_name_its_last_erasure_in_text_and_json(
    backend: Backend,
) -> None:
    erased_note_log(backend)
    block = erased_block(backend, 1)
    forge_erased(backend, "events", 1, marker(2, block))
    assert run_verify(backend).events.problems == [f"events seq 1: {NOT_MARKER}"]
    text = marker_start(1) + compact_json({**block, "erased": 2})[1:]
    forge_erased(backend, "events", 1, text)
    assert run_verify(backend).events.problems == [f"events seq 1: {NOT_MARKER}"]


def test_a_marker_keeping_less_is_still_the_marker(backend: Backend) -> None:
    """The ids a marker keeps are checked when present, event_detail when present."""
    erased_note_log(backend)
    block = erased_block(backend, 1)
    del block["data_event"]["note_id"], block["data_event"]["event_detail"]
    forge_erased(backend, "events", 1, marker(1, block))
    report = run_verify(backend)
    assert report.ok, report.events.problems


def forged_out_of_scope(backend: Backend, seq: int) -> VerifyReport:
    """Event `seq` forged as erased by erasure 1, whose scope does not cover it: verify's
    report, which must name exactly that."""
    forge_erased(backend, "events", seq, marker(1, erased_like(backend, seq)), erasure_id=1)
    report = run_verify(backend)
    assert report.events.problems == [
        f"events seq {seq}: erased by an erasure whose scope does not cover it"
    ]
    return report


def test_a_record_for_a_row_its_erasure_does_not_cover_is_caught(backend: Backend) -> None:
    erased_note_log(backend)
    report = forged_out_of_scope(backend, 2)
    assert report.events.erased == {1: [1, 2, 3]}


def test_a_stray_tombstone_row_of_another_merchant_widens_no_scope(backend: Backend) -> None:
    erased_note_log(backend)
    raw(backend, "INSERT INTO tombstones (erasure_id, merchant_id, entity_id) VALUES (?, ?, ?)",
        (1, OTHER_MERCHANT, OTHER_NOTE))  # fmt: skip
    forged_out_of_scope(backend, 2)


def test_a_tombstone_row_of_the_erasures_merchant_adds_a_comment_to_its_scope(
    backend: Backend,
) -> None:
    """What erasure_scopes reads: the comments a note's tombstone holds (a comment created
    after the erasure is added so); a comment id in a tombstone covers that comment."""
    erased_note_log(backend)
    comment = make_block("note_comment_create", comment_id="comment-later")
    backend.append([delivery(make_body(comment))])
    raw(backend, "INSERT INTO tombstones (erasure_id, merchant_id, entity_id) VALUES (?, ?, ?)",
        (1, MERCHANT, "comment-later"))  # fmt: skip
    forge_erased(backend, "events", 4, marker(1, erased_like(backend, 4)), erasure_id=1)
    report = run_verify(backend)
    assert report.events.problems == [], report.events.problems


def test_a_record_of_an_erasure_that_is_not_recorded_is_caught(backend: Backend) -> None:
    erased_note_log(backend)
    forge_erased(backend, "events", 2, marker(9, erased_like(backend, 2)), erasure_id=9)
    forge_erased(backend, "requests", 2, redacted_text(9, "body").encode(), erasure_id=9)
    report = run_verify(backend)
    assert report.events.problems == ["events seq 2: erased by an erasure that is not recorded"]
    assert report.requests.problems == ["requests id 2: erased by an erasure that is not recorded"]


def erased_like(backend: Backend, seq: int) -> dict[str, Any]:
    """The marker eventlog.redaction would write for event `seq` (without `erased`)."""
    from eventlog.redaction import redacted_block

    parsed = loads_strict(redacted_block(loads_strict(content_of(backend, "events", seq)), 0))
    del parsed["erased"]
    return dict(parsed)


def body_marker_block(backend: Backend, request_id: int) -> dict[str, Any]:
    return dict(loads_strict(content_of(backend, "requests", request_id)))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (redacted_text(1, "body"), None),  # a whole body replaced: fine
        (redacted_text(2, "body"), NOT_MARKER),
        (redacted_text(1, "payload"), NOT_MARKER),
        (marker(1, {"redacted": "body", "content_hash": None, "more": 1}), NOT_MARKER),
        ('{ "erased": 1, oops', NOT_MARKER),
        (
            '{"merchant_id": "m"}',
            "erased content is neither a marker nor an envelope with blocks erased",
        ),
        (
            '{"block_event": {}}',
            "erased content is neither a marker nor an envelope with blocks erased",
        ),
        ("[1, 2]", "erased content is neither a marker nor an envelope with blocks erased"),
        ("not json", "erased content is neither a marker nor an envelope with blocks erased"),
    ],
)
def test_an_erased_body_must_be_its_erasures_marker_or_an_envelope(
    backend: Backend, content: str, problem: str | None
) -> None:
    erased_note_log(backend)
    forge_erased(backend, "requests", 2, content.encode())
    report = run_verify(backend)
    assert report.requests.problems == ([f"requests id 2: {problem}"] if problem else [])
    assert report.events.first_bad is None


def test_a_whole_body_marker_of_an_older_than_erasure_is_not_its_marker(backend: Backend) -> None:
    """An --older-than erasure never replaces a body whole (it cannot tell what an unreadable
    body holds): a record of one for a whole-body marker is forged."""
    erased_note_log(backend)
    assert erase(backend, Scope(before=1.0)) == 2  # covers nothing
    forge_erased(backend, "requests", 2, redacted_text(2, "body").encode(), erasure_id=2)
    assert run_verify(backend).requests.problems == [f"requests id 2: {NOT_MARKER}"]


def envelope_with(backend: Backend, request_id: int, blocks: list[Any], **more: Any) -> bytes:
    envelope = body_marker_block(backend, request_id)
    envelope["block_event"] = blocks
    envelope.update(more)
    return compact_json(envelope).encode()


@pytest.mark.parametrize(
    ("edit_blocks", "problem"),
    [
        ("a marker of erasure 2", "holds a marker of an erasure that did not erase it"),
        ("a marker with a field kept", "holds a marker of an erasure that did not erase it"),
        ("another note's marker", "holds a marker of an erasure whose scope does not cover it"),
        ("another merchant's marker", "holds a marker of an erasure whose scope does not cover it"),
        ("no marker", "erased content does not hold its erasure's marker"),
        ("the envelope's merchant", None),
    ],
)
def test_an_erased_envelopes_markers_must_be_its_erasures_and_covered(
    backend: Backend, edit_blocks: str, problem: str | None
) -> None:
    erased_note_log(backend)
    [comment] = body_marker_block(backend, 2)["block_event"]  # erasure 1's marker
    other = {k: v for k, v in comment.items() if k != "erased"}
    more: dict[str, Any] = {}
    if edit_blocks == "a marker of erasure 2":
        blocks = [comment, {**comment, "erased": 2}]
    elif edit_blocks == "a marker with a field kept":
        blocks = [comment, {**comment, "data_event": {**comment["data_event"], "text": "hi"}}]
    elif edit_blocks == "another note's marker":
        blocks = [comment, {**comment, "data_event": {"note_id": OTHER_NOTE,
                                                      "merchant_id": MERCHANT}}]  # fmt: skip
    elif edit_blocks == "another merchant's marker":
        data = {k: v for k, v in comment["data_event"].items() if k != "merchant_id"}
        blocks = [{**comment, "data_event": data}]
        more = {"merchant_id": OTHER_MERCHANT}  # the block names none: the envelope's counts
    elif edit_blocks == "no marker":
        blocks = [other]
    else:  # a marker naming no merchant, under the erasure's merchant's envelope: covered
        data = {k: v for k, v in comment["data_event"].items() if k != "merchant_id"}
        blocks = [{**comment, "data_event": data}, make_block()]
    forge_erased(backend, "requests", 2, envelope_with(backend, 2, blocks, **more))
    report = run_verify(backend)
    assert report.requests.problems == ([f"requests id 2: {problem}"] if problem else [])


def test_an_erased_comment_naming_its_note_keeps_the_notes_id_in_its_marker(
    backend: Backend,
) -> None:
    comment = make_block("note_comment_create", comment_id=COMMENT, note_id=NOTE,
                         event_detail=[detail("object_id", NOTE)])  # fmt: skip
    backend.append([delivery(make_body(comment))])
    assert erase(backend, Scope(merchant_id=MERCHANT, note_id=NOTE)) == 1
    assert erased_block(backend, 1)["data_event"]["note_id"] == NOTE
    report = run_verify(backend)
    assert report.ok, report.events.problems
    assert report.events.erased == {1: [1]}


def test_an_older_than_erasure_verifies_and_covers_only_what_is_older(backend: Backend) -> None:
    old = make_block(note_id=NOTE, action_time=1669200400.0)
    new = make_block(note_id=OTHER_NOTE, action_time=1669200500.0)
    backend.append([delivery(make_body(old, new))])
    assert erase(backend, Scope(before=1669200450.0)) == 1
    report = run_verify(backend)
    assert report.ok, (report.events.problems, report.requests.problems)
    assert report.events.erased == {1: [1]} and report.requests.erased == {1: [1]}
    forged_out_of_scope(backend, 2)


def test_a_tombstone_row_naming_no_entity_under_a_notes_erasure_covers_nothing_more(
    backend: Backend,
) -> None:
    """Only a row naming a comment adds to a note's scope: one naming no entity (as a
    merchant's tombstone does) does not make every comment of the merchant covered."""
    erased_note_log(backend)
    backend.append([delivery(make_body(make_block("note_comment_create", comment_id="c-9")))])
    raw(backend, "INSERT INTO tombstones (erasure_id, merchant_id, entity_id) VALUES (?, ?, ?)",
        (1, MERCHANT, None))  # fmt: skip
    forged_out_of_scope(backend, 4)
