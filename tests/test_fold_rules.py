"""The fold rules of spec/views.md, one by one, on hand-made events."""

from __future__ import annotations

import json

import pytest

from eventlog.read import LogEvent
from projections.documents import comment_document, note_document
from projections.fold import EntityState
from projections.values import elements_of, to_epoch


def event(
    event_type: str, at: float, *detail: dict, mid: str = "m", merchant: str | None = "m-1"
) -> LogEvent:  # type: ignore[type-arg]
    data = {"note_id": "n1", "action_time": at, "event_detail": list(detail)}
    if merchant:
        data["merchant_id"] = merchant
    block = json.dumps({"message_id": mid, "event_type": event_type, "data_event": data})
    return LogEvent(
        1, mid, event_type, "note", "n1", "n1", merchant, "app", None, at, None, 0.0, block
    )


def fold(*events: LogEvent) -> dict:  # type: ignore[type-arg]
    state = EntityState("n1")
    for e in events:
        state.fold(e)
    return note_document(state)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-11-23T10:47Z", 1669200420.0),
        ("2022-11-23t10:47:00.25z", 1669200420.25),
        ("2022-11-23T17:47+07:00", 1669200420.0),
        ("2022-11-23T17:47+0700", 1669200420.0),
        ("2022-11-23T10:47", 1669200420.0),
        ("2022-11-23T10:47:00.1234567Z", 1669200420.123456),
        (1669276693.631579, 1669276693.631579),
        (7, 7.0),
        (True, None),
        ("2022-11-23", None),
        ("2022-02-30T10:00Z", None),
        ("yesterday", None),
        (None, None),
        ({"t": 1}, None),
    ],
)
def test_times(value, expected):
    assert to_epoch(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [([[]], []), ([["a", "b"]], ["a", "b"]), (["a", "b"], ["a", "b"]), (None, []), ([None, "a"], ["a"]),
     ("a", ["a"]), ([["a", None], "b"], ["a", "b"]), ({"id": 1}, [{"id": 1}])],
)  # fmt: skip
def test_elements_of_a_value(value, expected):
    assert elements_of(value) == expected


def test_register_candidates_change_then_add_then_remove():
    doc = fold(
        event("note_update_data", 1, {"field_key": "description", "add": ["x"], "change": [{"from": "a", "to": "b"}]}, mid="a"),
        event("note_update_data", 1, {"field_key": "source", "add": ["S1", "S2"]}, mid="b"),
        event("note_update_data", 1, {"field_key": "object_id", "remove": ["o"]}, mid="c"),
        event("note_update_data", 1, {"field_key": "updated_by", "add": [], "change": [], "remove": []}, mid="d"),
    )  # fmt: skip
    assert (doc["description"], doc["source"], doc["object_id"]) == ("b", "S2", None)
    assert "updated_by" not in doc["extra"] and doc["updated_by"] is None


def test_alias_and_canonical_name_in_one_event_the_last_wins():
    doc = fold(
        event(
            "note_create",
            1,
            {"field_key": "created_by", "add": ["u1"]},
            {"field_key": "create_by", "add": ["u2"]},
        )
    )
    assert doc["created_by"] == "u2"


def test_later_stamp_wins_and_message_id_breaks_ties():
    late = event("note_update_data", 2, {"field_key": "description", "add": ["late"]}, mid="a")
    tie_low = event("note_update_data", 1, {"field_key": "description", "add": ["low"]}, mid="a")
    tie_high = event("note_update_data", 1, {"field_key": "description", "add": ["high"]}, mid="b")
    assert fold(late, tie_high, tie_low)["description"] == "late"
    assert fold(tie_high, tie_low)["description"] == "high"
    assert fold(tie_low, tie_high)["description"] == "high"


def test_within_one_event_a_remove_beats_an_add_of_the_same_element():
    doc = fold(
        event(
            "note_update_data",
            1,
            {"field_key": "attachment_ids", "add": ["f1", "f2"], "remove": ["f1"]},
        )
    )
    assert doc["attachment_ids"] == ["f2"]


def test_change_on_a_list_adds_to_and_removes_from_minus_to():
    doc = fold(
        event("note_create", 1, {"field_key": "account_mentions", "add": [["a", "b", "c"]]}, mid="1"),
        event("note_update_data", 2, {"field_key": "account_mentions", "change": [{"from": ["a", "b"], "to": ["b", "d"]}]}, mid="2"),
    )  # fmt: skip
    assert doc["account_mentions"] == ["b", "c", "d"]


def test_an_older_remove_does_not_undo_a_newer_add():
    doc = fold(
        event("note_update_data", 5, {"field_key": "mentions", "add": ["a"]}, mid="1"),
        event("note_update_data", 3, {"field_key": "mentions", "remove": ["a"]}, mid="2"),
    )
    assert doc["mentions"] == ["a"]


def test_delete_reads_remove_as_the_last_values_and_stays_deleted():
    doc = fold(
        event("note_delete", 5, {"field_key": "description", "remove": ["last"]}, {"field_key": "attachment_ids", "remove": [["f1"]]}, mid="1"),
        event("note_delete", 3, mid="2"),
        event("note_update_data", 9, {"field_key": "description", "change": [{"from": "last", "to": "after"}]}, mid="3"),
    )  # fmt: skip
    assert (doc["deleted"], doc["deleted_time"]) == (True, 3)
    assert doc["description"] == "after" and doc["attachment_ids"] == ["f1"]
    assert (doc["last_action_time"], doc["event_count"]) == (9, 3)


def test_elements_are_ordered_by_canonical_json():
    doc = fold(
        event(
            "note_create",
            1,
            {"field_key": "mentions", "add": [["b", {"id": "é", "a": 1}, "a", 10]]},
        )
    )
    assert doc["mentions"] == ["a", "b", 10, {"a": 1, "id": "é"}]


def test_the_merchant_is_the_entitys_key_and_no_event_changes_it():
    state = EntityState("n1", "m-1")
    state.fold(event("note_create", 2, {"field_key": "merchant_id", "add": ["m-2"]}, mid="1", merchant="m-1"))
    assert note_document(state)["merchant_id"] == "m-1"
    assert EntityState.from_json("n1", state.to_json()).merchant_id == "m-1"


def test_extra_holds_other_fields_and_information_gives_type_and_result():
    doc = fold(event(
        "note_create", 1,
        {"field_key": "information", "add": [{"type": "CALL", "result": "BUSY"}]},
        {"field_key": "file_attachment_ids", "add": ["f"]},
        {"field_key": "color", "add": ["red"]},
        {"field_key": "merchant_id", "add": ["m"]},
        {"field_key": "silent", "add": [], "change": [], "remove": []},
    ))  # fmt: skip
    assert (doc["type"], doc["result"]) == ("CALL", "BUSY")
    assert doc["extra"] == {"color": "red", "file_attachment_ids": ["f"]}


def test_comment_note_id_is_the_object_id_when_a_string():
    state = EntityState("c1")
    state.fold(event("note_comment_create", 1, {"field_key": "object_id", "add": [42]}))
    assert comment_document(state)["note_id"] is None


def test_a_stored_and_reloaded_state_renders_the_same_document():
    """Regression (found by hypothesis): object values kept their key order only when fresh."""
    from projections.base import state_text

    state = EntityState("n1")
    state.fold(
        event(
            "note_create",
            1,
            {"field_key": "information", "add": [{"type": "GENERAL", "result": "MET"}]},
        )
    )
    reloaded = EntityState.from_json("n1", json.loads(state_text(state)))
    assert json.dumps(note_document(reloaded)) == json.dumps(note_document(state))
    assert state_text(reloaded) == state_text(state)


def test_iso_times_beyond_datetimes_range_are_not_times():
    # an offset that moves the first or last moment datetime holds out of its range
    assert to_epoch("0001-01-01T00:00+01:00") is None
    assert to_epoch("9999-12-31T23:59-01:00") is None
    assert to_epoch("0001-01-01T01:00+01:00") == -62135596800.0
