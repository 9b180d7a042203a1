"""What makes the projectors cheaper under load: shared batch reads (on both backends,
tests/backends.py), the paused collector (no storage at all)."""

from __future__ import annotations

import gc
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.read import head_seq, read_from
from projections.engine import SharedReads
from projections.gc_pause import gc_paused
from projections.storage import Storage
from tests import backends as kit
from tests.helpers import make_block
from tests.views_kit import append_blocks

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

# (events appended first, position asked for, how many)
reads = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 40), st.integers(1, 12)), min_size=1, max_size=20
)


def test_shared_reads_give_exactly_what_the_log_gives(backends: kit.Backends) -> None:
    @kit.examples(backends, sqlite=30)
    @given(reads)
    def check(steps: list[tuple[int, int, int]]) -> None:
        with backends.fresh() as storage:
            log = storage.log_reader()
            shared, small = SharedReads(), SharedReads(window=5)  # small: its window slides
            try:
                for appended, after, limit in steps:
                    if appended:
                        append_blocks(storage, [make_block() for _ in range(appended)])
                    after = min(after, head_seq(log))
                    expected = read_from(log, after, limit)
                    assert shared.read(log, after, limit) == expected
                    assert small.read(log, after, limit) == expected
            finally:
                log.close()

    check()


def test_projectors_at_the_same_position_share_one_decoded_batch(backend: Storage) -> None:
    append_blocks(backend, [make_block() for _ in range(10)])
    log = backend.log_reader()
    shared = SharedReads()
    first = shared.read(log, 0, 8)
    second = shared.read(log, 0, 8)
    tail = shared.read(log, 4, 8)  # part held, the rest read from the log
    log.close()
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert [e.seq for e in tail] == [5, 6, 7, 8, 9, 10]
    assert all(a is b for a, b in zip(first[4:], tail, strict=False))


def test_projectors_a_step_apart_on_a_growing_log_decode_each_event_once(
    backend: Storage,
) -> None:
    """As the runner's projectors do: each reads on from where it stands while the log grows;
    every event is handed to all of them as one object (its block decoded once)."""
    append_blocks(backend, [make_block() for _ in range(6)])
    log = backend.log_reader()
    shared = SharedReads(window=20)
    handed: dict[int, set[int]] = {}
    positions = {"notes": 0, "comments": 0, "mentions": 0}
    try:
        for _ in range(4):
            # mentions asks twice: the second time at the window's very end
            for name in ("notes", "comments", "mentions", "mentions"):
                found = shared.read(log, positions[name], 1000)
                for event in found:
                    handed.setdefault(event.seq, set()).add(id(event))
                positions[name] = found[-1].seq if found else positions[name]
                append_blocks(backend, [make_block() for _ in range(3)])
    finally:
        log.close()
    assert sorted(handed) == list(range(1, max(handed) + 1))
    assert all(len(objects) == 1 for objects in handed.values())


def test_a_projector_behind_the_window_is_read_for_alone(backend: Storage) -> None:
    """A window of 4 holds seq 7 to 10; a projector at 2 is given its own read, and the
    window still serves the others, from its very first event."""
    append_blocks(backend, [make_block() for _ in range(10)])
    log = backend.log_reader()
    shared = SharedReads(window=4)
    try:
        first = shared.read(log, 0, 10)
        behind = shared.read(log, 2, 3)
        again = shared.read(log, 6, 10)
    finally:
        log.close()
    assert [e.seq for e in behind] == [3, 4, 5]
    assert [e.seq for e in again] == [7, 8, 9, 10]
    assert all(a is b for a, b in zip(first[6:], again, strict=True))


def test_the_collector_is_paused_while_any_thread_folds_and_restored_after() -> None:
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def fold() -> None:
        with gc_paused():
            inside.set()
            release.wait(10)

    other = threading.Thread(target=fold)
    with gc_paused():
        other.start()
        inside.wait(10)
    assert not gc.isenabled()  # the other thread still folds
    release.set()
    other.join()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # whoever turned it off keeps it off
    finally:
        gc.enable()


def test_the_collector_comes_back_when_paused_work_fails() -> None:
    @gc_paused()
    def failing_query() -> None:
        assert not gc.isenabled()
        raise ValueError("bad parameter")

    with pytest.raises(ValueError, match="bad parameter"):
        failing_query()
    assert gc.isenabled()
