"""The contract every projector keeps: order and duplicates do not matter, incremental equals rebuild."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.registry import all_projectors
from tests.helpers import APP_A
from tests.strategies import by_stamp, deliveries, event_streams
from tests.views_kit import Views, append_blocks, append_bodies, fold_from_scratch

PROJECTORS = all_projectors()
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body(blocks):  # type: ignore[no-untyped-def]
    return {"app_id": APP_A, "block_event": blocks}


@pytest.mark.parametrize("projector", PROJECTORS, ids=lambda p: p.name)
@EXAMPLES
@given(data=st.data(), blocks=event_streams())
def test_any_order_with_duplicates_gives_the_view_of_stamp_order(projector, data, blocks):
    """(b) Deliveries shuffled, repeated and batched fold to the view of one delivery each, by stamp."""
    requests = data.draw(deliveries(blocks))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        append_blocks(Path(a), by_stamp(blocks))
        append_bodies(Path(b), [body(r) for r in requests])
        expected, actual = Views(Path(a), projector), Views(Path(b), projector)
        expected.build()
        actual.build()
        assert actual.dump() == expected.dump()
        expected.close()
        actual.close()


@pytest.mark.parametrize("projector", PROJECTORS, ids=lambda p: p.name)
@EXAMPLES
@given(data=st.data(), blocks=event_streams())
def test_incremental_apply_equals_a_rebuild(projector, data, blocks):
    """(c) Catching up after each request, in small batches, ends where a rebuild does."""
    requests = data.draw(deliveries(blocks))
    limit = data.draw(st.integers(1, 5))
    with tempfile.TemporaryDirectory() as d:
        views = Views(Path(d), projector)
        views.build()
        for request in requests:
            append_bodies(Path(d), [body(request)])
            if data.draw(st.booleans()):
                views.catch_up(limit)
        views.catch_up(limit)
        assert views.dump() == fold_from_scratch(Path(d), projector)
        views.close()


@EXAMPLES
@given(data=st.data(), blocks=event_streams())
def test_a_one_pass_rebuild_of_all_views_equals_incremental_apply(data, blocks):
    """rebuild_all (one read of the log, states flushed every few entities) gives the same views."""
    from projections import rebuild as rebuild_module
    from projections.rebuild import rebuild_all
    from projections.store import open_views

    requests = data.draw(deliveries(blocks))
    flush_every = data.draw(st.integers(1, 4))
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as fresh:
        live = [Views(Path(d), p) for p in PROJECTORS]
        for v in live:
            v.build()
        for request in requests:
            append_bodies(Path(d), [body(request)])
        for v in live:
            v.catch_up(3)
        views = open_views(fresh)
        saved, rebuild_module.FLUSH_ENTITIES = rebuild_module.FLUSH_ENTITIES, flush_every
        try:
            rebuild_all(PROJECTORS, views, live[0].log)
        finally:
            rebuild_module.FLUSH_ENTITIES = saved
        from projections.base import dump_tables

        for v in live:
            assert dump_tables(views, v.projector) == v.dump(), v.projector.name
            v.close()
        views.close()
