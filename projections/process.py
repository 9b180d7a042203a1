"""The projectors in a process of their own, so folding never takes a receiver's GIL.

`notestore serve` starts this with multiprocessing (spawn) and stops it with
SIGTERM; it also exits by itself if its parent dies (even by SIGKILL).

One projector process per data directory (a file lock), and on PostgreSQL one per database
across every instance: the instances' projector processes wait for a session-level advisory
lock, and the one holding it runs the projectors. PostgreSQL releases the lock when its
holder's connection closes, so when that instance dies (even by SIGKILL) another takes over
at once and catches up from the checkpoints. Two runners at once would still be safe (view
writes are serialised, each checkpoint read inside its write transaction): the lock saves
the work, it does not guard correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import structlog

from eventlog import pg_conn
from eventlog.pg_log import LOG_CHANNEL
from projections.registry import all_projectors
from projections.runner import Runner
from projections.storage import Storage

log = structlog.get_logger("notestore.projections")

POLL_S = 0.02  # a cheap max(seq) query; bounds how stale views get
# On PostgreSQL a commit wakes the projectors (LISTEN/NOTIFY): polling is only the fallback
# for what comes without a notification (a replay from the command line, a lost listener).
PG_POLL_S = 0.5
COALESCE_S = 0.02
# Normal priority, on purpose. Measured when serve had worker processes (bench_freshness.py,
# half the maximum ingest rate): SCHED_IDLE gave a freshness p99 of 1.4 s, nice 10 0.8 s,
# nice 0 85 ms, while ingest throughput moved within the noise.
PROJECTORS_LEASE = 0x6E6F7465_70726F6A  # pg_advisory_lock key: "noteproj"
LEASE_POLL_S = 0.2  # how often a waiting instance tries the lock, and a holder checks it
CHECK_S = 0.5  # how often a running process checks its parent and its lease


def _parent_alive(parent: int) -> bool:
    return os.getppid() == parent


def take_lease(url: str, parent: int) -> psycopg.Connection[Any] | None:
    """Wait until this process holds the database's projector lease; the connection holding
    it (None if the parent died meanwhile)."""
    waiting_logged = False
    while _parent_alive(parent):
        try:
            conn = pg_conn.connect(url)
        except psycopg.OperationalError as exc:
            log.warning("projector_lease_unreachable", error=str(exc).splitlines()[0])
            time.sleep(1.0)
            continue
        try:
            while _parent_alive(parent):
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (PROJECTORS_LEASE,)
                ).fetchone()
                if row is not None and row[0]:
                    log.info("projector_lease_taken")
                    return conn
                if not waiting_logged:
                    log.info("projector_lease_waiting", hint="another instance runs the views")
                    waiting_logged = True
                time.sleep(LEASE_POLL_S)
        except psycopg.OperationalError:
            pass  # the server went away: connect again
        conn.close()
    return None


def lease_held(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1").fetchone()
    except psycopg.Error:
        return False
    return not conn.broken


def listen(url: str, runner: Runner, stop: threading.Event) -> None:
    """Wake the runner on each NOTIFY of a commit to the log, until `stop`; connects again
    after losing the server (and wakes the runner then, for what came meanwhile)."""
    while not stop.is_set():
        try:
            with pg_conn.connect(url) as conn:
                conn.execute(f"LISTEN {LOG_CHANNEL}")
                runner.notify(0)
                while not stop.is_set():
                    for _ in conn.notifies(timeout=CHECK_S, stop_after=1):
                        runner.notify(0)
        except Exception as exc:  # whatever it was, listen again: polling covers the gap
            log.warning("projector_listen_lost", error=str(exc).splitlines()[0] if str(exc) else "")
            stop.wait(1.0)


async def _run(storage: Storage, parent: int, lease: psycopg.Connection[Any] | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    poll = PG_POLL_S if storage.database_url else POLL_S
    runner = Runner(storage, all_projectors(), poll_interval=poll, min_interval=COALESCE_S)
    await runner.start()
    listening = threading.Event()  # set: stop listening
    listener = None
    if storage.database_url:
        listener = threading.Thread(
            target=listen, args=(storage.database_url, runner, listening), daemon=True,
            name="log-listener",
        )  # fmt: skip
        listener.start()
    code = 0
    while not stop.is_set() and _parent_alive(parent):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_S)
        if lease is not None and not await asyncio.to_thread(lease_held, lease):
            # another instance may hold it now: leave, and wait for it as a new process
            log.warning("projector_lease_lost")
            code = 3
            break
    listening.set()
    await runner.stop()
    if listener is not None:
        await asyncio.to_thread(listener.join, 2 * CHECK_S)
    return code


def main(data_dir: str, database_url: str | None, parent: int, json_logs: bool) -> None:
    from app.lock import PROJECTORS_LOCK, wait_lock  # the child sets up as serve does
    from app.logs import configure_logging

    configure_logging(json_logs)
    storage = Storage(Path(data_dir), database_url)
    # One projector process per data directory: a replacement waits for its predecessor
    # (which leaves within half a second of losing its parent).
    lock = wait_lock(Path(data_dir) / PROJECTORS_LOCK)
    lease = None
    try:
        if database_url:
            lease = take_lease(database_url, parent)
            if lease is None:
                return
        code = asyncio.run(_run(storage, parent, lease))
    finally:
        if lease is not None:
            lease.close()
        os.close(lock)
    if code:
        raise SystemExit(code)
