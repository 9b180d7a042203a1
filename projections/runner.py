"""Runs every projector: rebuild if needed, catch up, then tail.

Each projector has its own task, connections and worker thread, so one failing
does not stop the others. A task wakes on notify() (in-process use) and polls
too, for events other processes append. After a partial batch it waits
min_interval, so a stream of small commits is folded in a few large batches.
`notestore serve` runs this in a process of its own (projections/process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import structlog

from eventlog.dbapi import DATABASE_ERRORS, Connection, is_broken
from eventlog.read import head_seq
from projections.base import ProjectionFailed, Projector
from projections.engine import BATCH, SharedReads, step
from projections.rebuild import needs_rebuild, rebuild
from projections.storage import Storage
from projections.store import clear_error, live_row, record_error

log = structlog.get_logger("notestore.projections")


class Stopping(Exception):
    """Raised from a rebuild's progress callback when the server shuts down."""


class Reconnect(Exception):
    """A connection broke (PostgreSQL restarted or unreachable): open new ones and go on."""


class Runner:
    def __init__(
        self,
        storage: Storage,
        projectors: list[Projector],
        poll_interval: float = 0.5,
        retry_interval: float = 2.0,
        min_interval: float = 0.0,
    ) -> None:
        self.storage = storage
        self.projectors = projectors
        self.poll_interval = poll_interval
        self.min_interval = min_interval
        self.retry_interval = retry_interval
        self.ready: set[str] = set()
        self.errors: dict[str, str] = {}
        self._wakes = {p.name: asyncio.Event() for p in projectors}
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._reads = SharedReads()  # used under _write_lock
        self._cleared: set[str] = set()  # projectors whose stored error row this run has cleared
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._startup_head = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        conn = self.storage.log_reader()
        try:
            self._startup_head = head_seq(conn)
        finally:
            conn.close()
        self._tasks = [
            asyncio.create_task(self._run(p), name=f"projector-{p.name}") for p in self.projectors
        ]

    async def stop(self) -> None:
        self._stop.set()
        for wake in self._wakes.values():
            wake.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def notify(self, seq: int) -> None:
        """Thread-safe: the writer calls this after each commit that appended events."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    def is_ready(self, name: str) -> bool:
        return name in self.ready

    async def _run(self, projector: Projector) -> None:
        while not self._stop.is_set():
            try:
                views = await asyncio.to_thread(self.storage.views)
            except DATABASE_ERRORS as exc:
                await self._failed(projector, None, exc)
                continue
            try:
                events = await asyncio.to_thread(self.storage.log_reader)
            except DATABASE_ERRORS as exc:
                views.close()
                await self._failed(projector, None, exc)
                continue
            try:
                await self._ensure_built(projector, views, events)
                await self._tail(projector, views, events)
            except Reconnect:
                log.warning("projector_reconnecting", projector=projector.name)
            finally:
                for conn in (views, events):
                    with contextlib.suppress(*DATABASE_ERRORS):
                        conn.close()

    async def _ensure_built(
        self, projector: Projector, views: Connection, events: Connection
    ) -> None:
        def stop_check(done: int, total: int) -> None:
            if self._stop.is_set():
                raise Stopping

        while not self._stop.is_set():
            try:  # the check too: a connection that broke fails it like any step
                if not needs_rebuild(views, projector):
                    return
                log.info(
                    "projector_rebuilding", projector=projector.name, version=projector.version
                )
                await asyncio.to_thread(rebuild, projector, views, events, stop_check)
            except Stopping:
                return
            except Exception as exc:
                await self._failed(projector, views, exc)
                if is_broken(views) or is_broken(events):
                    raise Reconnect from exc

    async def _tail(
        self, projector: Projector, views: Connection, events: Connection
    ) -> None:
        wake = self._wakes[projector.name]
        while not self._stop.is_set():
            wake.clear()
            try:
                applied = await asyncio.to_thread(self._step, projector, views, events)
                self._succeeded(projector, views)
            except Exception as exc:
                await self._failed(projector, views, exc)
                if is_broken(views) or is_broken(events):
                    raise Reconnect from exc
                continue
            if applied == BATCH:
                continue
            if applied:
                await asyncio.sleep(self.min_interval)  # let more arrive: fewer, larger batches
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll_interval)

    def _step(
        self, projector: Projector, views: Connection, events: Connection
    ) -> int:
        # One projector writes the views at a time: waiting on this lock wakes at once, while
        # SQLite's busy handler would sleep in steps of up to 100 ms between retries.
        with self._write_lock:
            return step(projector, views, events, limit=BATCH, reader=self._reads.read_batch)

    def _succeeded(self, projector: Projector, views: Connection) -> None:
        if projector.name in self.errors or projector.name not in self._cleared:
            # also clears a row left by an earlier process: it succeeded, so nothing is stuck
            self._cleared.add(projector.name)
            if self.errors.pop(projector.name, None) is not None:
                log.info("projector_recovered", projector=projector.name)
            clear_error(views, projector.name)
        if projector.name not in self.ready:
            row = live_row(views, projector.name)
            if row is not None and row.checkpoint >= self._startup_head:
                self.ready.add(projector.name)

    async def _failed(
        self, projector: Projector, views: Connection | None, exc: Exception
    ) -> None:
        seq = getattr(exc, "seq", None)
        message_id = getattr(exc, "message_id", None)
        text = str(exc) if isinstance(exc, ProjectionFailed) else f"{projector.name}: {exc!r}"
        if self.errors.get(projector.name) != text:
            log.error(
                "projector_failed",
                projector=projector.name,
                seq=seq,
                message_id=message_id,
                error=text,
            )
        self.errors[projector.name] = text
        # Even if the views are unwritable, the error stays visible in memory (/healthz).
        if views is not None and not is_broken(views):
            with contextlib.suppress(*DATABASE_ERRORS):
                record_error(views, projector.name, seq, message_id, text)
        await asyncio.sleep(self.retry_interval)
