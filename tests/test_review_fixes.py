"""Regressions for defects a review found: each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from app.signing import SIGNATURE_HEADER
from eventlog.chain import EVENT_COLUMNS, link
from eventlog.db import LOG_FILE, connect
from eventlog.verify import verify_log
from projections.notes import NotesProjector
from projections.rebuild import RebuildSuperseded, rebuild_all, start_rebuild
from projections.runner import Runner
from projections.storage import Storage
from projections.store import last_error, open_views, record_error
from projections.values import to_epoch
from tests.helpers import make_block, make_body, sample, signature, signed_post
from tests.views_kit import Views, append_blocks, fold_from_scratch

OPS = {"Authorization": "Bearer ops-token"}


def test_a_rebuild_superseded_by_another_stops_without_writing(tmp_path):
    append_blocks(
        tmp_path,
        [make_block(note_id=f"n{i % 3}", action_time=1_600_000_000.0 + i) for i in range(30)],
    )
    views = Views(tmp_path, NotesProjector())
    views.build()
    other = open_views(tmp_path)

    def meanwhile(done: int, total: int) -> None:
        if done == 10:
            start_rebuild(other, NotesProjector())  # e.g. serve's start-up rebuild racing the CLI

    with pytest.raises(RebuildSuperseded):
        rebuild_all([NotesProjector()], views.views, views.log, meanwhile, batch=10)
    assert views.dump() == fold_from_scratch(tmp_path, NotesProjector())
    other.close()


async def test_a_stored_error_from_an_earlier_process_is_cleared_once_the_projector_succeeds(
    tmp_path,
):
    append_blocks(tmp_path, [make_block()])
    views = open_views(tmp_path)
    record_error(views, "notes", 1, "m", "an old, since fixed failure")
    runner = Runner(Storage(tmp_path), [NotesProjector()], poll_interval=0.02)
    await runner.start()
    for _ in range(200):
        if runner.is_ready("notes") and last_error(views, "notes") is None:
            break
        await asyncio.sleep(0.02)
    await runner.stop()
    assert last_error(views, "notes") is None
    views.close()


async def test_negative_zero_times_still_verify(client, settings):
    block = make_block(created_time=-0.0)  # (an action_time of -0.0 is now implausible)
    raw = json.dumps(make_body(block)).encode()
    await client.post("/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)})
    conn = connect(settings.data_dir / LOG_FILE, readonly=True)
    report = verify_log(conn, lambda app, fp, body: None)
    conn.close()
    assert report.ok, report.events.problems


async def test_a_forged_event_chained_correctly_but_not_in_its_request_fails_verify(
    client, settings
):
    await signed_post(client, sample("note_create"))
    conn = sqlite3.connect(settings.events_path, isolation_level=None)
    row = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)}, hash FROM events").fetchone()
    forged = list(row[:-1])
    forged[0], forged[1] = 2, "forged-message"
    block = json.loads(forged[14])
    block["message_id"] = "forged-message"
    forged[14] = json.dumps(block)
    from eventlog.canonical import event_content_hash

    forged[2] = event_content_hash("forged-message", block["event_type"], block["data_event"])
    conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, hash) VALUES ({', '.join('?' * 16)})",
                 (*forged, link(row[-1], forged)))  # fmt: skip
    conn.close()
    conn = connect(settings.events_path, readonly=True)
    report = verify_log(conn, lambda app, fp, body: None)
    conn.close()
    assert (
        report.events.first_bad == 2 and "not carried by the request" in report.events.problems[0]
    )


def test_a_list_field_that_names_no_element_stays_out_of_extra(tmp_path):
    block = make_block(
        note_id="n1", event_detail=[{"field_key": "file_attachment_ids", "add": [[]]}]
    )
    append_blocks(tmp_path, [block])
    views = Views(tmp_path, NotesProjector())
    views.build()
    doc = json.loads(str(views.dump()["notes"][0][4]))
    assert doc["extra"] == {}


async def test_a_cursor_holding_a_huge_number_is_a_400(client):
    import base64

    cursor = base64.urlsafe_b64encode(b"[1" + b"0" * 400 + b', "x"]').decode().rstrip("=")
    resp = await client.get(f"/accounts/a/mentions?cursor={cursor}", headers=OPS)
    assert resp.status == 400 and "cursor" in (await resp.json())["error"]


async def test_conflicts_are_counted_by_reason(client):
    original = sample("note_create")
    await signed_post(client, original)
    forged = json.loads(json.dumps(original))
    forged["block_event"][0]["data_event"]["action_time"] = 1669200000.0
    await signed_post(client, forged)
    text = await (await client.get("/metrics")).text()
    assert 'notestore_quarantined_total{reason="conflict"} 1.0' in text


async def test_non_ascii_digits_are_not_times(client):
    assert to_epoch("２０２２-１１-２３T１０:４７Z") is None
    resp = await client.get("/notes/n?as_of=１２３", headers=OPS)
    assert resp.status == 400
