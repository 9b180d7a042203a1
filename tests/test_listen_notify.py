"""On PostgreSQL a commit to the log wakes the projectors (LISTEN/NOTIFY): here the runner's
polling is an hour apart, so only a notification can have moved its views."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import psycopg

from projections.notes import NotesProjector
from projections.process import listen
from projections.runner import Runner
from projections.storage import Storage
from projections.store import live_row
from tests import pg
from tests.helpers import make_block, wait_for
from tests.views_kit import append_blocks

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

HOUR = 3600.0


def checkpoint(storage: Storage) -> int | None:
    views = storage.views()
    try:
        row = live_row(views, "notes")
        return row.checkpoint if row else None
    finally:
        views.close()


async def test_a_commit_wakes_the_projectors_and_a_lost_listener_comes_back(
    tmp_path: Path, pg_url: str
) -> None:
    storage = Storage(tmp_path / "data", pg_url)
    storage.prepare()
    runner = Runner(storage, [NotesProjector()], poll_interval=HOUR)
    await runner.start()
    stop = threading.Event()
    listener = threading.Thread(target=listen, args=(pg_url, runner, stop), daemon=True)
    try:
        await wait_for(lambda: checkpoint(storage) == 0, what="the empty view built")
        listener.start()
        await wait_for(lambda: _listening(pg_url), what="the listener listening")
        append_blocks(storage, [make_block(note_id="n1")])
        await wait_for(lambda: checkpoint(storage) == 1, what="woken by the first commit")
        # the server ends the listener's session: it connects again and listens on
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN %' AND datname = current_database()"
            )
        await wait_for(lambda: _listening(pg_url), what="the listener back")
        await asyncio.to_thread(append_blocks, storage, [make_block(note_id="n2")])
        await wait_for(lambda: checkpoint(storage) == 2, what="woken after the listener came back")
    finally:
        stop.set()
        await runner.stop()
        listener.join(5)


def _listening(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN %' AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])
