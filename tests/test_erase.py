"""notestore erase on SQLite and PostgreSQL: the erased text is gone from every log table and
every view, the chain still verifies (and still catches tampering), tombstones keep later
deliveries redacted, and the database lets no other change through."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from app.cli import main
from app.commands.erase import follow_views, open_log_owner
from app.commands.operations import signer_for
from app.config import Settings
from eventlog import chain, pg_schema
from eventlog.canonical import compact_json, loads_strict
from eventlog.erase import count, erase_rows, record_erasure, with_comments
from eventlog.intake import Rejected
from eventlog.redaction import MARKER_PREFIX, Scope, redact_body, redact_payload, redacted_block
from eventlog.spool import SPOOL_FILE, Spool
from eventlog.verify import VerifyReport, verify_log
from projections.store import VIEWS_SCHEMA
from tests.helpers import MERCHANT, SECRETS, make_block, make_body
from tests.ops_kit import Backend, delivery_of
from tests.server import write_config

pytestmark = pytest.mark.backends("sqlite", "postgresql")

MARK = "zebra-quokka-7781"  # the personal data: lower case, unique, and a phone number
PHONE = "+84 912 345 678"
OTHER_MARK = "walrus-heron-5523"
NOTE, OTHER_NOTE, COMMENT = (
    "6510aa00000000000000a001",
    "6510aa00000000000000b002",
    "6510cc00000000000000c001",
)
OTHER_MERCHANT = "2c00d0a1-0000-4000-8000-00000000beef"
LOG_TABLES = (*pg_schema.LOG_TABLES, *pg_schema.ERASURE_TABLES)


def _detail(key: str, value: Any) -> dict[str, Any]:
    return {"field_key": key, "add": [value], "change": [], "remove": []}


def note_bodies(
    note: str = NOTE, merchant: str = MERCHANT, mark: str = MARK
) -> list[dict[str, Any]]:
    """A note (description and a mention naming `mark`, and a phone number), an update sent
    together with another note of the same merchant, a comment on it and the comment's edit."""
    create = make_block(note_id=note, merchant_id=merchant, event_detail=[
        _detail("description", f"<div>call {mark} at {PHONE}</div>"),
        {"field_key": "account_mentions", "add": [[f"{mark}-account"]]},
    ])  # fmt: skip
    update = make_block("note_update_data", note_id=note, merchant_id=merchant,
                        action_time=1669200500.0,
                        event_detail=[_detail("description", f"{mark} again, {PHONE}")])  # fmt: skip
    other = make_block(note_id=OTHER_NOTE, merchant_id=merchant,
                       event_detail=[_detail("description", "the other note stays")])  # fmt: skip
    comment = make_block("note_comment_create", comment_id=COMMENT, merchant_id=merchant,
                         event_detail=[_detail("object_id", note),
                                       _detail("description", f"{mark}: {PHONE}")])  # fmt: skip
    edit = make_block("note_comment_update_data", comment_id=COMMENT, merchant_id=merchant,
                      action_time=1669200600.0,
                      event_detail=[_detail("description", f"edited {mark}")])  # fmt: skip
    bodies = [make_body(create), make_body(update, other), make_body(comment), make_body(edit)]
    for body in bodies:
        body["merchant_id"] = merchant
    return bodies


def backend(settings: Settings) -> Backend:
    return Backend(settings.data_dir, settings.database_url)


def log_text(settings: Settings) -> str:
    """Every value of every row of every log table, as text (bytes decoded)."""
    conn = settings.storage.log_reader()
    try:
        texts = []
        for table in LOG_TABLES:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for value in row:
                    is_bytes = isinstance(value, bytes | memoryview)
                    texts.append(
                        bytes(value).decode("utf-8", "replace") if is_bytes else str(value)
                    )
        return "\n".join(texts)
    finally:
        conn.close()


def views_text(settings: Settings) -> str:
    """Every value of every table of the views."""
    conn = settings.storage.views()
    try:
        if settings.database_url is None:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
        else:
            names = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                (VIEWS_SCHEMA,),
            )]  # fmt: skip
        return "\n".join(
            str(value)
            for name in names
            for row in conn.execute(f'SELECT * FROM "{name}"')
            for value in row
        )
    finally:
        conn.close()


def erase(settings: Settings, tmp_path: Path, *args: str, answer: str | None = None) -> int:
    """`notestore erase` in process, on the test's backend (--yes unless an answer is typed)."""
    more = {"database_url": settings.database_url} if settings.database_url else {}
    config = write_config(tmp_path, SECRETS, **more)
    argv = ["erase", "--config", str(config), "--reason", "an erasure request", *args]
    if answer is None:
        return main([*argv, "--yes"])
    stdin = io.StringIO(answer + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", stdin)
        return main(argv)


def verify(settings: Settings) -> VerifyReport:
    conn = settings.storage.log_reader()
    try:
        return verify_log(conn, signer_for(settings))
    finally:
        conn.close()


def erased_note(settings: Settings, tmp_path: Path) -> list[dict[str, Any]]:
    """The note's bodies appended, then the note erased; the bodies."""
    bodies = note_bodies()
    backend(settings).append_bodies(bodies)
    assert MARK in log_text(settings) and PHONE in log_text(settings)
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0
    return bodies


def test_erase_note_leaves_its_text_in_no_log_table_and_verify_lists_the_erased_rows(
    settings: Settings, tmp_path: Path
) -> None:
    """The note's and its comment's events (the comment's edit names no note) and the four
    requests that carried them are redacted; the chain verifies and names the erasure."""
    erased_note(settings, tmp_path)
    text = log_text(settings)
    assert MARK not in text and PHONE not in text
    report = verify(settings)
    assert report.ok, report
    assert (report.events.erased_rows, report.requests.erased_rows) == (4, 4)
    assert report.events.erased == {1: [1, 2, 4, 5]}
    lines = "\n".join(report.erasure_lines())
    assert "erased by erasure 1: events seq 1, 2, 4, 5" in lines
    assert "signature can no longer be re-checked" in lines


def test_notestore_verify_prints_the_erased_rows_and_passes(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    erased_note(settings, tmp_path)
    capsys.readouterr()
    config = tmp_path / "notestore.toml"  # written by erase()
    assert main(["verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4 events erased: their origin can no longer be re-checked" in out
    assert "4 requests erased: their signature can no longer be re-checked" in out
    assert "erased by erasure 1: requests id 1, 2, 3, 4" in out
    assert "OK: the log verifies" in out


def test_a_request_that_carried_two_notes_keeps_the_other_notes_block(
    settings: Settings, tmp_path: Path
) -> None:
    erased_note(settings, tmp_path)
    conn = settings.storage.log_reader()
    try:
        other_block = conn.execute("SELECT block FROM events WHERE seq = 3").fetchone()[0]
        body = bytes(conn.execute("SELECT body FROM requests WHERE id = 2").fetchone()[0])
    finally:
        conn.close()
    assert OTHER_NOTE in other_block and not other_block.startswith(MARKER_PREFIX)
    assert other_block.encode() in body  # byte for byte, inside the re-encoded body
    assert f'{MARKER_PREFIX}1, "message_id"'.encode() in body
    assert "the other note stays" in views_text(settings)


def test_altering_an_erased_row_afterwards_fails_verify(settings: Settings, tmp_path: Path) -> None:
    erased_note(settings, tmp_path)
    backend(settings).tamper("UPDATE events SET block = block || ' ' WHERE seq = 2")
    report = verify(settings)
    assert not report.ok
    assert (
        "events seq 2: erased content does not match its erasure record" in report.events.problems
    )


def test_the_database_lets_no_other_update_through(settings: Settings, tmp_path: Path) -> None:
    """Even with a recorded erasure named: a row it does not cover, a column other than the
    content, or content that is not its marker, is refused."""
    erased_note(settings, tmp_path)
    marker = f'{MARKER_PREFIX}1, "x": 1}}'
    attempts = [
        ("UPDATE events SET block = ? WHERE seq = 3", (marker,)),  # the other note: not covered
        ("UPDATE events SET action_time = 0 WHERE seq = 2", ()),
        ("UPDATE events SET block = '{}' WHERE seq = 2", ()),
        ("UPDATE requests SET body = ? WHERE id = 2", (b"{}",)),
        ("DELETE FROM events WHERE seq = 2", ()),
    ]
    for statement, params in attempts:
        with pytest.raises((errors.InsufficientPrivilege, sqlite3.IntegrityError)) as refused:
            _as_owner_naming_erasure(settings, statement, params)
        assert "append-only" in str(refused.value)
    assert verify(settings).ok


def _as_owner_naming_erasure(settings: Settings, statement: str, params: tuple[Any, ...]) -> None:
    if settings.database_url is None:
        with sqlite3.connect(settings.data_dir / "events.db") as lite:
            lite.execute(statement, params)
        return
    with psycopg.connect(settings.database_url, autocommit=True) as pg, pg.transaction():
        pg.execute("SELECT set_config('notestore.erasure', '1', true)")
        pg.execute(statement.replace("?", "%s").encode(), params)


def test_redelivering_the_original_requests_after_the_erasure_stores_nothing_readable(
    settings: Settings, tmp_path: Path
) -> None:
    bodies = erased_note(settings, tmp_path)
    events_before = log_text(settings).count("\n")
    backend(settings).append_bodies(bodies)  # the same bodies again, received anew
    text = log_text(settings)
    assert MARK not in text and PHONE not in text
    assert text.count("\n") > events_before  # the requests were stored, redacted
    report = verify(settings)
    assert report.ok, report
    assert report.requests.erased_rows == 8 and report.events.rows == 5  # duplicates


def test_a_comment_created_on_the_erased_note_later_is_stored_redacted_and_so_are_its_edits(
    settings: Settings, tmp_path: Path
) -> None:
    """A comment names its note only when created: its edit is caught by its id, which the
    tombstone took when the creation arrived."""
    erased_note(settings, tmp_path)
    late = "6510cc00000000000000c0de"
    create = make_block("note_comment_create", comment_id=late, event_detail=[
        _detail("object_id", NOTE), _detail("description", f"late {MARK}")])  # fmt: skip
    edit = make_block("note_comment_update_data", comment_id=late, action_time=1669200900.0,
                      event_detail=[_detail("description", f"edited late {MARK}")])  # fmt: skip
    backend(settings).append_bodies([make_body(create)])
    backend(settings).append_bodies([make_body(edit)])
    assert MARK not in log_text(settings)
    report = verify(settings)
    assert report.ok and report.events.erased == {1: [1, 2, 4, 5, 6, 7]}


def test_erase_merchant_leaves_nothing_of_its_text_and_a_later_event_is_stored_redacted(
    settings: Settings, tmp_path: Path
) -> None:
    log = backend(settings)
    log.append_bodies(note_bodies())
    log.append_bodies(note_bodies("6510aa00000000000000f00d", OTHER_MERCHANT, OTHER_MARK))
    assert erase(settings, tmp_path, "--merchant", MERCHANT) == 0
    assert MARK not in log_text(settings) and OTHER_MARK in log_text(settings)
    later = make_block(note_id="6510aa00000000000000e00e", event_detail=[
        _detail("description", f"later {MARK}")])  # fmt: skip
    log.append_bodies([make_body(later)])
    assert MARK not in log_text(settings)
    assert f"{MARKER_PREFIX}1, " in log_text(settings)
    assert verify(settings).ok
    assert OTHER_MARK in views_text(settings) and MARK not in views_text(settings)


def test_older_than_redacts_only_older_events_and_leaves_no_tombstone(
    settings: Settings, tmp_path: Path
) -> None:
    now = time.time()
    old = make_block(note_id=NOTE, action_time=now - 400 * 86_400,
                     event_detail=[_detail("description", f"old {MARK}")])  # fmt: skip
    new = make_block("note_update_data", note_id=NOTE, action_time=now - 10 * 86_400,
                     event_detail=[_detail("description", f"new {OTHER_MARK}")])  # fmt: skip
    log = backend(settings)
    log.append_bodies([make_body(old, new)])
    assert erase(settings, tmp_path, "--older-than", "365") == 0
    text = log_text(settings)
    assert MARK not in text and OTHER_MARK in text
    again = make_block(note_id=OTHER_NOTE, action_time=now - 500 * 86_400,
                       event_detail=[_detail("description", f"kept {MARK}")])  # fmt: skip
    log.append_bodies([make_body(again)])
    assert f"kept {MARK}" in log_text(settings)  # no tombstone: later events are kept
    report = verify(settings)
    assert report.ok and report.events.erased == {1: [1]}
    assert f"new {OTHER_MARK}" in views_text(settings) and f"old {MARK}" not in views_text(settings)


def test_the_views_after_the_erasure_hold_no_trace_of_the_note(
    settings: Settings, tmp_path: Path
) -> None:
    """Erased events fold into nothing: the note is kept only as erased (it answers 410),
    with no text, no mention, no search document, no comment in its thread; the other note
    is as it was."""
    backend(settings).append_bodies(note_bodies())
    follow_views(settings)
    assert MARK in views_text(settings) and NOTE in views_text(settings)
    erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT)
    text = views_text(settings)
    assert MARK not in text and PHONE not in text
    assert OTHER_NOTE in text
    views = settings.storage.views()
    try:
        one = views.execute
        assert one("SELECT note_id, erased FROM notes ORDER BY note_id").fetchall() == [
            (NOTE, 1),
            (OTHER_NOTE, 0),
        ]
        assert one("SELECT note_id FROM comments WHERE comment_id = ?", (COMMENT,)).fetchall() == [
            (None,)
        ]
        for table in ("mentions", "search_docs", "note_links"):
            found = one(f"SELECT count(*) FROM {table} WHERE note_id = ?", (NOTE,)).fetchone()
            assert found[0] == 0, table
    finally:
        views.close()


def test_erase_asks_first_and_erases_nothing_unless_told_yes(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend(settings).append_bodies(note_bodies())
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT, answer="no") == 1
    out = capsys.readouterr().out
    assert "4 events, 4 requests, 0 quarantine" in out and "nothing erased" in out
    assert MARK in log_text(settings)
    assert verify(settings).erasures is not None and verify(settings).erasures.rows == 0  # type: ignore[union-attr]


@pytest.mark.backends("postgresql")
def test_the_owner_erases_while_the_service_role_cannot_perform_the_update(
    pg_database: Any, tmp_path: Path
) -> None:
    """As deployed: migrate and erase as the owner (--database-url), serve's role appends
    and owns the views (rebuilt through the configured URL); that role is refused the
    erasure's UPDATE even in a transaction naming the erasure, and cannot record one."""
    owner, service = pg_database.role("owner"), pg_database.role("service")
    with psycopg.connect(pg_database.url, autocommit=True) as admin:
        pg_schema.create_roles(admin, owner, service, "svc-pw", owner_password="owner-pw")
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(pg_database.name), sql.Identifier(owner)))  # fmt: skip
    owner_url = pg_database.url_as(owner, "owner-pw")
    service_url = pg_database.url_as(service, "svc-pw")
    config = write_config(tmp_path, SECRETS, database_url=service_url)
    assert main(["migrate", "--config", str(config), "--database-url", owner_url,
                 "--service-role", service]) == 0  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", database_url=service_url, apps=SECRETS)
    store = settings.storage.log_store()
    store.append([delivery_of(body) for body in note_bodies()])
    store.close()
    follow_views(settings)
    assert main(["erase", "--config", str(config), "--database-url", owner_url, "--merchant",
                 MERCHANT, "--reason", "contract ended", "--yes"]) == 0  # fmt: skip
    assert MARK not in log_text(settings) and MARK not in views_text(settings)
    assert verify(settings).ok
    with psycopg.connect(service_url, autocommit=True) as conn:
        for statement in (
            f"UPDATE events SET block = '{MARKER_PREFIX}1, \"x\": 1}}' WHERE seq = 3",
            "UPDATE erasures SET reason = 'x'",
            "INSERT INTO erasures (id, at, reason, counts, hash) VALUES (9, 0, 'r', '{}', 'h')",
        ):
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SELECT set_config('notestore.erasure', '1', true)")
                conn.execute(statement.encode())


# --- quarantine payloads: only what the scope covers, ids matched exactly (finding A) ------


def _quarantine(settings: Settings, payload: str, kind: str = "body") -> None:
    store = settings.storage.log_store()
    try:
        store.quarantine(Rejected("app_mismatch", "test", payload, kind), time.time())
    finally:
        store.close()


def _payloads(settings: Settings) -> list[str]:
    conn = settings.storage.log_reader()
    try:
        return [r[0] for r in conn.execute("SELECT payload FROM quarantine ORDER BY id")]
    finally:
        conn.close()


def test_a_quarantined_body_keeps_the_blocks_of_the_notes_not_erased(
    settings: Settings, tmp_path: Path
) -> None:
    """A body in quarantine that carried the erased note and another one: only the erased
    note's block becomes a marker; the other note's block stays as it was."""
    note = make_block(note_id=NOTE, event_detail=[_detail("description", f"{MARK} {PHONE}")])
    other = make_block(note_id=OTHER_NOTE, event_detail=[_detail("description", OTHER_MARK)])
    backend(settings).append_bodies(note_bodies())
    _quarantine(settings, compact_json(make_body(note, other)))
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0
    (payload,) = _payloads(settings)
    assert MARK not in payload and PHONE not in payload
    assert compact_json(other) in payload and OTHER_MARK in payload
    assert f'{MARKER_PREFIX}1, "message_id"' in payload
    assert verify(settings).ok


def test_a_quarantined_payload_naming_longer_ids_is_not_erased(
    settings: Settings, tmp_path: Path
) -> None:
    """Ids are matched whole: an erasure of note N of merchant M leaves a payload about note
    N + "2" of merchant M + "0", readable or not."""
    longer_merchant, longer_note = MERCHANT + "0", NOTE + "2"
    block = make_block(note_id=longer_note, merchant_id=longer_merchant,
                       event_detail=[_detail("description", OTHER_MARK)])  # fmt: skip
    body = make_body(block)
    body["merchant_id"] = longer_merchant
    readable = compact_json(body)
    backend(settings).append_bodies(note_bodies())
    _quarantine(settings, readable)
    _quarantine(settings, readable[:-7])  # cut short: cannot be read
    _quarantine(settings, compact_json(block), kind="block")
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0
    assert _payloads(settings) == [readable, readable[:-7], compact_json(block)]


def test_an_unreadable_quarantined_body_naming_the_ids_exactly_is_replaced_whole(
    settings: Settings, tmp_path: Path
) -> None:
    text = f'{{"merchant_id":"{MERCHANT}","block_event":[{{"note_id":"{NOTE}","x":"{MARK}"'
    backend(settings).append_bodies(note_bodies())
    _quarantine(settings, text)
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0
    (payload,) = _payloads(settings)
    assert payload.startswith(f"{MARKER_PREFIX}1, ") and MARK not in payload


def test_redact_payload_matches_ids_whole() -> None:
    scope = Scope("m1", "n1")
    assert redact_payload('{"merchant_id":"m10","note_id":"n12"', "body", [(1, scope)], "h") is None
    assert redact_payload('{"merchant_id":"m1","note_id":"n1"', "body", [(1, scope)], "h")
    assert redact_payload('{"a":"m1","b":"n12"}', "body", [(1, scope)], "h") is None


# --- the database's one UPDATE, tightened (finding D) ----------------------------------------


def test_the_database_refuses_a_body_that_keeps_its_text_and_a_second_redaction(
    settings: Settings, tmp_path: Path
) -> None:
    """A body with the marker appended (its personal data kept), an erased block rewritten
    again, and a quarantine item redacted again are refused, even though each row has its
    erased_rows record."""
    erased_note(settings, tmp_path)
    conn = settings.storage.log_reader()
    try:
        body = bytes(conn.execute("SELECT body FROM requests WHERE id = 3").fetchone()[0])
        block = conn.execute("SELECT block FROM events WHERE seq = 2").fetchone()[0]
    finally:
        conn.close()
    appended = bytes(note_bodies()[0]["merchant_id"].encode()) + body  # not an envelope
    attempts = [
        ("UPDATE requests SET body = ? WHERE id = 3", (body + f"{MARKER_PREFIX}1, ".encode(),)),
        ("UPDATE requests SET body = ? WHERE id = 3", (appended,)),
        ("UPDATE events SET block = ? WHERE seq = 2", (block.replace("note_update", "note_x"),)),
        ("UPDATE events SET block = ? WHERE seq = 2", (block + " ",)),
    ]
    for statement, params in attempts:
        with pytest.raises((errors.InsufficientPrivilege, sqlite3.IntegrityError)) as refused:
            _as_owner_naming_erasure(settings, statement, params)
        assert "append-only" in str(refused.value)
    assert verify(settings).ok


# --- the command refuses what would erase everything or nothing meant (finding B) ---------


@pytest.mark.parametrize(
    "args",
    [
        ("--merchant", ""),
        ("--merchant", "   "),
        ("--note", "", "--merchant", MERCHANT),
        ("--note", " \t", "--merchant", MERCHANT),
        ("--older-than", "nan"),
        ("--older-than", "inf"),
        ("--older-than=-inf",),
        ("--older-than", "1e6"),
        ("--older-than", "0"),
        ("--older-than", "-3"),
        ("--older-than", "30", "--merchant", ""),
    ],
)
def test_erase_refuses_empty_ids_and_days_that_are_not_a_sane_number(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    backend(settings).append_bodies(note_bodies())
    capsys.readouterr()
    assert erase(settings, tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("notestore erase: ") and "\n" not in err, err
    assert MARK in log_text(settings)
    assert verify(settings).erasures.rows == 0  # type: ignore[union-attr]


@pytest.mark.backends("postgresql")
def test_quarantining_on_postgresql_waits_for_the_append_lock(settings: Settings) -> None:
    """An erasure records its tombstone under the append lock: an item quarantined meanwhile
    must wait for it (finding F), or it could be stored unredacted after the erasure's scan."""
    import threading

    from eventlog.pg_log import APPEND_LOCK

    backend(settings).append_bodies(note_bodies())
    done = threading.Event()

    def put() -> None:
        _quarantine(settings, '{"not": "an envelope"}')
        done.set()

    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as holder:
        with holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            worker = threading.Thread(target=put)
            worker.start()
            assert not done.wait(1.0)  # held back by the lock
        worker.join(10)
    assert done.is_set() and len(_payloads(settings)) == 1


def test_a_tombstone_row_its_erasure_does_not_name_is_ignored(
    settings: Settings, tmp_path: Path
) -> None:
    """Tombstones take their merchant from the erasure (finding G): a row added to an
    --older-than erasure (which names no merchant and leaves no tombstone), or naming another
    merchant than its erasure, does not make later events of that merchant stored redacted."""
    log = backend(settings)
    log.append_bodies(note_bodies())
    assert erase(settings, tmp_path, "--older-than", "36000") == 0
    assert erase(settings, tmp_path, "--merchant", OTHER_MERCHANT) == 0
    later_note = "6510aa00000000000000e00e"
    for erasure, entity in ((1, "NULL"), (2, f"'{later_note}'")):
        log.tamper(
            "INSERT INTO tombstones (erasure_id, merchant_id, entity_id)"
            f" VALUES ({erasure}, '{MERCHANT}', {entity})"
        )
    later = make_block(note_id=later_note, event_detail=[
        _detail("description", f"later {OTHER_MARK}")])  # fmt: skip
    log.append_bodies([make_body(later)])
    assert f"later {OTHER_MARK}" in log_text(settings)


# --- verify: an erasure record must stand for a real erasure of that row (finding C) -------


def _forge_erasure_record(
    settings: Settings, table: str, key: int, content: str | bytes, erasure: int = 1
) -> None:
    """As an attacker with INSERT on erased_rows: a record for a row, and the row's content
    changed to `content` with the digest the record names."""
    column, name = ("block", "seq") if table == "events" else ("body", "id")
    conn = settings.storage.log_reader()
    try:
        old = conn.execute(f"SELECT {column} FROM {table} WHERE {name} = ?", (key,)).fetchone()[0]
    finally:
        conn.close()
    old_digest = chain.digest(bytes(old) if table == "requests" else old)
    log = backend(settings)
    log.tamper(
        "INSERT INTO erased_rows (erasure_id, log_table, row_key, original_digest,"
        f" redacted_digest) VALUES ({erasure}, '{table}', {key}, '{old_digest}',"
        f" '{chain.digest(content)}')"
    )
    literal = (
        f"X'{content.hex()}'"
        if isinstance(content, bytes)
        else "'" + content.replace("'", "''") + "'"
    )
    pg_literal = f"'\\x{content.hex()}'::bytea" if isinstance(content, bytes) else literal
    log.tamper(
        f"UPDATE {table} SET {column} = {literal} WHERE {name} = {key}",
        f"UPDATE {table} SET {column} = {pg_literal} WHERE {name} = {key}",
    )


def test_verify_refuses_an_erasure_record_added_for_a_row_its_erasure_does_not_cover(
    settings: Settings, tmp_path: Path
) -> None:
    """The other note's event (seq 3) given a record of erasure 1 and forged text, or the
    marker erasure 1 would write for it: it is not covered, so verify reports it."""
    erased_note(settings, tmp_path)
    conn = settings.storage.log_reader()
    try:
        block = conn.execute("SELECT block FROM events WHERE seq = 3").fetchone()[0]
    finally:
        conn.close()
    _forge_erasure_record(settings, "events", 3, redacted_block(loads_strict(block), 1))
    report = verify(settings)
    assert not report.ok
    assert report.events.problems == [
        "events seq 3: erased by an erasure whose scope does not cover it"
    ]


def test_verify_refuses_forged_text_behind_an_erasure_record(
    settings: Settings, tmp_path: Path
) -> None:
    """An erasure (2) of the other note is recorded but its rows not yet redacted: a record
    of it added by hand for its event with forged text, or for its request with the marker
    appended to the body (the personal data kept), fails verify."""
    erased_note(settings, tmp_path)
    log = open_log_owner(settings, settings.database_url)
    try:
        scope = with_comments(log, Scope(MERCHANT, OTHER_NOTE))
        record_erasure(log, scope, "test", {})
    finally:
        log.close()
    conn = settings.storage.log_reader()
    try:
        body = bytes(conn.execute("SELECT body FROM requests WHERE id = 2").fetchone()[0])
    finally:
        conn.close()
    _forge_erasure_record(settings, "events", 3, "forged text", erasure=2)
    _forge_erasure_record(settings, "requests", 2, body + f"{MARKER_PREFIX}2, ".encode(), 2)
    report = verify(settings)
    assert not report.ok
    assert report.events.problems == [
        "events seq 3: erased content is not the marker of its erasure"
    ]
    assert report.requests.problems == [
        "requests id 2: erased content is neither a marker nor an envelope with blocks erased"
    ]


# --- a comment created while the operator confirms (finding E) ------------------------------


def test_a_comment_created_between_the_count_and_the_erasure_is_erased_and_stays_so(
    settings: Settings, tmp_path: Path
) -> None:
    """The comments are found again under the erasure's lock: a comment created on the note
    after the operator saw the counts is tombstoned and redacted, and so is its later edit
    (which names no note)."""
    log = backend(settings)
    log.append_bodies(note_bodies())
    owner = open_log_owner(settings, settings.database_url)
    try:
        scope = with_comments(owner, Scope(MERCHANT, NOTE))
        count(owner, scope)  # what the operator is shown
        late = "6510cc00000000000000c0de"
        create = make_block("note_comment_create", comment_id=late, event_detail=[
            _detail("object_id", NOTE), _detail("description", f"late {OTHER_MARK}")])  # fmt: skip
        log.append_bodies([make_body(create)])  # meanwhile, through serve
        erasure = record_erasure(owner, scope, "test", {})
        erase_rows(owner, erasure)
    finally:
        owner.close()
    assert late in erasure.scope.comments
    edit = make_block("note_comment_update_data", comment_id=late, action_time=1669200900.0,
                      event_detail=[_detail("description", f"edited {OTHER_MARK}")])  # fmt: skip
    log.append_bodies([make_body(edit)])
    assert OTHER_MARK not in log_text(settings) and MARK not in log_text(settings)
    report = verify(settings)
    assert report.ok, report
    assert report.events.erased == {1: [1, 2, 4, 5, 6, 7]}


def test_the_database_matches_an_erasures_ids_whole_not_as_substrings(
    settings: Settings, tmp_path: Path
) -> None:
    """An erasure of merchant M[:-1] (a prefix of M) with a record for a request of M may not
    splice that request: its body names M, not M[:-1], as a whole JSON string (finding D)."""
    backend(settings).append_bodies(note_bodies())
    owner = open_log_owner(settings, settings.database_url)
    try:
        record_erasure(owner, Scope(MERCHANT[:-1]), "a prefix of the merchant", {})
    finally:
        owner.close()
    conn = settings.storage.log_reader()
    try:
        body = bytes(conn.execute("SELECT body FROM requests WHERE id = 1").fetchone()[0])
    finally:
        conn.close()
    spliced = redact_body(body, [(1, Scope(MERCHANT))])
    assert spliced is not None
    _insert_record(settings, body, spliced)
    with pytest.raises((errors.InsufficientPrivilege, sqlite3.IntegrityError)) as refused:
        _as_owner_naming_erasure(settings, "UPDATE requests SET body = ? WHERE id = 1", (spliced,))
    assert "append-only" in str(refused.value)


def _insert_record(settings: Settings, body: bytes, spliced: bytes) -> None:
    """A record for request 1 under erasure 1, inserted as the owner may (triggers kept)."""
    insert = (
        "INSERT INTO erased_rows (erasure_id, log_table, row_key, original_digest,"
        " redacted_digest) VALUES (1, 'requests', 1, ?, ?)"
    )
    digests = (chain.digest(body), chain.digest(spliced))
    if settings.database_url is None:
        with sqlite3.connect(settings.data_dir / "events.db") as lite:
            lite.execute(insert, digests)
        return
    with psycopg.connect(settings.database_url, autocommit=True) as pg:
        pg.execute(insert.replace("?", "%s").encode(), digests)


def test_a_delivery_set_aside_in_the_spool_loses_the_erased_blocks_and_keeps_the_others(
    settings: Settings, tmp_path: Path
) -> None:
    """Neither the log nor its quarantine took it, so it sits set aside in the spool: the
    erasure replaces the note's block there by its marker (the other note's stays), and the
    spool's file holds no byte of the note's text after the scrub."""
    create, _update_with_other, _comment, _edit = note_bodies()
    both = make_body(create["block_event"][0], make_block(note_id=OTHER_NOTE, event_detail=[
        _detail("description", f"kept {OTHER_MARK}")]))  # fmt: skip
    backend(settings).append_bodies([create])  # the log knows the note
    spool = Spool(settings.spool_path, 10_000_000)
    try:
        spool.append([delivery_of(both)])
        (held,) = spool.oldest(1)
        spool.failed(held.id, "the log refused it")
        spool.set_aside(held.id)
    finally:
        spool.close()
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0
    conn = sqlite3.connect(settings.spool_path / SPOOL_FILE)
    try:
        ((body, error, aside),) = conn.execute("SELECT body, last_error, set_aside FROM spooled")
    finally:
        conn.close()
    blocks = loads_strict(bytes(body))["block_event"]
    assert blocks[0]["erased"] == 1 and blocks[0]["data_event"]["note_id"] == NOTE
    assert MARK not in bytes(body).decode() and f"kept {OTHER_MARK}" in bytes(body).decode()
    assert error == "the log refused it; erased by erasure 1" and aside == 1
    for path in settings.spool_path.glob(f"{SPOOL_FILE}*"):
        assert MARK.encode() not in path.read_bytes(), path


@pytest.mark.backends("sqlite")
def test_erase_says_so_and_still_scrubs_when_the_views_do_not_follow(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The views' write lock held past its timeout (a long rebuild, say): the log is
    erased, the scrub still runs, and exit status 3 says the views have not followed."""
    backend(settings).append_bodies(note_bodies())
    scrubbed: list[Path] = []

    def locked(settings: Settings) -> int:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr("app.commands.erase.follow_views", locked)
    monkeypatch.setattr("app.commands.erase.scrub", lambda s, url: scrubbed.append(s.data_dir))
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 3
    assert "the views did not follow here (database is locked)" in capsys.readouterr().err
    assert scrubbed == [settings.data_dir] and MARK not in log_text(settings)
