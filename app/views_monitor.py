"""What the web process knows of the views when the projectors run in their own process.

Read from views.db (checkpoints and recorded errors), so /healthz and the 503s of
the query routes reflect the projector process without any channel but the database.
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
from eventlog.db import LOG_FILE, connect
from eventlog.read import head_seq
from projections import process
from projections.base import Projector
from projections.store import last_error, live_row, open_views

log = structlog.get_logger("notestore.projections")
RESTART_CHECK_S = 1.0


class ProcessMonitor:
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
        self.restarts = 0

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._child = context.Process(
            target=process.main,
            args=(str(self.data_dir), os.getpid(), is_json()),
            name="notestore-projectors",
            daemon=True,
        )
        self._child.start()

    async def start(self) -> None:
        self._spawn()
        self._watch = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        """A projector process that dies (OOM killer, a crash) is started again."""
        while True:
            await asyncio.sleep(RESTART_CHECK_S)
            child = self._child
            if child is not None and not child.is_alive():
                log.error("projector_process_died", exitcode=child.exitcode, restarts=self.restarts)
                self.restarts += 1
                self._spawn()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        child = self._child
        if child is not None and child.is_alive():
            os.kill(child.pid or 0, signal.SIGTERM)
            await asyncio.to_thread(child.join, 15)
            if child.is_alive():
                child.kill()
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

    @property
    def errors(self) -> dict[str, str]:
        found = {}
        for p in self.projectors:
            error = last_error(self._views, p.name)
            if error is not None:
                found[p.name] = error.error
        if self._child is not None and not self._child.is_alive():
            found["process"] = f"the projector process exited with code {self._child.exitcode}"
        return found
