#!/usr/bin/env python
"""Where ingest's CPU goes: microseconds of CPU per accepted delivery, per serve process.

serve is one process (the event loop, the log's writer thread and the query pool) and
the projector process it runs.

Runs `notestore serve` under the same load as bench_ingest.py and reads each
process's user and system time from /proc before and after (Linux). Not a pass/fail
benchmark: a map of the cost, to choose what to work on next.

    python scripts/profile_ingest.py [--seconds 8] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import signed_bodies  # noqa: E402
from benchlib import SECRETS  # noqa: E402
from load import run_load, write_bodies  # noqa: E402

from tests.server import Server, write_config  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def roles(server: Server) -> dict[str, list[int]]:
    for line in server.log_path.read_text().splitlines():
        if '"serving"' in line:
            serving = json.loads(line)
            return {"serve": [serving["pid"]], "projectors": [serving["projectors_pid"]]}
    raise SystemExit("serve logged no serving line")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=60_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies = folder / "bodies.txt"
        write_bodies(bodies, signed_bodies(args.bodies))
        config = write_config(folder, SECRETS, {"t": ["*"]})
        with Server(config) as server:
            time.sleep(1)  # start-up work out of the way
            by_role = roles(server)
            before = {pid: cpu_seconds(pid) for pids in by_role.values() for pid in pids}
            wall, load = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            result = run_load(
                f"{server.url}/webhooks/mobio", bodies, args.seconds, args.connections
            )
            wall, loaded = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_CHILDREN)
            after = {pid: cpu_seconds(pid) for pid in before}
    per = 1e6 / max(result.requests, 1)
    print(f"{result.rate:,.0f} req/s, p99 {result.p99_ms:.1f} ms, {result.requests:,} answered "
          f"({result.non_2xx} not 200)")  # fmt: skip
    print(f"{'process':<20} {'user µs':>8} {'sys µs':>8} {'cores':>6}   (per delivery; cores busy)")
    total = 0.0
    for role, pids in by_role.items():
        user = sum(after[p][0] - before[p][0] for p in pids)
        system = sum(after[p][1] - before[p][1] for p in pids)
        total += user + system
        print(f"{role:<20} {user * per:>8.0f} {system * per:>8.0f} {(user + system) / wall:>6.2f}")
    print(
        f"{'serve in all':<20} {total * per:>17.0f} {total / wall:>6.2f}   of {os.cpu_count()} cores"
    )
    # the load generator ran as this script's child, and has been waited for
    user, system = loaded.ru_utime - load.ru_utime, loaded.ru_stime - load.ru_stime
    print(
        f"{'load generator':<20} {user * per:>8.0f} {system * per:>8.0f} {(user + system) / wall:>6.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
