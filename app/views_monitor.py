"""The projector process of `notestore serve` (and of an app run on its own): started,
restarted when it dies (app.restarts), stopped; and what the web side knows of the views.

Readiness and errors are read from the views (checkpoints and recorded errors), so
/healthz and the 503s of the query routes reflect the projector process (on PostgreSQL,
whichever instance's process runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

import structlog

from app.logs import is_json
from app.restarts import Restarts
from eventlog.dbapi import DATABASE_ERRORS, Connection, is_broken
from eventlog.read import head_seq
from projections import process
from projections.base import Projector
from projections.storage import Storage
from projections.store import last_error, live_row

log = structlog.get_logger("notestore.projections")
T = TypeVar("T")
RESTART_CHECK_S = 1.0


def spawn_projectors(storage: Storage) -> multiprocessing.process.BaseProcess:
    """Start the projector process; it exits by itself when this process dies."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=process.main,
        args=(str(storage.data_dir), storage.database_url, os.getpid(), is_json()),
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

    def __init__(self, storage: Storage, projectors: list[Projector]) -> None:
        self.storage = storage
        self.projectors = projectors
        self.ready: set[str] = set()
        log = self.storage.log_reader()
        try:
            self.startup_head = head_seq(log)
        finally:
            log.close()
        self._views: Connection | None = self.storage.views()
        self._lock = threading.Lock()
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
            try:
                row = self._read(lambda views: live_row(views, name))
            except DATABASE_ERRORS:
                return False
            if row and row.version == projector.version and row.checkpoint >= self.startup_head:
                self.ready.add(name)
        return name in self.ready

    @property
    def errors(self) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            stored = self._read(
                lambda views: [(p.name, last_error(views, p.name)) for p in self.projectors]
            )
            found.update((name, error.error) for name, error in stored if error is not None)
        except DATABASE_ERRORS as exc:
            found["views"] = f"the views cannot be read: {type(exc).__name__}"
        if not self._process_running():
            found["process"] = self._process_problem()
        return found

    def _read(self, fn: Callable[[Connection], T]) -> T:
        """fn(the views' connection); once more on a new connection if the server dropped it
        (a PostgreSQL restart ends every session). Called from the query pool's threads:
        one at a time."""
        with self._lock:
            try:
                return fn(self._connection())
            except DATABASE_ERRORS:
                broken = self._views is not None and is_broken(self._views)
                self._drop_connection()
                if not broken:
                    raise
            return fn(self._connection())

    def _connection(self) -> Connection:
        """The connection to the views, opened again after one that failed (PostgreSQL)."""
        if self._views is None:
            self._views = self.storage.views()
        return self._views

    def _drop_connection(self) -> None:
        if self._views is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                self._views.close()
            self._views = None

    async def start(self) -> None:
        self._spawn()
        self._watch = asyncio.create_task(self._keep_alive())

    def _spawn(self) -> None:
        self._child = spawn_projectors(self.storage)
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
        self._drop_connection()

    @property
    def pid(self) -> int | None:
        """The projector process's pid (None before it starts)."""
        return self._child.pid if self._child is not None else None

    def _process_running(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def _process_problem(self) -> str:
        code = self._child.exitcode if self._child is not None else None
        return f"the projector process exited with code {code}"
