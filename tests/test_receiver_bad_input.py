"""Every bad input gets its specified answer and leaves the log as it was."""

from __future__ import annotations

import json
import sqlite3

import pytest

from app.signing import SIGNATURE_HEADER
from eventlog.spool import SPOOL_FILE
from tests.helpers import (
    APP_A,
    APP_B,
    make_block,
    make_body,
    sample,
    signature,
    signed_post,
    snapshot,
)


def quarantine_rows(settings):  # type: ignore[no-untyped-def]
    conn = sqlite3.connect(settings.events_path)
    try:
        return conn.execute(
            "SELECT reason, detail, kind, payload FROM quarantine ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


async def post_raw(client, raw: bytes, headers=None):  # type: ignore[no-untyped-def]
    resp = await client.post("/webhooks/mobio", data=raw, headers=headers or {})
    return resp.status, await resp.json()


async def test_body_over_the_limit_is_413_even_unsigned_and_stored_nowhere(client, settings):
    raw = b"x" * (settings.max_body_bytes + 1)
    status, answer = await post_raw(client, raw)
    assert status == 413 and "max_body_bytes" in answer["error"]
    assert snapshot(settings.events_path) == {"events": [], "requests": []}


async def test_body_over_the_limit_without_content_length_is_413(client, settings):
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b"y" * 1024

    resp = await client.post("/webhooks/mobio", data=chunks())
    assert resp.status == 413


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing"),
        ({SIGNATURE_HEADER: "0" * 64}, "does not match"),
        ({SIGNATURE_HEADER: ""}, "missing"),
    ],
)
async def test_bad_or_missing_signature_is_401_and_stored_nowhere(
    client, settings, headers, needle
):
    raw = json.dumps(sample("note_create")).encode()
    status, answer = await post_raw(client, raw, headers)
    assert status == 401 and needle in answer["error"]
    assert snapshot(settings.events_path) == {"events": [], "requests": []}


async def test_unknown_app_is_401_and_the_answer_does_not_say_which_apps_exist(client, settings):
    answers = []
    for app_id in ("not-configured", APP_A):  # one unknown, one configured: both signed wrongly
        raw = json.dumps(make_body(app_id=app_id)).encode()
        answers.append(await post_raw(client, raw, {SIGNATURE_HEADER: signature(raw, app_id, "s")}))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and "signature" in answers[0][1]["error"]
    assert snapshot(settings.events_path)["requests"] == []


async def test_uppercase_hex_signature_is_accepted(client):
    raw = json.dumps(sample("note_create")).encode()
    status, _ = await post_raw(client, raw, {SIGNATURE_HEADER: signature(raw).upper()})
    assert status == 200


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "not_json"),
        (b'{"block_event": [', "not_json"),
        (b"\xff\xfe\x00garbage", "not_json"),
        (b'{"block_event": [], "x": NaN}', "not_json"),
        (b"[1, 2, 3]", "not_envelope"),
        (b'{"block_event": "nope"}', "not_envelope"),
        (b'{"app_id": 7, "block_event": []}', "not_envelope"),
        (b'{"merchant_id": "m"}', "not_envelope"),
        (b'{"block_event": []}', "no_blocks"),
        (b"[" * 30_000 + b"]" * 30_000, "not_json"),
        (b"[" * 500 + b"]" * 500, "not_envelope"),
        (json.dumps({"app_id": APP_B, "block_event": [make_block()]}).encode(), "app_mismatch"),
    ],
)
async def test_verified_but_unusable_bodies_are_quarantined_whole(client, settings, raw, reason):
    status, answer = await post_raw(client, raw, {SIGNATURE_HEADER: signature(raw, APP_A)})
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "quarantined": 1})
    ((got_reason, detail, kind, _),) = quarantine_rows(settings)
    assert (got_reason, kind) == (reason, "body") and detail
    log = snapshot(settings.events_path)
    assert log["events"] == [] and len(log["requests"]) == 1


async def test_the_same_bad_body_twice_is_quarantined_once(client, settings):
    raw = b"definitely not json"
    for _ in range(2):
        answer = await post_raw(client, raw, {SIGNATURE_HEADER: signature(raw)})
        assert answer == (200, {"accepted": 0, "duplicates": 0, "quarantined": 1})
    assert len(quarantine_rows(settings)) == 1
    assert len(snapshot(settings.events_path)["requests"]) == 2


def _without(key: str) -> dict:  # type: ignore[type-arg]
    block = make_block()
    del block[key]
    return block


def _event_with(**fields) -> dict:  # type: ignore[no-untyped-def,type-arg]
    block = make_block()
    block["data_event"].update(fields)
    return block


INVALID_BLOCKS = {
    "no message_id": _without("message_id"),
    "empty message_id": {**make_block(), "message_id": ""},
    "long message_id": {**make_block(), "message_id": "m" * 129},
    "numeric message_id": {**make_block(), "message_id": 12},
    "no event_type": _without("event_type"),
    "no data_event": _without("data_event"),
    "data_event a list": {**make_block(), "data_event": []},
    "action_time a string": _event_with(action_time="1669200439.5"),
    "action_time a bool": _event_with(action_time=True),
    "action_time missing": {**make_block(), "data_event": {"note_id": "n1"}},
    "note_id missing": {**make_block(), "data_event": {"action_time": 1.0}},
    "note_id empty": _event_with(note_id=""),
    "comment_id missing": {**make_block("note_comment_create"), "data_event": {"action_time": 1.0}},
    "event_detail not a list": _event_with(event_detail={"field_key": "x"}),
    "detail item not an object": _event_with(event_detail=["x"]),
    "field_key missing": _event_with(event_detail=[{"add": []}]),
    "field_key a number": _event_with(event_detail=[{"field_key": 1}]),
    "add not an array": _event_with(event_detail=[{"field_key": "x", "add": "a"}]),
    "change null": _event_with(event_detail=[{"field_key": "x", "change": None}]),
    "block a string": "block",
    "event_type a list": {**make_block(), "event_type": ["note_create"]},
}


@pytest.mark.parametrize("bad", INVALID_BLOCKS.values(), ids=INVALID_BLOCKS.keys())
async def test_an_invalid_block_is_quarantined_and_its_neighbours_appended(client, settings, bad):
    good1, good2 = make_block(), make_block("note_comment_create")
    status, answer = await signed_post(client, make_body(good1, bad, good2))
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0, "quarantined": 1})
    ((reason, detail, kind, _),) = quarantine_rows(settings)
    assert (reason, kind) == ("invalid_block", "block") and detail
    stored = [r[1] for r in snapshot(settings.events_path)["events"]]
    assert stored == [good1["message_id"], good2["message_id"]]


async def test_what_the_vendor_calls_required_but_we_do_not_need_is_accepted(client, settings):
    block = {
        "message_id": "m1",
        "event_type": "note_create",
        "data_event": {"note_id": "n", "action_time": 1669200439},
    }
    assert (await signed_post(client, make_body(block)))[1]["accepted"] == 1


async def test_content_type_is_not_checked(client):
    raw = json.dumps(sample("note_create")).encode()
    headers = {SIGNATURE_HEADER: signature(raw, APP_A), "Content-Type": "text/plain"}
    assert (await post_raw(client, raw, headers))[0] == 200


async def test_unknown_routes_and_methods_answer_json(client):
    resp = await client.get("/nowhere")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await client.delete("/webhooks/mobio")
    assert resp.status == 405 and "error" in await resp.json()


async def test_big_integers_are_stored_exactly(client, settings):
    raw = b'{"block_event": [{"message_id": "m-big", "event_type": "deal_x", "data_event": {"action_time": 1669200439, "big": 123456789012345678901234567890}}]}'
    status, answer = await post_raw(client, raw, {SIGNATURE_HEADER: signature(raw)})
    assert (status, answer["accepted"]) == (200, 1)
    assert "123456789012345678901234567890" in snapshot(settings.events_path)["events"][0][14]


async def test_a_lone_surrogate_escape_is_quarantined_not_a_503(client, settings):
    raw = b'{"block_event": [{"message_id": "m-\\ud800", "event_type": "x", "data_event": {"action_time": 1669200439}}]}'
    status, answer = await post_raw(client, raw, {SIGNATURE_HEADER: signature(raw)})
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "quarantined": 1})
    assert quarantine_rows(settings)[0][0] == "not_json"


async def test_when_the_log_cannot_commit_the_answer_is_503_and_nothing_is_acknowledged(
    client, settings
):
    """Real SQLite failures of the log and of the spool (triggers refusing inserts, as a full
    disk shared by both would) give 503 and health 503. (The log alone failing is spooled:
    tests/test_spool.py.)"""
    await signed_post(client, sample("note_create"))  # the log exists
    before = snapshot(settings.events_path)
    conn = sqlite3.connect(settings.events_path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER simulated_full_disk BEFORE INSERT ON requests BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    spool = sqlite3.connect(settings.spool_path / SPOOL_FILE, isolation_level=None)
    spool.execute(
        "CREATE TRIGGER simulated_full_disk BEFORE INSERT ON spooled BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    status, answer = await signed_post(client, make_body())
    assert status == 503 and "nothing was stored" in answer["error"]
    assert snapshot(settings.events_path) == before
    assert spool.execute("SELECT count(*) FROM spooled").fetchone() == (0,)
    health = await client.get("/healthz")
    assert health.status == 503 and (await health.json())["status"] == "unavailable"
    conn.execute("DROP TRIGGER simulated_full_disk")
    conn.close()
    spool.execute("DROP TRIGGER simulated_full_disk")
    spool.close()
    assert (await signed_post(client, make_body()))[0] == 200
    assert (await client.get("/healthz")).status == 200
