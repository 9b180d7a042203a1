"""The projector process of `notestore serve` (and of an app run on its own): started,
restarted when it dies (app.restarts), stopped; and what the web side knows of the views.

Readiness and errors are read from views.db (checkpoints and recorded errors), so
/healthz and the 503s of the query routes reflect the projector process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from pathlib import Path

import structlog

from app.logs import is_json
from app.restarts import Restarts
from eventlog.db import LOG_FILE, connect
from eventlog.read import head_seq
from projections import process
from projections.base import Projector
from projections.store import last_error, live_row, open_views

log = structlog.get_logger("notestore.projections")
RESTART_CHECK_S = 1.0


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


class ProcessMonitor:
    """Runs the projector process and restarts it if it dies; answers readiness and errors."""

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
        self._child: multiprocessing.process.BaseProcess | None = None
        self._watch: asyncio.Task[None] | None = None
        self._policy = Restarts()
        self.restarts = 0

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

    async def start(self) -> None:
        self._spawn()
        self._watch = asyncio.create_task(self._keep_alive())

    def _spawn(self) -> None:
        self._child = spawn_projectors(self.data_dir)
        self._policy.started("projectors")

    async def _keep_alive(self) -> None:
        """A projector process that dies (OOM killer, a crash) is started again, at once
        unless it keeps dying young (app.restarts)."""
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
                try:
                    self._spawn()
                except OSError as exc:  # no process to be had now (EMFILE, ENOMEM): try again
                    log.error("projector_process_not_started", error=str(exc))

    def stop_restarting(self) -> None:
        """Serve is stopping: a projector process that exits now is not started again."""
        if self._watch is not None:
            self._watch.cancel()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._child is not None:
            await asyncio.to_thread(stop_projectors, self._child)
        self._views.close()

    @property
    def pid(self) -> int | None:
        """The projector process's pid (None before it starts)."""
        return self._child.pid if self._child is not None else None

    def _process_running(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def _process_problem(self) -> str:
        code = self._child.exitcode if self._child is not None else None
        return f"the projector process exited with code {code}"
