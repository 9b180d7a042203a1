#!/usr/bin/env python
"""Ingest benchmark: notestore against a bare aiohttp endpoint, same load, same run, alternating.

Distinct signed deliveries (one block each, realistic sizes) at 64 connections.
Targets: notestore's rate >= 0.4 x the bare endpoint's; p99 <= 25 ms; every answer
200; every event durable in the log exactly once.

    python scripts/bench_ingest.py [--seconds 8] [--rounds 2] [--connections 64]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import SECRETS, signed, verdict  # noqa: E402
from load import LoadResult, run_load, wait_http, write_bodies  # noqa: E402
from workload import Workload  # noqa: E402

from tests.server import Server, free_port, write_config  # noqa: E402

RATIO_TARGET, P99_TARGET_MS = 0.4, 25.0


def signed_bodies(count: int) -> list[tuple[str, bytes]]:
    work = Workload(seed=7)
    return [signed(work.body()) for _ in range(count)]


def bare_round(bodies: Path, seconds: float, connections: int) -> LoadResult:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "bare_server.py"), str(port)]
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        return run_load(f"http://127.0.0.1:{port}/webhooks/mobio", bodies, seconds, connections)
    finally:
        proc.terminate()
        proc.wait()


def notestore_round(
    folder: Path, bodies: Path, seconds: float, connections: int
) -> tuple[LoadResult, int]:
    config = write_config(folder, SECRETS, {"t": ["*"]})
    with Server(config) as server:
        result = run_load(f"{server.url}/webhooks/mobio", bodies, seconds, connections)
    conn = sqlite3.connect(folder / "data" / "events.db")
    logged = conn.execute("SELECT count(*), count(DISTINCT message_id) FROM events").fetchone()
    conn.close()
    assert logged[0] == logged[1]
    return result, int(logged[0])


def show(name: str, r: LoadResult) -> None:
    print(f"  {name:<10} {r.rate:>9,.0f} req/s   p50 {r.p50_ms:6.2f} ms   p99 {r.p99_ms:6.2f} ms"
          f"   non-200 {r.non_2xx}   socket errors {r.errors}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=80_000, help="distinct deliveries per round")
    args = parser.parse_args()
    failures = []
    bare_rates, ours, p99s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.txt"
        write_bodies(bodies, signed_bodies(args.bodies))
        for number in range(args.rounds):
            print(f"round {number + 1}")
            bare = bare_round(bodies, args.seconds, args.connections)
            show("bare", bare)
            folder = Path(tmp) / f"round{number}"
            folder.mkdir()
            result, logged = notestore_round(folder, bodies, args.seconds, args.connections)
            show("notestore", result)
            bare_rates.append(bare.rate)
            ours.append(result.rate)
            p99s.append(result.p99_ms)
            if result.requests >= args.bodies:
                failures.append("ran out of distinct bodies: raise --bodies")
            if result.non_2xx or result.errors:
                failures.append(
                    f"round {number + 1}: {result.non_2xx} non-200 answers, {result.errors} socket errors"
                )
            # wrk stops mid-flight: a few requests may commit without their answer being counted
            if not result.requests <= logged <= result.requests + args.connections:
                failures.append(
                    f"round {number + 1}: {result.requests} answered 200 but {logged} in the log"
                )
            print(f"  log: {logged} events, each message_id once")
    ratio = statistics.median(ours) / statistics.median(bare_rates)
    p99 = max(p99s)
    print(f"ingest ratio notestore/bare: {ratio:.2f} (target >= {RATIO_TARGET})")
    print(f"notestore p99: {p99:.2f} ms (target <= {P99_TARGET_MS} ms)")
    if ratio < RATIO_TARGET:
        failures.append(f"ratio {ratio:.2f} below {RATIO_TARGET}")
    if p99 > P99_TARGET_MS:
        failures.append(f"p99 {p99:.1f} ms above {P99_TARGET_MS} ms")
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
