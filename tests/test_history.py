"""A note's history: its own events and those of the comments now on it, nothing else."""

from __future__ import annotations

import pytest

from tests.helpers import make_block, make_body, settled, signed_post

pytestmark = pytest.mark.backends("sqlite", "postgresql")

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


def test_another_merchants_comments_on_the_note_id_are_never_read_for_its_history(tmp_path):
    """B's thousands of comments on A's note id cannot slow A's history, nor make it fail."""
    import sqlite3

    from app.queries.history import note_history
    from app.queries.scope import Scope
    from eventlog.db import LOG_FILE, connect
    from projections.rebuild import rebuild_all
    from projections.registry import all_projectors
    from projections.store import open_views
    from tests.helpers import MERCHANT
    from tests.views_kit import append_bodies

    mine = [make_block(note_id="n1", action_time=T0), comment("c-a", "n1", T0 + 1)]
    theirs = make_body(*[comment(f"c-b{i}", "n1", T0 + 2) for i in range(60)])
    for block in theirs["block_event"]:
        block["data_event"]["merchant_id"] = "merchant-b"
    theirs["merchant_id"] = "merchant-b"
    append_bodies(tmp_path, [make_body(*mine), theirs])
    views, log = open_views(tmp_path), connect(tmp_path / LOG_FILE, readonly=True)
    try:
        rebuild_all(all_projectors(), views, log)
        # a query binding every comment on the id would need 120 variables: allow 50
        for conn in (views, log):
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)
        answer = note_history(views, log, Scope(frozenset({MERCHANT})), "n1")
        assert [e["message_id"] for e in answer["events"]] == [b["message_id"] for b in mine]
    finally:
        views.close()
        log.close()


def test_reading_by_entity_takes_any_number_of_ids(tmp_path):
    from eventlog.db import LOG_FILE, connect
    from eventlog.read import IDS_PER_QUERY, read_by_entity
    from tests.views_kit import append_bodies

    blocks = [make_block(note_id=f"n{i}", action_time=T0 + i) for i in range(2 * IDS_PER_QUERY + 3)]
    append_bodies(tmp_path, [make_body(*blocks)])
    log = connect(tmp_path / LOG_FILE, readonly=True)
    try:
        found = read_by_entity(log, [f"n{i}" for i in reversed(range(len(blocks)))] + ["n0", "none"])
        assert [e.message_id for e in found] == [b["message_id"] for b in blocks]  # seq order, once each
    finally:
        log.close()
