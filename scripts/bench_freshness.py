#!/usr/bin/env python
"""Freshness benchmark: time from a delivery's 200 to its effect being visible through the API,
under a steady load at half of notestore's maximum ingest rate (measured first, same run),
on SQLite and on PostgreSQL.

Every tenth delivery is a probe, a note seen for the first time: the lag is from its 200 to
the first GET /notes/{id} answering 200 (polled every 10 ms). On each backend the maximum
rate is that backend's own (a `notestore serve` on it at 64 connections), and the run is a
serve on a fresh log of that backend. Target, on each: p99 <= 250 ms.

    python scripts/bench_freshness.py [--seconds 10] [--rate N]
                                      [--backend sqlite|postgresql|both] [--database-url URL]

PostgreSQL: serve gets `database_url` in its config, a database of its own (dropped at the
end) on a throwaway cluster started as tests/pg.py starts one, or on --database-url's server
(a role that may CREATE DATABASE).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    POSTGRESQL,
    SECRETS,
    add_backend_arguments,
    backends,
    p99,
    postgresql_server,
    scratch_database,
    signed,
    verdict,
    wait_for_views,
)
from load import run_load, write_bodies  # noqa: E402
from workload import Workload  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.signing import SIGNATURE_HEADER  # noqa: E402
from tests.server import Server, write_config  # noqa: E402

TARGET_MS = 250.0
TOKEN = {"Authorization": "Bearer bench"}


def max_rate(folder: Path, seconds: int, **database: str) -> float:
    """notestore's ingest rate at 64 connections, on data of its own (`database_url=...`:
    on that PostgreSQL database)."""
    work = Workload(seed=11)
    bodies = folder / "max.txt"
    write_bodies(bodies, [signed(work.body()) for _ in range(40_000)])
    (folder / "max").mkdir()
    config = write_config(folder / "max", SECRETS, {"bench": ["*"]}, **database)
    with Server(config) as server:
        return run_load(f"{server.url}/webhooks/mobio", bodies, seconds, 64).rate


async def probe(
    session: aiohttp.ClientSession, url: str, raw: bytes, sig: str, note: str, lags: list[float]
) -> None:
    async with session.post(
        f"{url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: sig}
    ) as resp:
        assert resp.status == 200
    answered = time.perf_counter()
    while True:
        async with session.get(f"{url}/notes/{note}", headers=TOKEN) as resp:
            if resp.status == 200:
                lags.append((time.perf_counter() - answered) * 1000)
                return
        await asyncio.sleep(0.01)  # 10 ms resolution; faster polling would load the server itself


def deliveries(rate: float, seconds: float) -> list[tuple[str, bytes, str | None]]:
    """(signature, body, probe note or None) for the whole run, made before it starts.

    Every tenth is a probe: a note seen for the first time. Made in advance so that
    generating and signing (~70 µs each in Python) do not take the CPU notestore needs.
    """
    work = Workload(seed=12)
    made: list[tuple[str, bytes, str | None]] = []
    for n in range(int(rate * seconds) + 1):
        body = work.body()
        note = None
        if n % 10 == 0:
            block = body["block_event"][0]
            block["event_type"] = "note_update_data"
            block["data_event"].pop("comment_id", None)
            note = f"probe-{n}"
            block["data_event"]["note_id"] = note
        sig, raw = signed(body)
        made.append((sig, raw, note))
    return made


async def deliver(session: aiohttp.ClientSession, url: str, raw: bytes, sig: str) -> None:
    async with session.post(
        f"{url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: sig}
    ) as resp:
        assert resp.status == 200
        await resp.read()


async def steady(url: str, rate: float, seconds: float) -> list[float]:
    """Deliveries at a fixed rate; the probes among them measure freshness."""
    planned = deliveries(rate, seconds)
    lags: list[float] = []
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        started = time.perf_counter()
        for n, (sig, raw, note) in enumerate(planned):
            if time.perf_counter() - started >= seconds:
                break
            if note is not None:
                tasks.append(asyncio.create_task(probe(session, url, raw, sig, note, lags)))
            else:
                tasks.append(asyncio.create_task(deliver(session, url, raw, sig)))
            await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    return lags


def measure(name: str, folder: Path, args: argparse.Namespace, admin_url: str | None) -> list[str]:
    """The maximum rate (unless --rate), then the steady run, on one backend."""
    with ExitStack() as stack:
        max_db, run_db = {}, {}
        if name == POSTGRESQL:
            assert admin_url is not None
            max_db = {"database_url": stack.enter_context(scratch_database(admin_url))}
            run_db = {"database_url": stack.enter_context(scratch_database(admin_url))}
        rate = args.rate
        if rate is None:
            top = max_rate(folder, 5, **max_db)
            rate = top / 2
            print(f"[{name}] maximum ingest {top:,.0f} req/s; steady load at {rate:,.0f} req/s")
        (folder / "run").mkdir()
        config = write_config(folder / "run", SECRETS, {"bench": ["*"]}, **run_db)
        with Server(config) as server:
            wait_for_views(server.url)
            lags = asyncio.run(steady(server.url, rate, args.seconds))
    worst = p99(lags)
    print(
        f"[{name}] {len(lags)} probes: median {sorted(lags)[len(lags) // 2]:.1f} ms, p99 {worst:.1f} ms (target <= {TARGET_MS} ms)"
    )
    return [] if worst <= TARGET_MS else [f"{name}: p99 {worst:.1f} ms above {TARGET_MS} ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--rate", type=float, help="deliveries per second (default: half the measured maximum)"
    )
    add_backend_arguments(parser)
    args = parser.parse_args()
    wanted = backends(args)
    failures: list[str] = []
    with postgresql_server(args.database_url, wanted) as admin_url:
        for name in wanted:
            with tempfile.TemporaryDirectory() as tmp:
                failures += measure(name, Path(tmp), args, admin_url)
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
