"""The contract every projector keeps: order and duplicates do not matter, incremental equals
rebuild. On both backends (tests/backends.py): the reference views are folded into SQLite from
the backend's log, so on PostgreSQL every comparison also holds its views to SQLite's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.registry import all_projectors
from tests import backends as kit
from tests.helpers import APP_A, MERCHANT
from tests.strategies import by_stamp, deliveries, event_streams
from tests.views_kit import Views, append_blocks, append_bodies, fold_from_scratch

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

PROJECTORS = all_projectors()


def body(blocks):  # type: ignore[no-untyped-def]
    return {"app_id": APP_A, "block_event": blocks}


@pytest.mark.parametrize("projector", PROJECTORS, ids=lambda p: p.name)
def test_any_order_with_duplicates_gives_the_view_of_stamp_order(backends, projector):
    """(b) Deliveries shuffled, repeated and batched fold to the view of one delivery each, by stamp."""

    @kit.examples(backends)
    @given(data=st.data(), blocks=event_streams())
    def check(data, blocks):  # type: ignore[no-untyped-def]
        requests = data.draw(deliveries(blocks))
        with backends.fresh() as a, backends.fresh() as b:
            append_blocks(a, by_stamp(blocks))
            append_bodies(b, [body(r) for r in requests])
            expected, actual = Views(a, projector), Views(b, projector)
            expected.build()
            actual.build()
            assert actual.dump() == expected.dump()
            expected.close()
            actual.close()

    check()


@pytest.mark.parametrize("projector", PROJECTORS, ids=lambda p: p.name)
def test_incremental_apply_equals_a_rebuild(backends, projector):
    """(c) Catching up after each request, in small batches, ends where a rebuild does."""

    @kit.examples(backends)
    @given(data=st.data(), blocks=event_streams())
    def check(data, blocks):  # type: ignore[no-untyped-def]
        requests = data.draw(deliveries(blocks))
        limit = data.draw(st.integers(1, 5))
        with backends.fresh() as d:
            views = Views(d, projector)
            views.build()
            for request in requests:
                append_bodies(d, [body(request)])
                if data.draw(st.booleans()):
                    views.catch_up(limit)
            views.catch_up(limit)
            assert views.dump() == fold_from_scratch(d, projector)
            views.close()

    check()


def test_a_one_pass_rebuild_of_all_views_equals_incremental_apply(backends):
    """rebuild_all (one read of the log, states flushed every few entities) gives the same views
    (into the views of another storage of the same backend)."""
    from projections import rebuild as rebuild_module
    from projections.base import dump_tables
    from projections.rebuild import rebuild_all

    @kit.examples(backends)
    @given(data=st.data(), blocks=event_streams())
    def check(data, blocks):  # type: ignore[no-untyped-def]
        requests = data.draw(deliveries(blocks))
        flush_every = data.draw(st.integers(1, 4))
        with backends.fresh() as d, backends.fresh() as fresh:
            live = [Views(d, p) for p in PROJECTORS]
            for v in live:
                v.build()
            for request in requests:
                append_bodies(d, [body(request)])
            for v in live:
                v.catch_up(3)
            views = fresh.views()
            saved, rebuild_module.FLUSH_ENTITIES = rebuild_module.FLUSH_ENTITIES, flush_every
            try:
                rebuild_all(PROJECTORS, views, live[0].log)
            finally:
                rebuild_module.FLUSH_ENTITIES = saved
            for v in live:
                assert dump_tables(views, v.projector) == v.dump(), v.projector.name
                v.close()
            views.close()

    check()


# Ids that sort differently bytewise, by a locale, case-insensitively or by normalisation:
# PostgreSQL's views compare text with COLLATE "C" (eventlog.pg_conn), as SQLite's BINARY.
ODD_IDS = [
    "a", "B", "b", "Z", "_", "~", "A1", "a10", "a2", "é", "É", "e\u0301", "ß", "ss", "İ", "ı",
    "ǅ", "日本", "😀", "\uff41", "Ω", "z ",
]  # fmt: skip
OTHER_MERCHANT = "7d1f4c2e-0b5a-4a47-9a53-3f2f6d0c8e11"


def bytewise(ids):  # type: ignore[no-untyped-def]
    return sorted(ids, key=lambda i: i.encode())


def test_cursor_order_on_ids_is_bytewise_on_both_backends(backend):
    """Keyset pages of the related-notes and mention feeds, whose ties are broken by note id
    and then merchant, come in the same order on both backends: descending UTF-8 bytes (code
    points), whatever the case, accents or script; and the views' rows sort the same way."""
    from app.queries.mentions import mention_feed
    from app.queries.notes import related_notes
    from app.queries.params import decode_cursor
    from app.queries.scope import EVERYTHING
    from projections.mentions import MentionsProjector
    from projections.notes import NotesProjector
    from tests.helpers import make_block
    from tests.strategies import T0

    detail = [
        {"field_key": "object_id", "add": ["deal-1"]},
        {"field_key": "account_mentions", "add": [["acc-1"]]},
    ]
    blocks = [
        make_block(note_id=i, merchant_id=m, action_time=T0, event_detail=detail)
        for i in ODD_IDS
        for m in (MERCHANT, OTHER_MERCHANT)
    ]
    append_blocks(backend, blocks, per_request=5)
    notes, mentions = Views(backend, NotesProjector()), Views(backend, MentionsProjector())
    notes.build()
    mentions.build()
    # every tie on time: (note id, merchant) decides, newest first = descending bytes
    expected = [(i, m) for i in reversed(bytewise(ODD_IDS)) for m in (OTHER_MERCHANT, MERCHANT)]
    assert sorted(expected, key=lambda k: (k[0].encode(), k[1])) == expected[::-1]

    def pages(query):  # type: ignore[no-untyped-def]
        seen, cursor = [], None
        while True:
            page = query(cursor)
            seen += [(item["note_id"], item["merchant_id"]) for item in page["items"]]
            if page["next_cursor"] is None:
                return seen
            cursor = decode_cursor(page["next_cursor"])

    related = pages(lambda c: related_notes(notes.views, EVERYTHING, "deal-1", 3, c))
    feed = pages(lambda c: mention_feed(mentions.views, EVERYTHING, "acc-1", 4, c))
    assert related == expected and feed == expected
    assert [(r[1], r[0]) for r in notes.dump()["notes"]] == [
        (i, m) for m in (MERCHANT, OTHER_MERCHANT) for i in bytewise(ODD_IDS)
    ]
    notes.close()
    mentions.close()
