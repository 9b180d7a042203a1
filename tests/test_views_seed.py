"""(a) Folding the six seed samples gives exactly the views spec/views.md prescribes, on each
backend (tests/backends.py)."""

from __future__ import annotations

import json

import pytest

from projections.registry import all_projectors
from tests import backends as kit
from tests.helpers import SAMPLE_FILES, make_block
from tests.strategies import T0
from tests.views_kit import Views, append_blocks, append_bodies, docs, fold_from_scratch

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

MERCHANT = "1b99bdcf-d582-4f49-9715-1b61dfff3924"

NOTE_CREATED = {
    "note_id": "637dfa373e395b0cead72666",
    "merchant_id": MERCHANT,
    "description": "<div>Nội dung 1</div>",
    "information": {"type": "GENERAL"},
    "type": "GENERAL",
    "result": None,
    "source": "SALE",
    "object_id": "635b528eb3528d2e7a0477ba",
    "related_to": {
        "profile_ids": [],
        "company_ids": [],
        "deal_ids": ["635b528eb3528d2e7a0477ba"],
        "ticket_ids": [],
    },
    "related_to_not_delete": {"deal_ids": ["635b528eb3528d2e7a0477ba"]},
    "attachment_ids": [],
    "mentions": [],
    "account_mentions": [],
    "created_time": 1669200420.0,  # "2022-11-23T10:47Z"
    "created_by": "70176784-07f7-4eb7-9280-4028f21152b7",  # from the alias create_by
    "updated_by": "70176784-07f7-4eb7-9280-4028f21152b7",
    "updated_time": None,
    "deleted": False,
    "deleted_time": None,
    "last_action_time": 1669200439.676389,
    "event_count": 1,
    "extra": {},
}
NOTE_UPDATED = {
    "note_id": "637c513276ba4d23fcb58625",
    "merchant_id": MERCHANT,
    "description": "<div>Nội dung ghi chú sau khi đã chỉnh sửa</div>",
    "information": None,
    "type": None,
    "result": None,
    "source": None,
    "object_id": None,
    "related_to": None,
    "related_to_not_delete": None,
    "attachment_ids": [],
    "mentions": [],
    "account_mentions": [],
    "created_time": None,
    "created_by": None,
    "updated_by": None,
    "updated_time": 1669108532.829107,
    "deleted": False,
    "deleted_time": None,
    "last_action_time": 1669108532.833919,
    "event_count": 1,
    "extra": {},
}
NOTE_DELETED = {
    "note_id": "637f2415e60854241823a73d",
    "merchant_id": MERCHANT,
    "description": "<div>Ghi chú 1</div>",  # a delete's remove is the value before deletion
    "information": {"type": "GENERAL"},
    "type": "GENERAL",
    "result": None,
    "source": "TICKET",
    "object_id": "6328caf2454150000ee59180",
    "related_to": {
        "profile_ids": [],
        "company_ids": [],
        "deal_ids": [],
        "ticket_ids": ["6328caf2454150000ee59180"],
    },
    "related_to_not_delete": {"ticket_ids": ["6328caf2454150000ee59180"]},
    "attachment_ids": [],
    "mentions": [],
    "account_mentions": [],
    "created_time": 1669276693.631579,
    "created_by": "91331124-bff5-4f13-83cd-f9b4aa8a333a",
    "updated_by": "91331124-bff5-4f13-83cd-f9b4aa8a333a",
    "updated_time": None,
    "deleted": True,
    "deleted_time": 1669276753.823711,
    "last_action_time": 1669276753.823711,
    "event_count": 1,
    "extra": {},
}
COMMENT = {
    "comment_id": "63847156b0d322e9a7678bee",
    "note_id": "63843fceb0d322e9a7678bec",
    "merchant_id": MERCHANT,
    # the delete (latest stamp) carries the edited text as its last value
    "description": "Đã liên hệ 1 lần, nhưng Kh từ chối nghe. Sẽ gọi lại vào dịp khác gần nhất có thể",
    "status": "edited",
    "file_attachment_ids": ["6384725a6ed9395b5a9c6a6b"],
    "created_by": "7fc0a33c-baf5-11e7-a7c2-0242ac180003",
    "updated_by": "7fc0a33c-baf5-11e7-a7c2-0242ac180003",
    "created_time": 1669624150.896838,  # the delete's epoch value beats the create's ISO one
    "updated_time": 1669624415.347574,
    "source": "NOTE",
    "deleted": True,
    "deleted_time": 1669625443.474335,
    "last_action_time": 1669625443.474335,
    "event_count": 3,
    "extra": {},
}

SEARCH_ITEM = ("note_id", "merchant_id", "type", "result", "created_by", "last_action_time")
EXPECTED = {
    "notes": ("notes", 4, {d["note_id"]: d for d in (NOTE_CREATED, NOTE_UPDATED, NOTE_DELETED)}),
    "comments": ("comments", 5, {COMMENT["comment_id"]: COMMENT}),
    "mentions": ("mentions", 4, {}),  # no sample mentions anyone
    # the live notes (the deleted one and the deleted comment's text are not searched)
    "search": ("search_docs", 5, {d["note_id"]: {k: d[k] for k in SEARCH_ITEM}
                                  for d in (NOTE_CREATED, NOTE_UPDATED)}),
}  # fmt: skip


@pytest.mark.parametrize("projector", all_projectors(), ids=lambda p: p.name)
def test_seed_samples_fold_to_the_views_written_by_hand(backend, projector):
    append_bodies(backend, [json.loads(p.read_bytes()) for p in SAMPLE_FILES])
    views = Views(backend, projector)
    views.build()
    table, doc_column, expected = EXPECTED[projector.name]
    assert docs(views.dump(), table, doc_column) == expected
    assert views.dump() == fold_from_scratch(backend, projector)  # every row, as SQLite's
    views.close()


def test_comment_thread_order_and_the_note_known_only_from_a_later_event(backend):
    """An update before its create joins the thread once an event with object_id arrives."""
    views = Views(backend, all_projectors()[1])
    views.build()
    update = make_block("note_comment_update_data", comment_id="c1", action_time=T0 + 20)
    append_blocks(backend, [update])
    views.catch_up()
    assert [r[2] for r in views.dump()["comments"]] == [None]
    create = make_block(
        "note_comment_create", comment_id="c1", action_time=T0 + 10,
        event_detail=[{"field_key": "object_id", "add": ["n1"]}],
    )  # fmt: skip
    append_blocks(backend, [create])
    views.catch_up()
    assert [r[2] for r in views.dump()["comments"]] == ["n1"]
    views.close()


def test_mention_feed_follows_adds_removes_and_deletes(backend):
    views = Views(backend, all_projectors()[2])
    views.build()
    mention = [
        {"field_key": "account_mentions", "add": [["acc-1", "acc-2"]]},
        {"field_key": "mention", "add": [[{"id": "acc-3"}, {"account_id": "acc-1", "id": "x"}, 7]]},
        {"field_key": "description", "add": ["<b>hi</b>"]},
    ]
    append_blocks(backend, [make_block(note_id="n1", action_time=T0 + 100, event_detail=mention)])
    unmention = [
        {"field_key": "account_mentions", "change": [{"from": ["acc-1", "acc-2"], "to": ["acc-1"]}]}
    ]
    append_blocks(
        backend,
        [
            make_block(
                "note_update_data", note_id="n1", action_time=T0 + 200, event_detail=unmention
            )
        ],
    )
    views.catch_up()
    feed = {(r[0], r[2]): (r[3], json.loads(str(r[4]))) for r in views.dump()["mentions"]}
    assert set(feed) == {("acc-1", "n1"), ("acc-3", "n1")}
    # acc-1 was added at 100 in both fields and re-added by the change's "to" at 200
    assert feed[("acc-1", "n1")][0] == T0 + 200 and feed[("acc-3", "n1")][0] == T0 + 100
    assert feed[("acc-3", "n1")][1] == {
        "note_id": "n1", "merchant_id": MERCHANT, "mentioned_at": T0 + 100, "description": "<b>hi</b>",
        "type": None, "source": None, "object_id": None, "created_by": None,
    }  # fmt: skip
    append_blocks(backend, [make_block("note_delete", note_id="n1", action_time=T0 + 300)])
    views.catch_up()
    assert views.dump()["mentions"] == []
    views.close()
