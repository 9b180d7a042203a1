"""A note's history: its own events and those of the comments now on it, nothing else."""

from __future__ import annotations

from tests.helpers import make_block, make_body, settled, signed_post

OPS = {"Authorization": "Bearer ops-token"}
T0 = 1669200000.0


def comment(comment_id: str, note_id: str, at: float, event_type: str = "note_comment_create"):  # type: ignore[no-untyped-def]
    return make_block(event_type, comment_id=comment_id, action_time=at,
                      event_detail=[{"field_key": "object_id", "change": [{"from": None, "to": note_id}]}])  # fmt: skip


async def test_history_lists_the_notes_events_and_its_comments_now_and_no_others(client, settings):
    n1, n2 = make_block(note_id="n1", action_time=T0), make_block(note_id="n2", action_time=T0 + 1)
    c1, c2 = comment("c1", "n1", T0 + 2), comment("c2", "n2", T0 + 3)
    c3_on_n1 = comment("c3", "n1", T0 + 4)
    c3_moved = comment("c3", "n2", T0 + 5, "note_comment_update_data")  # c3 is now on n2
    other_type = make_block("deal_update", note_id="n1", action_time=T0 + 6)
    for block in (n1, n2, c1, c2, c3_on_n1, c3_moved, other_type):
        status, _ = await signed_post(client, make_body(block))
        assert status == 200
    await settled(settings)

    async def history(note_id: str) -> list[str]:
        resp = await client.get(f"/notes/{note_id}/history", headers=OPS)
        assert resp.status == 200
        return [e["message_id"] for e in (await resp.json())["events"]]

    assert await history("n1") == [n1["message_id"], c1["message_id"], other_type["message_id"]]
    assert await history("n2") == [n2["message_id"], c2["message_id"], c3_on_n1["message_id"],
                                   c3_moved["message_id"]]  # fmt: skip
