"""The spool (issue 14): a delivery the log cannot commit in time is kept on local disk,
answered 200, and drained into the log in the order received with its received_at; when
nothing can keep it, a loud 503. On both backends, the log held by a real lock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from app.commands.views import spool_status
from app.config import Settings
from app.web import create_app
from eventlog.append import Delivery
from eventlog.drain import MAX_ATTEMPTS, UNDRAINABLE, Drainer
from eventlog.intake import read_body
from eventlog.spool import Spool, read_stats
from eventlog.verify import verify_log
from eventlog.writer import GroupCommitWriter, LogUnavailable
from projections.storage import POSTGRESQL
from tests.backends import held_write_lock
from tests.helpers import APP_A, make_block, make_body, signed_post, wait_for

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def quick(settings: Settings, **more: Any) -> Settings:
    return settings.model_copy(update={"log_commit_timeout_ms": 300, **more})


def log_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    store = settings.storage.log_reader()
    try:
        return list(store.execute(sql).fetchall())
    finally:
        store.close()


def spool_depth(settings: Settings) -> int:
    stats = read_stats(settings.spool_path)
    return 0 if stats is None else stats.waiting


async def health(client: TestClient) -> tuple[int, dict[str, Any]]:  # type: ignore[type-arg]
    resp = await client.get("/healthz")
    return resp.status, await resp.json()


async def test_deliveries_the_log_cannot_take_in_time_are_spooled_then_drained_in_order(
    aiohttp_client: Any, settings: Settings
) -> None:
    settings = quick(settings)
    client = await aiohttp_client(create_app(settings))
    assert (await signed_post(client, make_body(make_block(note_id="first"))))[0] == 200
    answers, received = [], []
    with held_write_lock(settings.storage):
        for i in range(6):
            received.append(time.time())
            answers.append(await signed_post(client, make_body(make_block(note_id=f"n-{i}"))))
        assert all(status == 200 for status, _ in answers)
        assert [a["spooled"] for _, a in answers] == [True] * 6
        assert [a["accepted"] for _, a in answers] == [1] * 6
        assert spool_depth(settings) == 6
        shown = spool_status(settings)  # what notestore status shows
        assert (shown["deliveries"], shown["set_aside"]) == (6, 0) and shown["bytes"] > 0
        status, body = await health(client)
        assert (status, body["status"]) == (200, "degraded")
        assert any("6 deliveries spooled" in r for r in body["reasons"])
        released = time.time()
    await wait_for(lambda: spool_depth(settings) == 0, 30, "the spool drained")
    rows = log_rows(settings, "SELECT note_id, received_at FROM events ORDER BY seq")
    assert [r[0] for r in rows] == ["first"] + [f"n-{i}" for i in range(6)]
    # each kept the time it was received, not the time it was drained
    for (_, at), sent in zip(rows[1:], received, strict=True):
        assert sent <= at < released
    assert log_rows(settings, "SELECT count(*) FROM requests") == [(7,)]
    await wait_for(lambda: _health_ok(client), 15, "healthz ok again")
    metrics = await (await client.get("/metrics")).text()  # blocks counted once in the log
    assert 'notestore_blocks_total{outcome="accepted"} 7.0' in metrics
    assert "notestore_deliveries_spooled_total 6.0" in metrics


async def _health_ok(client: TestClient) -> bool:  # type: ignore[type-arg]
    status, body = await health(client)
    return status == 200 and body["status"] == "ok"


async def test_while_the_spool_drains_new_deliveries_queue_behind_it(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Spooled first, so the log takes them in the order received even after it is back."""
    settings = quick(settings)
    client = await aiohttp_client(create_app(settings))
    with held_write_lock(settings.storage):
        assert (await signed_post(client, make_body(make_block(note_id="a"))))[1]["spooled"]
        assert client.app[_drainer_key()].first  # the next one goes to the spool too
        status, answer = await signed_post(client, make_body(make_block(note_id="b")))
        assert (status, answer["spooled"]) == (200, True)
    await wait_for(lambda: spool_depth(settings) == 0, 30, "the spool drained")
    rows = log_rows(settings, "SELECT note_id FROM events ORDER BY seq")
    assert [r[0] for r in rows] == ["a", "b"]


def _drainer_key() -> Any:
    from app.spooling import DRAINER

    return DRAINER


async def test_a_full_spool_answers_503_counts_the_loss_and_never_200s_what_it_lost(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    settings = quick(settings, spool_max_bytes=1 << 16, spool_dir=tmp_path / "spool")
    client = await aiohttp_client(create_app(settings))
    padding = "x" * 6000
    statuses: dict[str, int] = {}
    with held_write_lock(settings.storage):
        for i in range(16):
            raw = _raw(make_block(note_id=f"n-{i}", padding=padding))
            resp = await client.post("/webhooks/mobio", data=raw, headers=_headers(raw))
            statuses[f"n-{i}"] = resp.status
            if resp.status == 503:
                assert resp.headers["Retry-After"]
        assert set(statuses.values()) == {200, 503}
        status, body = await health(client)
        assert status == 503 and any("spool" in r for r in body["reasons"])
        metrics = await (await client.get("/metrics")).text()
        lost = sum(1 for s in statuses.values() if s == 503)
        assert f"notestore_deliveries_lost_total {float(lost)}" in metrics
    await wait_for(lambda: spool_depth(settings) == 0, 30, "the spool drained")
    logged = {r[0] for r in log_rows(settings, "SELECT note_id FROM events")}
    assert logged == {n for n, s in statuses.items() if s == 200}


def _raw(block: dict[str, Any]) -> bytes:
    return json.dumps(make_body(block)).encode()


def _headers(raw: bytes) -> dict[str, str]:
    from app.signing import SIGNATURE_HEADER
    from tests.helpers import signature

    return {SIGNATURE_HEADER: signature(raw)}


def _delivery(note_id: str, received_at: float) -> Delivery:
    raw = _raw(make_block(note_id=note_id))
    from tests.helpers import signature

    intake = read_body(raw, APP_A, received_at)
    return Delivery(received_at, APP_A, "fp", signature(raw), raw, intake)


async def test_a_drain_that_died_after_its_commit_adds_nothing_the_second_time(
    settings: Settings, tmp_path: Path
) -> None:
    """The log holds a spooled delivery already (committed, then the process died before
    the spool was emptied): the drainer drops it from the spool and appends nothing."""
    settings.storage.prepare()
    spool = Spool(tmp_path / "spool", 1 << 20)
    now = time.time()
    kept, fresh = _delivery("kept", now - 2), _delivery("fresh", now - 1)
    spool.append([kept, fresh])
    writer = GroupCommitWriter(settings.storage.log_store(writer=True))
    await writer.append(kept)  # in the log already, as if drained before a crash
    await drain_all(settings, spool, writer)
    assert log_rows(settings, "SELECT note_id FROM events ORDER BY seq") == [("kept",), ("fresh",)]
    assert log_rows(settings, "SELECT count(*) FROM requests") == [(2,)]
    verify_ok(settings)


async def drain_all(settings: Settings, spool: Spool, writer: GroupCommitWriter) -> None:
    """Run a drainer through `writer` until the spool is empty; then close the writer."""
    drainer = Drainer(spool, writer, settings.storage.log_store, timeout=10)
    stop = asyncio.Event()
    task = asyncio.create_task(drainer.run(stop))
    try:
        await wait_for(lambda: spool.stats().depth == 0, 60, "the spool drained")
    finally:
        stop.set()
        await task
        await asyncio.to_thread(writer.close)


def verify_ok(settings: Settings) -> None:
    reader = settings.storage.log_reader()
    try:
        report = verify_log(reader, lambda app_id, fingerprint, body: None)
    finally:
        reader.close()
    assert report.ok, report


async def test_a_delivery_the_log_keeps_refusing_goes_to_quarantine_and_the_rest_drain(
    settings: Settings, tmp_path: Path
) -> None:
    settings.storage.prepare()
    refused = _delivery("refused", time.time() - 3)
    _refuse_signature(settings, refused.signature)
    spool = Spool(tmp_path / "spool", 1 << 20)
    behind = [_delivery(f"behind-{i}", time.time() - 2 + i / 10) for i in range(3)]
    spool.append([refused, *behind])
    await drain_all(settings, spool, GroupCommitWriter(settings.storage.log_store(writer=True)))
    assert log_rows(settings, "SELECT note_id FROM events ORDER BY seq") == [
        (f"behind-{i}",) for i in range(3)
    ]
    held = log_rows(settings, "SELECT reason, detail, payload FROM quarantine")
    assert len(held) == 1 and held[0][0] == UNDRAINABLE
    assert f"refused this delivery {MAX_ATTEMPTS} times" in held[0][1]
    assert "refused" in held[0][2]  # the body, readable, to replay once the cause is fixed


def _refuse_signature(settings: Settings, signature: str) -> None:
    """A database that refuses one request, whatever the writer does (even its
    unstorable fallback, which stores the request too)."""
    if settings.storage.backend == POSTGRESQL:
        assert settings.database_url is not None
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.signature = '{signature}' THEN RAISE EXCEPTION 'refused';"
                " END IF; RETURN NEW; END $$"
            )
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    else:
        conn = sqlite3.connect(settings.events_path)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON requests"
            f" WHEN NEW.signature = '{signature}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
        conn.close()


async def test_a_spool_near_full_keeps_what_fits_of_a_batch_and_refuses_only_the_rest(
    tmp_path: Path,
) -> None:
    """Past spool_max_bytes, each delivery that does not fit is refused on its own (in
    order: none overtakes one refused before it); the ones before it are kept."""
    now = time.time()
    batch = [_delivery(f"n-{i}", now + i) for i in range(5)]
    room = sum(len(d.body) for d in batch[:3]) + len(batch[3].body) // 2
    spool = Spool(tmp_path / "spool", room)
    results = spool.append(batch)
    assert [type(r).__name__ for r in results] == ["Outcome"] * 3 + ["SpoolFull"] * 2
    assert all(isinstance(r, LogUnavailable) for r in results[3:])
    assert [i.delivery.body for i in spool.oldest(10)] == [d.body for d in batch[:3]]
    spool.remove([i.id for i in spool.oldest(1)])  # room again for the next one
    assert type(spool.append(batch[3:4])[0]).__name__ == "Outcome"
