"""The search view's full-text index, which stands beside the view's tables (so the view
contract's dumps do not see it), finds exactly the documents search_docs holds: after
incremental batches in any order with duplicates, after a rebuild, after a crash at any
step or a SIGKILL, on both backends. (search_docs itself is held to the contract by
tests/test_views_contract.py and tests/test_views_crash.py, which cover every projector.)"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.queries.scope import EVERYTHING
from app.queries.search import decode, search_notes
from eventlog.dbapi import Connection
from projections import search_index
from projections.engine import STEPS
from projections.search import SearchProjector
from tests import backends as kit
from tests.helpers import APP_A, ROOT, make_block
from tests.strategies import T0, deliveries, event_streams
from tests.test_views_crash import KILLER, crash_in_batch
from tests.views_kit import Views, append_blocks, append_bodies

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

# every word the strategies' texts hold (descriptions, types, results, numbers), and one none do
VOCABULARY = ["a", "b", "noi", "dung", "general", "call", "meeting", "met", "busy", "0", "1", "2",
              "nowhere"]  # fmt: skip


def found(views: Connection, word: str) -> set[tuple[str, str]]:
    """Every (merchant key, note) /search answers for one word, through all its pages."""
    seen: set[tuple[str, str]] = set()
    cursor = None
    while True:
        page = search_notes(views, EVERYTHING, [word], 7, decode(cursor))
        seen |= {(item["merchant_id"] or "", item["note_id"]) for item in page["items"]}
        if (cursor := page["next_cursor"]) is None:
            return seen


def index_rows(views: Connection) -> int:
    gen = search_index.generation(views, "")
    table = search_index.table_name(gen or 0)
    if not search_index.exists(views, table):
        return 0
    return int(views.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def assert_index_matches_documents(views: Connection) -> None:
    docs = views.execute("SELECT merchant_id, note_id, words FROM search_docs").fetchall()
    for word in VOCABULARY:
        expected = {(m, n) for m, n, words in docs if word in words.split()}
        assert found(views, word) == expected, word
    assert index_rows(views) == len(docs)  # no stale row left to be found by a reused rowid


def index_tables(views: Connection) -> list[str]:
    return search_index._tables(views)


def body(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"app_id": APP_A, "block_event": blocks}


def test_the_index_finds_exactly_the_documents_incrementally_and_after_a_rebuild(backends):
    @kit.examples(backends)
    @given(data=st.data(), blocks=event_streams())
    def check(data, blocks):  # type: ignore[no-untyped-def]
        requests = data.draw(deliveries(blocks))
        limit = data.draw(st.integers(1, 5))
        with backends.fresh() as d:
            views = Views(d, SearchProjector())
            views.build()
            for request in requests:
                append_bodies(d, [body(request)])
                if data.draw(st.booleans()):
                    views.catch_up(limit)
                    assert_index_matches_documents(views.views)
            views.catch_up(limit)
            assert_index_matches_documents(views.views)
            before = views.dump()
            views.build()  # a rebuild beside the live view, swapped in: a new generation
            assert views.dump() == before
            assert_index_matches_documents(views.views)
            views.close()

    check()


def test_a_rebuild_leaves_one_index_once_the_live_view_writes_again(backend):
    views = Views(backend, SearchProjector())
    views.build()
    append_blocks(backend, [described("n1", "first"), described("n2", "second")])
    views.catch_up()
    for _ in range(2):
        views.build()
    append_blocks(backend, [described("n3", "third")])
    views.catch_up()
    live = search_index.table_name(search_index.generation(views.views, "") or 0)
    assert index_tables(views.views) == [live]
    assert found(views.views, "third") == {("1b99bdcf-d582-4f49-9715-1b61dfff3924", "n3")}
    views.close()


def test_the_postgresql_index_keeps_its_pending_list_short(backend):
    """Every GIN lookup reads the whole pending list: the index is created with a small one
    (a word of one note took 1.2 ms with the default 4 MB, 0.1 ms with none)."""
    if backend.backend != "postgresql":
        pytest.skip("SQLite's FTS5 has no pending list")
    views = Views(backend, SearchProjector())
    views.build()
    append_blocks(backend, [described("n1", "first")])
    views.catch_up()
    live = search_index.table_name(search_index.generation(views.views, "") or 0)
    options = views.views.execute(
        "SELECT reloptions FROM pg_class WHERE relname = ?", (f"{live}_words",)
    ).fetchone()
    assert options == ([f"gin_pending_list_limit={search_index.GIN_PENDING_KB}"],)
    views.close()


def described(note_id: str, text: str, at: float = T0, kind: str = "note_create") -> dict[str, Any]:
    detail = [{"field_key": "description", "add": [text]}]
    if "comment" in kind:
        return make_block(kind, comment_id=note_id, action_time=at,
                          event_detail=[*detail, {"field_key": "object_id", "add": ["n0"]}])  # fmt: skip
    return make_block(kind, note_id=note_id, action_time=at, event_detail=detail)


def seed(where) -> None:  # type: ignore[no-untyped-def]
    """Notes rewritten, commented, uncommented and deleted, three to a request."""
    blocks = []
    for i in range(12):
        blocks.append(
            described(f"n{i % 3}", f"{VOCABULARY[i % 4]} {VOCABULARY[4 + i % 5]}", T0 + i)
        )
        blocks.append(described(f"c{i % 2}", VOCABULARY[i % 3], T0 + i, "note_comment_update_data"))
    blocks.append(make_block("note_delete", note_id="n1", action_time=T0 + 50))
    blocks.append(make_block("note_comment_delete", comment_id="c1", action_time=T0 + 50))
    append_blocks(where, blocks, per_request=3)


@pytest.mark.parametrize("point", STEPS)
@pytest.mark.parametrize("batch_number", [1, 3])
def test_an_exception_at_any_step_leaves_index_and_documents_in_step(backend, point, batch_number):
    views = Views(backend, SearchProjector())
    views.build()
    seed(backend)
    crash_in_batch(views, point, batch_number)
    assert_index_matches_documents(views.views)
    views.catch_up(limit=4)
    assert_index_matches_documents(views.views)
    assert found(views.views, "call")  # the seed's words are there to be found
    views.close()


@pytest.mark.parametrize("kill_at", [2, 3, 7, 13])
def test_a_sigkill_mid_batch_leaves_index_and_documents_in_step(backend, kill_at):
    views = Views(backend, SearchProjector())
    views.build()
    seed(backend)
    views.close()
    script = KILLER.format(
        root=str(ROOT), data=str(backend.data_dir), url=backend.database_url,
        name="search", kill_at=kill_at,
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    views = Views(backend, SearchProjector())
    assert_index_matches_documents(views.views)
    views.catch_up()
    assert_index_matches_documents(views.views)
    views.close()
