"""The query routes on the seed samples, with answers written out by hand."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from app.queries import history
from tests.helpers import make_block, make_body, post_samples, settled, signed_post
from tests.test_views_seed import COMMENT, NOTE_CREATED, NOTE_DELETED, NOTE_UPDATED

pytestmark = pytest.mark.backends("sqlite", "postgresql")

OPS = {"Authorization": "Bearer ops-token"}
COMMENTED_NOTE = "63843fceb0d322e9a7678bec"


@pytest.fixture
async def seeded(client, settings):  # type: ignore[no-untyped-def]
    await post_samples(client)
    await settled(settings)
    return client


async def get(client, path: str, headers=OPS):  # type: ignore[no-untyped-def]
    resp = await client.get(path, headers=headers)
    return resp.status, await resp.json()


async def test_each_seed_note(seeded):
    for doc in (NOTE_CREATED, NOTE_UPDATED, NOTE_DELETED):
        assert await get(seeded, f"/notes/{doc['note_id']}") == (200, doc)


async def test_unknown_note_is_404(seeded):
    status, body = await get(seeded, "/notes/nope")
    assert status == 404 and "nope" in body["error"]


async def test_comment_thread_of_the_seed_comment(seeded):
    assert await get(seeded, f"/notes/{COMMENTED_NOTE}/comments") == (
        200,
        {"note_id": COMMENTED_NOTE, "comments": []},
    )
    assert await get(seeded, f"/notes/{COMMENTED_NOTE}/comments?include_deleted=true") == (
        200, {"note_id": COMMENTED_NOTE, "comments": [COMMENT]},
    )  # fmt: skip
    assert (await get(seeded, "/notes/nothing-here/comments"))[0] == 404
    # a known note with no comments has an empty thread
    assert await get(seeded, f"/notes/{NOTE_CREATED['note_id']}/comments") == (
        200, {"note_id": NOTE_CREATED["note_id"], "comments": []},
    )  # fmt: skip


async def test_history_of_the_seed_comments_note_lists_create_update_delete_in_order(seeded):
    status, body = await get(seeded, f"/notes/{COMMENTED_NOTE}/history")
    assert status == 200 and body["note_id"] == COMMENTED_NOTE
    events = body["events"]
    assert [(e["seq"], e["event_type"], e["entity"], e["entity_id"]) for e in events] == [
        (4, "note_comment_create", "comment", "63847156b0d322e9a7678bee"),
        (5, "note_comment_update_data", "comment", "63847156b0d322e9a7678bee"),
        (6, "note_comment_delete", "comment", "63847156b0d322e9a7678bee"),
    ]
    first = events[0]
    assert first["message_id"] == "bde06b1a-6ef6-11ed-bd92-b293a73b46e2"
    assert first["action_time"] == 1669624151.000324 and first["created_time"] == 1669624152.479004
    assert first["request_id"] == "c2d08ad8-6ef6-11ed-8feb-7288e2625a1a"
    assert first["app_id"] == "c71f0b7a-6ecc-11ed-9704-468042e8692e"
    assert isinstance(first["received_at"], float)
    assert [e["actor"] for e in events] == [
        "7fc0a33c-baf5-11e7-a7c2-0242ac180003",
        None,
        "7fc0a33c-baf5-11e7-a7c2-0242ac180003",
    ]
    assert events[1]["changes"][1] == {
        "field_key": "status", "field_name": "Trạng thái của comment", "add": [], "remove": [],
        "change": [{"from": "created", "to": "edited"}],
    }  # fmt: skip


async def test_history_of_a_note(seeded):
    status, body = await get(seeded, f"/notes/{NOTE_DELETED['note_id']}/history")
    (event,) = body["events"]
    assert (event["seq"], event["event_type"], event["actor"]) == (
        3,
        "note_delete",
        "91331124-bff5-4f13-83cd-f9b4aa8a333a",
    )
    assert (await get(seeded, "/notes/nope/history"))[0] == 404


async def test_note_as_of_before_between_and_after_its_events(client, settings):
    from tests.helpers import make_block, make_body, signed_post

    create = make_block(
        note_id="n1",
        action_time=1_600_000_100.0,
        event_detail=[{"field_key": "description", "add": ["first"]}],
    )
    update = make_block(
        "note_update_data",
        note_id="n1",
        action_time=1_600_000_200.0,
        event_detail=[{"field_key": "description", "change": [{"from": "first", "to": "second"}]}],
    )
    await signed_post(client, make_body(update))
    await signed_post(client, make_body(create))
    assert (await get(client, "/notes/n1?as_of=1600000099.5"))[0] == 404
    status, between = await get(client, "/notes/n1?as_of=1600000150")
    assert (status, between["description"], between["event_count"]) == (200, "first", 1)
    status, after = await get(client, "/notes/n1?as_of=2020-09-13T12:30:00Z")
    assert (status, after["description"], after["last_action_time"]) == (200, "second", 1_600_000_200.0)
    await settled(settings)
    assert (await get(client, "/notes/n1"))[1] == after


async def test_related_notes_of_the_samples(seeded):
    deal = "635b528eb3528d2e7a0477ba"
    assert await get(seeded, f"/notes?related_to={deal}") == (
        200,
        {"items": [NOTE_CREATED], "next_cursor": None},
    )
    # the deleted note's ticket lists no live note
    assert await get(seeded, "/notes?related_to=6328caf2454150000ee59180") == (
        200,
        {"items": [], "next_cursor": None},
    )


async def test_events_feed_of_the_samples_across_pages(seeded):
    status, first = await get(seeded, "/events?limit=4")
    assert (
        status == 200
        and [e["seq"] for e in first["events"]] == [1, 2, 3, 4]
        and first["next_after"] == 4
    )
    status, second = await get(seeded, "/events?after=4&limit=4")
    assert [e["seq"] for e in second["events"]] == [5, 6] and second["next_after"] is None
    assert first["events"][0]["event_type"] == "note_create"
    assert (await get(seeded, "/events?after=6"))[1] == {"events": [], "next_after": None}


async def test_every_error_answer_is_json_with_an_error(seeded):
    for path in ("/notes/nope", "/nowhere", "/notes/x?as_of=soon"):
        status, body = await get(seeded, path)
        assert status >= 400 and set(body) == {"error"} and body["error"]


async def test_a_slow_history_does_not_delay_a_webhooks_answer(client, settings, monkeypatch):  # type: ignore[no-untyped-def]
    status, _ = await signed_post(client, make_body(make_block(note_id="n1")))
    assert status == 200
    await settled(settings)
    entered, release = threading.Event(), threading.Event()
    slow = history.note_history

    def held(*args: Any) -> Any:
        entered.set()
        assert release.wait(30), "the test never released the query"
        return slow(*args)

    monkeypatch.setattr(history, "note_history", held)
    query = asyncio.ensure_future(client.get("/notes/n1/history", headers=OPS))
    try:
        assert await asyncio.to_thread(entered.wait, 30)
        # the history is held in the query pool; the event loop answers the webhook meanwhile
        status, answer = await signed_post(client, make_body(make_block(note_id="n2")))
        assert status == 200 and answer["accepted"] == 1
        assert not query.done() and not release.is_set()
    finally:
        release.set()
    resp = await query
    assert resp.status == 200
    assert [e["message_id"] for e in (await resp.json())["events"]]
