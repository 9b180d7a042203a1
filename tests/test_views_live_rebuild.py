"""Views built while the service runs: a view being built answers 503 and the others carry on;
`notestore rebuild` while a real server keeps receiving ends with views equal to a fresh fold.
Both on SQLite and on PostgreSQL (the `backends` marker of tests/conftest.py, tests/backends.py);
what `status` and `rebuild` say of a missing events.db is SQLite's alone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from app.keys import RUNNER
from app.send import post_signed
from app.web import create_app
from projections.comments import CommentsProjector
from projections.mentions import MentionsProjector
from projections.notes import NotesProjector
from projections.registry import all_projectors
from projections.storage import Storage
from tests import backends as kit
from tests.helpers import SECRETS, make_block, make_body, settled, signature, wait_for, wait_until
from tests.server import Server, write_config
from tests.views_kit import Views, append_blocks, fold_from_scratch

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

OPS = {"Authorization": "Bearer ops-token"}
T0 = 1669200000.0  # a plausible action_time (intake quarantines times before 2000)


class HeldNotes(NotesProjector):
    """The notes view, whose folding waits at a gate the test opens.

    A rebuild folds with fold_into (apply is for live batches), so this holds the
    view in its being-built state for as long as the test needs: `building` says
    the rebuild has reached the gate.
    """

    def __init__(self) -> None:
        super().__init__()
        self.building = threading.Event()
        self.gate = threading.Event()

    def fold_into(self, conn, events, suffix, states):  # type: ignore[no-untyped-def]
        self.building.set()
        if not self.gate.wait(60):
            raise RuntimeError("the test never opened the gate")
        super().fold_into(conn, events, suffix, states)


@pytest.mark.backends("sqlite", "postgresql")
async def test_a_view_being_built_answers_503_with_retry_after(aiohttp_client, settings):
    """While the notes view is held mid-build its route answers 503 with Retry-After, the
    log's routes and /healthz answer meanwhile; once the build ends the note is served.

    (Was in test_api_params_and_scope.py, where the gate sat in apply(), which a rebuild
    never calls: the 503 depended on the request beating a one-event rebuild.)
    """
    settings.storage.prepare()
    append_blocks(settings.storage, [make_block(note_id="n1")])
    held = HeldNotes()
    client = await aiohttp_client(
        create_app(settings, [held, CommentsProjector(), MentionsProjector()])
    )
    try:
        await wait_for(held.building.is_set, what="the notes rebuild reached its gate")
        resp = await client.get("/notes/n1", headers=OPS)
        body = await resp.json()
        assert resp.status == 503 and "notes" in body["error"], body
        assert resp.headers["Retry-After"].isdigit()
        assert (await client.get("/events", headers=OPS)).status == 200
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "ok" and "notes" in health["views_catching_up"], health
        assert not client.app[RUNNER].is_ready("notes")
    finally:
        held.gate.set()
    await settled(settings)
    await wait_for(lambda: client.app[RUNNER].is_ready("notes"), what="notes ready")
    resp = await client.get("/notes/n1", headers=OPS)
    assert resp.status == 200 and (await resp.json())["note_id"] == "n1"


def notestore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120
    )


def post_many(url: str, count: int, answers: list[int]) -> None:
    for i in range(count):
        note = f"n{i % 17}"
        detail = [
            {"field_key": "account_mentions", "add": [[f"acc-{i % 5}"]]},
            {"field_key": "description", "add": [f"text {i}"]},
        ]
        blocks = [
            make_block(
                "note_update_data", note_id=note, action_time=T0 + i % 50, event_detail=detail
            ),
            make_block(
                "note_comment_create",
                comment_id=f"c{i % 23}",
                action_time=T0 + i,
                event_detail=[{"field_key": "object_id", "add": [note]}],
            ),
        ]
        raw = json.dumps(make_body(*blocks)).encode()
        answers.append(post_signed(url, raw, signature(raw))[0])


def status(config) -> dict:  # type: ignore[no-untyped-def,type-arg]
    done = notestore("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_rebuild_while_posts_keep_arriving(tmp_path, backend: Storage):
    more = {"database_url": backend.database_url} if backend.database_url else {}
    config = write_config(tmp_path, SECRETS, **more)
    assert backend.data_dir == tmp_path / "data"  # where the config puts it
    with Server(config) as server:
        url = f"{server.url}/webhooks/mobio"
        answers: list[int] = []
        post_many(url, 150, answers)
        posting = threading.Thread(target=post_many, args=(url, 400, answers))
        posting.start()
        rebuilt = notestore("rebuild", "--config", str(config))
        second = notestore("rebuild", "notes", "--config", str(config))
        posting.join()
        assert rebuilt.returncode == 0 and "rebuilt notes, comments, mentions" in rebuilt.stdout, (
            rebuilt.stderr
        )
        assert second.returncode == 0, second.stderr
        assert answers.count(200) == 550
        wait_until(
            lambda: not any(v["lag"] for v in status(config)["views"]), what="views caught up"
        )
    report = status(config)
    assert report["log"]["events"] == 1100
    assert all(v["checkpoint"] == 1100 and v["error"] is None for v in report["views"])
    for projector in all_projectors():
        views = Views(backend, projector)
        assert views.dump() == fold_from_scratch(backend, projector), projector.name
        views.close()


def test_status_and_rebuild_explain_an_unknown_view_or_a_missing_log(tmp_path):
    config = write_config(tmp_path, SECRETS)
    missing = notestore("status", "--config", str(config))
    assert missing.returncode == 2 and "no log" in missing.stderr
    (tmp_path / "data").mkdir()
    from eventlog.db import open_log

    open_log(tmp_path / "data").close()
    unknown = notestore("rebuild", "nope", "--config", str(config))
    assert unknown.returncode == 2 and "unknown view nope" in unknown.stderr
    table = notestore("status", "--config", str(config))
    assert table.returncode == 0 and "not built yet" in table.stdout
