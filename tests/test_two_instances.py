"""Two `notestore serve` instances on one PostgreSQL: deliveries spread over both land once,
the views they both answer from equal a rebuild, and when the instance running the
projectors dies by SIGKILL the other takes them over and catches up."""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from app.signing import SIGNATURE_HEADER
from eventlog.read import head_seq
from projections.base import dump_tables
from projections.rebuild import rebuild_all
from projections.registry import all_projectors
from projections.storage import Storage
from projections.store import open_views
from tests import pg
from tests.helpers import SECRETS, make_block, make_body, signature, wait_until
from tests.server import Server, write_config

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

TOKEN = "two-instances-token"


def instance(folder: Path, url: str) -> Server:
    folder.mkdir()
    return Server(write_config(folder, SECRETS, {TOKEN: ["*"]}, database_url=url))


def runs_projectors(server: Server) -> bool:
    """Whether this instance's projector process holds the database's lease (it says so)."""
    return '"projector_lease_taken"' in server.log_path.read_text()


async def deliver(servers: list[Server], blocks: list[dict[str, Any]]) -> list[str]:
    """Each block in a body of its own, spread over the servers; the acknowledged ids."""
    acked: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def post(i: int, block: dict[str, Any]) -> None:
            raw = json.dumps(make_body(block)).encode()
            url = f"{servers[i % len(servers)].url}/webhooks/mobio"
            async with session.post(url, data=raw, headers={SIGNATURE_HEADER: signature(raw)}) as r:
                assert r.status == 200, await r.text()
                if (await r.json())["accepted"] == 1:
                    acked.append(block["message_id"])

        for start in range(0, len(blocks), 16):
            await asyncio.gather(*(post(start + i, b) for i, b in enumerate(blocks[start : start + 16])))
    return acked


def described(text: str) -> dict[str, Any]:
    return {"field_key": "description", "add": [text], "change": [], "remove": []}


def notes_blocks(count: int, prefix: str) -> list[dict[str, Any]]:
    """Creations, then updates of the same notes: folding needs both to agree."""
    created = [
        make_block("note_create", note_id=f"{prefix}-{i}", event_detail=[described(f"text of {i}")])
        for i in range(count)
    ]
    updated = [
        make_block("note_update_data", note_id=f"{prefix}-{i}", action_time=1669200500.0 + i)
        for i in range(count)
    ]
    return created + updated


def logged(storage: Storage) -> Counter[str]:
    conn = storage.log_reader()
    try:
        return Counter(r[0] for r in conn.execute("SELECT message_id FROM events"))
    finally:
        conn.close()


def settled(storage: Storage) -> bool:
    log, views = storage.log_reader(), storage.views()
    try:
        head = head_seq(log)
        checkpoints = [r[0] for r in views.execute("SELECT checkpoint FROM projectors")]
        return len(checkpoints) == len(all_projectors()) and set(checkpoints) == {head}
    finally:
        log.close()
        views.close()


def views_equal_a_rebuild(storage: Storage) -> None:
    projectors = all_projectors()
    live = storage.views()
    log = storage.log_reader()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            reference = open_views(scratch)
            try:
                rebuild_all(projectors, reference, log)
                for p in projectors:
                    assert dump_tables(live, p) == dump_tables(reference, p), p.name
            finally:
                reference.close()
    finally:
        live.close()
        log.close()


def note_from(server: Server, note_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/notes/{note_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


async def test_two_instances_share_one_log_and_one_set_of_views(tmp_path: Path, pg_url: str) -> None:
    storage = Storage(tmp_path / "unused", pg_url)
    a = instance(tmp_path / "a", pg_url).start()
    b = instance(tmp_path / "b", pg_url).start()
    try:
        blocks = notes_blocks(60, "n")
        acked = await deliver([a, b], blocks)
        # the same deliveries again, to the other instance: duplicates, never a second event
        again = await deliver([b, a], blocks)
        assert sorted(acked) == sorted(b["message_id"] for b in blocks) and again == []
        assert logged(storage) == Counter({m: 1 for m in acked})
        wait_until(lambda: settled(storage), 60, "the views catching up with the log")
        assert [runs_projectors(a), runs_projectors(b)].count(True) == 1
        views_equal_a_rebuild(storage)
        for note_id in ("n-0", "n-59"):
            assert note_from(a, note_id) == note_from(b, note_id)
            assert note_from(a, note_id)["description"] == f"text of {note_id[2:]}"
    finally:
        a.stop()
        b.stop()


async def test_sigkill_of_the_instance_running_the_projectors_hands_them_over(
    tmp_path: Path, pg_url: str
) -> None:
    storage = Storage(tmp_path / "unused", pg_url)
    a = instance(tmp_path / "a", pg_url).start()
    wait_until(lambda: runs_projectors(a), 30, "the first instance taking the projectors")
    b = instance(tmp_path / "b", pg_url).start()
    try:
        first = await deliver([a, b], notes_blocks(20, "before"))
        wait_until(lambda: settled(storage), 60, "the views catching up with the log")
        assert not runs_projectors(b)
        # SIGKILL while B receives a burst: A's projector process dies with it, perhaps mid
        # batch, the lease is released, and B's takes the views over from their checkpoints
        burst = asyncio.ensure_future(deliver([b], notes_blocks(40, "during")))
        await asyncio.sleep(0)  # the burst's first requests are on their way
        a.kill()
        during = await burst
        wait_until(lambda: runs_projectors(b), 30, "the other instance taking the projectors")
        second = await deliver([b], notes_blocks(20, "after")) + during
        assert logged(storage) == Counter({m: 1 for m in first + second})
        wait_until(lambda: settled(storage), 60, "the views catching up after the handover")
        views_equal_a_rebuild(storage)
        assert note_from(b, "after-19")["description"] == "text of 19"
    finally:
        a.kill()
        b.stop()
