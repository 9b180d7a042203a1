"""`notestore serve`: a supervisor, N worker processes and one projector process.

Python runs one request at a time per process, so a single process tops out at one
core. The supervisor binds one listening socket per worker on the same port
(SO_REUSEPORT: the kernel spreads connections evenly), forks the workers, each a
whole receiver + query API, and starts the projector process. Every worker's group
commit appends to the same log; eventlog.write_lock queues them, and each
transaction reads the chain heads and dedups inside itself, so every guarantee of a
single writer holds.

The supervisor never starts a thread or an event loop (forking stays safe), restarts
a worker or the projector process that dies, and on SIGTERM/SIGINT lets the workers
finish what they hold before it exits. Workers die with it, even if it is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import structlog
from aiohttp import web

from app import metrics
from app.config import Settings
from app.views_monitor import spawn_projectors, stop_projectors
from app.web import create_app
from eventlog.db import open_log

log = structlog.get_logger("notestore")

CHECK_S = 0.2
METRICS_DIR = "metrics"  # under data_dir; wiped at start (the serve lock makes it ours)
GC_YOUNG_THRESHOLD = 20_000
_PR_SET_PDEATHSIG = 1


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (the first picks it when port is 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this worker if the supervisor dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _worker(settings: Settings, number: int, sock: socket.socket, metrics_dir: Path) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    try:
        _die_with_parent()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # run_app installs its own
        structlog.contextvars.bind_contextvars(worker=number)
        metrics.share_between_processes(metrics_dir)
        app = create_app(settings, supervised=True)
        # Start-up objects never die: keep them out of every collection, and collect the
        # young generation less often, so GC pauses stay off the p99.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=10)
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return into the parent's code
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            log.exception("worker_failed")
            code = 1
    finally:
        os._exit(code)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = False
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, int] = {}  # worker number -> pid
        self.metrics_dir = settings.data_dir / METRICS_DIR

    def _fork(self, number: int) -> None:
        pid = os.fork()
        if pid == 0:
            for other, sock in enumerate(self.sockets):
                if other != number:
                    sock.close()
            _worker(self.settings, number, self.sockets[number], self.metrics_dir)
        self.workers[number] = pid

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        settings = self.settings
        open_log(settings.data_dir).close()  # migrations run once, before any worker opens it
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        self.sockets = bind_sockets(settings.host, settings.port, settings.workers)
        port = self.sockets[0].getsockname()[1]
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        projectors = spawn_projectors(settings.data_dir)
        for number in range(settings.workers):
            self._fork(number)
        log.info("serving", host=settings.host, port=port, workers=settings.workers)
        while not self.stopping:
            time.sleep(CHECK_S)
            for number, pid in list(self.workers.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done and not self.stopping:
                    log.error("worker_died", worker=number, status=_describe(status))
                    self._fork(number)
            if not projectors.is_alive() and not self.stopping:
                log.error("projector_process_died", exitcode=projectors.exitcode)
                projectors = spawn_projectors(settings.data_dir)
        log.info("stopping", workers=len(self.workers))
        for pid in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self.workers.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        stop_projectors(projectors)
        for sock in self.sockets:
            sock.close()
        log.info("stopped")
        return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
