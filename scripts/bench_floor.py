#!/usr/bin/env python
"""How far below serve the floor of this stack is: CPU per delivery of each layer, one run.

Issue 13 asks serve's CPU per delivery (every process) to be <= 5 x a bare aiohttp
endpoint's at 16 connections. This benchmark measures, side by side in alternating rounds
on the same distinct pre-signed deliveries (wrk, scripts/load.py), what the least work a
delivery needs costs in this stack (scripts/floor_server.py), so a missed ratio can be
told apart: is it serve's overhead, or the floor itself?

  bare     scripts/bare_server.py: reads the body, answers
  verify   + the signature checked against every configured secret, the body parsed
  durable  + a durable group commit of the body to SQLite (WAL, synchronous=FULL)
  serve    `notestore serve`: the log (hash chain, requests, quarantine, validation),
           the query pool, and the projector process folding the four views

Prints each shape's median CPU µs per delivery and its ratio to bare (median of the
rounds' paired ratios), and serve's split: its event loop's thread, its other threads (the
log's writer, WAL checkpoints, queries) and the projector process. The split is sampled
with the rest at the steady phase's start and end, while the views trail the log by their
coalescing interval (tens of ms: a few dozen events of the ~10,000 a phase), so the
projectors' share is of about the same events. Not a pass/fail benchmark: a map. Linux
only (/proc).

    python scripts/bench_floor.py [--rounds 5] [--seconds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_serve_shapes as shapes  # noqa: E402
from bench_ingest import signed_bodies  # noqa: E402
from load import run_load, wait_http, write_bodies  # noqa: E402

from tests.server import free_port  # noqa: E402

SHAPES = ("bare", "verify", "durable", "serve")
WARM_BODIES, STEADY_BODIES = 20_000, 80_000
TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def started(shape: str, folder: Path) -> Iterator[tuple[int, str]]:
    if shape in ("bare", "serve"):
        with shapes.started(shape, folder) as running:
            yield running
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(HERE / "floor_server.py"), shape, str(port), str(folder)]
    with (folder / f"{shape}.log").open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        wait_http(f"{url}/healthz")
        yield proc.pid, url
    finally:
        shapes.stop(proc)


def thread_cpu(pid: int, tid: int) -> float:
    """CPU seconds (user + system) of one thread."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def split(root: int) -> dict[str, float]:
    """CPU seconds of serve's parts: the event loop's thread, its other threads, and the
    other processes (the projector process)."""
    tree = shapes.tree_cpu(root)
    loop = thread_cpu(root, root)
    return {"loop": loop, "threads": tree.pop(root) - loop, "projectors": sum(tree.values())}


def one_run(
    shape: str, folder: Path, files: dict[str, Path], args: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    """CPU µs per request answered 200 in the steady phase, and serve's split of it."""
    with started(shape, folder) as (root, url):
        target = f"{url}/webhooks/mobio"
        run_load(target, files["warm"], args.warmup, args.connections)
        before, parts = shapes.tree_cpu(root), split(root)
        steady = run_load(target, files["steady"], args.seconds, args.connections)
        after, parts_after = shapes.tree_cpu(root), split(root)
    ok = steady.requests - steady.non_2xx
    if steady.non_2xx or steady.errors:
        raise SystemExit(f"{shape}: {steady.non_2xx} non-200, {steady.errors} socket errors")
    if steady.requests > 0.9 * STEADY_BODIES:  # a duplicate costs serve less than a delivery
        raise SystemExit(f"{shape}: ran out of distinct bodies ({steady.requests:,} sent)")
    if set(before) - set(after):
        raise SystemExit(f"{shape}: a process ended during the steady phase")
    cpu = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
    per = {part: (parts_after[part] - parts[part]) / ok * 1e6 for part in parts}
    shown = "  ".join(f"{part} {us:4.0f}" for part, us in per.items()) if shape == "serve" else ""
    print(f"  {shape:<8} {steady.rate:8,.0f} req/s  {cpu / ok * 1e6:6.0f} µs CPU  "
          f"p99 {steady.p99_ms:6.2f} ms  {shown}", flush=True)  # fmt: skip
    return cpu / ok * 1e6, per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    ratios: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    parts: dict[str, list[float]] = {}
    started_at = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        bodies = signed_bodies(WARM_BODIES + STEADY_BODIES)
        files = {"warm": Path(tmp) / "warm.txt", "steady": Path(tmp) / "steady.txt"}
        write_bodies(files["warm"], bodies[:WARM_BODIES])
        write_bodies(files["steady"], bodies[WARM_BODIES:])
        print(f"load average {os.getloadavg()[0]:.2f}; {args.connections} connections")
        for number in range(args.rounds):
            order = SHAPES if number % 2 == 0 else tuple(reversed(SHAPES))
            print(f"round {number + 1}", flush=True)
            done = {}
            for shape in order:
                folder = Path(tmp) / f"r{number}-{shape}"
                folder.mkdir()
                done[shape], per = one_run(shape, folder, files, args)
                if shape == "serve":
                    for part, us in per.items():
                        parts.setdefault(part, []).append(us)
            for shape in SHAPES:
                cpu[shape].append(done[shape])
                ratios[shape].append(done[shape] / done["bare"])
    med = statistics.median
    print(f"\nmedians of {args.rounds} rounds at {args.connections} connections (took "
          f"{time.monotonic() - started_at:.0f} s; load average now {os.getloadavg()[0]:.2f})")  # fmt: skip
    for shape in SHAPES:
        print(f"  {shape:<8} {med(cpu[shape]):6.0f} µs CPU per delivery  "
              f"{med(ratios[shape]):5.2f} x bare")  # fmt: skip
    print("  serve's split: " + ", ".join(
        f"{part} {med(us):.0f} µs ({med(us) / med(cpu['bare']):.2f} x bare)"
        for part, us in parts.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
