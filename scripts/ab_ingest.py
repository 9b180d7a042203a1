#!/usr/bin/env python
"""A/B of ingest speed: this checkout against a git revision, same load, alternating short runs.

The development machine drifts by ±30% between runs, more than most single changes
move ingest, so one run of each says little. This alternates them (A B, B A, ...) and
reports each side's medians and how many pairs each won: req/s, serve's CPU per
delivery (all its processes, from /proc; Linux) and p99. Not pass/fail: it is how the
"what changed, what it did" figures in docs/performance.md are measured.

    python scripts/ab_ingest.py REV [--pairs 6] [--seconds 4] [--connections 64]

REV (e.g. HEAD~1, main) is checked out in a temporary git worktree, and serve runs
from each tree in turn (`python -m app` imports the tree it is started in).
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
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_ingest import signed_bodies  # noqa: E402
from benchlib import SECRETS  # noqa: E402
from load import run_load, write_bodies  # noqa: E402
from profile_ingest import cpu_seconds, roles  # noqa: E402

from tests.server import Server, write_config  # noqa: E402


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev],
            check=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )


def one_run(
    tree: Path,
    folder: Path,
    bodies: Path,
    seconds: float,
    connections: int,
    after_load: Callable[[Path], None] | None = None,
) -> tuple[float, float, float]:
    """(req/s, serve's CPU µs per delivery, p99 ms) of serve started from `tree`;
    `after_load(folder)`, when given, runs between the load and the second CPU reading (to
    count work serve does after answering, e.g. the views catching up)."""
    config = write_config(folder, SECRETS, {"t": ["*"]})
    here = Path.cwd()
    os.chdir(tree)  # serve is `python -m app` in the current directory: this tree's code
    try:
        with Server(config) as server:
            time.sleep(0.7)  # start-up work out of the way
            pids = [pid for group in roles(server).values() for pid in group]
            before = {pid: sum(cpu_seconds(pid)) for pid in pids}
            result = run_load(f"{server.url}/webhooks/mobio", bodies, seconds, connections)
            if after_load is not None:
                after_load(folder)
            cpu = sum(sum(cpu_seconds(pid)) - before[pid] for pid in pids)
    finally:
        os.chdir(here)
    per = cpu / max(result.requests, 1) * 1e6
    return result.rate, per, result.p99_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare this checkout with")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=40_000, help="distinct deliveries per run")
    args = parser.parse_args()
    with worktree(args.rev) as other, tempfile.TemporaryDirectory() as tmp:
        sides = {args.rev: other, "this checkout": ROOT}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
        bodies = Path(tmp) / "bodies.txt"
        write_bodies(bodies, signed_bodies(args.bodies))
        for pair in range(args.pairs):
            order = list(sides) if pair % 2 == 0 else list(reversed(sides))
            for name in order:
                # named by position, not by the revision: "origin/main" would be two folders
                folder = Path(tmp) / f"pair{pair}-side{list(sides).index(name)}"
                folder.mkdir()
                run = one_run(sides[name], folder, bodies, args.seconds, args.connections)
                runs[name].append(run)
                print(f"pair {pair + 1}  {name:<16} {run[0]:7,.0f} req/s  {run[1]:5.0f} µs CPU"
                      f"/delivery  p99 {run[2]:5.1f} ms", flush=True)  # fmt: skip
    print()
    for name, results in runs.items():
        rate, cpu, p99 = (statistics.median(r[i] for r in results) for i in range(3))
        print(
            f"{name:<16} median {rate:7,.0f} req/s  {cpu:5.0f} µs CPU/delivery  p99 {p99:5.1f} ms"
        )
    ours, theirs = runs["this checkout"], runs[args.rev]
    won = sum(1 for a, b in zip(ours, theirs, strict=True) if a[0] > b[0])
    ratio = statistics.median(r[0] for r in ours) / statistics.median(r[0] for r in theirs)
    print(
        f"this checkout: {ratio:.2f} x the req/s of {args.rev}, faster in {won} of {args.pairs} pairs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
