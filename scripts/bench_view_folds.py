#!/usr/bin/env python
"""What each view costs to keep up: CPU µs per event of each projector tailing the log alone.

Builds a SQLite log of realistic deliveries (scripts/workload.py, one block each), then
lets each projector fold it from the start in batches of `--batch` events (as serve's
projectors do under load, a batch every coalescing interval), one projector at a time,
reading its own batches (no sharing between projectors). Prints each one's thread CPU
time and wall time per event. Not pass/fail: where the projector process's CPU goes.

    python scripts/bench_view_folds.py [--events 20000] [--batch 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import build_log  # noqa: E402

from projections.engine import step  # noqa: E402
from projections.rebuild import rebuild_all  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from projections.storage import Storage  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp))
        storage.prepare()
        views, log = storage.views(), storage.log_reader()
        try:
            rebuild_all(all_projectors(), views, log)  # built on the empty log: then tailing
            build_log(Path(tmp), args.events, progress=False)
            print(f"{args.events:,} events, batches of {args.batch}")
            for projector in all_projectors():
                cpu, wall, folded = time.thread_time(), time.perf_counter(), 0
                while done := step(projector, views, log, limit=args.batch):
                    folded += done
                cpu_us = (time.thread_time() - cpu) / max(folded, 1) * 1e6
                wall_us = (time.perf_counter() - wall) / max(folded, 1) * 1e6
                print(f"  {projector.name:<10} {cpu_us:6.1f} µs CPU per event  "
                      f"(wall {wall_us:6.1f} µs)")  # fmt: skip
        finally:
            views.close()
            log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
