"""Operations: the log's WAL stays bounded, config and data-dir problems are one line,
--version, the quarantine gauge."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families

from app.config import fingerprint
from eventlog.append import Delivery, append_deliveries
from eventlog.canonical import compact_json
from eventlog.db import JOURNAL_SIZE_LIMIT, LOG_FILE, connect, open_log, wal_path
from eventlog.intake import Intake, Rejected, read_body
from eventlog.replay import held_items, replay
from eventlog.wal import WAL_IDLE_S, WAL_RESET_WARN_S, Checkpointer, open_log_for_writing
from tests.helpers import APP_A, make_block, make_body, secret_for, signature, signed_post

THRESHOLD = 256 * 1024  # a small reset size, so the test writes little


class Clock:
    """A clock the test moves by hand: the checkpointer's idle time without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Appender:
    """Commits real deliveries, each with a few KB of description, and counts them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.appended = 0

    def commit(self, deliveries: int = 20) -> None:
        batch = []
        for _ in range(deliveries):
            detail = [{"field_key": "description", "add": ["x" * 3000], "change": [], "remove": []}]
            raw = json.dumps(make_body(make_block(event_detail=detail))).encode()
            batch.append(
                Delivery(time.time(), APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw,
                         read_body(raw, APP_A))
            )  # fmt: skip
        append_deliveries(self.conn, batch)
        self.appended += deliveries


def _wal_bytes(data_dir: Path) -> int:
    path = wal_path(data_dir / LOG_FILE)
    return path.stat().st_size if path.exists() else 0


def test_every_log_connection_limits_the_journal_size(tmp_path):
    open_log(tmp_path).close()
    for conn in (open_log_for_writing(tmp_path), connect(tmp_path / LOG_FILE, readonly=True)):
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == JOURNAL_SIZE_LIMIT
        conn.close()


def test_a_wal_past_the_threshold_is_reset_once_an_old_reader_lets_go_then_emptied_when_idle(
    tmp_path,
):
    writer = open_log_for_writing(tmp_path)
    # Cut the file to the bare minimum when the WAL starts over, so the reset shows in its
    # size at test scale (serve's connections cut it to JOURNAL_SIZE_LIMIT).
    writer.execute("PRAGMA journal_size_limit = 0")
    clock = Clock()
    checkpointer = Checkpointer(
        tmp_path / LOG_FILE, reset_bytes=THRESHOLD, busy_ms=1, clock=clock, start=False
    )
    reader = connect(tmp_path / LOG_FILE, readonly=True)
    log = Appender(writer)
    try:
        log.commit()
        reader.execute("BEGIN")
        held = reader.execute("SELECT count(*) FROM events").fetchone()[0]  # an old snapshot
        while _wal_bytes(tmp_path) < 2 * THRESHOLD:
            log.commit()
        grown = _wal_bytes(tmp_path)

        # The reader still needs frames of the WAL: it cannot start over, whatever we try;
        # a refusal that lasts is logged.
        with structlog.testing.capture_logs() as logged:
            for _ in range(3):
                assert checkpointer.step() == "reset_deferred"
                clock.now += 1.0
            assert not logged
            clock.now += WAL_RESET_WARN_S
            assert checkpointer.step() == "reset_deferred"
        assert [e["event"] for e in logged] == ["wal_reset_deferred"]
        log.commit()
        assert _wal_bytes(tmp_path) > grown
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == held

        reader.execute("COMMIT")  # the reader lets go
        with structlog.testing.capture_logs() as logged:
            assert checkpointer.step() == "reset"
        assert [e["event"] for e in logged] == ["wal_reset_done"]
        log.commit()  # the next commit writes from the WAL's start and cuts the file
        assert _wal_bytes(tmp_path) < THRESHOLD
        assert checkpointer.step() == "passive"

        # No commit for WAL_IDLE_S: the file is emptied, and stays so.
        clock.now += WAL_IDLE_S - 0.1
        assert checkpointer.step() == "passive" and _wal_bytes(tmp_path) > 0
        clock.now += 0.2
        assert checkpointer.step() == "truncated"
        assert _wal_bytes(tmp_path) == 0
        assert checkpointer.step() == "idle"
        log.commit()  # and nothing was lost on the way
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == log.appended
    finally:
        reader.close()
        checkpointer.stop()
        writer.close()


def test_a_wal_reset_with_no_commit_after_it_is_emptied_once_idle_since_the_last_commit(
    tmp_path,
):
    """After a RESTART the file keeps its size until the next commit, and PASSIVE still
    counts the old frames: they must not ask for a reset round after round (the file was
    then never emptied), nor start the idle time over."""
    writer = open_log_for_writing(tmp_path)
    clock = Clock()
    checkpointer = Checkpointer(
        tmp_path / LOG_FILE, reset_bytes=THRESHOLD, busy_ms=1, clock=clock, start=False
    )
    reader = connect(tmp_path / LOG_FILE, readonly=True)
    log = Appender(writer)
    try:
        log.commit()
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # an old snapshot
        while _wal_bytes(tmp_path) < 2 * THRESHOLD:
            log.commit()  # the last commit: the round below sees it
        grown = _wal_bytes(tmp_path)
        assert checkpointer.step() == "reset_deferred"
        reader.execute("COMMIT")  # the reader lets go a round later; no commit since
        clock.now += 1.0
        assert checkpointer.step() == "reset"

        clock.now += WAL_IDLE_S - 1.1  # idle for less than WAL_IDLE_S since the last commit
        assert checkpointer.step() == "passive"
        assert _wal_bytes(tmp_path) == grown
        clock.now += 0.2  # WAL_IDLE_S since the last commit, not since the reset
        assert checkpointer.step() == "truncated"
        assert _wal_bytes(tmp_path) == 0
        assert checkpointer.step() == "idle"

        # A WAL that grows past the threshold again is started over again.
        while _wal_bytes(tmp_path) < 2 * THRESHOLD:
            log.commit()
        assert checkpointer.step() == "reset"
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == log.appended
    finally:
        reader.close()
        checkpointer.stop()
        writer.close()


def _hold(data_dir: Path, blocks: list[dict[str, Any]]) -> None:
    """Quarantine valid blocks as an older, stricter version did (what a fix lets in)."""
    conn = open_log(data_dir)
    try:
        for block in blocks:
            raw = json.dumps(make_body(block)).encode()
            rejected = Rejected(
                "invalid_block", "older rule", compact_json(block), "block", block["message_id"]
            )
            intake = Intake(app_id=APP_A, rejected=[rejected])
            append_deliveries(
                conn, [Delivery(time.time(), APP_A, fingerprint(secret_for(APP_A)),
                                signature(raw), raw, intake)],
            )  # fmt: skip
    finally:
        conn.close()


async def _gauge(client, name: str) -> float:  # type: ignore[no-untyped-def]
    resp = await client.get("/metrics")
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not on /metrics")


async def test_the_quarantine_gauge_counts_only_items_still_held(client, settings):
    blocks = [make_block(note_id=f"held-{i}") for i in range(4)]
    _hold(settings.data_dir, blocks)  # items 1-4
    assert (await signed_post(client, make_body(blocks[2])))[1]["accepted"] == 1  # 3 is logged
    assert (await signed_post(client, b"not json"))[1]["quarantined"] == 1  # item 5
    assert await _gauge(client, "notestore_quarantine_items") == 5

    conn = open_log(settings.data_dir)
    try:
        assert replay(conn, held_items(conn, [1, 2])) == {"appended": 2}
        assert replay(conn, held_items(conn, [3])) == {"duplicate": 1}
        assert replay(conn, held_items(conn, [5])) == {"still_failing": 1}
        still_held = [item.id for item in held_items(conn, None)]
    finally:
        conn.close()
    # 4 was never replayed, 5 still fails: held. 1 and 2 are in the log now, and 3 was.
    assert still_held == [4, 5]
    assert await _gauge(client, "notestore_quarantine_items") == 2


def _notestore(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `notestore` command, with no NOTESTORE_* variable but `env`."""
    installed = Path(sys.executable).with_name("notestore")
    program = [str(installed)] if installed.exists() else [sys.executable, "-m", "app"]
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTESTORE_")}
    return subprocess.run([*program, *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def _info_record(line: str) -> bool:
    try:
        return bool(json.loads(line).get("level") == "info")
    except (ValueError, AttributeError):
        return False


BOUND = '[apps."a"]\nsecrets = ["s"]\nmerchants = ["m"]\n[tokens]\nt = ["*"]\n'


def _config(folder: Path, data_dir: str | None = None) -> Path:
    path = folder / "notestore.toml"
    path.write_text((f"data_dir = {json.dumps(data_dir)}\n" if data_dir else "") + BOUND)
    return path


@pytest.mark.parametrize(
    ("case", "command", "env", "source"),
    [
        # a data_dir under a regular file cannot be made, root or not
        (
            "file_under",
            ["serve", "--port", "0"],
            {"NOTESTORE_DATA_DIR": "plain/data"},
            "NOTESTORE_DATA_DIR",
        ),
        ("file_under_in_config", ["serve", "--port", "0"], {}, "config file"),
        ("file_under_in_config", ["quarantine", "replay", "--all"], {}, "config file"),
        # a data_dir that is a file
        ("file", ["serve", "--port", "0"], {"NOTESTORE_DATA_DIR": "plain"}, "NOTESTORE_DATA_DIR"),
        # the log cannot be opened (what an unwritable folder gives a user who is not root)
        ("log_is_a_folder", ["quarantine", "replay", "--all"], {}, "config file"),
        ("log_is_a_folder", ["serve", "--port", "0"], {}, "config file"),
        ("good", ["status"], {"NOTESTORE_APPS": "x=y"}, "NOTESTORE_APPS"),
        ("good", ["status"], {"NOTESTORE_TOKENS": "[1, 2"}, "NOTESTORE_TOKENS"),
        # a lone surrogate would fail every request later (hashing, comparing): refused now
        ("good", ["status"], {"NOTESTORE_TOKENS": '{"\\udcff": ["*"]}'}, "NOTESTORE_TOKENS"),
        ("good", ["status"], {"NOTESTORE_APPS": '{"app": "s\\udcff"}'}, "NOTESTORE_APPS"),
        ("good", ["status"], {"NOTESTORE_TOKENS": '{"t": ["m\\udcff"]}'}, "NOTESTORE_TOKENS"),
        ("good", ["serve"], {"NOTESTORE_PORT": "abc"}, "NOTESTORE_PORT"),
        ("good", ["status"], {"NOTESTORE_WORKERS": "two"}, "NOTESTORE_WORKERS"),
        # not a PostgreSQL URL (its password is never echoed: tests/test_cli_postgres.py)
        ("good", ["status"], {"NOTESTORE_DATABASE_URL": "mysql://h/db"}, "NOTESTORE_DATABASE_URL"),
        ("good", ["status"], {"NOTESTORE_CONFIG": "missing.toml"}, "NOTESTORE_CONFIG"),
        ("bad_port_in_file", ["status"], {}, "config file"),
    ],
)
def test_a_config_or_data_dir_problem_is_one_line_naming_its_source(
    tmp_path, case, command, env, source
):
    (tmp_path / "plain").write_text("a regular file\n")
    data_dir = {"file_under_in_config": "plain/data", "log_is_a_folder": "store"}.get(case)
    config = _config(tmp_path, data_dir)
    if case == "log_is_a_folder":
        (tmp_path / "store" / LOG_FILE).mkdir(parents=True)
    if case == "bad_port_in_file":
        config.write_text('port = "abc"\n' + BOUND)
    args = [*command] if "NOTESTORE_CONFIG" in env else [*command, "--config", str(config)]
    done = _notestore(tmp_path, *args, **env)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr + done.stdout
    # serve may log that it is starting (an info record) before it opens the log
    lines = [line for line in done.stderr.strip().splitlines() if not _info_record(line)]
    assert len(lines) == 1 and lines[0].startswith(f"notestore {command[0]}: "), done.stderr
    assert source in lines[0]
    if source.startswith("config file"):
        assert str(config) in lines[0]
    elif source != "NOTESTORE_CONFIG":  # a variable's problem is never blamed on the file
        assert "config file" not in lines[0]


def test_version_comes_from_the_package_metadata(tmp_path):
    done = _notestore(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"notestore {importlib.metadata.version('notestore')}"


def test_status_shows_the_log_its_wal_and_the_views_apart(tmp_path):
    data = tmp_path / "data"
    config = _config(tmp_path, "data")
    writer = open_log_for_writing(data)  # held open, so the WAL is there while status looks
    try:
        Appender(writer).commit()
        log_bytes, wal_bytes = (data / LOG_FILE).stat().st_size, _wal_bytes(data)
        assert wal_bytes > 0
        done = _notestore(tmp_path, "status", "--json", "--config", str(config))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["log"]["bytes"], report["log"]["wal_bytes"]) == (log_bytes, wal_bytes)
        assert report["views_file"]["bytes"] > 0 and "wal_bytes" in report["views_file"]
        text = _notestore(tmp_path, "status", "--config", str(config), COLUMNS="200").stdout
        assert "its WAL (events.db-wal)" in text and "views.db:" in text
    finally:
        writer.close()
