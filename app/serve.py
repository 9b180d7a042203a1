"""`notestore serve`: one process serving the app (app.web.create_app) with aiohttp.

The log's writer is a thread of that process (GroupCommitWriter: group commit through
the log store, SQLite or PostgreSQL), the query routes read in a small thread pool
(app.api.Reader), and the projectors run in a process the app starts and restarts
(app.views_monitor); on PostgreSQL, one instance's projector process runs them for all.
SIGTERM/SIGINT stop it gracefully: the listening socket closes, requests in flight
are answered, the writer commits what it was handed, the projector process is stopped.
"""

from __future__ import annotations

import gc
import os
import socket

import structlog
from aiohttp import web

from app.config import Settings
from app.errors import NotestoreError
from app.keys import RUNNER
from app.views_monitor import ProcessMonitor
from app.web import create_app

log = structlog.get_logger("notestore")

GC_YOUNG_THRESHOLD = 20_000
SHUTDOWN_TIMEOUT_S = 10.0


def listen(host: str, port: int) -> socket.socket:
    """The listening socket; a port already taken is a one-line NotestoreError."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise NotestoreError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def settle_gc() -> None:
    """Start-up objects never die: keep them out of every collection, and collect the young
    generation less often, so GC pauses stay off the p99."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def run(settings: Settings) -> int:
    if settings.workers is not None:
        log.warning(
            "workers_setting_ignored",
            workers=settings.workers,
            hint="notestore serve runs one process; the workers key does nothing",
        )
    sock = listen(settings.host, settings.port)
    app = create_app(settings)

    async def started(app: web.Application) -> None:
        monitor = app[RUNNER]
        projectors = monitor.pid if isinstance(monitor, ProcessMonitor) else None
        log.info(
            "serving", host=settings.host, port=sock.getsockname()[1],
            pid=os.getpid(), projectors_pid=projectors,
        )  # fmt: skip
        settle_gc()

    async def stopping(app: web.Application) -> None:
        log.info("stopping")

    app.on_startup.append(started)  # after the app's own start-up (cleanup contexts)
    app.on_shutdown.append(stopping)
    web.run_app(
        app, sock=sock, backlog=1024, print=None, access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=True,
    )  # fmt: skip
    log.info("stopped")
    return 0
