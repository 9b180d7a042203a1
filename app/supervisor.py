"""`notestore serve`: a supervisor, N worker processes, the log's writer process, the projectors.

Python runs one request at a time per process, so a single process tops out at one
core. The supervisor binds one listening socket per worker on the same port
(SO_REUSEPORT: the kernel spreads connections evenly) and forks the workers, each a
whole receiver + query API. Workers verify and validate, then hand each delivery to
the one writer process (eventlog.writer_process), which group-commits the deliveries
of all workers together; a worker answers once its delivery's commit is durable.
The projectors run in a process of their own.

The supervisor never starts a thread or an event loop (forking stays safe), restarts
any child that dies (waiting longer each time one keeps dying young: app.restarts),
and on SIGTERM/SIGINT stops the workers first (they finish what they hold), then the
writer (it commits what it was sent), then the projectors.
Children die with it, even if it is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import NoReturn

import structlog
from aiohttp import web

from app import metrics
from app.config import Settings
from app.errors import NotestoreError
from app.restarts import Restarts
from app.views_monitor import spawn_projectors, stop_projectors
from app.web import create_app
from eventlog import writer_process
from eventlog.db import open_log

log = structlog.get_logger("notestore")

CHECK_S = 0.2
STOP_TIMEOUT_S = 30.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
STARTUP_WAIT_S = 10.0
GC_YOUNG_THRESHOLD = 20_000
_PR_SET_PDEATHSIG = 1


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (the first picks it when port is 0)."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


def refuse_a_taken_port(host: str, port: int) -> None:
    """SO_REUSEPORT would let us share a port another server (even another notestore) holds."""
    if port == 0:
        return
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise NotestoreError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this child if the supervisor dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _child(run: Callable[[], None], parent: int, metrics_dir: Path, **context: object) -> NoReturn:
    """The body of a forked child: set up like serve, run, and never return into the parent."""
    code = 0
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # the child installs its own handlers
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked across the fork
        # Its own process group: a Ctrl-C on the terminal reaches the supervisor alone,
        # which then stops the children in order.
        os.setpgid(0, 0)
        _die_with_parent(parent)
        structlog.contextvars.bind_contextvars(**context)
        metrics.share_between_processes(metrics_dir)
        # Start-up objects never die: keep them out of every collection, and collect the
        # young generation less often, so GC pauses stay off the p99.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        run()
    except BaseException as exc:  # noqa: BLE001 - whatever happens, never return into the parent
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            log.exception("process_failed", **context)
            code = 1
    finally:
        os._exit(code)


def _fork(run: Callable[[], None], metrics_dir: Path, **context: object) -> int:
    parent = os.getpid()
    # A SIGTERM between fork and the child's own handlers would be lost: hold it until then.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _child(run, parent, metrics_dir, **context)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    return pid


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = False
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, int] = {}  # worker number -> pid (0 while dead)
        self.writer = 0  # its pid (0 while dead)
        self.projectors: BaseProcess | None = None
        self.restarts = Restarts()
        self.deaths: dict[str, tuple[str, dict[str, object], float]] = {}  # awaiting restart
        # A short path of our own (a unix socket path must fit in 107 bytes, data_dir may
        # not), mode 0700, in memory where there is /dev/shm: prometheus's metric files are
        # mmapped, and a full disk would kill their writers with SIGBUS.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.run_dir = Path(tempfile.mkdtemp(prefix="notestore-", dir=shm))
        self.writer_socket = self.run_dir / "log-writer.sock"
        self.metrics_dir = self.run_dir / "metrics"

    def _start_worker(self, number: int) -> None:
        sock = self.sockets[number]

        def run() -> None:
            for other in self.sockets:
                if other is not sock:
                    other.close()
            app = create_app(self.settings, log_writer=self.writer_socket)
            web.run_app(
                app, sock=sock, backlog=1024, print=None, access_log=None, shutdown_timeout=10
            )

        self.workers[number] = _fork(run, self.metrics_dir, worker=number)

    def _start_writer(self) -> None:
        def run() -> None:
            for sock in self.sockets:
                sock.close()
            batch_size = metrics.Metrics().batch_size
            writer_process.main(self.settings.data_dir, self.writer_socket, batch_size.observe)

        with contextlib.suppress(FileNotFoundError):
            self.writer_socket.unlink()
        self.writer = _fork(run, self.metrics_dir, process="log-writer")
        deadline = time.monotonic() + STARTUP_WAIT_S
        while not self.writer_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        try:
            return self._run()
        finally:
            for sock in self.sockets:
                sock.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _run(self) -> int:
        settings = self.settings
        open_log(settings.data_dir).close()  # migrations run once, before any worker opens it
        self.metrics_dir.mkdir()
        refuse_a_taken_port(settings.host, settings.port)
        self.sockets = bind_sockets(settings.host, settings.port, settings.workers)
        port = self.sockets[0].getsockname()[1]
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # we reap our children ourselves
        self._start("projectors")
        self._start("log_writer")
        for number in range(settings.workers):
            self._start(f"worker {number}")
        log.info(
            "serving", host=settings.host, port=port, workers=settings.workers,
            pids={"workers": list(self.workers.values()), "log_writer": self.writer,
                  "projectors": self.projectors.pid if self.projectors else None},
            run_dir=str(self.run_dir),
        )  # fmt: skip
        while not self.stopping:
            time.sleep(CHECK_S)
            self._notice_deaths()
            for child in self.restarts.due():
                if not self.stopping:
                    self._restart(child)
        log.info("stopping", workers=len(self.workers))
        _stop_all([pid for pid in self.workers.values() if pid])
        _stop_all([self.writer] if self.writer else [])
        if self.projectors is not None:
            stop_projectors(self.projectors)
        log.info("stopped")
        return 0

    def _start(self, child: str) -> int:
        if child == "projectors":
            self.projectors = spawn_projectors(self.settings.data_dir)
            pid = self.projectors.pid or 0
        elif child == "log_writer":
            self._start_writer()
            pid = self.writer
        else:
            number = int(child.split()[1])
            self._start_worker(number)
            pid = self.workers[number]
        self.restarts.started(child)
        return pid

    def _notice_deaths(self) -> None:
        """Reap dead children and schedule their restarts (see app.restarts)."""
        if self.writer:
            done, status = _reap(self.writer)
            if done:
                # Workers fail what it held with a 503 (a retry is deduplicated) and reconnect.
                self.writer = 0
                self._died("log_writer", "log_writer_died", status=_describe(status))
        for number, pid in self.workers.items():
            if pid:
                done, status = _reap(pid)
                if done:
                    self.workers[number] = 0
                    self._died(
                        f"worker {number}", "worker_died", worker=number, status=_describe(status)
                    )
        if self.projectors is not None and not self.projectors.is_alive():
            exitcode, self.projectors = self.projectors.exitcode, None
            self._died("projectors", "projector_process_died", exitcode=exitcode)

    def _died(self, child: str, event: str, **facts: object) -> None:
        delay = self.restarts.died(child)
        self.deaths[child] = (event, facts, delay)
        if delay:
            log.error(event, restart_in_s=delay, **facts)

    def _restart(self, child: str) -> None:
        event, facts, delay = self.deaths.pop(child)
        pid = self._start(child)
        if delay:
            log.info("child_restarted", child=child, pid=pid, after_s=delay)
        else:
            log.error(event, restarted_as=pid, **facts)


def _reap(pid: int) -> tuple[int, int]:
    """(pid, status) if the child has exited, else (0, 0)."""
    try:
        return os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # already reaped
        return pid, 0


def _stop_all(pids: list[int]) -> None:
    """SIGTERM each, wait for all (they wind down together), SIGKILL what outstays the timeout."""
    running = [pid for pid in pids if _reap(pid) == (0, 0)]
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = [pid for pid in running if _reap(pid) == (0, 0)]
    for pid in running:
        log.error("child_did_not_stop", pid=pid, timeout_s=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
