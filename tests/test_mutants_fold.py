"""The fold's registers and sets and the value rules of spec/views.md, on the state itself.

Part of the mutation-testing suite of docs/testing.md: hand-made LogEvents, no log, no views.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from eventlog.read import LogEvent
from projections.fold import EntityState, own_candidates
from projections.values import (
    canonical_field,
    element_key,
    element_value,
    elements_of,
    parse_iso,
    to_epoch,
)


def ev(
    at: float, *detail: dict[str, Any], mid: str = "m", event_type: str = "note_update_data"
) -> LogEvent:
    data = {"note_id": "n1", "action_time": at, "event_detail": list(detail)}
    block = json.dumps({"message_id": mid, "event_type": event_type, "data_event": data})
    return LogEvent(
        1, mid, event_type, "note", "n1", "n1", "m-1", "app", None, at, None, 0.0, block
    )


def add(field: str, *values: Any) -> dict[str, Any]:
    return {"field_key": field, "add": list(values)}


def folded(*events: LogEvent) -> EntityState:
    state = EntityState("n1", "m-1")
    for event in events:
        state.fold(event)
    return state


def test_a_fresh_state_holds_nothing() -> None:
    state = EntityState("n1")
    assert state.merchant_id is None and state.register("description") is None
    assert state.present("mentions") == [] and state.elements("mentions") == []
    assert not state.deleted and state.deleted_time is None
    assert (state.last_action_time, state.event_count) == (None, 0)


def test_a_register_keeps_the_value_of_the_latest_stamp_in_any_order() -> None:
    events = [
        ev(2, add("description", "two"), mid="a"),
        ev(1, add("description", "one"), mid="z"),
        ev(2, add("description", "two-b"), mid="b"),
    ]
    for order in itertools.permutations(events):
        state = folded(*order)
        assert state.register("description") == "two-b"
        assert state.registers["description"] == ((2, "b"), "two-b")


def test_an_equal_stamp_does_not_replace_a_register() -> None:
    state = folded(ev(1, add("source", "first"), mid="a"), ev(1, add("source", "again"), mid="a"))
    assert state.register("source") == "first"


def test_a_register_candidate_is_the_last_change_to_else_add_else_a_deletes_remove() -> None:
    def candidate(item: dict[str, Any], event_type: str = "note_update_data") -> Any:
        found = own_candidates(ev(1, item, event_type=event_type), frozenset({"f"}))
        return found.get("f", "<none>")

    assert candidate({"field_key": "f", "change": [{"to": "a"}, {"from": "a", "to": "b"}]}) == "b"
    assert candidate({"field_key": "f", "change": ["not an object"]}) is None
    assert candidate({"field_key": "f", "change": [{"from": "a"}]}) is None
    assert candidate({"field_key": "f", "change": [], "add": ["x", "y"]}) == "y"
    assert candidate({"field_key": "f", "add": [], "remove": ["r"]}) is None
    assert candidate({"field_key": "f", "remove": ["r", "s"]}, "note_delete") == "s"
    assert candidate({"field_key": "f", "remove": ["r"]}, "note_comment_delete") == "r"
    assert candidate({"field_key": "f", "add": [], "change": [], "remove": []}) == "<none>"
    assert candidate({"field_key": "f"}) == "<none>"
    assert candidate({"field_key": "g", "add": ["x"]}) == "<none>"


def test_own_candidates_fold_aliases_and_the_last_item_of_a_field_wins() -> None:
    event = ev(1, add("create_by", "u1"), add("created_by", "u2"), add("mention", "a"), add("x", 1))
    assert own_candidates(event, frozenset({"created_by", "mentions"})) == {
        "created_by": "u2",
        "mentions": "a",
    }
    assert own_candidates(ev(1), frozenset({"created_by"})) == {}


def test_an_update_removing_a_register_sets_it_to_null() -> None:
    state = folded(
        ev(1, add("source", "s")), ev(2, {"field_key": "source", "remove": ["s"]}, mid="b")
    )
    assert state.register("source") is None and "source" in state.registers


def test_a_diff_naming_nothing_leaves_no_trace() -> None:
    state = folded(ev(1, {"field_key": "source", "add": [], "change": [], "remove": []}))
    assert state.registers == {} and state.sets == {}
    state = folded(ev(1, {"field_key": "mentions", "add": [[]], "change": [], "remove": [None]}))
    assert state.sets == {}


def test_a_set_element_is_present_when_its_latest_add_is_after_its_latest_remove() -> None:
    state = folded(
        ev(1, add("mentions", "a", "b", "c"), mid="1"),
        ev(2, {"field_key": "mentions", "remove": ["a", "b"]}, mid="2"),
        ev(3, add("mentions", "b"), mid="3"),
        ev(2, {"field_key": "mentions", "remove": ["c"]}, mid="0"),
    )
    assert state.present("mentions") == [('"b"', (3, "3"))]
    assert state.elements("mentions") == ["b"]
    assert state.sets["mentions"]['"a"'] == [(1, "1"), (2, "2")]
    assert state.sets["mentions"]['"c"'] == [(1, "1"), (2, "0")]


def test_a_set_keeps_the_latest_stamps_whatever_the_order() -> None:
    events = [
        ev(5, add("mentions", "a"), mid="x"),
        ev(7, add("mentions", "a"), mid="y"),
        ev(6, {"field_key": "mentions", "remove": ["a"]}, mid="p"),
        ev(4, {"field_key": "mentions", "remove": ["a"]}, mid="q"),
    ]
    for order in itertools.permutations(events):
        state = folded(*order)
        assert state.sets["mentions"]['"a"'] == [(7, "y"), (6, "p")]
        assert state.elements("mentions") == ["a"]


def test_an_add_and_a_remove_at_the_same_stamp_leave_the_element_absent() -> None:
    state = folded(ev(1, {"field_key": "attachment_ids", "add": ["f"], "remove": ["f"]}))
    assert state.sets["attachment_ids"]['"f"'] == [(1, "m"), (1, "m")]
    assert state.present("attachment_ids") == []


def test_a_removed_element_never_added_is_absent() -> None:
    state = folded(ev(1, {"field_key": "file_attachment_ids", "remove": ["f"]}))
    assert state.sets["file_attachment_ids"]['"f"'] == [None, (1, "m")]
    assert state.present("file_attachment_ids") == []


def test_a_change_of_a_set_adds_to_and_removes_from_not_in_to() -> None:
    state = folded(
        ev(1, add("account_mentions", ["a", "b"]), mid="1"),
        ev(2, {"field_key": "account_mentions", "change": [
            {"from": ["a", "b"], "to": ["b", "c"]}, "junk", {"to": None}, {"from": "d"}
        ]}, mid="2"),
    )  # fmt: skip
    assert state.elements("account_mentions") == ["b", "c"]
    assert state.sets["account_mentions"]['"b"'] == [(2, "2"), None]
    assert state.sets["account_mentions"]['"a"'] == [(1, "1"), (2, "2")]
    assert state.sets["account_mentions"]['"d"'] == [None, (2, "2")]


def test_a_deletes_remove_counts_as_present_at_the_delete() -> None:
    state = folded(
        ev(1, add("mentions", "a"), mid="1"),
        ev(2, {"field_key": "mentions", "remove": ["a", "b"]}, mid="2", event_type="note_delete"),
    )
    assert state.elements("mentions") == ["a", "b"]
    assert state.sets["mentions"]['"a"'] == [(2, "2"), None]


def test_deletion_keeps_the_earliest_delete_and_time_the_latest_event() -> None:
    events = [
        ev(5, mid="a", event_type="note_delete"),
        ev(3, mid="b", event_type="note_comment_delete"),
        ev(9, mid="c"),
        ev(4, mid="d", event_type="note_delete"),
        ev(1, mid="e"),
    ]
    for order in itertools.permutations(events):
        state = folded(*order)
        assert state.deleted and state.deleted_time == 3
        assert state.last_action_time == 9 and state.event_count == 5
    assert not folded(ev(1), ev(2, mid="x")).deleted


def test_the_state_survives_storage_exactly() -> None:
    state = folded(
        ev(1, add("description", {"b": 1, "a": [2]}), add("mentions", "a", {"id": 2}), mid="1"),
        ev(2, {"field_key": "mentions", "remove": ["a"]}, mid="2"),
        ev(0.5, {"field_key": "attachment_ids", "remove": ["f"]}, mid="3"),
        ev(3, mid="4", event_type="note_delete"),
    )
    stored = json.loads(json.dumps(state.to_json()))
    assert stored == {
        "r": {"description": [[1, "1"], {"b": 1, "a": [2]}]},
        "s": {
            "attachment_ids": {'"f"': [None, [0.5, "3"]]},
            "mentions": {'"a"': [[1, "1"], [2, "2"]], '{"id":2}': [[1, "1"], None]},
        },
        "m": "m-1",
        "d": 3,
        "t": 3,
        "n": 4,
    }
    assert list(stored["s"]) == ["attachment_ids", "mentions"]
    reloaded = EntityState.from_json("n1", stored)
    assert reloaded == state
    assert reloaded.registers["description"][0] == (1, "1")
    reloaded.fold(ev(2.5, add("mentions", "a"), mid="5"))
    assert reloaded.elements("mentions") == ["a", {"id": 2}]


# -- values -----------------------------------------------------------------------


def test_aliases_name_the_canonical_fields() -> None:
    assert [canonical_field(k) for k in ("create_by", "update_by", "mention", "mentions", "x")] == [
        "created_by", "updated_by", "mentions", "mentions", "x"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-11-23T10:47:05Z", 1669200425.0),
        ("2022-11-23T10:47:05.5+00:00", 1669200425.5),
        ("2022-11-23T10:47:05-01:30", 1669200425.0 + 5400),
        ("2022-11-23T12:17:05+0130", 1669200425.0),
        ("2022-11-23T10:47:05.000001Z", 1669200425.000001),
        ("2022-11-23T10:47:05.12Z", 1669200425.12),
        ("1969-12-31T23:59:59Z", -1.0),
        ("2024-02-29T00:00Z", 1709164800.0),
        ("2023-02-29T00:00Z", None),
        ("2022-13-01T00:00Z", None),
        ("2022-11-23T24:00Z", None),
        ("2022-11-23T10:47:05Z ", None),
        (" 2022-11-23T10:47:05Z", None),
        ("2022-11-23 10:47:05Z", None),
        ("", None),
    ],
)
def test_iso_times(text: str, expected: float | None) -> None:
    assert parse_iso(text) == expected
    assert to_epoch(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0.0), (-3, -3.0), (2.5, 2.5), (False, None), ([1], None)]
)
def test_numbers_are_times_as_they_are(value: Any, expected: float | None) -> None:
    result = to_epoch(value)
    assert result == expected and (result is None or type(result) is float)


def test_elements_unwrap_one_level_and_drop_nulls() -> None:
    assert elements_of([[["deep"]], [None, 0, False], None, "", 0]) == [["deep"], 0, False, "", 0]
    assert elements_of(0) == [0] and elements_of(False) == [False] and elements_of("") == [""]
    assert elements_of({}) == [{}] and elements_of([]) == []


@pytest.mark.parametrize(
    "element",
    ["a", 'é"\\\n', "", 1, 1.5, None, True, {"b": 1, "a": "é"}, ["x", {"k": [1]}], "\\", '"'],
)
def test_an_element_key_reads_back_as_its_element(element: Any) -> None:
    key = element_key(element)
    assert element_value(key) == element
    assert key == json.dumps(element, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_element_keys_order_as_canonical_json() -> None:
    assert element_key({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert element_key("é") == '"é"'
    assert element_value('"plain"') == "plain"
    assert element_value('"tab\\t"') == "tab\t"
    assert element_value("[1]") == [1]
