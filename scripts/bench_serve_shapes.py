#!/usr/bin/env python
"""Serve against bare aiohttp: `notestore serve` (one process) side by side with a bare server.

Issue 13, item 5: run at commit 7340156 with the process fabric (supervisor, workers, a
log-writer process) as a third shape, this benchmark showed the fabric winning none of
its targets, and the fabric was removed; `serve` is now the one process (its
GroupCommitWriter thread, its query pool, the projector process it starts). In each
round (alternating the order of the shapes) and at each connection count, the servers
are started in turn, each on a fresh SQLite data directory:

  bare     scripts/bare_server.py: an aiohttp POST handler that only reads the body
  serve    `notestore serve`

Each gets a warm-up (its own distinct bodies) and then a steady phase of distinct
pre-signed deliveries (wrk, scripts/load.py). Measured: accepted req/s, CPU µs per
delivery of the server's whole process tree (utime+stime of every descendant, from
/proc, sampled before and after the steady phase), p50/p99, non-200 answers, and
after the server stops every event once in the log (distinct message_ids = rows,
and as many as were answered 200, up to the requests wrk left in flight).

Targets (issue 13), per notestore shape: CPU per delivery <= 5 x bare's CPU per
request at 16 connections (median of the rounds' paired ratios); p99 <= 15 ms at 16
connections and <= 50 ms at 64 (median of the rounds); every answer 200; every event
once. Exits 1 naming each shape and target missed. Linux only (/proc).

    python scripts/bench_serve_shapes.py [--rounds 5] [--seconds 5] [--warmup 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_ingest import signed_bodies  # noqa: E402
from benchlib import SECRETS, verdict, wait_for_views  # noqa: E402
from load import LoadResult, run_load, wait_http, write_bodies  # noqa: E402
from profile_ingest import cpu_seconds  # noqa: E402
from soak_wal import descendants  # noqa: E402

from eventlog.db import LOG_FILE  # noqa: E402
from tests.server import Server, free_port, write_config  # noqa: E402

SHAPES = ("bare", "serve")
CPU_RATIO_TARGET = 5.0  # at 16 connections
P99_TARGET_MS = {16: 15.0, 64: 50.0}


@dataclass
class Run:
    shape: str
    connections: int
    rate: float  # accepted (answered 200) per second
    cpu_us: float  # CPU µs of the whole process tree per answered request
    p50_ms: float
    p99_ms: float
    processes: int
    problems: list[str] = field(default_factory=list)


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of root and each of its descendants."""
    cpu = {}
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            cpu[pid] = sum(cpu_seconds(pid))
    return cpu


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def started(shape: str, folder: Path) -> Iterator[tuple[int, str]]:
    """(root pid, url) of a running server of this shape; stopped on exit."""
    if shape == "serve":
        with Server(write_config(folder, SECRETS, {"t": ["*"]})) as server:
            assert server.proc is not None
            wait_for_views(server.url, timeout=60)
            yield server.proc.pid, server.url
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(HERE / "bare_server.py"), str(port)]
    with (folder / f"{shape}.log").open("ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        wait_http(f"{url}/healthz")
        yield proc.pid, url
    finally:
        stop(proc)


def logged_events(data_dir: Path) -> tuple[int, int]:
    conn = sqlite3.connect(data_dir / LOG_FILE)
    try:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events"
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(distinct)


def answered(result: LoadResult) -> int:
    return result.requests - result.non_2xx


def one_run(
    shape: str, folder: Path, files: dict[str, tuple[Path, int]], args: argparse.Namespace,
    connections: int,
) -> Run:  # fmt: skip
    problems = []
    (warm_file, warm_count), (steady_file, steady_count) = files["warm"], files["steady"]
    with started(shape, folder) as (root, url):
        target = f"{url}/webhooks/mobio"
        warm = run_load(target, warm_file, args.warmup, connections)
        before = tree_cpu(root)
        steady = run_load(target, steady_file, args.seconds, connections)
        after = tree_cpu(root)
    gone = set(before) - set(after)
    if gone:
        problems.append(f"{len(gone)} process(es) ended during the steady phase: CPU undercounted")
    cpu = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
    for phase, result, count in (("warm-up", warm, warm_count), ("steady", steady, steady_count)):
        if result.non_2xx or result.errors:
            problems.append(f"{phase}: {result.non_2xx} non-200, {result.errors} socket errors")
        # wrk splits the bodies between its 2 threads, each cycling its half
        if shape != "bare" and result.requests > 0.9 * count:
            problems.append(f"{phase}: ran out of distinct bodies ({result.requests:,} sent)")
    if shape != "bare":
        rows, distinct = logged_events(folder / "data")
        sent = answered(warm) + answered(steady)
        # wrk stops mid-flight: up to `connections` per phase commit without a counted answer
        if rows != distinct or not sent <= distinct <= sent + 2 * connections:
            problems.append(
                f"log holds {rows:,} rows / {distinct:,} distinct message_ids for {sent:,} answered 200"
            )
    ok = answered(steady)
    return Run(
        shape, connections, steady.rate * ok / max(steady.requests, 1),
        cpu / max(ok, 1) * 1e6, steady.p50_ms, steady.p99_ms, len(after), problems,
    )  # fmt: skip


def show(run: Run, bare: Run | None) -> None:
    ratio = f"{run.cpu_us / bare.cpu_us:5.1f}x bare" if bare and run.shape != "bare" else " " * 10
    print(f"  c={run.connections:<3} {run.shape:<6} {run.rate:8,.0f} req/s  {run.cpu_us:5.0f} µs CPU "
          f"{ratio}  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  ({run.processes} processes)"
          + ("  PROBLEM: " + "; ".join(run.problems) if run.problems else ""), flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5, help="steady phase of each run")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up before each steady phase")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--bodies", type=int, default=80_000, help="distinct steady deliveries")
    parser.add_argument("--warm-bodies", type=int, default=20_000)
    args = parser.parse_args()
    started_at = time.monotonic()
    runs: dict[tuple[str, int], list[Run]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"signing {args.warm_bodies + args.bodies:,} distinct deliveries ...", flush=True)
        bodies = signed_bodies(args.warm_bodies + args.bodies)
        files = {"warm": (Path(tmp) / "warm.txt", args.warm_bodies),
                 "steady": (Path(tmp) / "steady.txt", args.bodies)}  # fmt: skip
        write_bodies(files["warm"][0], bodies[: args.warm_bodies])
        write_bodies(files["steady"][0], bodies[args.warm_bodies :])
        del bodies
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
              f"{args.warmup:g} s warm-up + {args.seconds:g} s steady per run")  # fmt: skip
        for number in range(args.rounds):
            order = SHAPES if number % 2 == 0 else tuple(reversed(SHAPES))
            print(f"round {number + 1} ({' '.join(order)})", flush=True)
            for connections in args.connections:
                done: dict[str, Run] = {}
                for shape in order:
                    folder = Path(tmp) / f"r{number}-c{connections}-{shape}"
                    folder.mkdir()
                    done[shape] = one_run(shape, folder, files, args, connections)
                for shape in SHAPES:
                    show(done[shape], done["bare"])
                    runs.setdefault((shape, connections), []).append(done[shape])
                    ratios.setdefault((shape, connections), []).append(
                        done[shape].cpu_us / done["bare"].cpu_us
                    )
    return summarise(args, runs, ratios, time.monotonic() - started_at)


def summarise(
    args: argparse.Namespace, runs: dict[tuple[str, int], list[Run]],
    ratios: dict[tuple[str, int], list[float]], took: float,
) -> int:  # fmt: skip
    med = statistics.median
    print(f"\nmedians of {args.rounds} rounds (took {took:.0f} s; load average now "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")  # fmt: skip
    print(f"{'shape':<7}{'conns':>5} {'req/s':>9} {'CPU µs':>7} {'÷ bare':>7} {'p50 ms':>7}"
          f" {'p99 ms':>7} {'worst p99':>9}  problems")  # fmt: skip
    for connections in args.connections:
        for shape in SHAPES:
            group = runs[(shape, connections)]
            ratio = "" if shape == "bare" else f"{med(ratios[(shape, connections)]):.1f}x"
            problems = sum(len(r.problems) for r in group)
            print(f"{shape:<7}{connections:>5} {med(r.rate for r in group):>9,.0f}"
                  f" {med(r.cpu_us for r in group):>7.0f} {ratio:>7} {med(r.p50_ms for r in group):>7.2f}"
                  f" {med(r.p99_ms for r in group):>7.2f} {max(r.p99_ms for r in group):>9.2f}  {problems}")  # fmt: skip
    failures = []
    print("\ntargets (issue 13)")
    for shape in SHAPES[1:]:
        checks = []
        if 16 in args.connections:
            ratio = med(ratios[(shape, 16)])
            checks.append((f"CPU/delivery {ratio:.1f}x bare at c=16 (<= {CPU_RATIO_TARGET:g}x)",
                           ratio <= CPU_RATIO_TARGET))  # fmt: skip
        for connections, limit in P99_TARGET_MS.items():
            if connections in args.connections:
                p99 = med(r.p99_ms for r in runs[(shape, connections)])
                checks.append(
                    (f"p99 {p99:.1f} ms at c={connections} (<= {limit:g} ms)", p99 <= limit)
                )
        problems = [f"round {i + 1} c={r.connections}: {p}"
                    for (s, _), group in runs.items() if s == shape
                    for i, r in enumerate(group) for p in r.problems]  # fmt: skip
        checks.append(("every answer 200, every event once" if not problems
                       else f"{len(problems)} problem(s): " + "; ".join(problems), not problems))  # fmt: skip
        for text, ok in checks:
            print(f"  {shape:<6} {'ok  ' if ok else 'MISS'} {text}")
            if not ok:
                failures.append(f"{shape}: {text}")
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
