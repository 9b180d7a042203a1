"""What a web process knows of the views when the projectors run in a process of their own.

Read from views.db (checkpoints and recorded errors) and from the projector
process's lock, so /healthz and the 503s of the query routes reflect the projector
process without any channel but the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from pathlib import Path

import structlog

from app.lock import projectors_running
from app.logs import is_json
from app.restarts import Restarts
from eventlog.db import LOG_FILE, connect
from eventlog.read import head_seq
from projections import process
from projections.base import Projector
from projections.store import last_error, live_row, open_views

log = structlog.get_logger("notestore.projections")
RESTART_CHECK_S = 1.0
STARTUP_WAIT_S = 10.0


def spawn_projectors(data_dir: Path) -> multiprocessing.process.BaseProcess:
    """Start the projector process; it exits by itself when this process dies."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=process.main,
        args=(str(data_dir), os.getpid(), is_json()),
        name="notestore-projectors",
        daemon=True,
    )
    child.start()
    return child


def stop_projectors(child: multiprocessing.process.BaseProcess) -> None:
    if child.is_alive():
        os.kill(child.pid or 0, signal.SIGTERM)
        child.join(15)
        if child.is_alive():
            child.kill()


class ViewsWatch:
    """Readiness and errors of views kept by a projector process someone else runs."""

    def __init__(self, data_dir: Path, projectors: list[Projector]) -> None:
        self.data_dir = data_dir
        self.projectors = projectors
        self.ready: set[str] = set()
        log = connect(data_dir / LOG_FILE, readonly=True)
        try:
            self.startup_head = head_seq(log)
        finally:
            log.close()
        self._views = open_views(data_dir)

    async def start(self) -> None:
        """Wait (briefly) for the projector process, so a fresh server does not look degraded."""
        deadline = time.monotonic() + STARTUP_WAIT_S
        while not self._process_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._views.close()

    def notify(self, seq: int) -> None:
        """The projector process polls the log; nothing to do here."""

    def is_ready(self, name: str) -> bool:
        """Built by this code's version and caught up with the log as it was at start-up."""
        if name not in self.ready:
            projector = next(p for p in self.projectors if p.name == name)
            row = live_row(self._views, name)
            if row and row.version == projector.version and row.checkpoint >= self.startup_head:
                self.ready.add(name)
        return name in self.ready

    def _process_running(self) -> bool:
        return projectors_running(self.data_dir)

    def _process_problem(self) -> str:
        return "the projector process is not running"

    @property
    def errors(self) -> dict[str, str]:
        found = {}
        for p in self.projectors:
            error = last_error(self._views, p.name)
            if error is not None:
                found[p.name] = error.error
        if not self._process_running():
            found["process"] = self._process_problem()
        return found


class ProcessMonitor(ViewsWatch):
    """Runs the projector process itself (a single-process server) and restarts it if it dies."""

    def __init__(self, data_dir: Path, projectors: list[Projector]) -> None:
        super().__init__(data_dir, projectors)
        self._child: multiprocessing.process.BaseProcess | None = None
        self._watch: asyncio.Task[None] | None = None
        self._policy = Restarts()
        self.restarts = 0

    async def start(self) -> None:
        self._spawn()
        self._watch = asyncio.create_task(self._keep_alive())

    def _spawn(self) -> None:
        self._child = spawn_projectors(self.data_dir)
        self._policy.started("projectors")

    async def _keep_alive(self) -> None:
        """A projector process that dies (OOM killer, a crash) is started again, at once
        unless it keeps dying young (the same back-off as serve's supervisor)."""
        while True:
            await asyncio.sleep(RESTART_CHECK_S)
            child = self._child
            if child is not None and not child.is_alive():
                delay = self._policy.died("projectors")
                log.error(
                    "projector_process_died", exitcode=child.exitcode, restarts=self.restarts,
                    restart_in_s=delay or None,
                )  # fmt: skip
                await asyncio.sleep(delay)
                self.restarts += 1
                self._spawn()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._child is not None:
            await asyncio.to_thread(stop_projectors, self._child)
        await super().stop()

    def _process_running(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def _process_problem(self) -> str:
        code = self._child.exitcode if self._child is not None else None
        return f"the projector process exited with code {code}"
