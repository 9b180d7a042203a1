"""Group commit: whatever deliveries are waiting are committed as one transaction.

GroupCommitWriter is the in-process form (an app run on its own, tests): callers
`await writer.append(delivery)`, which returns once the transaction holding the
delivery is durable, or raises LogUnavailable; one writer thread commits, and the
answers of one batch go back to the event loop in one call. `notestore serve` uses
the log writer process instead (eventlog.writer_process), which shares commit_batch
and the Checkpointer with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from eventlog.append import Delivery, Outcome, append_deliveries
from eventlog.db import LOG_FILE, connect, open_log

log = structlog.get_logger("notestore.writer")

MAX_BATCH = 512
CHECKPOINT_INTERVAL_S = 1.0


def open_log_for_writing(data_dir: Path) -> sqlite3.Connection:
    conn = open_log(data_dir)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer's job, off the commit path
    return conn


def close_log(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.close()


class LogUnavailable(Exception):
    """The log could not commit (disk full, locked past the timeout, closed)."""


class LogWriter(Protocol):
    """What the receiver needs: GroupCommitWriter in-process, WriterClient in serve's workers."""

    healthy: bool

    async def append(self, delivery: Delivery) -> Outcome: ...

    def close(self) -> None: ...


Done = Callable[[Outcome | Exception], None]
_Item = tuple[Delivery, asyncio.AbstractEventLoop, Done]


class GroupCommitWriter:
    def __init__(
        self,
        data_dir: Path,
        on_commit: Callable[[int], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """on_commit(last seq) after each commit that appended; on_batch(deliveries) after each."""
        self._conn = open_log_for_writing(data_dir)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._on_commit = on_commit
        self._on_batch = on_batch
        self._stopping = threading.Event()
        self.healthy = True
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        self._checkpointer = Checkpointer(Path(data_dir) / LOG_FILE)

    async def append(self, delivery: Delivery) -> Outcome:
        if self._stopping.is_set():
            raise LogUnavailable("the log is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put((delivery, loop, functools.partial(_settle_future, future)))
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join()
        self._checkpointer.stop()
        # An append() that raced the stop may have queued after the writer's last batch.
        late: list[_Item] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    late.append(item)
        if late:
            _settle(late, [LogUnavailable("the log is shutting down")] * len(late))
        close_log(self._conn)

    def _take_batch(self) -> tuple[list[_Item], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        items, stop = [first], False
        while len(items) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            items.append(nxt)
        return items, stop

    def _run(self) -> None:
        while True:
            items, stop = self._take_batch()
            if items:
                self._commit(items)
            if stop:
                return

    def _commit(self, items: list[_Item]) -> None:
        results = commit_batch(self._conn, [d for d, _, _ in items])
        self.healthy = not all(isinstance(r, Exception) for r in results)
        if self._on_batch is not None:
            self._on_batch(len(items))
        _settle(items, results)
        seqs = [max(r.seqs) for r in results if isinstance(r, Outcome) and r.seqs]
        if self._on_commit is not None and seqs:
            self._on_commit(max(seqs))


def commit_batch(conn: sqlite3.Connection, deliveries: list[Delivery]) -> list[Outcome | Exception]:
    """Each delivery's outcome, committed in one transaction; LogUnavailable where it failed.

    If the transaction fails, each delivery is retried alone, so one odd delivery
    cannot sink the rest of its batch.
    """
    try:
        return list(append_deliveries(conn, deliveries))
    except Exception as exc:
        if len(deliveries) > 1:
            return [result for d in deliveries for result in commit_batch(conn, [d])]
        log.error("log_commit_failed", error=str(exc))
        return [LogUnavailable(str(exc))]


class Checkpointer:
    """Copies the WAL back into the log every second, on a thread and connection of its own.

    The writer turns automatic checkpoints off: they fsync too, and would sit on the
    commit path of whichever delivery crossed the threshold. PASSIVE never blocks the
    writer; it copies what it can.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        conn = connect(self._path)
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("wal_checkpoint_failed", error=str(exc))
        finally:
            conn.close()


def _settle(items: list[_Item], results: Sequence[Outcome | Exception]) -> None:
    """Tell each submitter its result, with one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Done, Outcome | Exception]]] = {}
    for (_, loop, done), result in zip(items, results, strict=True):
        by_loop.setdefault(loop, []).append((done, result))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[Done, Outcome | Exception]]) -> None:
    for done, result in pairs:
        try:
            done(result)
        except Exception:  # one bad callback must not leave the rest of the batch unanswered
            log.exception("log_writer_callback_failed")


def _settle_future(future: asyncio.Future[Outcome], result: Outcome | Exception) -> None:
    if future.done():  # the request was cancelled (client went away)
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
