"""The projectors in a process of their own, so folding never takes a receiver's GIL.

`notestore serve` starts this with multiprocessing (spawn) and stops it with
SIGTERM; it also exits by itself if its parent dies (even by SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from projections.registry import all_projectors
from projections.runner import Runner

POLL_S = 0.02  # a cheap max(seq) query; bounds how stale views get
COALESCE_S = 0.02
# Normal priority, on purpose. Measured when serve had worker processes (bench_freshness.py,
# half the maximum ingest rate): SCHED_IDLE gave a freshness p99 of 1.4 s, nice 10 0.8 s,
# nice 0 85 ms, while ingest throughput moved within the noise.


async def _run(data_dir: Path, parent: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    runner = Runner(data_dir, all_projectors(), poll_interval=POLL_S, min_interval=COALESCE_S)
    await runner.start()
    while not stop.is_set() and os.getppid() == parent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await runner.stop()


def main(data_dir: str, parent: int, json_logs: bool) -> None:
    from app.lock import PROJECTORS_LOCK, wait_lock  # the child sets up as serve does
    from app.logs import configure_logging

    configure_logging(json_logs)
    # One projector process per data directory: a replacement waits for its predecessor
    # (which leaves within half a second of losing its parent).
    lock = wait_lock(Path(data_dir) / PROJECTORS_LOCK)
    try:
        asyncio.run(_run(Path(data_dir), parent))
    finally:
        os.close(lock)
