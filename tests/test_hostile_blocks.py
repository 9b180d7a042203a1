"""Whatever intake accepts stays readable: by history, the log's pages, as-of and rebuild.

Generated blocks are hostile but valid: unicode everywhere, integers past 64 bits, extreme
floats, odd field keys, nesting close to the limit, change items that are not objects. Each
accepted event must come back through every read path, encoded as the HTTP answer is.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.queries.history import log_page, note_history
from app.queries.notes import note_as_of
from app.queries.scope import EVERYTHING
from eventlog.canonical import compact_json_bytes, loads_strict
from eventlog.intake import MAX_DEPTH, read_body
from projections.rebuild import rebuild_all
from projections.registry import all_projectors
from tests import backends as kit
from tests.helpers import APP_A
from tests.views_kit import append_bodies

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

# printable text: ids refuse control characters, and everything else is fair game
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=128)
any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 12345678901234567890123]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)


def nested(depth: int) -> st.SearchStrategy[Any]:
    """JSON values nested up to `depth` levels, one deep spine among shallow ones."""
    value: st.SearchStrategy[Any] = scalars
    for _ in range(depth):
        value = st.one_of(scalars, st.lists(value, max_size=2), st.dictionaries(any_text, value, max_size=2))
    return value


# a block, data_event, event_detail, its item and the add list take five levels: spines
# up to the limit are accepted, deeper ones (to orjson's 1024) must be quarantined
values = st.one_of(
    nested(3),
    st.integers(1, MAX_DEPTH - 5).map(lambda d: _spine(d)),
    st.integers(MAX_DEPTH - 6, 1015).map(lambda d: _spine(d)),
)


def _spine(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth - 1):
        value = [value]
    return value


field_keys = st.one_of(
    st.sampled_from(["description", "mention", "mentions", "account_mentions", "attachment_ids",
                     "object_id", "created_time", "update_by", "information", "related_to", "merchant_id"]),
    any_text,
)  # fmt: skip
diff_items = st.fixed_dictionaries(
    {"field_key": field_keys},
    optional={
        "add": st.lists(values, max_size=3),
        "remove": st.lists(values, max_size=3),
        "change": st.lists(st.one_of(st.fixed_dictionaries({"from": values, "to": values}), values), max_size=2),
        "field_name": any_text,
    },
)


@st.composite
def hostile_blocks(draw: st.DrawFn, now: float) -> dict[str, Any]:
    event_type = draw(st.sampled_from(["note_create", "note_update_data", "note_delete", "note_comment_create",
                                       "note_comment_update_data", "note_comment_delete"]) | ids)  # fmt: skip
    data: dict[str, Any] = {
        "action_time": draw(st.one_of(st.floats(946684800.0, now + 86400.0), st.sampled_from([946684800, now + 86400]))),
        "merchant_id": draw(st.sampled_from(["m-1", "m-2"]) | ids),
        "note_id": draw(st.sampled_from(["n-1", "n-2"]) | ids),
        "event_detail": draw(st.lists(diff_items, max_size=4)),
    }  # fmt: skip
    if "comment" in event_type:
        data["comment_id"] = draw(st.sampled_from(["c-1"]) | ids)
    data.update(draw(st.dictionaries(any_text.filter(lambda k: k not in data), values, max_size=2)))
    return {"message_id": draw(ids), "event_type": event_type, "data_event": data}


def _answer(body: dict[str, Any]) -> Any:
    """What an HTTP client reads: the answer encoded as json_response encodes it, parsed back."""
    return loads_strict(compact_json_bytes(body))


def test_every_accepted_event_reads_back_through_every_route_and_rebuild(backends):
    """On both backends: text PostgreSQL is strict about (NUL, lone surrogates, odd numbers)
    must come back from its log exactly as from SQLite's."""

    @kit.examples(backends, sqlite=60)
    @given(st.lists(hostile_blocks(now=time.time()), min_size=1, max_size=4, unique_by=lambda b: b["message_id"]))
    def check(blocks):  # type: ignore[no-untyped-def]
        with backends.fresh() as storage:
            _reads_back(storage, blocks)

    check()


def _reads_back(storage, blocks):  # type: ignore[no-untyped-def]
    raw = json.dumps({"app_id": APP_A, "block_event": blocks}, ensure_ascii=False).encode()
    accepted = read_body(raw, APP_A).events
    append_bodies(storage, [json.loads(raw)])
    views = storage.views()
    log = storage.log_reader()
    try:
        rebuild_all(all_projectors(), views, log)
        page = _answer(log_page(log, EVERYTHING, 0, 1000))
        logged = {e["message_id"]: e for e in page["events"]}
        assert set(logged) == {e.message_id for e in accepted}
        for event in accepted:
            block = next(b for b in blocks if b["message_id"] == event.message_id)
            item = logged[event.message_id]
            assert item["changes"] == loads_strict(json.dumps(block["data_event"]["event_detail"]))
            note_id = event.entity_id if event.entity == "note" else event.note_id
            if note_id is None or event.entity == "comment":
                continue  # a comment is in its note's history once the note id is its object_id
            history = _answer(note_history(views, log, EVERYTHING, note_id, event.merchant_id))
            assert event.message_id in [e["message_id"] for e in history["events"]]
            if event.entity == "note":
                doc = _answer(
                    note_as_of(views, log, EVERYTHING, note_id, event.action_time, event.merchant_id)
                )
                assert doc["note_id"] == note_id and doc["merchant_id"] == event.merchant_id
    finally:
        views.close()
        log.close()
