"""Tests that kill mutations which once left every other test green (issue 12, item 5).

Each docstring names the mutation it kills. Real SQLite files, real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.config import fingerprint
from app.signing import SIGNATURE_HEADER, match_secret
from app.web import create_app
from eventlog import chain
from eventlog.append import Delivery, Outcome, append_deliveries
from eventlog.db import LOG_FILE, open_log
from eventlog.intake import Intake, Rejected, read_body
from eventlog.replay import held_items, replay
from eventlog.store import UNSTORABLE, SQLiteLogStore
from eventlog.verify import verify_log
from eventlog.writer import GroupCommitWriter
from projections.comments import CommentsProjector
from projections.mentions import MentionsProjector
from projections.notes import NotesProjector
from tests.helpers import (
    APP_A,
    SECRETS,
    encode,
    make_block,
    make_body,
    post_samples,
    secret_for,
    signature,
    snapshot,
    wait_for,
)
from tests.server import write_config
from tests.views_kit import Views, append_blocks

ALL_SECRETS = [(app, secret) for app, secrets in SECRETS.items() for secret in secrets]


def chains_only(app_id: str, fingerprint: str, body: bytes) -> str | None:
    return None  # signatures unchecked: these tests are about the events' chain and contents


def delivery(body: dict[str, Any] | bytes, intake: Intake | None = None) -> Delivery:
    """A verified delivery of `body` for app A, judged by today's intake unless given."""
    raw = encode(body)
    return Delivery(
        time.time(), APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw,
        intake if intake is not None else read_body(raw, APP_A),
    )  # fmt: skip


def event_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f"SELECT {', '.join(chain.EVENT_COLUMNS)}, hash FROM events ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# a. the signature ------------------------------------------------------------------------


async def test_only_the_whole_signature_verifies(aiohttp_client, settings):
    """Kills: app/signing.py match_secret matching a substring (`given in digest`)
    instead of comparing the whole digest, so a one-character header verifies."""
    client = await aiohttp_client(create_app(settings, []))
    raw = encode(make_body(make_block(note_id="signed")))
    real = signature(raw)
    refused = {
        "one character": real[0],
        "a prefix": real[:32],
        "all but the last character": real[:-1],
        "all but the first character": real[1:],
        "a substring": real[20:40],
        "another secret's signature": signature(raw, secret="not-the-secret"),
        "the signature twice": real + real,
    }
    log = settings.data_dir / LOG_FILE
    before = snapshot(log)
    for what, header in refused.items():
        assert match_secret(header, raw, ALL_SECRETS) is None, what
        resp = await client.post("/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: header})
        assert resp.status == 401, what
    assert snapshot(log) == before  # nothing refused was stored
    # accepted today: hex digits in either case (the header is compared lowercased)
    assert match_secret(real.upper(), raw, ALL_SECRETS) == (APP_A, secret_for(APP_A))
    resp = await client.post("/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: real.upper()})
    assert resp.status == 200 and (await resp.json())["accepted"] == 1


# b. verify compares each block with its content hash ---------------------------------------


def forge_block_and_rechain(path: Path, seq: int) -> None:
    """Change event `seq`'s block, then recompute the hash chain from it on: the chain, the
    request it names and its content_hash column all still agree; only the block itself no
    longer hashes to its content_hash."""
    rows = event_rows(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER events_no_update")
        previous = chain.GENESIS
        for row in rows:
            values, stored = list(row[:-1]), row[-1]
            if values[0] == seq:
                block = json.loads(values[-1])
                block["data_event"]["event_detail"] = [
                    {"field_key": "description", "add": ["forged after the fact"]}
                ]
                values[-1] = json.dumps(block, ensure_ascii=False, separators=(",", ":"))
            if values[0] >= seq:
                stored = chain.link(previous, values)
                conn.execute(
                    "UPDATE events SET block = ?, hash = ? WHERE seq = ?",
                    (values[-1], stored, values[0]),
                )
            previous = stored
    finally:
        conn.close()


def test_verify_reports_a_block_that_no_longer_matches_its_content_hash(tmp_path, capsys):
    """Kills: eventlog/verify.py no longer comparing each event's block with its
    content_hash. The tampering keeps the hash chain and the origin check (the request's
    signed body carries a block of that content_hash) intact, so only that comparison sees it."""
    config = write_config(tmp_path, SECRETS)
    data = tmp_path / "data"
    append_blocks(data, [make_block(note_id=f"n{i}") for i in range(3)])
    assert run_cli(capsys, "verify", "--config", str(config))[0] == 0
    forge_block_and_rechain(data / LOG_FILE, seq=2)

    conn = sqlite3.connect(data / LOG_FILE)
    try:
        report = verify_log(conn, chains_only)
    finally:
        conn.close()
    assert report.events.first_bad == 2
    # the chain check passes: the content hash check alone found it
    assert report.events.problems == ["events seq 2: its block does not match its content hash"]
    assert report.requests.first_bad is None and not report.ok

    code, out, _ = run_cli(capsys, "verify", "--config", str(config))
    assert code == 1
    assert "TAMPERED events seq 2: its block does not match its content hash" in out
    assert "first bad seq: 2" in out and "FAILED" in out


# c. restore refuses a backup that does not verify -------------------------------------------


def file_digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.name.startswith(("events.db", "views.db"))
    }


def test_restore_refuses_a_backup_that_does_not_verify(tmp_path, capsys):
    """Kills: `notestore restore` (app/commands/operations.py, eventlog/backup.py) putting
    a backup in place without it verifying."""
    config = write_config(tmp_path, SECRETS)
    data = tmp_path / "data"
    append_blocks(data, [make_block(note_id=f"n{i}") for i in range(4)])
    views = Views(data, NotesProjector())
    views.build()
    views.close()
    backup = tmp_path / "backup.db"
    assert run_cli(capsys, "backup", str(backup), "--config", str(config))[0] == 0
    tampered = sqlite3.connect(backup, isolation_level=None)
    tampered.execute("DROP TRIGGER events_no_update")
    tampered.execute("UPDATE events SET action_time = action_time + 1 WHERE seq = 3")
    tampered.close()
    rows_before = snapshot(data / LOG_FILE)  # its connection's close also folds the WAL in
    before = file_digests(data)
    assert "views.db" in before

    code, out, err = run_cli(capsys, "restore", str(backup), "--config", str(config))
    assert code != 0
    assert "does not verify" in err and "first bad seq 3" in err and "not restoring" in err
    assert "restored" not in out
    assert file_digests(data) == before  # the live log (and the views) untouched
    assert snapshot(data / LOG_FILE) == rows_before


# d. every connection that writes the log fsyncs every commit --------------------------------


class Watched(sqlite3.Connection):
    """A connection on events.db whose synchronous setting is noted when it closes."""

    synchronous_at_close: int | None = None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.synchronous_at_close = self.execute("PRAGMA synchronous").fetchone()[0]
        super().close()


@dataclasses.dataclass
class Opened:
    conn: Watched
    opener: str  # where in the code it was opened
    readonly: bool

    def synchronous(self) -> int | None:
        if self.conn.synchronous_at_close is not None:
            return self.conn.synchronous_at_close
        return int(self.conn.execute("PRAGMA synchronous").fetchone()[0])


@contextlib.contextmanager
def watching_log_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Opened]]:
    """Every sqlite3.connect() on an events.db while the block runs, with who opened it."""
    real_connect = sqlite3.connect
    opened: list[Opened] = []

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        name = str(database)
        path = name.removeprefix("file:").split("?", 1)[0]
        if Path(path).name != LOG_FILE or "factory" in kwargs:
            return real_connect(database, *args, **kwargs)
        conn = real_connect(database, *args, factory=Watched, **kwargs)
        frame = sys._getframe(1)
        if frame.f_code.co_name == "connect" and frame.f_code.co_filename.endswith("db.py"):
            frame = frame.f_back or frame  # eventlog.db.connect: name its caller
        where = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"
        opened.append(Opened(conn, where, "mode=ro" in name))
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    yield opened
    monkeypatch.setattr(sqlite3, "connect", real_connect)


async def test_every_connection_that_writes_the_log_has_synchronous_full(
    aiohttp_client, settings, tmp_path, monkeypatch, capsys
):
    """Kills: `PRAGMA synchronous = FULL` turned OFF (or NORMAL) in eventlog/db.py, or any
    path that opens events.db for writing without it. Runs the real writers: the receiver's
    group-commit writer and its checkpointer, quarantine replay, backup, restore, verify."""
    config = write_config(tmp_path, SECRETS)
    with watching_log_connections(monkeypatch) as opened:
        client = await aiohttp_client(
            create_app(settings, [NotesProjector(), CommentsProjector(), MentionsProjector()])
        )
        await post_samples(client)
        raw = b"not json"
        resp = await client.post(
            "/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
        )
        assert resp.status == 200
        await client.close()  # closes the writer, the checkpointer and the readers
        for args in (
            ("quarantine", "replay", "--all"),
            ("backup", str(tmp_path / "backup.db")),
            ("restore", str(tmp_path / "backup.db")),
            ("verify",),
        ):
            assert run_cli(capsys, *args, "--config", str(config))[0] == 0, args
    writers = [o for o in opened if not o.readonly]
    openers = {o.opener for o in writers}
    # the paths this run must have gone through (any other is checked as well)
    assert {"db.py:open_log", "backup.py:restore"} <= openers, openers
    assert "wal.py:__init__" in openers, openers  # the writer store's checkpointer
    not_full = [(o.opener, o.synchronous()) for o in writers if o.synchronous() != 2]
    assert not not_full, not_full  # 2 is FULL


# e. one bad delivery does not sink the rest of its group commit -----------------------------


def unstorable(body: dict[str, Any]) -> Delivery:
    """A delivery the log cannot store: its event has no action_time (a NOT NULL column)."""
    good = delivery(body)
    broken = [dataclasses.replace(e, action_time=None) for e in good.intake.events]  # type: ignore[arg-type]
    return dataclasses.replace(good, intake=dataclasses.replace(good.intake, events=broken))


async def test_a_failed_group_commit_still_acknowledges_the_other_deliveries(tmp_path):
    """Kills: eventlog/store.py SQLiteLogStore.append failing a whole batch whose transaction
    failed because of one delivery, instead of writing it again delivery by delivery (the
    one that fails quarantined `unstorable`). Through GroupCommitWriter: deliveries queued
    behind a held write lock are committed as one batch; the unstorable one is answered as
    quarantined, the others are acknowledged with their outcome and are in the log."""
    writer = GroupCommitWriter(SQLiteLogStore(tmp_path, writer=True))
    blocker = sqlite3.connect(tmp_path / LOG_FILE, isolation_level=None)
    try:
        bodies = [make_body(make_block(note_id=f"n{i}")) for i in range(4)]
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next commit waits for this lock
        queued: list[Delivery] = []

        async def submit(d: Delivery) -> Outcome:
            queued.append(d)  # append() queues the delivery before its first await
            return await writer.append(d)

        batch = [delivery(bodies[0]), delivery(bodies[1]), unstorable(bodies[2]),
                 delivery(bodies[3])]  # fmt: skip
        tasks = [asyncio.create_task(submit(d)) for d in batch]
        await wait_for(lambda: len(queued) == 4)
        blocker.execute("ROLLBACK")
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        blocker.close()
        writer.close()
    assert isinstance(results[2], Outcome) and results[2].reasons == [UNSTORABLE], results
    acknowledged = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, Outcome) and r.accepted == 1 for r in acknowledged), results
    stored = [row[1] for row in event_rows(tmp_path / LOG_FILE)]
    assert stored == [b["block_event"][0]["message_id"] for i, b in enumerate(bodies) if i != 2]
    check = sqlite3.connect(tmp_path / LOG_FILE)
    try:
        assert verify_log(check, chains_only).ok
        assert check.execute("SELECT count(*) FROM requests").fetchone()[0] == 4
    finally:
        check.close()


# f. a replay that ends in duplicates and failures is a failure --------------------------------


def test_a_replay_with_duplicates_and_failures_is_recorded_as_still_failing(tmp_path):
    """Kills: eventlog/replay.py recording a replay whose blocks ended as duplicates plus
    failures as "duplicate" (which also drops the item from those still held)."""
    known = make_block(note_id="known")
    append_blocks(tmp_path, [known])
    broken = make_block(note_id="broken")
    del broken["data_event"]["note_id"]  # invalid today and at any time
    body = make_body(known, broken)
    raw = encode(body)
    # A body quarantined whole on arrival (by a stricter rule of an earlier version): its
    # replay today finds one block already in the log and one that still fails.
    earlier = Intake(
        app_id=APP_A,
        rejected=[Rejected("not_envelope", "refused by an earlier rule", raw.decode(), "body")],
    )
    conn = open_log(tmp_path)
    try:
        append_deliveries(conn, [delivery(body, earlier)])
        (item,) = held_items(conn, None)
        assert item.kind == "body"
        assert replay(conn, [item]) == {"still_failing": 1}
        outcome, detail = conn.execute(
            "SELECT outcome, detail FROM quarantine_replays WHERE quarantine_id = ?", (item.id,)
        ).fetchone()
        assert outcome == "still_failing" and "invalid_block" in detail, (outcome, detail)
        assert [i.id for i in held_items(conn, None) if i.id == item.id] == [item.id]
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    finally:
        conn.close()
