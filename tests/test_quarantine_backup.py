"""Quarantine replay appends exactly once (on SQLite and on PostgreSQL); backups taken under load
restore to the same log and views (SQLite only: a PostgreSQL log is backed up with pg_dump or
archiving, and `notestore backup` says so, tests/test_cli_postgres.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from app.send import post_signed
from projections.registry import all_projectors
from tests import pg
from tests.helpers import SECRETS, make_block, make_body, signature
from tests.ops_kit import Backend, backend_for, hold_as_if_rejected, notestore
from tests.server import Server, write_config
from tests.views_kit import Views, fold_from_scratch

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:  # type: ignore[no-untyped-def]
    return backend_for(request, tmp_path)


def message_ids(db) -> list[str]:  # type: ignore[no-untyped-def]
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT message_id FROM events ORDER BY seq")]
    finally:
        conn.close()


def test_replay_appends_once_and_is_idempotent(tmp_path, backend):
    config = backend.config(tmp_path, SECRETS)
    held = hold_as_if_rejected(backend.data_dir, 5, database_url=backend.url)
    backend.append_bodies(
        [
            {
                "app_id": "16453496-6a17-11ed-8a77-6632ed169876",
                "block_event": [{"message_id": "bad"}],
            }
        ],
    )
    listing = json.loads(notestore(config, "quarantine", "list", "--json").stdout)
    assert listing["reasons"] == {"invalid_block": 6}
    assert [i["id"] for i in listing["items"]] == [6, 5, 4, 3, 2, 1]  # newest first

    first = notestore(config, "quarantine", "replay", "1", "2")
    assert first.returncode == 0 and "2 appended" in first.stdout
    everything = notestore(config, "quarantine", "replay", "--all")
    assert "3 appended" in everything.stdout and "1 still_failing" in everything.stdout
    again = notestore(config, "quarantine", "replay", "--all")
    assert "1 still_failing" in again.stdout and "appended" not in again.stdout
    assert backend.message_ids() == [b["message_id"] for b in held]
    assert notestore(config, "verify").returncode == 0
    listing = json.loads(notestore(config, "quarantine", "list", "--json").stdout)
    assert len(listing["items"]) == 6  # quarantine rows are never removed
    assert {i["last_replay"] for i in listing["items"]} == {"appended", "still_failing"}


def test_replay_needs_ids_or_all(tmp_path, backend):
    config = backend.config(tmp_path, SECRETS)
    hold_as_if_rejected(backend.data_dir, 1, database_url=backend.url)
    done = notestore(config, "quarantine", "replay")
    assert done.returncode == 2 and "--all" in done.stderr


def _post(url: str, count: int, statuses: list[int], posted: list[str]) -> None:
    for _ in range(count):
        block = make_block()
        raw = json.dumps(make_body(block)).encode()
        statuses.append(post_signed(url, raw, signature(raw))[0])
        posted.append(block["message_id"])


def test_cli_replays_in_several_processes_while_the_server_receives(tmp_path, backend):
    """Nothing lost or doubled, and no delivery is answered 503."""
    config = backend.config(tmp_path, SECRETS)
    held = hold_as_if_rejected(backend.data_dir, 900, per_request=50, database_url=backend.url)
    statuses: list[int] = []
    posted: list[str] = []
    with Server(config) as server:
        url = f"{server.url}/webhooks/mobio"
        posters = [
            threading.Thread(target=_post, args=(url, 150, statuses, posted)) for _ in range(4)
        ]
        for t in posters:
            t.start()
        replays = [
            threading.Thread(target=notestore, args=(config, "quarantine", "replay", "--all"))
            for _ in range(3)
        ]
        for t in replays:
            t.start()
        for t in posters + replays:
            t.join()
    assert statuses.count(200) == 600
    logged = backend.message_ids()
    assert len(logged) == len(set(logged)) == 1500
    assert set(logged) == {b["message_id"] for b in held} | set(posted)
    assert notestore(config, "verify").returncode == 0


def status(config) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return json.loads(notestore(config, "status", "--json").stdout)  # type: ignore[no-any-return]


def test_a_backup_taken_during_a_burst_restores_and_rebuilds_the_same_views(tmp_path):
    config = write_config(tmp_path, SECRETS)
    data = tmp_path / "data"
    statuses: list[int] = []
    posted: list[str] = []
    with Server(config) as server:
        url = f"{server.url}/webhooks/mobio"
        _post(url, 50, statuses, posted)
        burst = threading.Thread(target=_post, args=(url, 300, statuses, posted))
        burst.start()
        made = notestore(config, "backup", str(tmp_path / "backup.db"))
        burst.join()
        refused = notestore(config, "restore", str(tmp_path / "backup.db"))
        assert refused.returncode == 2 and "stop it first" in refused.stderr
    assert made.returncode == 0 and "the copy verifies" in made.stdout, made.stdout + made.stderr
    backed_up = message_ids(tmp_path / "backup.db")
    assert (
        50 <= len(backed_up) <= 350
        and backed_up == message_ids(data / "events.db")[: len(backed_up)]
    )
    restored = notestore(config, "restore", str(tmp_path / "backup.db"))
    assert restored.returncode == 0 and "previous log is kept" in restored.stdout
    assert message_ids(data / "events.db") == backed_up
    assert notestore(config, "verify").returncode == 0
    assert not list(data.glob("views.db*"))
    with Server(config):  # serve rebuilds the dropped views on start
        deadline = time.monotonic() + 30
        while any(v["checkpoint"] != len(backed_up) for v in status(config)["views"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for projector in all_projectors():
        views = Views(data, projector)
        views.catch_up()
        assert views.dump() == fold_from_scratch(data, projector)
