"""Hundreds of concurrent posts land exactly once; a SIGKILL loses nothing answered 200."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections import Counter

import aiohttp

from app.signing import SIGNATURE_HEADER
from tests.helpers import APP_A, SECRETS, make_block, make_body, signature, signed_post
from tests.server import Server, write_config


def logged_message_ids(db_path) -> Counter[str]:  # type: ignore[no-untyped-def]
    conn = sqlite3.connect(db_path)
    try:
        return Counter(r[0] for r in conn.execute("SELECT message_id FROM events"))
    finally:
        conn.close()


async def test_hundreds_of_concurrent_posts_all_land_exactly_once(client, settings):
    bodies = [make_body(make_block(), make_block("note_comment_update_data")) for _ in range(300)]
    # Every body twice, all at once: the second of each pair is a duplicate.
    results = await asyncio.gather(*(signed_post(client, b) for b in bodies + bodies))
    assert all(status == 200 for status, _ in results)
    assert sum(a["accepted"] for _, a in results) == 600
    assert sum(a["duplicates"] for _, a in results) == 600
    ids = logged_message_ids(settings.events_path)
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


async def test_sigkill_during_a_burst_loses_no_acknowledged_event(tmp_path):
    server = Server(write_config(tmp_path, SECRETS)).start()
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
    logged = logged_message_ids(tmp_path / "data" / "events.db")
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


async def test_sigterm_during_a_burst_finishes_in_flight_commits_and_exits_cleanly(tmp_path):
    server = Server(write_config(tmp_path, SECRETS)).start()
    acked: list[str] = []
    async with aiohttp.ClientSession() as session:
        url = f"{server.url}/webhooks/mobio"
        burst = asyncio.gather(*(_fire(session, url, acked, 200) for _ in range(16)))
        await asyncio.sleep(0.5)
        code = await asyncio.to_thread(server.stop)  # SIGTERM, then wait
        await burst
    assert code == 0 and acked
    logged = logged_message_ids(tmp_path / "data" / "events.db")
    assert all(logged[m] == 1 for m in acked)
