"""The receiver's fast block check never accepts what the pydantic model refuses.

`surely_valid_block` lets the common shape skip pydantic; whatever it is not sure
of goes to BLOCK, which decides and words the reason. So it may be stricter than
BLOCK, never looser, and it must actually say yes to what Mobio sends.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventlog.intake import (
    EARLIEST_ACTION_TIME,
    MAX_AHEAD_S,
    MAX_DEPTH,
    Context,
    NewEvent,
    Rejected,
    read_block,
    read_body,
    surely_shallow,
)
from eventlog.models import BLOCK, surely_valid_block
from tests.helpers import SAMPLE_FILES
from tests.strategies import event_blocks

RECEIVED_AT = 1669300000.0  # after every sample's action_time


def _plausible(action_time: float) -> bool:
    return EARLIEST_ACTION_TIME <= action_time <= RECEIVED_AT + MAX_AHEAD_S


# Values a field may be replaced by: the wrong types, the edge cases of the right ones.
EDGE_VALUES = [
    None, True, False, 0, -0.0, 2**63, -(2**63) - 1, 2**64, math.inf, -math.inf, math.nan,
    "", "x", "é" * 128, "é" * 129, [], [{}], {}, {"field_key": 1}, "1669200439",
]  # fmt: skip
odd_values = st.one_of(
    st.sampled_from(EDGE_VALUES),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "é" * 128, "é" * 129, "a" * 200]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["field_key", "add"]), st.integers(), max_size=2),
)
PATHS = [
    ("message_id",), ("event_type",), ("data_event",),
    ("data_event", "action_time"), ("data_event", "note_id"), ("data_event", "comment_id"),
    ("data_event", "event_detail"), ("data_event", "event_detail", 0),
    ("data_event", "event_detail", 0, "field_key"), ("data_event", "event_detail", 0, "add"),
    ("data_event", "event_detail", 0, "change"), ("data_event", "event_detail", 0, "remove"),
]  # fmt: skip


def _accepted_by_model(block: Any) -> bool:
    try:
        BLOCK.validate_python(block)
    except ValidationError:
        return False
    return True


def _mutate(block: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    mutated = copy.deepcopy(block)
    holder: Any = mutated
    for key in path[:-1]:
        try:
            holder = holder[key]
        except (KeyError, IndexError, TypeError):
            return mutated
    last = path[-1]
    if isinstance(holder, dict) and isinstance(last, str):
        if delete:
            holder.pop(last, None)
        else:
            holder[last] = value
    elif isinstance(holder, list) and isinstance(last, int) and last < len(holder):
        holder[last] = value
    return mutated


def _sample_blocks() -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for path in SAMPLE_FILES:
        blocks += json.loads(path.read_bytes())["block_event"]
    return blocks


def test_every_seed_sample_block_takes_the_fast_path() -> None:
    blocks = _sample_blocks()
    assert blocks
    for block in blocks:
        assert surely_valid_block(block), block["message_id"]


@settings(max_examples=400)
@given(event_blocks(1))
def test_generated_valid_blocks_take_the_fast_path(block: dict[str, Any]) -> None:
    assert _accepted_by_model(block)
    assert surely_valid_block(block)


@settings(max_examples=1500)
@given(
    event_blocks(1),
    st.lists(st.tuples(st.sampled_from(PATHS), odd_values, st.booleans()), min_size=1, max_size=3),
)
def test_the_fast_path_never_accepts_what_the_model_refuses(
    block: dict[str, Any], mutations: list[tuple[tuple[Any, ...], Any, bool]]
) -> None:
    for path, value, delete in mutations:
        block = _mutate(block, path, value, delete)
    if surely_valid_block(block):
        assert _accepted_by_model(block), block


def test_no_single_edge_value_anywhere_gets_past_the_fast_path_wrongly() -> None:
    """Every sample block, every field of PATHS replaced by every edge value, or removed."""
    checked = 0
    for block in _sample_blocks():
        for path in PATHS:
            for value in EDGE_VALUES:
                for delete in (False, True):
                    mutated = _mutate(block, path, value, delete)
                    if surely_valid_block(mutated):
                        assert _accepted_by_model(mutated), (path, value, delete)
                        checked += 1
    assert checked  # some mutations stay valid, and those did take the fast path


@pytest.mark.parametrize(
    "change",
    [
        {"action_time": True},
        {"action_time": math.inf},
        {"action_time": 2**64},
        {"action_time": "1669200439"},
        {"event_detail": None},
        {"event_detail": [{"field_key": "note", "add": None}]},
        {"event_detail": [{"field_name": "no key"}]},
        {"note_id": ""},
    ],
)
def test_edge_cases_fall_back_to_the_model_and_keep_its_answer(change: dict[str, Any]) -> None:
    block = copy.deepcopy(_sample_blocks()[0])
    block["data_event"].update(change)
    assert not surely_valid_block(block)
    outcome = read_block(block, Context(received_at=RECEIVED_AT))
    if _accepted_by_model(block) and _plausible(block["data_event"]["action_time"]):
        assert isinstance(outcome, NewEvent)
    elif _accepted_by_model(block):  # valid, but a time no clock could have given
        assert isinstance(outcome, Rejected) and outcome.reason == "implausible_time"
    else:
        assert isinstance(outcome, Rejected) and outcome.reason == "invalid_block"


def test_surely_shallow_counts_every_opening_bracket_up_to_the_limit() -> None:
    """The byte count is an upper bound on nesting: at the limit it skips the walk, one more
    and every block is walked; brackets inside strings only ever add to the count."""
    assert surely_shallow(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert not surely_shallow(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert not surely_shallow(b'{"a":"' + b"{" * MAX_DEPTH + b'"}')
    assert surely_shallow(b'{"a":"' + b"]}" * 200 + b'"}')


def test_a_block_one_level_too_deep_is_quarantined_whatever_its_neighbours() -> None:
    """A body past the count is walked block by block: the deep one goes, the other stays."""
    deep: Any = "bottom"
    for _ in range(MAX_DEPTH - 4):  # block, data_event, event_detail, item: 4 levels more
        deep = [deep]
    ok, bad = (
        {"message_id": m, "event_type": "note_create",
         "data_event": {"note_id": "n-1", "merchant_id": "m-1", "action_time": RECEIVED_AT,
                        "event_detail": [{"field_key": "description", "add": [add]}]}}
        for m, add in (("m-ok", "text"), ("m-deep", deep))
    )  # fmt: skip
    raw = json.dumps({"block_event": [ok, bad]}).encode()
    intake = read_body(raw, "app", RECEIVED_AT)
    assert [e.message_id for e in intake.events] == ["m-ok"]
    assert [(r.reason, r.message_id) for r in intake.rejected] == [("too_deep", "m-deep")]
