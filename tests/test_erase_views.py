"""The views after an erasure (spec/views.md, "Erasure"), on SQLite and PostgreSQL: the
erasure is an entry projectors read after the events it redacted, so a view kept up
incrementally across it equals a rebuild, wherever the projector stood; an erased note
answers 410 on every route after scope and ambiguity; after --older-than a note is what its
remaining events fold to and its history lists the erased ones as erased."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.cli import main
from app.commands.erase import open_log_owner
from app.config import Settings
from app.errors import Gone, NotFound
from app.openapi import document
from app.web import create_app
from eventlog.erase import end_erasure, erase_rows, record_erasure, with_comments
from eventlog.read import head_seq
from eventlog.redaction import Scope
from projections import engine
from projections.base import dump_tables
from projections.engine import SharedReads, catch_up, step
from projections.rebuild import rebuild_all, start_rebuild
from projections.registry import all_projectors
from projections.store import LIVE, REBUILD, erasure_state, open_views
from tests.helpers import MERCHANT, make_block, make_body, settled, signed_post, wait_for
from tests.test_erase import (
    COMMENT,
    MARK,
    NOTE,
    OTHER_MERCHANT,
    OTHER_NOTE,
    backend,
    erase,
    note_bodies,
)
from tests.test_openapi import check
from tests.test_ui_pages import signed_in
from tests.views_kit import fold_from_scratch

pytestmark = pytest.mark.backends("sqlite", "postgresql")

TOKENS = {
    "ops-token": ("*",),
    "merchant-token": (MERCHANT,),
    "other-token": (OTHER_MERCHANT,),
}
DAY = 86_400.0
ALL_VIEWS = tuple(p.name for p in all_projectors())


def bodies_of_two_merchants() -> list[dict[str, Any]]:
    """The note of test_erase (with its comment, its mention and another note sent with its
    update), and the same note id held by another merchant."""
    return [*note_bodies(), *note_bodies(merchant=OTHER_MERCHANT, mark="other-merchant-words")]


def run_erasure(settings: Settings, scope: Scope) -> None:
    """record, redact, end: what `notestore erase` does to the log, without its views."""
    conn = open_log_owner(settings, settings.database_url)
    try:
        scope = with_comments(conn, scope)
        erasure = record_erasure(conn, scope, "a test", {})
        erase_rows(conn, erasure, chunk=2)
        end_erasure(conn, erasure.id)
    finally:
        conn.close()


SCOPES = {
    "note": Scope(merchant_id=MERCHANT, note_id=NOTE),
    "merchant": Scope(merchant_id=MERCHANT),
    # the note's create and comment (action_time 1669200439.5) but not its update (…500)
    "older-than": Scope(merchant_id=MERCHANT, before=1669200450.0),
}


@pytest.mark.parametrize("kind", SCOPES)
def test_an_incremental_view_across_an_erasure_equals_a_rebuild_wherever_it_stood(
    settings: Settings, kind: str, tmp_path: Path
) -> None:
    """Each view folded up to every position of the log, then the erasure, then caught up:
    every one equals a rebuild of the log as it now stands (the erasure changed rows behind
    positions the view had passed). One position's views are the backend's own; the others
    are scratch SQLite views over the backend's log."""
    backend(settings).append_bodies(bodies_of_two_merchants())
    settings.storage.prepare()
    log = settings.storage.log_reader()
    head = head_seq(log)
    views = {
        stood: settings.storage.views() if stood == head // 2 else open_views(tmp_path / str(stood))
        for stood in range(head + 1)
    }
    try:
        for stood, conn in views.items():
            for projector in all_projectors():
                start_rebuild(conn, projector)
                step(projector, conn, log, REBUILD, limit=stood)
        run_erasure(settings, SCOPES[kind])
        for stood, conn in views.items():
            for projector in all_projectors():
                catch_up(projector, conn, log, REBUILD)
                got = dump_tables(conn, projector, REBUILD.suffix)
                assert got == fold_from_scratch(settings.storage, projector), (
                    f"{projector.name} folded to seq {stood} before the erasure"
                )
                assert (MARK not in repr(got)) is (kind != "older-than"), projector.name
    finally:
        for conn in views.values():
            conn.close()
        log.close()


def test_an_erasure_that_ends_just_after_a_batch_was_read_is_folded_in_at_the_next_step(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure ends right after the log gave a batch, before anything else is read: the
    batch (its rows not yet redacted) is applied as read, and the erasure head read before
    it is older, so a later step folds the erased entities again: nothing of the note stays
    and the view equals a rebuild. The other projectors, asking SharedReads for more than it
    holds, are not handed that batch extended under its old head: the head has moved, so they
    read afresh and are given the redacted rows."""
    backend(settings).append_bodies(note_bodies())
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    real_read_from = engine.read_from
    erased = False

    def read_then_erase(*args: Any, **kwargs: Any) -> Any:
        nonlocal erased
        found = real_read_from(*args, **kwargs)
        if found and not erased:
            erased = True
            run_erasure(settings, SCOPES["note"])
        return found

    monkeypatch.setattr(engine, "read_from", read_then_erase)
    shared = SharedReads()
    try:
        projectors = all_projectors()
        for projector in projectors:
            start_rebuild(views, projector)
        for projector in projectors:
            step(projector, views, log, REBUILD, reader=shared.read_batch)
            stale = MARK in repr(dump_tables(views, projector, REBUILD.suffix))
            assert erased and stale is (projector is projectors[0]), projector.name
        for projector in projectors:
            while step(projector, views, log, REBUILD, reader=shared.read_batch):
                pass
            got = dump_tables(views, projector, REBUILD.suffix)
            assert MARK not in repr(got), projector.name
            assert got == fold_from_scratch(settings.storage, projector), projector.name
    finally:
        views.close()
        log.close()


def _window_then_erasure(settings: Settings) -> tuple[Any, Any, SharedReads, Any]:
    """Two other notes' events, then test_erase's note; a projector has read seq 1 to 4 into
    a window of 4, the notes view has folded to seq 2 from it, and then the note is erased.
    (log, views, the window, the notes projector)."""
    filler = [make_body(make_block()) for _ in range(2)]
    backend(settings).append_bodies([*filler, *note_bodies()])
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    shared = SharedReads(window=4)
    notes, other = all_projectors()[0], all_projectors()[1]
    for projector in (notes, other):
        start_rebuild(views, projector)
    step(other, views, log, REBUILD, limit=4, reader=shared.read_batch)
    step(notes, views, log, REBUILD, limit=2, reader=shared.read_batch)
    assert [e.seq for e in shared.events] == [1, 2, 3, 4]
    run_erasure(settings, SCOPES["note"])
    return log, views, shared, notes


@pytest.mark.parametrize(
    "steps",
    [
        # the window holds seq 3 and 4 as they were before the erasure; the notes view asks
        # for exactly those
        [(2, "window")],
        # `notestore erase` folds the erasure into the notes view from its own process and
        # takes one step (seq 3); serve's next would be seq 4 from its window: handed with the
        # window's old head, it would be folded unredacted and never again (the view has
        # followed that erasure already)
        [(1, "own reads"), (1, "window")],
    ],
    ids=["in-process", "another-process-moved-the-view"],
)
def test_events_held_from_before_an_erasure_ended_are_not_handed_out_after_it(
    settings: Settings, steps: list[tuple[int, str]]
) -> None:
    """Read afresh once the erasure head has moved: nothing of the note stays."""
    log, views, shared, notes = _window_then_erasure(settings)
    try:
        for limit, reads in steps:
            reader = shared.read_batch if reads == "window" else engine.read_batch
            step(notes, views, log, REBUILD, limit=limit, reader=reader)
        catch_up(notes, views, log, REBUILD)
        got = dump_tables(views, notes, REBUILD.suffix)
        assert MARK not in repr(got)
        assert got == fold_from_scratch(settings.storage, notes)
    finally:
        views.close()
        log.close()


def test_an_erasure_that_never_ended_is_folded_in_by_the_next_one_that_does(
    settings: Settings,
) -> None:
    """A run stopped after redacting but before recording the end: the views keep what they
    had (nothing tells them), until a later erasure ends and they fold both in."""
    backend(settings).append_bodies(note_bodies())
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    try:
        rebuild_all(all_projectors(), views, log)
        conn = open_log_owner(settings, settings.database_url)
        try:
            scope = with_comments(conn, SCOPES["note"])
            erase_rows(conn, record_erasure(conn, scope, "stopped", {}))
        finally:
            conn.close()
        notes = all_projectors()[0]
        catch_up(notes, views, log)
        assert MARK in repr(dump_tables(views, notes))  # no end recorded: not followed yet
        run_erasure(settings, Scope(merchant_id=MERCHANT, note_id=OTHER_NOTE))
        for projector in all_projectors():
            catch_up(projector, views, log)
            got = dump_tables(views, projector)
            assert MARK not in repr(got)
            assert got == fold_from_scratch(settings.storage, projector), projector.name
    finally:
        views.close()
        log.close()


# -- answers over HTTP -------------------------------------------------------------------


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"tokens": TOKENS})


async def _get(client: TestClient, path: str, token: str = "ops-token") -> tuple[int, Any]:
    resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    return resp.status, await resp.json()


ROUTES = (
    "/notes/{id}",
    "/notes/{id}/history",
    "/notes/{id}/comments",
    "/notes/{id}?as_of=2000000000",
)


def _with(path: str, note: str, merchant: str | None) -> str:
    path = path.format(id=note)
    if merchant is None:
        return path
    return path + ("&" if "?" in path else "?") + f"merchant_id={merchant}"


async def _answers(client: TestClient) -> dict[str, tuple[int, Any]]:
    """Every route's answer about the other note, its related record, the feed, a search."""
    paths = [_with(r, OTHER_NOTE, None) for r in ROUTES]
    paths += [
        "/notes?related_to=6510ff00000000000000f001",
        f"/accounts/{MARK}-account/mentions",
        "/search?q=other",
        "/search?q=zebra",
    ]
    return {p: await _get(client, p, "merchant-token") for p in paths}


async def test_an_erased_note_answers_410_on_every_route_after_scope_and_ambiguity(
    aiohttp_client: Any, app_settings: Settings, tmp_path: Path
) -> None:
    backend(app_settings).append_bodies(bodies_of_two_merchants())
    client = await aiohttp_client(create_app(app_settings))
    await wait_for(lambda: _all_200(client, MERCHANT), 30, "the views holding the note")
    await settled(app_settings, 30, ALL_VIEWS)  # search too, before the answers are kept
    before = await _answers(client)
    assert erase(app_settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0

    async def gone() -> bool:
        status, _ = await _get(client, _with(ROUTES[0], NOTE, MERCHANT))
        return status == 410

    await wait_for(gone, 30, "serve's views following the erasure")
    for route in ROUTES:
        status, body = await _get(client, _with(route, NOTE, MERCHANT))
        assert status == 410 and "erased" in body["error"], route
        assert (await _get(client, _with(route, NOTE, None), "merchant-token"))[0] == 410, route
        # the other merchant's note of the same id is untouched; the id is still ambiguous
        status, body = await _get(client, _with(route, NOTE, OTHER_MERCHANT))
        assert status == 200, route
        assert (await _get(client, _with(route, NOTE, None)))[0] == 409, route
        # a token of the other merchant never learns the erased one existed
        assert (await _get(client, _with(route, NOTE, MERCHANT), "other-token"))[0] == 404
    after = await _answers(client)
    for path, answer in before.items():
        if "zebra" in path or "mentions" in path:
            continue
        assert after[path] == answer, path  # the other note, on every route, as it was
    assert before[f"/accounts/{MARK}-account/mentions"][1]["items"]
    assert after[f"/accounts/{MARK}-account/mentions"][1]["items"] == []
    assert after["/search?q=zebra"][1]["items"] == []
    # the inspector: the note's page is a 410 page, search finds nothing of it
    await signed_in(client, "ops-token")
    page = await client.get(f"/ui/notes/{NOTE}?merchant_id={MERCHANT}")
    assert page.status == 410 and "was erased" in await page.text()
    page = await client.get(f"/ui/notes/{NOTE}?merchant_id={OTHER_MERCHANT}")
    assert page.status == 200 and "other-merchant-words" in await page.text()
    found = await (await client.get("/ui/search?q=zebra")).text()
    assert NOTE not in found and MARK not in found
    # redelivering what carried it stores nothing readable: the note stays erased
    for body in note_bodies():
        assert (await signed_post(client, body))[0] == 200
    await settled(app_settings, 30, ALL_VIEWS)
    assert (await _get(client, _with(ROUTES[0], NOTE, MERCHANT)))[0] == 410
    status, thread = await _get(client, _with(ROUTES[2], NOTE, OTHER_MERCHANT))
    assert status == 200 and [c["comment_id"] for c in thread["comments"]] == [COMMENT]


async def _all_200(client: TestClient, merchant: str) -> bool:
    for route in ROUTES:
        if (await _get(client, _with(route, NOTE, merchant)))[0] != 200:
            return False
    return True


async def test_after_older_than_a_note_is_what_its_remaining_events_fold_to(
    aiohttp_client: Any, app_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--older-than: a note whose every event was erased answers 410; another keeps what its
    newer events say, and its history lists each erased event as erased, with no changes."""
    now = time.time()
    old, new = now - 10 * DAY, now - DAY
    kept, gone = "6510aa00000000000000d001", "6510aa00000000000000d002"

    def detail(text: str) -> list[dict[str, Any]]:
        return [{"field_key": "description", "add": [text], "change": [], "remove": []}]

    blocks = [
        make_block(note_id=kept, action_time=old, event_detail=detail(f"old {MARK}")),
        make_block(
            "note_update_data", note_id=kept, action_time=new, event_detail=detail("new words")
        ),  # fmt: skip
        make_block(note_id=gone, action_time=old, event_detail=detail(f"only old {MARK}")),
    ]
    backend(app_settings).append_bodies([make_body(b) for b in blocks])
    client = await aiohttp_client(create_app(app_settings))

    async def folded() -> bool:
        return (await _get(client, f"/notes/{gone}"))[0] == 200

    await wait_for(folded, 30, "the views holding the notes")
    assert erase(app_settings, tmp_path, "--older-than", "5") == 0

    async def erased() -> bool:
        return (await _get(client, f"/notes/{gone}"))[0] == 410

    await wait_for(erased, 30, "serve's views following the erasure")
    status, note = await _get(client, f"/notes/{kept}")
    assert status == 200 and note["description"] == "new words" and note["event_count"] == 1
    status, history = await _get(client, f"/notes/{kept}/history")
    assert status == 200
    first, second = history["events"]
    assert first["erased"] is True and first["event_type"] == "note_create"
    assert first["action_time"] == old and first["entity"] == "note"
    assert first["entity_id"] == kept and "changes" not in first and "actor" not in first
    assert "erased" not in second and second["changes"][0]["add"] == ["new words"]
    assert MARK not in repr(history)
    await signed_in(client, "ops-token")
    page = await client.get(f"/ui/notes/{kept}?as_of={old}")
    text = await page.text()
    assert page.status == 200 and "removed by an erasure request" in text and "new words" in text
    assert MARK not in text
    assert (await client.get(f"/ui/notes/{gone}")).status == 410
    for route in ROUTES:
        assert (await _get(client, _with(route, gone, None)))[0] == 410, route
    # the command line shows the erased event as erased, and the erased note as gone
    config = str(tmp_path / "notestore.toml")  # written by erase()
    capsys.readouterr()
    assert main(["history", "--config", config, kept]) == 0
    assert "(erased)" in capsys.readouterr().out
    assert main(["note", "--config", config, gone]) == 2
    assert "was erased" in capsys.readouterr().err
    # as the OpenAPI document says: the history with an erased item, and each 410
    doc = document()
    for template, note_id in (
        ("/notes/{note_id}/history", kept),
        ("/notes/{note_id}", gone),
        ("/notes/{note_id}/history", gone),
        ("/notes/{note_id}/comments", gone),
    ):
        resp = await client.get(
            template.format(note_id=note_id), headers={"Authorization": "Bearer ops-token"}
        )
        check(doc, template, "get", resp, await resp.json())


def _follow_all(settings: Settings, views: Any, log: Any) -> None:
    for projector in all_projectors():
        catch_up(projector, views, log)


def _equal_to_a_rebuild(settings: Settings, views: Any) -> None:
    for projector in all_projectors():
        got = dump_tables(views, projector)
        assert MARK not in repr(got), projector.name
        assert got == fold_from_scratch(settings.storage, projector), projector.name


def test_two_erasures_at_once_the_later_ending_first_are_both_folded_in(
    settings: Settings,
) -> None:
    """Erasure 1 (long: a merchant's, say) and erasure 2 run at once; 2 ends first and the
    views fold it in; then 1 ends. Ends are read in the order they ended, not by id, so the
    views fold 1 in too."""
    backend(settings).append_bodies(note_bodies())
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    try:
        rebuild_all(all_projectors(), views, log)
        owner = open_log_owner(settings, settings.database_url)
        try:
            first = record_erasure(owner, with_comments(owner, SCOPES["note"]), "first", {})
            second = record_erasure(
                owner, Scope(merchant_id=MERCHANT, note_id=OTHER_NOTE), "second", {}
            )
            erase_rows(owner, second)
            end_erasure(owner, second.id)
            _follow_all(settings, views, log)
            erase_rows(owner, first)
            end_erasure(owner, first.id)
        finally:
            owner.close()
        _follow_all(settings, views, log)
        _equal_to_a_rebuild(settings, views)
    finally:
        views.close()
        log.close()


def test_a_rebuild_during_which_an_erasure_ends_folds_it_in(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild reads the erasure head before any event: an erasure that ends after it
    read the note's events is folded in by the swap's catch-up."""
    from projections import rebuild as rebuild_module

    backend(settings).append_bodies(note_bodies())
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    real_iter_from = rebuild_module.iter_from

    def iter_then_erase(*args: Any, **kwargs: Any) -> Any:
        for number, events in enumerate(real_iter_from(*args, **kwargs)):
            yield events
            if number == 0:
                run_erasure(settings, SCOPES["note"])

    monkeypatch.setattr(rebuild_module, "iter_from", iter_then_erase)
    try:
        rebuild_all(all_projectors(), views, log, batch=2)
        _equal_to_a_rebuild(settings, views)
    finally:
        views.close()
        log.close()


def test_a_large_erasure_is_folded_in_a_bounded_chunk_of_entities_per_transaction(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merchant's erasure touches every entity it has: each step folds about
    REFOLD_ENTITIES of them again (the views' write lock is held that long only), the
    position in its events kept between steps, and the views end equal to a rebuild."""
    monkeypatch.setattr(engine, "REFOLD_ENTITIES", 2)
    monkeypatch.setattr(engine, "ERASED_PAGE", 2)
    notes = [f"6510aa00000000000000e{n:03d}" for n in range(7)]
    bodies = [
        make_body(
            make_block(
                note_id=note,
                event_detail=[
                    {
                        "field_key": "description",
                        "add": [f"{MARK} {note}"],
                        "change": [],
                        "remove": [],
                    }
                ],
            )
        )  # fmt: skip
        for note in notes
    ]
    backend(settings).append_bodies(bodies)
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    try:
        rebuild_all(all_projectors(), views, log)
        run_erasure(settings, SCOPES["merchant"])
        notes_projector = all_projectors()[0]
        steps = 0
        while step(notes_projector, views, log):
            steps += 1
            state = erasure_state(views, notes_projector.name, LIVE)
            assert state.upto is not None and state.done == (1, 2 * steps)  # erasure 1, seq
            erased = views.execute("SELECT count(*) FROM notes WHERE erased = 1").fetchone()[0]
            assert erased == 2 * steps
        assert steps == 3  # 2 + 2 + 2, then the last one in the step that closed the range
        assert erasure_state(views, notes_projector.name, LIVE).upto is None
        _follow_all(settings, views, log)
        _equal_to_a_rebuild(settings, views)
    finally:
        views.close()
        log.close()


def test_older_than_a_note_with_a_newer_comment_answers_410_and_search_skips_it(
    settings: Settings,
) -> None:
    """Every event of the note itself erased, a newer comment on it kept: the note answers
    410, and search (whose document would hold the comment's words) does not list it."""
    from app.queries import notes as note_queries
    from app.queries import search
    from app.queries.scope import EVERYTHING

    note, comment = "6510aa00000000000000e101", "6510cc00000000000000e102"
    now = time.time()
    blocks = [
        make_block(note_id=note, action_time=now - 10 * DAY, event_detail=[
            {"field_key": "description", "add": ["old words"], "change": [], "remove": []}]),
        make_block("note_comment_create", comment_id=comment, action_time=now - DAY,
                   event_detail=[
                       {"field_key": "object_id", "add": [note], "change": [], "remove": []},
                       {"field_key": "description", "add": ["pelican"], "change": [],
                        "remove": []}]),
    ]  # fmt: skip
    backend(settings).append_bodies([make_body(b) for b in blocks])
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    try:
        rebuild_all(all_projectors(), views, log)
        terms = search.query_terms("pelican")
        found = search.search_notes(views, EVERYTHING, terms, 10, search.decode(None))
        assert [i["note_id"] for i in found["items"]] == [note]
        run_erasure(settings, Scope(before=now - 5 * DAY))
        _follow_all(settings, views, log)
        with pytest.raises(Gone):
            note_queries.get_note(views, EVERYTHING, note)
        assert search.search_notes(views, EVERYTHING, terms, 10, search.decode(None))["items"] == []
    finally:
        views.close()
        log.close()


def test_as_of_any_time_an_erased_note_answers_410(settings: Settings) -> None:
    """Before its first event too (no event then, but the note is erased now)."""
    from app.queries import notes as note_queries
    from app.queries.scope import EVERYTHING
    from app.queries.scope import Scope as TokenScope

    backend(settings).append_bodies(note_bodies())
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    try:
        rebuild_all(all_projectors(), views, log)
        run_erasure(settings, SCOPES["note"])
        _follow_all(settings, views, log)
        for at in (1_000_000_000.0, 2_000_000_000.0):
            with pytest.raises(Gone):
                note_queries.note_as_of(views, log, EVERYTHING, NOTE, at, MERCHANT)
        with pytest.raises(NotFound):  # another merchant's token: not even that
            note_queries.note_as_of(
                views, log, TokenScope(frozenset({OTHER_MERCHANT})), NOTE, 1e9, None
            )
    finally:
        views.close()
        log.close()


def test_a_note_of_many_erased_events_is_folded_again_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its erased events span many pages, all of one entity: one step reads them all and
    folds the note once (not once per page), and closes the range."""
    monkeypatch.setattr(engine, "REFOLD_ENTITIES", 2)
    monkeypatch.setattr(engine, "ERASED_PAGE", 2)
    updates = [
        make_body(
            make_block(
                "note_update_data",
                note_id=NOTE,
                action_time=1669200500.0 + n,
                event_detail=[
                    {"field_key": "description", "add": [f"{MARK} {n}"], "change": [], "remove": []}
                ],
            )
        )  # fmt: skip
        for n in range(7)
    ]
    backend(settings).append_bodies(updates)
    settings.storage.prepare()
    log, views = settings.storage.log_reader(), settings.storage.views()
    folded: list[int] = []
    notes_projector = all_projectors()[0]
    real_refold = notes_projector.refold

    def counted(conn: Any, events: Any, suffix: str) -> None:
        folded.append(len(events))
        real_refold(conn, events, suffix)

    monkeypatch.setattr(notes_projector, "refold", counted)
    try:
        rebuild_all([notes_projector], views, log)
        run_erasure(settings, SCOPES["note"])
        assert step(notes_projector, views, log) == 0  # nothing left for another step
        assert folded == [7] and erasure_state(views, "notes", LIVE).upto is None
        assert views.execute("SELECT erased FROM notes").fetchall() == [(1,)]
    finally:
        views.close()
        log.close()
