"""Hypothesis strategies: streams of note and comment events with every quirk of the samples."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NOTES = ("n1", "n2")
COMMENTS = ("c1", "c2")
ACCOUNTS = ("acc-1", "acc-2", "acc-3")

# A few action times, so equal times (ties broken by message_id) are common.
# plausible times (intake quarantines any before 2000), with exact ties and near-ties
T0 = 1_600_000_000.0
action_times = st.sampled_from([T0 + 100.0, T0 + 100.5, T0 + 200.0, T0 + 300.25, 1669200439.676389])

times = st.one_of(
    st.sampled_from(
        ["2022-11-23T10:47Z", "2022-11-23t10:47:05.5+07:00", "2022-11-23T10:47", "bad"]
    ),
    st.floats(min_value=0, max_value=2e9, allow_nan=False),
    st.none(),
)
scalars = st.one_of(
    st.sampled_from(["a", "b", "<div>Nội dung</div>", ""]), st.integers(-2, 2), st.none()
)
ids = st.sampled_from([*ACCOUNTS, "f1", "f2", "deal-1"])
elements = st.one_of(
    ids, st.builds(lambda a: {"id": a}, ids), st.builds(lambda a: {"account_id": a}, ids)
)
# list values as the vendor sends them: plain, wrapped once, empty-wrapped, with nulls
list_values = st.one_of(
    st.lists(elements, max_size=3),
    st.lists(st.lists(elements, max_size=3), max_size=2),
    st.just([[]]),
    st.lists(st.one_of(elements, st.none()), max_size=3),
)
objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["GENERAL", "CALL", "MEETING"])},
    optional={"result": st.sampled_from(["MET", "BUSY"])},
)
related = st.fixed_dictionaries(
    {"deal_ids": st.lists(st.sampled_from(["deal-1", "deal-2"]), max_size=2)}
)

REGISTER_KEYS = {
    "description": scalars,
    "information": st.one_of(objects, scalars),
    "source": st.sampled_from(["SALE", "TICKET", "NOTE"]),
    "object_id": st.sampled_from(["n1", "n2", "deal-1"]),
    "related_to": related,
    "status": st.sampled_from(["created", "edited"]),
    "created_time": times,
    "updated_time": times,
    "created_by": ids,
    "create_by": ids,
    "update_by": ids,
    "merchant_id": st.just("m-1"),
    "unknown_field": scalars,
}
LIST_KEYS = ("attachment_ids", "file_attachment_ids", "mentions", "mention", "account_mentions")


@st.composite
def diff_items(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from([*REGISTER_KEYS, *LIST_KEYS]))
    value = REGISTER_KEYS.get(key, list_values)
    item: dict[str, Any] = {"field_key": key, "field_name": "nhãn"}
    for op in draw(st.lists(st.sampled_from(["add", "change", "remove"]), unique=True, max_size=3)):
        if op == "change":
            item[op] = draw(
                st.lists(st.fixed_dictionaries({"from": value, "to": value}), max_size=2)
            )
        else:
            item[op] = draw(st.lists(value, max_size=2))
    return item


EVENT_TYPES = [
    "note_create", "note_update_data", "note_delete",
    "note_comment_create", "note_comment_update_data", "note_comment_delete",
    "deal_update",
]  # fmt: skip


@st.composite
def event_blocks(draw: st.DrawFn, number: int) -> dict[str, Any]:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    data: dict[str, Any] = {
        "action_time": draw(action_times),
        "merchant_id": draw(st.sampled_from(["m-1", "m-2"])),
        "event_detail": draw(st.lists(diff_items(), max_size=4)),
    }
    if "comment" in event_type:
        data["comment_id"] = draw(st.sampled_from(COMMENTS))
    else:
        data["note_id"] = draw(st.sampled_from(NOTES))
    if draw(st.booleans()):
        data["extra_vendor_field"] = draw(scalars)
    # message ids of several lengths, so ties on action_time are broken by code point
    return {
        "message_id": f"m{number:0{draw(st.integers(1, 3))}d}",
        "event_type": event_type,
        "data_event": data,
    }


@st.composite
def event_streams(draw: st.DrawFn, max_events: int = 14) -> list[dict[str, Any]]:
    count = draw(st.integers(1, max_events))
    return [draw(event_blocks(i)) for i in range(count)]


@st.composite
def deliveries(draw: st.DrawFn, blocks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The blocks in random order, some repeated, cut into requests of random sizes."""
    repeats = draw(st.lists(st.sampled_from(blocks), max_size=len(blocks)))
    order = draw(st.permutations(blocks + repeats))
    requests, i = [], 0
    while i < len(order):
        size = draw(st.integers(1, 4))
        requests.append(order[i : i + size])
        i += size
    return requests


def by_stamp(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(blocks, key=lambda b: (b["data_event"]["action_time"], b["message_id"]))
