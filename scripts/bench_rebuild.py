#!/usr/bin/env python
"""Rebuild benchmark: `notestore rebuild` of every view against a plain pass over the same log.

The baseline reads the log in seq order and json.loads every block. Targets: the
rebuild's rate >= 0.25 x the baseline's, measured in the same run (alternating);
peak memory of the rebuild process <= 300 MB.

    python scripts/bench_rebuild.py [--events 1000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import SECRETS, build_log, median, verdict  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server import write_config  # noqa: E402

RATIO_TARGET, MEMORY_TARGET_MB = 0.25, 300


def plain_pass(db: Path) -> float:
    """Events per second of reading the log by seq and decoding every block."""
    conn = sqlite3.connect(db)
    started, last, count = time.perf_counter(), 0, 0
    while rows := conn.execute(
        "SELECT seq, block FROM events WHERE seq > ? ORDER BY seq LIMIT 5000", (last,)
    ).fetchall():
        for _, block in rows:
            json.loads(block)
        count += len(rows)
        last = rows[-1][0]
    conn.close()
    return count / (time.perf_counter() - started)


def rebuild(config: Path, events: int) -> tuple[float, float]:
    """(events per second per view replayed, peak RSS in MB) of a real `notestore rebuild`."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "app", "rebuild", "--config", str(config)],
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rebuild failed: {done.stderr}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return events / took, peak_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), SECRETS)
        build_log(Path(tmp) / "data", args.events)
        db = Path(tmp) / "data" / "events.db"
        plain, ours, peak = [], [], 0.0
        for number in range(args.rounds):
            plain.append(plain_pass(db))
            rate, peak_mb = rebuild(config, args.events)
            ours.append(rate)
            peak = max(peak, peak_mb)
            print(
                f"round {number + 1}: plain pass {plain[-1]:,.0f} events/s, rebuild of all views {rate:,.0f} events/s, peak RSS {peak_mb:.0f} MB"
            )
    ratio = median(ours) / median(plain)
    print(
        f"rebuild ratio: {ratio:.3f} (target >= {RATIO_TARGET}); peak memory {peak:.0f} MB (target <= {MEMORY_TARGET_MB} MB)"
    )
    failures = []
    if ratio < RATIO_TARGET:
        failures.append(f"ratio {ratio:.3f} below {RATIO_TARGET}")
    if peak > MEMORY_TARGET_MB:
        failures.append(f"peak memory {peak:.0f} MB above {MEMORY_TARGET_MB} MB")
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
