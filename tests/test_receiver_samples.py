"""The six seed samples, signed, land in the log with the right columns."""

from __future__ import annotations

import json
import sqlite3

from tests.helpers import (
    APP_A,
    APP_B,
    MERCHANT,
    SAMPLE_FILES,
    sample,
    signed_post,
    snapshot,
    with_changed_description,
)


def rows(settings, sql: str, *params):  # type: ignore[no-untyped-def]
    conn = sqlite3.connect(settings.events_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


async def test_six_samples_are_accepted_with_their_columns(client, settings):
    for path in SAMPLE_FILES:
        status, answer = await signed_post(
            client, path.read_bytes(), json.loads(path.read_bytes())["app_id"]
        )
        assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "quarantined": 0}), path

    events = rows(settings, "SELECT * FROM events ORDER BY seq")
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [(e["event_type"], e["entity"], e["entity_id"]) for e in events] == [
        ("note_create", "note", "637dfa373e395b0cead72666"),
        ("note_update_data", "note", "637c513276ba4d23fcb58625"),
        ("note_delete", "note", "637f2415e60854241823a73d"),
        ("note_comment_create", "comment", "63847156b0d322e9a7678bee"),
        ("note_comment_update_data", "comment", "63847156b0d322e9a7678bee"),
        ("note_comment_delete", "comment", "63847156b0d322e9a7678bee"),
    ]
    first = events[0]
    assert first["message_id"] == "35d0213a-6b1c-11ed-b77f-2e5611c3fe96"
    assert first["merchant_id"] == MERCHANT
    assert first["app_id"] == APP_A and events[3]["app_id"] == APP_B
    assert first["request_id"] == "3c0a23fc-6b1c-11ed-bf99-4ec025119c4f"
    assert first["action_time"] == 1669200439.676389
    assert first["created_time"] == 1669200441.803459
    assert first["received_at"] > 1.7e9
    assert json.loads(first["block"]) == sample("note_create")["block_event"][0]


async def test_each_request_is_kept_with_its_signature_and_secret_fingerprint(client, settings):
    raw = SAMPLE_FILES[3].read_bytes()
    await signed_post(client, raw, APP_B)
    (request,) = rows(settings, "SELECT * FROM requests")
    assert request["body"] == raw
    assert request["app_id"] == APP_B
    assert len(request["signature"]) == 64
    assert (
        "secret-b" not in request["secret_fingerprint"] and len(request["secret_fingerprint"]) == 16
    )
    (event,) = rows(settings, "SELECT request_ref FROM events")
    assert event["request_ref"] == request["id"]


async def test_a_secret_being_rotated_out_still_verifies(client, settings):
    status, answer = await signed_post(client, sample("note_comment_create"), APP_B, "old-secret-b")
    assert status == 200 and answer["accepted"] == 1


async def test_redelivery_is_a_duplicate_and_stores_no_event(client, settings):
    body = sample("note_create")
    await signed_post(client, body)
    before = snapshot(settings.events_path, ("events",))
    status, answer = await signed_post(client, body)
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 1, "quarantined": 0})
    assert snapshot(settings.events_path, ("events",)) == before


async def test_envelope_fields_do_not_make_a_block_different(client, settings):
    body = sample("note_create")
    body["request_id"], body["timestamp"] = "another-request", 1
    await signed_post(client, sample("note_create"))
    assert (await signed_post(client, body))[1]["duplicates"] == 1


async def test_forged_content_under_a_known_message_id_is_a_quarantined_conflict(client, settings):
    original = sample("note_create")
    await signed_post(client, original)
    forged = with_changed_description(original, "<div>forged</div>")
    status, answer = await signed_post(client, forged)
    assert (status, answer) == (200, {"accepted": 0, "duplicates": 0, "quarantined": 1})
    (event,) = rows(settings, "SELECT block FROM events")
    assert "Nội dung 1" in event["block"] and "forged" not in event["block"]
    (held,) = rows(settings, "SELECT reason, message_id, payload FROM quarantine")
    assert held["reason"] == "conflict"
    assert held["message_id"] == original["block_event"][0]["message_id"]
    assert "forged" in held["payload"]


async def test_repeats_inside_one_request_keep_the_first(client, settings):
    body = sample("note_create")
    block = body["block_event"][0]
    forged = with_changed_description(body, "<div>second</div>")["block_event"][0]
    body["block_event"] = [block, block, forged]
    status, answer = await signed_post(client, body)
    assert answer == {"accepted": 1, "duplicates": 1, "quarantined": 1}
    (event,) = rows(settings, "SELECT block FROM events")
    assert "second" not in event["block"]


async def test_unknown_event_types_are_logged_as_they_are(client, settings):
    block = {
        "message_id": "m-deal-1",
        "event_type": "deal_update",
        "data_event": {"action_time": 1669200439},
    }
    body = {"app_id": APP_A, "block_event": [block]}
    assert (await signed_post(client, body))[1]["accepted"] == 1
    (event,) = rows(settings, "SELECT event_type, entity, entity_id FROM events")
    assert event == {"event_type": "deal_update", "entity": None, "entity_id": None}


async def test_online_check_and_health(client):
    assert (await client.get("/webhooks/mobio")).status == 200
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_a_conflict_delivered_again_is_answered_and_held_once(client, settings):
    original = sample("note_create")
    await signed_post(client, original)
    forged = with_changed_description(original, "<div>forged</div>")
    for _ in range(2):
        assert await signed_post(client, forged) == (
            200,
            {"accepted": 0, "duplicates": 0, "quarantined": 1},
        )
    assert len(rows(settings, "SELECT id FROM quarantine")) == 1
