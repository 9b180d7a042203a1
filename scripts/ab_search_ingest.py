#!/usr/bin/env python
"""What the search view adds to ingest's CPU: serve with and without its projector, same load,
alternating runs (issue 15: at most 15 % more CPU per delivery).

Both sides run the committed HEAD from temporary git worktrees; on one, the registry
leaves SearchProjector out. Each run sends bench_ingest.py's deliveries for --seconds, then
waits until every view has applied the whole log, so the projector process's work for
those deliveries is all counted: serve's CPU (all its processes, from /proc; Linux)
divided by the deliveries answered. The machine is shared and drifts: read the ratio of
the medians, and how many pairs agree.

    python scripts/ab_search_ingest.py [--pairs 6] [--seconds 4] [--connections 64]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from ab_ingest import one_run  # noqa: E402
from bench_ingest import signed_bodies  # noqa: E402
from load import write_bodies  # noqa: E402

WITH, WITHOUT = "with search", "without search"


@contextlib.contextmanager
def trees(folder: Path) -> Iterator[dict[str, Path]]:
    """Two worktrees of HEAD; in the second, the registry leaves the search view out."""
    made = {WITH: folder / "with", WITHOUT: folder / "without"}
    for tree in made.values():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                        "HEAD"], check=True)  # fmt: skip
    try:
        registry = made[WITHOUT] / "projections" / "registry.py"
        text = registry.read_text().replace(", SearchProjector()]", "]")
        assert "SearchProjector()" not in text, "the registry no longer reads as expected"
        registry.write_text(text)
        yield made
    finally:
        for tree in made.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)  # fmt: skip


def caught_up(data: Path) -> bool:
    with contextlib.closing(sqlite3.connect(data / "events.db")) as log:
        head = log.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    with contextlib.closing(sqlite3.connect(data / "views.db")) as views:
        positions = [row[0] for row in views.execute("SELECT checkpoint FROM projectors")]
    return bool(positions) and all(p == head for p in positions)


def wait_caught_up(folder: Path) -> None:
    deadline = time.monotonic() + 300
    while not caught_up(folder / "data"):
        assert time.monotonic() < deadline, "the views did not catch up"
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=40_000, help="distinct deliveries per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, trees(Path(tmp)) as sides:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        bodies = Path(tmp) / "bodies.txt"
        write_bodies(bodies, signed_bodies(args.bodies))
        for pair in range(args.pairs):
            order = list(sides) if pair % 2 == 0 else list(reversed(sides))
            for name in order:
                folder = Path(tmp) / f"pair{pair}-{'a' if name == WITH else 'b'}"
                folder.mkdir()
                run = runs[name]
                rate, cpu, _ = one_run(sides[name], folder, bodies, args.seconds,
                                       args.connections, after_load=wait_caught_up)  # fmt: skip
                run.append((cpu, rate))
                print(f"pair {pair + 1}  {name:<15} {cpu:5.0f} µs CPU/delivery  {rate:7,.0f} req/s",
                      flush=True)  # fmt: skip
    medians = {name: statistics.median(r[0] for r in results) for name, results in runs.items()}
    more = sum(1 for a, b in zip(runs[WITH], runs[WITHOUT], strict=True) if a[0] > b[0])
    ratio = medians[WITH] / medians[WITHOUT]
    print(f"\nmedian CPU per delivery: {medians[WITH]:.0f} µs with search, "
          f"{medians[WITHOUT]:.0f} µs without: {ratio:.3f} x ({(ratio - 1) * 100:+.1f} %;"
          f" target <= +15 %), more with search in {more} of {args.pairs} pairs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
