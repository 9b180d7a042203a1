"""GET /search on both backends: folded words, HTML stripped, comments, deletes, scopes,
paging, ranking, marked snippets, and no query that can make a 500."""

from __future__ import annotations

from typing import Any

import pytest

from app.queries import search as search_query
from tests.helpers import MERCHANT, make_block, make_body, settled, signed_post

pytestmark = pytest.mark.backends("sqlite", "postgresql")

OPS = {"Authorization": "Bearer ops-token"}
ONE_MERCHANT = {"Authorization": "Bearer merchant-token"}
OTHER = "7d1f4c2e-0b5a-4a47-9a53-3f2f6d0c8e11"
T0 = 1669200000.0
SEARCHED = ("notes", "comments", "mentions", "search")


def described(note_id: str, text: str, at: float = T0, **more: Any) -> dict[str, Any]:
    detail = [{"field_key": "description", "add": [text], "change": [], "remove": []}]
    for key, value in more.items():
        detail.append({"field_key": key, "add": [value], "change": [], "remove": []})
    return make_block(note_id=note_id, action_time=at, event_detail=detail)


def comment(comment_id: str, note_id: str, text: str, kind: str = "note_comment_create",
            at: float = T0 + 1) -> dict[str, Any]:  # fmt: skip
    detail = [
        {"field_key": "object_id", "add": [note_id], "change": [], "remove": []},
        {"field_key": "description", "add": [text], "change": [], "remove": []},
    ]
    return make_block(kind, comment_id=comment_id, action_time=at, event_detail=detail)


async def deliver(client, settings, *blocks, merchant: str = MERCHANT) -> None:  # type: ignore[no-untyped-def]
    body = make_body(*blocks)
    body["merchant_id"] = merchant
    for block in body["block_event"]:
        block["data_event"]["merchant_id"] = merchant
    status, _ = await signed_post(client, body)
    assert status == 200
    await settled(settings, views_named=SEARCHED)


async def found(client, q: str, headers=OPS, **query: str) -> list[str]:  # type: ignore[no-untyped-def]
    resp = await client.get("/search", params={"q": q, **query}, headers=headers)
    assert resp.status == 200, await resp.text()
    return [item["note_id"] for item in (await resp.json())["items"]]


async def test_words_match_with_or_without_diacritics_and_case(client, settings):
    """`ghi chu` finds `Ghi chú`, `duong` finds `Đường`; a word not in the note finds nothing."""
    await deliver(client, settings, described("n1", "<p>Ghi chú về <b>Đường</b> Lê Lợi</p>"),
                  described("n2", "Khách hàng khác"))  # fmt: skip
    for q in ("ghi chu", "GHI CHÚ", "duong", "ĐƯỜNG", "đường lợi", "le loi"):
        assert await found(client, q) == ["n1"], q
    assert await found(client, "khach") == ["n2"]
    assert await found(client, "ghi khach") == []  # every word must match


async def test_html_tags_are_not_words_and_the_snippet_is_escaped_then_marked(client, settings):
    await deliver(client, settings, described(
        "n1", '<div class="hiddenclass">Hẹn gặp &lt;script&gt;alert(1)&lt;/script&gt; tuần sau</div>'
    ))  # fmt: skip
    assert await found(client, "hiddenclass") == [] and await found(client, "div") == []
    resp = await client.get("/search", params={"q": "hen script"}, headers=OPS)
    (item,) = (await resp.json())["items"]
    assert item["snippet"] == (
        "<mark>Hẹn</mark> gặp &lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; tuần sau"
    )


async def test_type_result_and_live_comments_are_searched(client, settings):
    info = {"type": "call", "result": "interested"}
    await deliver(client, settings, described("n1", "plain", information=info),
                  comment("c1", "n1", "<i>bình luận</i> riêng"))  # fmt: skip
    assert await found(client, "call interested") == ["n1"]
    assert await found(client, "binh luan plain") == ["n1"]


async def test_deleted_notes_and_comments_drop_out(client, settings):
    await deliver(client, settings, described("n1", "alpha"), described("n2", "alpha"),
                  comment("c1", "n2", "omega"))  # fmt: skip
    assert sorted(await found(client, "alpha")) == ["n1", "n2"]
    await deliver(client, settings, make_block("note_delete", note_id="n1", action_time=T0 + 5),
                  make_block("note_comment_delete", comment_id="c1", action_time=T0 + 5))  # fmt: skip
    assert await found(client, "alpha") == ["n2"]
    assert await found(client, "omega") == []


async def test_a_comment_moved_to_another_note_moves_its_words(client, settings):
    await deliver(client, settings, described("n1", "one"), described("n2", "two"),
                  comment("c1", "n1", "traveller"))  # fmt: skip
    assert await found(client, "traveller") == ["n1"]
    moved = make_block("note_comment_update_data", comment_id="c1", action_time=T0 + 9,
                       event_detail=[{"field_key": "object_id", "change": [{"from": "n1", "to": "n2"}],
                                      "add": [], "remove": []}])  # fmt: skip
    await deliver(client, settings, moved)
    assert await found(client, "traveller") == ["n2"]


async def test_a_token_of_one_merchant_never_finds_another_merchants_notes(client, settings):
    await deliver(client, settings, described("mine", "shared word"))
    await deliver(client, settings, described("theirs", "shared word"), merchant=OTHER)
    await deliver(client, settings, described("mine", "secret", at=T0 + 1), merchant=OTHER)
    assert sorted(await found(client, "shared")) == ["mine", "theirs"]
    assert await found(client, "shared", ONE_MERCHANT) == ["mine"]
    assert await found(client, "secret", ONE_MERCHANT) == []  # same id, the other merchant's
    resp = await client.get("/search", params={"q": "shared"}, headers=ONE_MERCHANT)
    assert [i["merchant_id"] for i in (await resp.json())["items"]] == [MERCHANT]


@pytest.mark.parametrize("chunk", [3, 200])
async def test_pages_with_a_cursor_list_every_match_once(client, settings, monkeypatch, chunk):
    """Across pages (and across the ranked chunks of candidates) each match comes once."""
    monkeypatch.setattr(search_query, "CHUNK", chunk)
    await deliver(client, settings, *[
        described(f"n{i:02}", "common " * (1 + i % 4) + f"word{i}", at=T0 + i) for i in range(23)
    ], described("other", "nothing"))  # fmt: skip
    seen, cursor, pages = [], None, 0
    while True:
        query = {"q": "common", "limit": "5", **({"cursor": cursor} if cursor else {})}
        resp = await client.get("/search", params=query, headers=OPS)
        body = await resp.json()
        seen += [item["note_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"n{i:02}" for i in range(23)] and len(seen) == 23
    assert pages == 5


async def test_the_best_match_comes_first(client, settings):
    await deliver(client, settings,
                  described("once", "apple " + " ".join(f"filler{i}" for i in range(40))),
                  described("often", "apple apple apple pie"))  # fmt: skip
    assert await found(client, "apple") == ["often", "once"]


HOSTILE = [
    '"', '""', "'", 'a"b', "alpha OR beta", "alpha AND NOT beta", "NEAR(alpha beta)",
    "NEAR(alpha beta, 2)", "alpha*", "*", "^alpha", "alpha:beta", "words:alpha", "(", ")",
    "{alpha}", "-alpha", "+alpha", "alpha & beta | !gamma", "alpha <-> beta", "alpha:*",
    "\x00", "alpha\x00beta", "\ud800", "%", "?", "\\", "x" * 400, "ß" * 300, "日本語",
    "😀 alpha", "a " * 16, "a b c d e f g h i j k l m n o p q",
]  # fmt: skip


async def test_hostile_queries_answer_200_or_400_never_500(client, settings):
    await deliver(client, settings, described("n1", "alpha beta gamma"))
    for q in [*HOSTILE, "x" * 100_000]:
        resp = await client.get("/search", params={"q": q}, headers=OPS)
        assert resp.status in (200, 400), (q[:40], resp.status, await resp.text())
        if resp.status == 400:
            assert set(await resp.json()) == {"error"}


async def test_operators_are_words_not_syntax(client, settings):
    await deliver(client, settings, described("n1", "alpha"), described("n2", "alphabet or beta"))
    assert await found(client, "alpha OR beta") == []  # OR is a word the notes must hold
    assert await found(client, "beta OR") == ["n2"]
    assert await found(client, "alpha*") == ["n1"]  # no prefix search
    assert await found(client, "NEAR(alpha)") == []


@pytest.mark.parametrize("query", [
    {}, {"q": ""}, {"q": "  !!! "}, {"q": "x" * 501}, {"q": "a", "limit": "0"},
    {"q": "a", "limit": "101"}, {"q": "a", "limit": "x"}, {"q": "a", "cursor": "garbage"},
    {"q": "a", "cursor": "WzEsMiwzXQ"}, {"q": "a", "cursor": "W251bGwsIiIsIiIsLTFd"},
])  # fmt: skip
async def test_bad_parameters_are_400_with_the_error_shape(client, settings, query):
    resp = await client.get("/search", params=query, headers=OPS)
    assert resp.status == 400 and set(await resp.json()) == {"error"}


async def test_search_needs_a_token(client, settings):
    assert (await client.get("/search", params={"q": "a"})).status == 401
