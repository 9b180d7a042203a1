"""Bad parameters get a 400 naming them; tokens see only their merchants."""

from __future__ import annotations

import base64
import json

import pytest

from app.config import Settings
from app.web import create_app
from tests.helpers import SECRETS, make_block, make_body, post_samples, settled, signed_post
from tests.views_kit import append_blocks

pytestmark = pytest.mark.backends("sqlite", "postgresql")

OPS = {"Authorization": "Bearer ops-token"}
MERCHANT_TOKEN = {
    "Authorization": "Bearer merchant-token"
}  # sees 1b99bdcf-… (the samples' merchant)
OTHER = "other-merchant"


async def get(client, path: str, headers=OPS):  # type: ignore[no-untyped-def]
    resp = await client.get(path, headers=headers)
    return resp.status, await resp.json(), resp.headers


BAD = [
    ("/accounts/a/mentions?limit=0", "limit"),
    ("/accounts/a/mentions?limit=501", "limit"),
    ("/accounts/a/mentions?limit=ten", "limit"),
    ("/accounts/a/mentions?limit=-1", "limit"),
    ("/accounts/a/mentions?cursor=not-a-cursor", "cursor"),
    ("/accounts/a/mentions?cursor=WzEsMl0", "cursor"),  # [1,2]: decodes, but not (time, id)
    ("/accounts/a/mentions?cursor=WzEsIlx1ZDgwMCIsIngiXQ", "cursor"),  # [1,"\ud800","x"]: a lone surrogate
    ("/notes?related_to=d1&cursor=WzEsIlx1ZDgwMCIsIngiXQ", "cursor"),
    ("/notes/n?as_of=yesterday", "as_of"),
    ("/notes/n?as_of=1e9", "as_of"),
    ("/notes/n?as_of=2022-11-23", "as_of"),
    ("/notes/n/comments?include_deleted=yes", "include_deleted"),
    ("/notes/" + "x" * 129, "note_id"),
    ("/notes/" + "x" * 129 + "/history", "note_id"),
    ("/accounts/" + "a" * 129 + "/mentions", "account_id"),
    ("/notes?related_to=", "related_to"),
    ("/notes", "related_to"),
    ("/notes?related_to=d&limit=0", "limit"),
    ("/events?after=-3", "after"),
    ("/events?after=x", "after"),
    ("/events?limit=1001", "limit"),
]


@pytest.mark.parametrize(("path", "name"), BAD)
async def test_bad_parameters_are_a_400_naming_the_parameter(client, settings, path, name):
    await settled(settings)
    status, body, _ = await get(client, path)
    assert status == 400 and name in body["error"], body


async def test_tokens_are_required_and_checked(client):
    assert (await get(client, "/events", {}))[0] == 401
    assert (await get(client, "/events", {"Authorization": "Bearer wrong"}))[0] == 401
    assert (await get(client, "/events", {"Authorization": "Basic ops-token"}))[0] == 401
    assert (await get(client, "/events"))[0] == 200
    # the webhook, health, metrics and schema routes need none
    assert (await client.get("/webhooks/mobio")).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_with_no_tokens_configured_query_routes_say_how_to_add_one(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(Settings(data_dir=tmp_path, apps=SECRETS)))
    status, body, _ = await get(client, "/notes/n")
    assert status == 403 and "[tokens]" in body["error"] and "notestore init" in body["error"]


async def test_a_merchant_token_cannot_see_another_merchants_data_by_any_route(client, settings):
    await post_samples(client)
    other_note = make_block(note_id="theirs", merchant_id=OTHER, object_id="x", event_detail=[
        {"field_key": "account_mentions", "add": [["acc-1"]]},
        {"field_key": "related_to", "add": [{"deal_ids": ["deal-9"]}]},
    ])  # fmt: skip
    other_comment = make_block("note_comment_create", comment_id="their-comment", merchant_id=OTHER,
                               event_detail=[{"field_key": "object_id", "add": ["theirs"]}])  # fmt: skip
    theirs = make_body(other_note, other_comment)
    theirs["merchant_id"] = OTHER  # a block and its envelope must name the same merchant
    await signed_post(client, theirs)
    await settled(settings)
    for path in (
        "/notes/theirs",
        "/notes/theirs/history",
        "/notes/theirs/comments",
        "/notes/theirs?as_of=9999999999",
    ):
        assert (await get(client, path, MERCHANT_TOKEN))[0] == 404, path
        assert (await get(client, path))[0] == 200, path
    assert (await get(client, "/accounts/acc-1/mentions", MERCHANT_TOKEN))[1]["items"] == []
    assert len((await get(client, "/accounts/acc-1/mentions"))[1]["items"]) == 1
    assert (await get(client, "/notes?related_to=deal-9", MERCHANT_TOKEN))[1]["items"] == []
    assert len((await get(client, "/notes?related_to=deal-9"))[1]["items"]) == 1
    seen = [e["message_id"] for e in (await get(client, "/events", MERCHANT_TOKEN))[1]["events"]]
    assert len(seen) == 6 and other_note["message_id"] not in seen
    # their own notes stay visible to them
    assert (await get(client, "/notes/637dfa373e395b0cead72666", MERCHANT_TOKEN))[0] == 200


async def test_mention_feed_pages_skip_and_repeat_nothing_while_mentions_arrive(client, settings):
    blocks = [
        make_block(note_id=f"n{i:04d}", action_time=1_600_001_000.0 + i % 97,
                   event_detail=[{"field_key": "account_mentions", "add": [["acc-1"]]}])
        for i in range(1000)
    ]  # fmt: skip
    append_blocks(settings.storage, blocks, per_request=100)
    await settled(settings)
    seen: list[str] = []
    cursor, extra = None, 0
    while True:
        query = "?limit=37" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await get(client, f"/accounts/acc-1/mentions{query}")
        assert status == 200
        seen += [item["note_id"] for item in page["items"]]
        keys = [(item["mentioned_at"], item["note_id"]) for item in page["items"]]
        assert keys == sorted(keys, reverse=True)
        # new mentions arrive between pages: newer ones sort before the cursor, so never show up here
        extra += 1
        fresh = make_block(note_id=f"new{extra}", action_time=1_600_005_000.0 + extra,
                           event_detail=[{"field_key": "account_mentions", "add": [["acc-1"]]}])  # fmt: skip
        await signed_post(client, make_body(fresh))
        await settled(settings)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 1000 and len(set(seen)) == 1000


async def test_related_notes_page_through(client, settings):
    blocks = [make_block(note_id=f"n{i}", action_time=1_600_000_000.0 + i, event_detail=[{"field_key": "object_id", "add": ["deal-1"]}])
              for i in range(7)]  # fmt: skip
    append_blocks(settings.storage, blocks)
    await settled(settings)
    status, first, _ = await get(client, "/notes?related_to=deal-1&limit=4")
    assert [n["note_id"] for n in first["items"]] == ["n6", "n5", "n4", "n3"]
    status, second, _ = await get(
        client, f"/notes?related_to=deal-1&limit=4&cursor={first['next_cursor']}"
    )
    assert [n["note_id"] for n in second["items"]] == ["n2", "n1", "n0"] and second[
        "next_cursor"
    ] is None


async def test_an_as_of_beyond_datetimes_range_is_a_400(client):
    for value in ("0001-01-01T00:00%2B01:00", "9999-12-31T23:59-01:00"):
        status, body, _ = await get(client, f"/notes/n?as_of={value}")
        assert status == 400 and "as_of" in body["error"], value


async def test_an_id_or_cursor_holding_a_control_character_is_a_400_on_every_backend(client, settings):
    """No stored id holds one, and PostgreSQL cannot be asked about a NUL at all."""
    await settled(settings)
    forged = base64.urlsafe_b64encode(json.dumps([1.0, "n\x00", "m"]).encode()).decode()
    for path in ("/notes/a%00b", "/notes/a%00b/history", "/notes/a%00b/comments",
                 "/accounts/a%00b/mentions", "/notes/a%0Ab", "/notes?related_to=d%00",
                 "/notes/n1?merchant_id=m%00", f"/notes?related_to=d&cursor={forged}"):  # fmt: skip
        status, body, _ = await get(client, path)
        assert status == 400 and "error" in body, (path, status, body)
