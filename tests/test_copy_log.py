"""copy-log: a SQLite log copied into a real PostgreSQL, row for row, verified at both ends;
interrupted and resumed, run again after more deliveries, run while serve receives, and a
target holding another log refused and left as it was."""

from __future__ import annotations

import importlib.util
import io
import json
import sqlite3
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import psycopg
import pytest
from rich.console import Console

from app.commands.copy_log import shown_progress
from app.commands.operations import signer_for
from app.config import Settings, fingerprint
from app.signing import SIGNATURE_HEADER
from eventlog import pg_schema
from eventlog.append import Delivery, append_deliveries
from eventlog.backup import backup
from eventlog.copy import CopyRefused, copy_log
from eventlog.copy_check import NOT_THE_LOG, check_source_tables
from eventlog.copy_chunks import ERASURE_TABLES, TABLES, heads
from eventlog.db import LOG_FILE, connect, open_log
from eventlog.intake import read_body
from eventlog.pg_conn import PgConnection
from eventlog.replay import held_items, replay
from eventlog.verify import verify_log
from projections.registry import all_projectors
from projections.storage import Storage
from tests import pg
from tests import test_cli_postgres as cli_postgres
from tests.helpers import ROOT, SECRETS, make_block, make_body, secret_for, signature
from tests.ops_kit import Backend, hold_as_if_rejected, notestore
from tests.server import Server, write_config
from tests.views_kit import Views, append_bodies

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url
two_roles = cli_postgres.two_roles

_spec = importlib.util.spec_from_file_location("workload", ROOT / "scripts" / "workload.py")
assert _spec is not None and _spec.loader is not None
workload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(workload)
# this module's own copy of scripts/workload.py copies its templates through JSON, at a
# quarter of deepcopy's cost (half of building a log went into deepcopy)
workload.copy = SimpleNamespace(deepcopy=lambda value: orjson.loads(orjson.dumps(value)))

SIGNER = signer_for(Settings(data_dir=Path("unused"), apps=SECRETS))


# --- building a log --------------------------------------------------------------------------


def _delivery(body: dict[str, Any]) -> Delivery:
    raw = json.dumps(body, ensure_ascii=False).encode()
    app_id, at = body["app_id"], time.time()
    return Delivery(at, app_id, fingerprint(secret_for(app_id)), signature(raw, app_id), raw,
                    read_body(raw, app_id, at))  # fmt: skip


def build_log(data_dir: Path, events: int, seed: int = 7) -> None:
    """About `events` events in Mobio-shaped deliveries (scripts/workload.py) of 1 to 20
    blocks, 500 deliveries a transaction; every 25th delivery also carries a block that
    fails validation (quarantined). Then 40 blocks quarantined as an older version did and
    every held item replayed: 40 events appended by replay (pointing back at their old
    requests), the invalid ones still failing; each replay is a row."""
    conn = open_log(data_dir)
    conn.execute("PRAGMA synchronous = OFF")  # test data: no need to fsync while building
    work = workload.Workload(seed=seed, notes=3000)
    made, batch, deliveries = 0, [], 0
    while made < events:
        body = work.body(min(1 + work.rng.randrange(20), events - made))
        made += len(body["block_event"])
        deliveries += 1
        if deliveries % 25 == 0:
            body["block_event"].append({"message_id": str(uuid.uuid4()), "event_type": "?"})
        batch.append(_delivery(body))
        if len(batch) == 500:
            append_deliveries(conn, batch)
            batch = []
    if batch:
        append_deliveries(conn, batch)
    hold_as_if_rejected(data_dir, 40, per_request=4)
    replay(conn, held_items(conn, None))
    conn.close()


def source_of(data_dir: Path) -> Any:
    return connect(data_dir / LOG_FILE, readonly=True)


def target_of(url: str) -> PgConnection:
    return PgConnection.connect(url, write_lock=0)


def assert_same_rows(data_dir: Path, url: str, upto: dict[str, int] | None = None) -> None:
    """Every row of every log table, compared column by column (plain SQL on both sides),
    up to `upto` (default: the source's heads, which the target must then hold exactly)."""
    source, target = source_of(data_dir), target_of(url)
    try:
        upto = upto or heads(source)
        for t in TABLES:
            select = (
                f"SELECT {', '.join(t.columns)} FROM {t.name} WHERE {t.key} > ?"
                f" AND {t.key} <= ? ORDER BY {t.key} LIMIT 5000"
            )
            last = 0
            while rows := source.execute(select, (last, upto[t.name])).fetchall():
                there = target.execute(select, (last, upto[t.name])).fetchall()
                assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                        for r in there] == rows, t.name  # fmt: skip
                last = rows[-1][0]
            assert last == upto[t.name]
        assert heads(target) == upto
    finally:
        source.close()
        target.close()


def heads_at(conn: Any) -> dict[str, int]:
    """The heads of a log a connection was opened on, which it then closes."""
    try:
        return heads(conn)
    finally:
        conn.close()


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return pg_schema.version(conn)


def verifies(conn: Any) -> bool:
    try:
        return verify_log(conn, SIGNER).ok
    finally:
        conn.close()


def copied(config: Path, url: str, *more: str) -> Any:
    done = notestore(config, "copy-log", "--to", url, *more)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# --- the tests -------------------------------------------------------------------------------


def test_a_100000_event_log_interrupted_halfway_then_resumed_equals_the_source(tmp_path, pg_url):
    """SIZE: this is the 100,000-event test the issue asks for (building the log takes
    about half of its ~60 s). The copy is interrupted once half its rows are in (as Ctrl-C
    would), leaving a prefix that verifies; the next run continues from there, and the
    target then holds every row of the source, verified at both ends."""
    data = tmp_path / "data"
    build_log(data, 100_000)
    source, target = source_of(data), target_of(pg_url)

    def stop_halfway(phase: str, done: int, total: int) -> None:
        if phase == "copying" and done >= total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_log(source, target, SIGNER, progress=stop_halfway)
    part = heads(target)
    end = heads(source)
    assert 0 < part["events"] < end["events"] and 0 < part["requests"] <= end["requests"]
    assert_same_rows(data, pg_url, part)  # what an interruption leaves is a prefix

    report = copy_log(source, target, SIGNER)
    source.close()
    target.close()
    assert report.ok and report.start == part and report.end == end
    assert report.copied == sum(end.values()) - sum(part.values())
    assert end["events"] >= 100_040 and end["quarantine"] > 100 and end["quarantine_replays"] > 100
    assert report.source.events.rows == report.target.events.rows == end["events"]
    assert_same_rows(data, pg_url)


def test_the_views_rebuilt_on_postgresql_equal_the_sqlite_views(tmp_path, pg_url):
    """The views are not copied: folded from the copied log on PostgreSQL, every view
    equals the same view folded from the SQLite log (5,000 events: the views depend only
    on the rows, which the 100,000-event test compares one by one)."""
    data = tmp_path / "data"
    build_log(data, 5000, seed=11)
    done = copied(write_config(tmp_path, SECRETS), pg_url)
    assert "the views are not copied" in done.stdout
    for projector in all_projectors():
        here = Views(Storage(data), projector)
        there = Views(Storage(tmp_path / "pg-data", pg_url), projector)
        try:
            here.build()
            there.build()
            assert there.dump() == here.dump(), projector.name
            assert there.dump()[projector.tables[0]], projector.name  # not two empty views
        finally:
            here.close()
            there.close()


def test_copy_then_more_deliveries_and_replays_then_copy_again_misses_and_doubles_nothing(
    tmp_path, pg_url
):
    data = tmp_path / "data"
    build_log(data, 2000)
    config = write_config(tmp_path, SECRETS)
    first = copied(config, pg_url, "--chunk-rows", "300")
    assert "copying: " in first.stdout  # off a terminal, plain progress lines
    build_log(data, 1500, seed=8)  # more deliveries, quarantined items and their replays
    second = copied(config, pg_url, "--chunk-rows", "300")
    assert_same_rows(data, pg_url)
    assert "OK: " in second.stdout
    again = copied(config, pg_url)
    assert "copied 0 rows: nothing new" in again.stdout
    assert_same_rows(data, pg_url)


def test_a_killed_copy_leaves_a_prefix_and_the_next_run_completes_it(tmp_path, pg_url):
    """SIGKILL in the middle of the copy (small chunks, so there are many): what is in
    PostgreSQL is a prefix of the log that verifies, and a second run completes it."""
    import subprocess
    import sys

    data = tmp_path / "data"
    build_log(data, 12_000)
    config = write_config(tmp_path, SECRETS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "copy-log", "--to", pg_url, "--chunk-rows", "100",
         "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    with psycopg.connect(pg_url, autocommit=True) as watch:
        while time.monotonic() < deadline:
            exists = watch.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
            if exists and exists[0]:
                found = watch.execute("SELECT count(*) FROM events").fetchone()
                if found and found[0] >= 3000:
                    break
            time.sleep(0.02)
    proc.kill()
    proc.wait()
    part = heads_at(target_of(pg_url))
    assert 3000 <= part["events"] < heads_at(source_of(data))["events"], "killed too late"
    assert verifies(target_of(pg_url))
    assert_same_rows(data, pg_url, part)
    copied(config, pg_url)
    assert_same_rows(data, pg_url)


def _refused(config: Path, url: str) -> str:
    done = notestore(config, "copy-log", "--to", url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "left as it was" in done.stderr
    return done.stderr


def _snapshot(url: str) -> dict[str, list[Any]]:
    with psycopg.connect(url) as conn:
        return {
            t.name: conn.execute(
                f"SELECT {t.key}, md5(t::text) FROM {t.name} t ORDER BY 1"
            ).fetchall()
            for t in TABLES
        }


def test_a_target_holding_another_log_is_refused_and_left_unchanged(tmp_path, pg_url):
    """Another log's events at the same seqs (other hashes), then a target with more rows
    than the source, then a quarantine row that differs: each refused with exit status 3,
    the target untouched."""
    ours = tmp_path / "ours" / "data"
    build_log(ours, 300, seed=1)
    config = write_config(tmp_path / "ours", SECRETS)
    other = tmp_path / "other"
    build_log(other / "data", 200, seed=2)
    copied(write_config(other, SECRETS), pg_url)  # PostgreSQL now holds the other log
    before = _snapshot(pg_url)
    assert "has hash" in _refused(config, pg_url) and _snapshot(pg_url) == before

    more = tmp_path / "more" / "data"
    backup(ours, more / LOG_FILE)  # a copy of ours (VACUUM INTO keeps every key)
    Backend(more).append_bodies([make_body(make_block()) for _ in range(3)])
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a fresh target for the rest
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    copied(write_config(tmp_path / "more", SECRETS), pg_url)  # 3 more events than ours
    before = _snapshot(pg_url)
    assert "requests go up to id" in _refused(config, pg_url) and _snapshot(pg_url) == before

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    copied(config, pg_url)
    Backend(ours, pg_url).tamper("", "UPDATE quarantine SET detail = 'changed' WHERE id = 2")
    before = _snapshot(pg_url)
    Backend(ours).append_bodies([make_body(make_block())])  # something new to copy
    assert "quarantine row id 2" in _refused(config, pg_url) and _snapshot(pg_url) == before


def test_a_target_whose_rows_were_altered_is_refused_and_left_unchanged(tmp_path, pg_url):
    """An event's block changed in PostgreSQL, its hash column left alone: the last rows'
    hashes still match the source's, but the target does not verify: refused, untouched."""
    data = tmp_path / "data"
    build_log(data, 300)
    config = write_config(tmp_path, SECRETS)
    copied(config, pg_url)
    Backend(data, pg_url).tamper(
        "", "UPDATE events SET block = replace(block, 'a', 'b') WHERE seq = 5"
    )
    Backend(data).append_bodies([make_body(make_block())])  # something new to copy
    before = _snapshot(pg_url)
    assert "does not verify" in _refused(config, pg_url) and _snapshot(pg_url) == before


def test_a_source_holding_a_table_copy_log_does_not_know_is_refused(tmp_path, pg_url):
    """A table a later migration adds must not be left behind without a word."""
    data = tmp_path / "data"
    build_log(data, 50)
    with sqlite3.connect(data / LOG_FILE) as conn:
        conn.execute("CREATE TABLE later_table (id INTEGER PRIMARY KEY)")
    assert "later_table" in _refused(write_config(tmp_path, SECRETS), pg_url)
    assert schema_version(pg_url) == 0  # not even migrated


def record_erasure(data_dir: Path) -> None:
    """An erasure row in the SQLite log (its table made first where this schema has none)."""
    with sqlite3.connect(data_dir / LOG_FILE, timeout=30) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS erasures (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
            " merchant_id TEXT, note_id TEXT, before REAL, reason TEXT NOT NULL,"
            " counts TEXT NOT NULL, hash TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO erasures (id, at, reason, counts, hash) VALUES (1, 0, 'test', '{}', ?)",
            ("0" * 64,),
        )


def test_a_log_holding_an_erasure_is_refused_even_when_it_appears_mid_copy(tmp_path, pg_url):
    """Erasures are not copied yet (they redact rows in place). One recorded while a run
    copies stops it before the next chunk: the target keeps a prefix that verifies, and
    the next run is refused, leaving it as it was."""
    data = tmp_path / "data"
    build_log(data, 3000)
    source, target = source_of(data), target_of(pg_url)

    def erase_after_the_first_chunk(phase: str, done: int, total: int) -> None:
        if phase == "copying":
            record_erasure(data)

    try:
        with pytest.raises(CopyRefused, match="erasures") as refused:
            copy_log(source, target, SIGNER, rows=200, progress=erase_after_the_first_chunk)
        assert refused.value.written
        part = heads(target)
        assert 0 < part["events"] <= 200 and verify_log(target, SIGNER).ok
    finally:
        source.close()
        target.close()
    assert_same_rows(data, pg_url, part)
    before = _snapshot(pg_url)
    assert "erasures" in _refused(write_config(tmp_path, SECRETS), pg_url)
    assert _snapshot(pg_url) == before


def test_quarantine_and_replays_arrive_and_serve_on_postgresql_appends_after_them(tmp_path, pg_url):
    """The identity sequences of quarantine and its replays are left past the copied ids:
    appending and replaying on PostgreSQL afterwards continues every table, and verifies."""
    data = tmp_path / "data"
    build_log(data, 500)
    copied(write_config(tmp_path, SECRETS), pg_url)
    end = heads_at(source_of(data))
    assert end["quarantine"] > 40 and end["quarantine_replays"] > 40
    bad = {"message_id": str(uuid.uuid4()), "event_type": "?"}
    Backend(tmp_path / "pg-data", pg_url).append_bodies([make_body(make_block(), bad)])
    target = PgConnection.connect(pg_url, write_lock=0)
    try:
        replay(target, held_items(target, None))
        after = heads(target)
    finally:
        target.close()
    assert after["events"] == end["events"] + 1 and after["requests"] == end["requests"] + 1
    assert after["quarantine"] == end["quarantine"] + 1
    assert after["quarantine_replays"] > end["quarantine_replays"]
    assert verifies(target_of(pg_url))


def test_copy_log_while_serve_receives_then_once_more_after_it_stops(tmp_path, pg_url):
    """Deliveries keep being answered 200 while copy-log runs beside serve; the copy after
    serve stopped brings the rest: every acknowledged event in PostgreSQL exactly once."""
    data = tmp_path / "data"
    build_log(data, 5000)
    config = write_config(tmp_path, SECRETS)
    acked: list[str] = []
    answers: list[int] = []
    stop = threading.Event()

    def deliver(url: str) -> None:
        while not stop.is_set():
            block = make_block()
            raw = json.dumps(make_body(block)).encode()
            request = urllib.request.Request(
                f"{url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                answers.append(resp.status)
                acked.append(block["message_id"])

    with Server(config) as server:
        sender = threading.Thread(target=deliver, args=(server.url,))
        sender.start()
        try:
            while len(acked) < 20:
                time.sleep(0.01)
            during = copied(config, pg_url, "--chunk-rows", "1000")
            sent_during = len(acked)
            time.sleep(0.3)
        finally:
            stop.set()
            sender.join()
    assert "serve is still receiving" in during.stdout
    assert set(answers) == {200} and len(acked) > sent_during > 20
    after = copied(config, pg_url)
    assert "serve is still receiving" not in after.stdout
    assert_same_rows(data, pg_url)
    with psycopg.connect(pg_url) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT message_id FROM events WHERE message_id = ANY(%s)", (acked,)
            )
        ]
    assert sorted(ids) == sorted(acked)


def test_a_source_that_does_not_verify_is_not_copied(tmp_path, pg_url):
    data = tmp_path / "data"
    build_log(data, 200)
    Backend(data).tamper("UPDATE events SET block = replace(block, 'a', 'b') WHERE seq = 7")
    done = notestore(write_config(tmp_path, SECRETS), "copy-log", "--to", pg_url)
    assert done.returncode == 1 and "nothing copied" in done.stdout, done.stdout + done.stderr
    assert "events seq 7" in done.stdout
    assert schema_version(pg_url) == 0  # not even migrated


def test_an_unreachable_target_is_one_line_without_its_password(tmp_path):
    from tests.server import free_port

    build_log(tmp_path / "data", 10)
    password = "Pa55-never-shown"
    url = f"postgresql://owner:{password}@127.0.0.1:{free_port()}/notestore"
    done = notestore(write_config(tmp_path, SECRETS), "copy-log", "--to", url)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert password not in done.stdout + done.stderr
    assert "postgresql://owner:***@127.0.0.1" in done.stderr and "cannot be used" in done.stderr


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_off_one(capsys):
    shown = io.StringIO()
    with shown_progress(Console(file=shown, force_terminal=True, width=100)) as progress:
        progress("copying", 5000, 10000)
        progress("copying", 10000, 10000)
    assert "copying" in shown.getvalue() and "━" in shown.getvalue()
    assert "10000/10000" in shown.getvalue()
    with shown_progress(Console(file=io.StringIO(), force_terminal=False)) as progress:
        for done in range(0, 10001, 1000):  # within PLAIN_EVERY_S: the first and the last
            progress("copying", done, 10000)
    assert capsys.readouterr().out == "copying: 0 of 10,000\ncopying: 10,000 of 10,000\n"


def test_copy_log_writes_as_the_owner_and_the_service_role_then_serves_the_copy(
    tmp_path, two_roles
):
    """The service role cannot copy (one line naming the owner, no password shown); the
    owner can, and `migrate --service-role` then lets the service role append after the
    copied rows, quarantine included (it draws from the sequences copy-log moved)."""
    owner_url, service_url, service = two_roles
    data = tmp_path / "data"
    build_log(data, 300)
    config = write_config(tmp_path, SECRETS)
    with psycopg.connect(owner_url, autocommit=True) as owner:
        pg_schema.migrate(owner, service=service)
    refused = notestore(config, "copy-log", "--to", service_url)
    assert refused.returncode == 2 and "owner" in refused.stderr, refused.stderr
    assert "service-Pa55" not in refused.stdout + refused.stderr
    done = copied(config, owner_url)
    assert "owner-Pa55" not in done.stdout + done.stderr
    end = heads_at(source_of(data))
    bad = {"message_id": str(uuid.uuid4()), "event_type": "?"}
    append_bodies(Storage(tmp_path / "pg-data", service_url), [make_body(make_block(), bad)])
    after = heads_at(target_of(service_url))
    assert after["events"] == end["events"] + 1 and after["quarantine"] == end["quarantine"] + 1
    assert verifies(target_of(service_url))


def test_copy_log_knows_every_table_of_the_log_on_both_backends(tmp_path):
    """What copy-log copies is the log on PostgreSQL, and all of the SQLite log but the
    tables it says it leaves (the spool's heartbeat; erasures, refused unless empty)."""
    copied_tables = {t.name for t in TABLES}
    assert copied_tables == set(pg_schema.LOG_TABLES)
    conn = open_log(tmp_path)
    try:
        check_source_tables(conn)  # a fresh log at this code's schema is accepted
        found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert found - NOT_THE_LOG - set(ERASURE_TABLES) == copied_tables
