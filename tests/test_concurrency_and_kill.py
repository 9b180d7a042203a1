"""Hundreds of concurrent posts land exactly once; a SIGKILL loses nothing answered 200.

Each test runs with the log on SQLite and on PostgreSQL (tests/pg.py: a database per test;
skipped without a server locally, failing with CI=true).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.signing import SIGNATURE_HEADER
from app.web import create_app
from projections.storage import POSTGRESQL, SQLITE, Storage
from tests import pg
from tests.helpers import APP_A, SECRETS, make_block, make_body, signature, signed_post
from tests.server import Server, write_config

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


@pytest.fixture(params=[SQLITE, POSTGRESQL])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Where the log is: None for SQLite (events.db under data_dir), else a fresh database."""
    return request.getfixturevalue("pg_url") if request.param == POSTGRESQL else None


def config(folder: Path, database_url: str | None) -> Path:
    more: dict[str, Any] = {"database_url": database_url} if database_url else {}
    return write_config(folder, SECRETS, **more)


def logged_message_ids(db_path: Path, database_url: str | None = None) -> Counter[str]:
    """How often each message_id is in the log: events.db at db_path, or on PostgreSQL."""
    conn = Storage(db_path.parent, database_url).log_reader()
    try:
        return Counter(r[0] for r in conn.execute("SELECT message_id FROM events"))
    finally:
        conn.close()


async def test_hundreds_of_concurrent_posts_all_land_exactly_once(
    aiohttp_client, settings, database_url
):
    settings = settings.model_copy(update={"database_url": database_url})
    client = await aiohttp_client(create_app(settings))
    bodies = [make_body(make_block(), make_block("note_comment_update_data")) for _ in range(300)]
    # Every body twice, all at once: the second of each pair is a duplicate.
    results = await asyncio.gather(*(signed_post(client, b) for b in bodies + bodies))
    assert all(status == 200 for status, _ in results)
    assert sum(a["accepted"] for _, a in results) == 600
    assert sum(a["duplicates"] for _, a in results) == 600
    ids = logged_message_ids(settings.events_path, database_url)
    assert len(ids) == 600 and set(ids.values()) == {1}


async def _fire(session: aiohttp.ClientSession, url: str, acked: list[str], n: int) -> None:
    for _ in range(n):
        block = make_block()
        raw = json.dumps(make_body(block)).encode()
        try:
            async with session.post(url, data=raw, headers={SIGNATURE_HEADER: signature(raw)}) as r:
                if r.status == 200 and (await r.json())["accepted"] == 1:
                    acked.append(block["message_id"])
        except (TimeoutError, aiohttp.ClientError):
            return  # the server is gone: this delivery was never acknowledged


async def test_sigkill_during_a_burst_loses_no_acknowledged_event(tmp_path, database_url):
    server = Server(config(tmp_path, database_url)).start()
    acked: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/webhooks/mobio"
            burst = asyncio.gather(*(_fire(session, url, acked, 200) for _ in range(32)))
            await asyncio.sleep(random.uniform(0.3, 0.8))
            server.kill()
            await burst
    finally:
        server.kill()
    assert acked, "the burst should have had deliveries acknowledged before the kill"
    logged = logged_message_ids(tmp_path / "data" / "events.db", database_url)
    assert all(logged[m] == 1 for m in acked)
    # Restarting on the same data works and keeps accepting.
    with Server(server.config) as again:
        raw = json.dumps(make_body()).encode()
        req = aiohttp.ClientSession()
        async with (
            req,
            req.post(
                f"{again.url}/webhooks/mobio",
                data=raw,
                headers={SIGNATURE_HEADER: signature(raw, APP_A)},
            ) as r,
        ):
            assert r.status == 200


async def test_sigterm_during_a_burst_finishes_in_flight_commits_and_exits_cleanly(
    tmp_path, database_url
):
    server = Server(config(tmp_path, database_url)).start()
    acked: list[str] = []
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/webhooks/mobio"
        burst = asyncio.gather(*(_fire(session, url, acked, 200) for _ in range(16)))
        await asyncio.sleep(0.5)
        code = await asyncio.to_thread(server.stop)  # SIGTERM, then wait
        await burst
    assert code == 0 and acked
    logged = logged_message_ids(tmp_path / "data" / "events.db", database_url)
    assert all(logged[m] == 1 for m in acked)
