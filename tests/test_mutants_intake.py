"""The intake's judgement of blocks and bodies, checked directly (no HTTP, no log).

Part of the mutation-testing suite of docs/testing.md. Each test states a rule of
spec/webhooks.md or of issue 12 (ids, depth, time, merchants) and checks it at its edges.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from pydantic import ValidationError

from eventlog import chain
from eventlog.canonical import compact_json, event_content_hash, sha256_hex
from eventlog.intake import (
    EARLIEST_ACTION_TIME,
    MAX_AHEAD_S,
    MAX_DEPTH,
    Context,
    NewEvent,
    Rejected,
    describe_validation,
    envelope_merchant,
    read_block,
    read_body,
    too_deep,
)
from eventlog.models import BLOCK, Envelope, entity_kind, surely_valid_block

NOW = 1_700_000_000.0
CTX = Context(received_at=NOW)


def note_block(**data: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "message_id": "msg-1",
        "event_type": "note_update_data",
        "data_event": {
            "action_time": NOW - 60,
            "note_id": "n-1",
            "event_detail": [{"field_key": "description", "add": ["<p>x</p>"]}],
        },
    }
    block["data_event"].update(data)
    return block


def comment_block(**data: Any) -> dict[str, Any]:
    block = note_block(**data)
    block["event_type"] = "note_comment_create"
    block["data_event"]["comment_id"] = block["data_event"].pop("comment_id", "c-1")
    return block


def accepted(block: Any, context: Context = CTX) -> NewEvent:
    outcome = read_block(block, context)
    assert isinstance(outcome, NewEvent), outcome
    return outcome


def rejected(block: Any, reason: str, context: Context = CTX) -> Rejected:
    outcome = read_block(block, context)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason == reason, outcome
    assert outcome.kind == "block"
    assert outcome.payload == compact_json(block)
    return outcome


def model_accepts(block: Any) -> bool:
    try:
        BLOCK.validate_python(block)
    except ValidationError:
        return False
    return True


# -- what an accepted block becomes -------------------------------------------------


def test_an_accepted_note_block_carries_its_indexed_columns() -> None:
    block = note_block(merchant_id="m-1", created_time=1_600_000_000)
    event = accepted(block)
    stored = compact_json(block)
    assert event == NewEvent(
        message_id="msg-1",
        event_type="note_update_data",
        content_hash=event_content_hash("msg-1", "note_update_data", block["data_event"]),
        entity="note",
        entity_id="n-1",
        note_id="n-1",
        merchant_id="m-1",
        action_time=NOW - 60,
        created_time=1_600_000_000.0,
        block=stored,
        block_digest=chain.digest(stored),
    )
    assert type(event.action_time) is float and type(event.created_time) is float


def test_a_comment_is_its_own_entity_under_its_note() -> None:
    event = accepted(comment_block(note_id="n-9"))
    assert (event.entity, event.entity_id, event.note_id) == ("comment", "c-1", "n-9")


def test_an_unknown_event_type_is_kept_without_an_entity() -> None:
    block = note_block(note_id=7)
    block["event_type"] = "note_archived"
    event = accepted(block)
    assert (event.entity, event.entity_id, event.note_id) == (None, None, None)


def test_an_integer_action_time_is_stored_as_a_float() -> None:
    event = accepted(note_block(action_time=1_650_000_000))
    assert event.action_time == 1_650_000_000.0 and type(event.action_time) is float


@pytest.mark.parametrize(
    ("created", "expected"),
    [(5, 5.0), (-0.0, 0.0), (1.5, 1.5), (True, None), ("2022-01-01", None), (None, None)],
)
def test_created_time_is_kept_only_as_a_number(created: Any, expected: float | None) -> None:
    event = accepted(note_block(created_time=created))
    assert event.created_time == expected
    if event.created_time is not None:
        assert math.copysign(1, event.created_time) == 1.0  # no -0.0: SQLite reads it back as 0.0


# -- time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "at", [EARLIEST_ACTION_TIME, EARLIEST_ACTION_TIME + 0.001, NOW, NOW + MAX_AHEAD_S]
)
def test_action_times_from_2000_to_a_day_after_receipt_are_plausible(at: float) -> None:
    assert accepted(note_block(action_time=at)).action_time == at


@pytest.mark.parametrize(
    "at", [0, -0.0, EARLIEST_ACTION_TIME - 0.001, NOW + MAX_AHEAD_S + 0.001, 1e300, -1e300]
)
def test_action_times_before_2000_or_over_a_day_ahead_are_implausible(at: float) -> None:
    outcome = rejected(note_block(action_time=at), "implausible_time")
    assert outcome.message_id == "msg-1"
    assert "before 2000-01-01 or more than 86400 s after receipt" in outcome.detail
    assert repr(float(at) + 0.0) in outcome.detail and repr(NOW) in outcome.detail


def test_the_window_follows_the_receipt_time() -> None:
    late = Context(received_at=NOW + 10 * MAX_AHEAD_S)
    accepted(note_block(action_time=NOW + 5 * MAX_AHEAD_S), late)
    rejected(note_block(action_time=NOW + 5 * MAX_AHEAD_S), "implausible_time")


def test_read_body_judges_time_against_its_receipt_time_or_now() -> None:
    body = {"block_event": [note_block(action_time=NOW + 2 * MAX_AHEAD_S)]}
    raw = json.dumps(body).encode()
    assert len(read_body(raw, "app", received_at=NOW + 3 * MAX_AHEAD_S).events) == 1
    assert [r.reason for r in read_body(raw, "app", received_at=NOW).rejected] == [
        "implausible_time"
    ]
    assert [r.reason for r in read_body(raw, "app").rejected] == []  # now is past 2023


# -- depth ------------------------------------------------------------------------


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_too_deep_counts_the_value_itself_as_level_one() -> None:
    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert not too_deep(nested(3), limit=3) and too_deep(nested(4), limit=3)
    assert not too_deep({"a": {"b": []}}, limit=3) and too_deep({"a": {"b": [[]]}}, limit=3)
    assert not too_deep("text", limit=0) and not too_deep(5, limit=0)
    assert too_deep([1, [2, [3]], {"x": [[[]]]}], limit=4)
    assert not too_deep([1, [2, [3]], {"x": [[]]}], limit=4)


def test_a_block_nested_past_64_levels_is_quarantined_and_one_at_64_accepted() -> None:
    # the block (1), data_event (2), event_detail (3), its item (4), "add" (5): 59 more fit
    fits = note_block(event_detail=[{"field_key": "x", "add": nested(MAX_DEPTH - 4)}])
    accepted(fits)
    deep = note_block(event_detail=[{"field_key": "x", "add": nested(MAX_DEPTH - 3)}])
    outcome = rejected(deep, "too_deep")
    assert outcome.detail == "lists and objects nest deeper than 64 levels"


def test_a_body_nested_past_what_any_parser_reads_is_quarantined_whole() -> None:
    raw = b"[" * 5000 + b"]" * 5000
    intake = read_body(raw, "app")
    assert [r.reason for r in intake.rejected] == ["not_json"] and not intake.events
    assert intake.rejected[0].kind == "body" and intake.rejected[0].payload == raw.decode()


# -- ids --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\x00b", "\x1f", "x\x7f", "\x80", "y\x9f", "\n"])
@pytest.mark.parametrize(
    ("where", "block"),
    [
        ("message_id", lambda v: {**note_block(), "message_id": v}),
        ("data_event.merchant_id", lambda v: note_block(merchant_id=v)),
        ("data_event.note_id", lambda v: note_block(note_id=v)),
        ("data_event.comment_id", lambda v: comment_block(comment_id=v)),
    ],
)
def test_ids_with_control_characters_are_invalid(where: str, block: Any, bad: str) -> None:
    outcome = rejected(block(bad), "invalid_block")
    assert outcome.detail == (
        f"{where}: must be a string of 1 to 128 characters without control characters"
    )


@pytest.mark.parametrize("good", ["a b", "\xa0", "é" * 128, "~", " "])
def test_ids_with_printable_or_non_ascii_characters_are_fine(good: str) -> None:
    accepted(note_block(merchant_id=good, note_id=good))
    accepted({**comment_block(comment_id=good), "message_id": good})


@pytest.mark.parametrize("bad", ["", "x" * 129, 5, ["m"]])
def test_a_merchant_id_that_is_not_an_id_is_invalid(bad: Any) -> None:
    rejected(note_block(merchant_id=bad), "invalid_block")


def test_a_null_merchant_id_means_none_given() -> None:
    assert accepted(note_block(merchant_id=None)).merchant_id is None


def test_ids_of_other_types_are_checked_only_when_strings() -> None:
    block = note_block(note_id=["n"], comment_id={"c": 1})
    block["event_type"] = "something_else"
    accepted(block)
    block["data_event"]["note_id"] = "n\x00"
    assert rejected(block, "invalid_block").detail.startswith("data_event.note_id:")


@pytest.mark.parametrize("field", ["mentions", "mention", "account_mentions"])
def test_account_ids_with_control_characters_are_invalid(field: str) -> None:
    for value in (["a\x00"], [{"id": "a\x01"}], [["a\x1f"]], ["ok", "x\x85"]):
        block = note_block(event_detail=[{"field_key": field, "add": value}])
        outcome = rejected(block, "invalid_block")
        assert outcome.detail == (f"event_detail.{field}: an account id holds a control character")
    accepted(note_block(event_detail=[{"field_key": field, "add": ["a b", {"id": 5}, [None]]}]))
    # other fields may hold control characters: they are text, not ids
    accepted(note_block(event_detail=[{"field_key": "description", "add": ["a\x00\n"]}]))


def test_a_control_character_in_change_or_remove_of_mentions_counts_too() -> None:
    for key, value in [("change", [{"from": [], "to": ["a\x00"]}]), ("remove", ["\x02"])]:
        rejected(note_block(event_detail=[{"field_key": "mentions", key: value}]), "invalid_block")


# -- merchants --------------------------------------------------------------------


def test_the_blocks_merchant_else_the_envelopes() -> None:
    assert accepted(note_block(merchant_id="m-1")).merchant_id == "m-1"
    assert accepted(note_block(), Context(NOW, "m-2")).merchant_id == "m-2"
    assert accepted(note_block(merchant_id="m-2"), Context(NOW, "m-2")).merchant_id == "m-2"
    assert accepted(note_block()).merchant_id is None


def test_a_block_and_envelope_naming_different_merchants_is_a_mismatch() -> None:
    outcome = rejected(note_block(merchant_id="m-1"), "merchant_mismatch", Context(NOW, "m-2"))
    assert outcome.detail == "block names merchant m-1 but its envelope m-2"


def test_a_bound_app_speaks_only_for_its_merchants() -> None:
    bound = Context(NOW, None, frozenset({"m-2", "m-1"}))
    assert accepted(note_block(merchant_id="m-1"), bound).merchant_id == "m-1"
    outcome = rejected(note_block(merchant_id="m-3"), "merchant_not_allowed", bound)
    assert outcome.detail == "the app may speak only for m-1, m-2, not m-3"
    rejected(note_block(), "merchant_not_allowed", bound)  # no merchant at all
    via_envelope = Context(NOW, "m-3", frozenset({"m-1"}))
    rejected(note_block(), "merchant_not_allowed", via_envelope)
    assert accepted(note_block(), Context(NOW, "m-1", frozenset({"m-1"}))).merchant_id == "m-1"
    rejected(note_block(merchant_id="m-1"), "merchant_not_allowed", Context(NOW, None, ()))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"merchant_id": "m-1"}, "m-1"),
        ({"merchant_id": ""}, None),
        ({"merchant_id": "m\x00"}, None),
        ({"merchant_id": "x" * 129}, None),
        ({"merchant_id": "x" * 128}, "x" * 128),
        ({"merchant_id": 5}, None),
        ({}, None),
        ([], None),
    ],
)
def test_the_envelopes_merchant_counts_only_when_a_usable_id(body: Any, expected: Any) -> None:
    assert envelope_merchant(body) == expected


def test_read_body_passes_the_envelopes_merchant_and_the_apps_binding_to_each_block() -> None:
    blocks = [note_block(merchant_id="m-1"), {**note_block(), "message_id": "msg-2"}]
    raw = json.dumps({"merchant_id": "m-1", "block_event": blocks}).encode()
    intake = read_body(raw, "app", received_at=NOW, allowed_merchants=["m-1"])
    assert [e.merchant_id for e in intake.events] == ["m-1", "m-1"] and not intake.rejected
    intake = read_body(raw, "app", received_at=NOW, allowed_merchants=["m-2"])
    assert [r.reason for r in intake.rejected] == ["merchant_not_allowed"] * 2
    other = json.dumps({"merchant_id": "m-2", "block_event": blocks}).encode()
    intake = read_body(other, "app", received_at=NOW)
    assert [r.reason for r in intake.rejected] == ["merchant_mismatch"]
    assert [e.merchant_id for e in intake.events] == ["m-2"]


# -- bodies -----------------------------------------------------------------------


def test_a_valid_body_keeps_its_order_app_and_request_id() -> None:
    blocks = [note_block(), {**note_block(), "message_id": "msg-2"}, {"message_id": "bad"}]
    raw = json.dumps({"app_id": "app", "request_id": "r-1", "block_event": blocks}).encode()
    intake = read_body(raw, "app", received_at=NOW)
    assert (intake.app_id, intake.request_id) == ("app", "r-1")
    assert [e.message_id for e in intake.events] == ["msg-1", "msg-2"]
    assert [(r.reason, r.message_id) for r in intake.rejected] == [("invalid_block", "bad")]


def test_without_app_id_the_verified_app_is_recorded() -> None:
    raw = json.dumps({"request_id": 7, "block_event": [note_block()]}).encode()
    intake = read_body(raw, "verified", received_at=NOW)
    assert (intake.app_id, intake.request_id) == ("verified", None)


def test_a_body_naming_another_app_than_its_signature_is_refused_whole() -> None:
    raw = json.dumps({"app_id": "other", "block_event": [note_block()]}).encode()
    intake = read_body(raw, "verified", received_at=NOW)
    assert not intake.events and intake.app_id == "other"
    [refused] = intake.rejected
    assert (refused.reason, refused.kind, refused.payload) == ("app_mismatch", "body", raw.decode())
    assert refused.detail == "signed with the secret of app verified but names app other"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[]", "not_envelope"),
        (b'{"block_event": {}}', "not_envelope"),
        (b'{"app_id": 5, "block_event": [1]}', "not_envelope"),
        (b'{"block_event": []}', "no_blocks"),
    ],
)
def test_unusable_bodies_are_quarantined_whole(raw: bytes, reason: str) -> None:
    intake = read_body(raw, "app", received_at=NOW)
    assert not intake.events
    [refused] = intake.rejected
    assert (refused.reason, refused.kind, refused.message_id) == (reason, "body", None)
    assert refused.payload == raw.decode("utf-8", errors="backslashreplace")
    if reason == "no_blocks":
        assert refused.detail == "block_event is empty" and intake.app_id == "app"


def test_a_block_that_is_not_an_object_is_an_invalid_block_without_message_id() -> None:
    raw = json.dumps({"block_event": [["x"], "y", None]}).encode()
    intake = read_body(raw, "app", received_at=NOW)
    assert [(r.reason, r.message_id, r.payload) for r in intake.rejected] == [
        ("invalid_block", None, '["x"]'),
        ("invalid_block", None, '"y"'),
        ("invalid_block", None, "null"),
    ]
    assert rejected({"message_id": 5}, "invalid_block").message_id is None


def test_a_rejected_items_content_hash_covers_its_kind_and_payload() -> None:
    item = Rejected("r", "d", "payload", "block", "m")
    assert item.content_hash == sha256_hex("block\npayload")
    assert item.content_hash != Rejected("r", "d", "payload", "body").content_hash
    assert item.content_hash == Rejected("other", "x", "payload", "block").content_hash


def test_validation_errors_name_where_and_why() -> None:
    block = note_block(action_time="soon")
    del block["message_id"]
    outcome = rejected(block, "invalid_block")
    assert outcome.detail == (
        "message_id: Field required; data_event.action_time: Value error, must be a JSON number"
    )
    with pytest.raises(ValidationError) as err:
        Envelope.model_validate([])
    assert describe_validation(err.value).startswith("block: ")


# -- the fast path and the model agree --------------------------------------------


def check(block: Any) -> bool:
    """What both validators say, after checking that the fast path is never looser."""
    fast = surely_valid_block(block)
    model = model_accepts(block)
    assert model or not fast
    return fast


def with_data(**change: Any) -> dict[str, Any]:
    block = copy.deepcopy(note_block())
    block["data_event"].update(change)
    return block


def test_the_fast_path_accepts_a_typical_block() -> None:
    assert check(note_block()) and check(comment_block())
    unknown = with_data()
    unknown["event_type"] = "whatever"
    del unknown["data_event"]["note_id"]
    assert check(unknown)
    assert check(with_data(event_detail=[]))
    no_detail = with_data()
    del no_detail["data_event"]["event_detail"]
    assert check(no_detail)
    assert check(with_data(event_detail=[{"field_key": "", "add": [], "change": [], "remove": []}]))


@pytest.mark.parametrize("at", [-(2**63), 2**64 - 1, 0, 1.5, -1.5, 1e300, 5e-324, 1_669_200_439])
def test_finite_numbers_are_action_times(at: float) -> None:
    assert check(with_data(action_time=at))


@pytest.mark.parametrize(
    "at", [-(2**63) - 1, 2**64, 2**70, math.inf, -math.inf, math.nan, True, False, "1", None]
)
def test_other_action_times_are_not_taken_by_the_fast_path(at: Any) -> None:
    assert not check(with_data(action_time=at))


@pytest.mark.parametrize("at", [True, False, "1", None, math.inf, -math.inf, math.nan, [1]])
def test_the_model_refuses_what_is_not_a_finite_json_number(at: Any) -> None:
    assert not model_accepts(with_data(action_time=at))


@pytest.mark.parametrize("at", [2**64, 2**70, -(2**63) - 1])
def test_the_model_takes_big_integers_the_fast_path_leaves_to_it(at: int) -> None:
    assert model_accepts(with_data(action_time=at)) and not surely_valid_block(
        with_data(action_time=at)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"event_detail": None},
        {"event_detail": {}},
        {"event_detail": [None]},
        {"event_detail": [[]]},
        {"event_detail": [{"field_name": "no key"}]},
        {"event_detail": [{"field_key": 5}]},
        {"event_detail": [{"field_key": "x", "add": None}]},
        {"event_detail": [{"field_key": "x", "change": {}}]},
        {"event_detail": [{"field_key": "x", "remove": "y"}]},
        {"event_detail": [{"field_key": "x"}, {"field_key": "y", "add": 1}]},
        {"note_id": ""},
        {"note_id": None},
        {"note_id": 5},
    ],
)
def test_odd_details_and_entity_ids_go_to_the_model(change: dict[str, Any]) -> None:
    assert not check(with_data(**change))


def test_a_missing_entity_id_is_refused_by_type() -> None:
    block = with_data()
    del block["data_event"]["note_id"]
    assert not check(block)
    assert not check(comment_block(comment_id=""))
    assert not model_accepts(block) and not model_accepts(comment_block(comment_id=""))
    with pytest.raises(ValidationError) as err:
        BLOCK.validate_python(block)
    assert "data_event.note_id must be a non-empty string for note_update_data" in str(err.value)


@pytest.mark.parametrize(
    "block",
    [
        None,
        [],
        "x",
        {"event_type": "note_create", "data_event": {"action_time": 1, "note_id": "n"}},
        {"message_id": "", "event_type": "note_create", "data_event": {}},
        {"message_id": "m" * 129, "event_type": "x", "data_event": {"action_time": 1}},
        {"message_id": 5, "event_type": "x", "data_event": {"action_time": 1}},
        {"message_id": "m", "event_type": "", "data_event": {"action_time": 1}},
        {"message_id": "m", "event_type": "e" * 129, "data_event": {"action_time": 1}},
        {"message_id": "m", "event_type": 1, "data_event": {"action_time": 1}},
        {"message_id": "m", "event_type": "x", "data_event": []},
        {"message_id": "m", "event_type": "x"},
        {"message_id": "m", "event_type": "x", "data_event": {}},
    ],
)
def test_blocks_without_the_required_shape_are_not_taken(block: Any) -> None:
    assert not check(block)


def test_ids_of_exactly_128_characters_are_taken() -> None:
    block = {"message_id": "m" * 128, "event_type": "e" * 128, "data_event": {"action_time": 1}}
    assert check(block)


def test_entity_kind_of_each_known_type() -> None:
    for kind, types in {
        "note": ("note_create", "note_update_data", "note_delete"),
        "comment": ("note_comment_create", "note_comment_update_data", "note_comment_delete"),
    }.items():
        for event_type in types:
            assert entity_kind(event_type) == kind
    for other in ("note", "comment", "NOTE_CREATE", "", None, 5, ["note_create"]):
        assert entity_kind(other) is None


def test_a_refused_parse_says_what_the_parser_said() -> None:
    [refused] = read_body(b"not json", "app").rejected
    assert refused.reason == "not_json" and "line 1 column 1" in refused.detail
    [refused] = read_body(b"[" * 5000 + b"]" * 5000, "app").rejected
    assert refused.detail.startswith("depth limit exceeded")


def test_an_infinite_action_time_is_refused_as_not_finite() -> None:
    for at in (math.inf, -math.inf, math.nan):
        outcome = rejected(note_block(action_time=at), "invalid_block")
        assert outcome.detail == "data_event.action_time: Value error, must be finite"


def test_the_shortest_ids_take_the_fast_path() -> None:
    block = {"message_id": "m", "event_type": "x", "data_event": {"action_time": 1}}
    assert check(block)
    assert check({**note_block(note_id="n"), "message_id": "1"})


# -- a stack that runs out is a quarantined body, never an exception -------------


def _frames() -> int:
    frame: FrameType | None = sys._getframe()
    count = 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


@contextlib.contextmanager
def little_stack_left(frames: int = 120) -> Iterator[None]:
    """Leave only `frames` frames of room, as deep in a busy server's stack."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(_frames() + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# Python 3.12 counts C recursion (the json module's) apart from the recursion limit.
needs_shared_limit = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="the json module's C recursion has its own limit"
)


@needs_shared_limit
def test_a_body_the_exact_parser_cannot_descend_is_quarantined_as_not_json() -> None:
    # 19 digits send the body through the json module (exact big integers), which recurses
    raw = b"[" * 600 + b"1234567890123456789" + b"]" * 600
    with little_stack_left():
        intake = read_body(raw, "app", received_at=NOW)
    assert not intake.events
    assert intake.rejected == [
        Rejected("not_json", "nested too deeply to parse", raw.decode(), "body")
    ]


@needs_shared_limit
def test_a_block_too_deep_to_store_one_by_one_quarantines_its_body() -> None:
    raw = json.dumps({"block_event": [nested(600)]}).encode()
    with little_stack_left():
        intake = read_body(raw, "app", received_at=NOW)
    assert not intake.events and intake.app_id is None
    assert intake.rejected == [
        Rejected("not_envelope", "nested too deeply to store block by block", raw.decode(), "body")
    ]
