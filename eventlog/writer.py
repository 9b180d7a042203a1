"""Group commit: whatever deliveries are waiting are appended to the log as one batch.

GroupCommitWriter: callers `await writer.append(delivery)`, which returns once the
transaction holding the delivery is durable, or raises LogUnavailable; one writer
thread appends through a log store (eventlog.store.LogStore: SQLite or PostgreSQL), and
the answers of one batch go back to the event loop in one call. `notestore serve` and the
tests both use it.

A delivery whose rows the database refuses does not fail its batch: the store keeps its
request and quarantines its body as `unstorable` (eventlog.store). What fails here is the
database itself (locked past its timeout, disk full, connection lost): every delivery of
that batch is answered LogUnavailable (503) and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from eventlog.append import Delivery, Outcome

log = structlog.get_logger("notestore.writer")

MAX_BATCH = 512


class LogUnavailable(Exception):
    """The log could not commit (disk full, locked past the timeout, closed)."""


class CommitTimeout(LogUnavailable):
    """The delivery was not committed within the caller's deadline.

    `in_flight` False: it was withdrawn before the writer took it, and will never be stored
    by this writer. True: the writer was already committing it, and it may yet be stored.
    """

    def __init__(self, message: str, in_flight: bool) -> None:
        super().__init__(message)
        self.in_flight = in_flight


class Appender(Protocol):
    """What the writer batches into: a log store (eventlog.store.LogStore), or the spool
    (which may answer some deliveries of a batch with an exception of their own)."""

    def append(self, deliveries: list[Delivery]) -> Sequence[Outcome | Exception]: ...

    def close(self) -> None: ...


Done = Callable[[Outcome | Exception], None]


class _Item:
    """A delivery waiting for the writer; withdrawn by a caller that gave up before it was
    taken, so a caller that moves on (to the spool) knows the writer will not store it."""

    __slots__ = ("delivery", "loop", "done", "state", "late")

    def __init__(
        self, delivery: Delivery | None, loop: asyncio.AbstractEventLoop, done: Done
    ) -> None:
        self.delivery, self.loop, self.done = delivery, loop, done
        self.state = "queued"  # then "taken" or "withdrawn", under the writer's claim lock
        self.late: Callable[[Outcome], None] | None = None  # told the outcome nobody awaits


class GroupCommitWriter:
    def __init__(
        self,
        store: Appender,
        on_commit: Callable[[int], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
        label: str = "log",
    ) -> None:
        """Appends through `store`, which it owns from now on: close() closes it. On SQLite,
        give it SQLiteLogStore(data_dir, writer=True) (Storage.log_store(writer=True)): that
        one leaves WAL checkpoints to a thread of its own, off the commit path.

        on_commit(last seq) after each commit that appended; on_batch(deliveries) after each.
        """
        self._store = store
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._on_commit = on_commit
        self._on_batch = on_batch
        self._label = label  # what its log lines name: "log" or "spool"
        self._stopping = threading.Event()
        self._claims = threading.Lock()
        self.healthy = True
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    async def append(
        self,
        delivery: Delivery,
        timeout: float | None = None,
        on_late: Callable[[Outcome], None] | None = None,
    ) -> Outcome:
        """The delivery's outcome once committed; LogUnavailable if the store failed, and
        CommitTimeout (a LogUnavailable) if `timeout` seconds passed first. A delivery the
        writer was already committing at the deadline may still be stored: `on_late` is
        then called (on the event loop) with its outcome."""
        if self._stopping.is_set():
            raise LogUnavailable("the log is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        item = _Item(delivery, loop, _nobody)
        item.done = functools.partial(_settle_item, item, future)
        self._queue.put(item)
        if timeout is None:
            return await future
        try:
            # (a timer on this task: cheaper than wait_for's task and shield per delivery)
            async with asyncio.timeout(timeout):
                return await future  # on the deadline, the future is cancelled: unanswered
        except TimeoutError:
            if future.done() and not future.cancelled():  # answered as the deadline passed
                return future.result()  # (or raises the LogUnavailable it was answered)
            with self._claims:
                in_flight = item.state == "taken"
                item.state = "taken" if in_flight else "withdrawn"
            item.late = on_late  # read on this same loop when the outcome comes back
            raise CommitTimeout(
                f"not committed within {timeout * 1000:.0f} ms", in_flight
            ) from None

    async def flush(self) -> None:
        """Return once every delivery handed over before the call is committed or failed
        (a marker the writer reaches after them: batches are committed in order)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put(_Item(None, loop, functools.partial(_settle_future, future)))
        await future

    def close(self) -> None:
        """Finish what is queued, then stop, and close the store."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join()
        # An append() that raced the stop may have queued after the writer's last batch.
        late: list[_Item] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None and self._claim(item):
                    late.append(item)
        if late:
            _settle(late, [LogUnavailable("the log is shutting down")] * len(late))
        self._store.close()

    def _claim(self, item: _Item) -> bool:
        """Take the item for a batch, unless its caller withdrew it."""
        with self._claims:
            if item.state == "withdrawn":
                return False
            item.state = "taken"
            return True

    def _take_batch(self) -> tuple[list[_Item], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        items, stop = [first] if self._claim(first) else [], False
        while len(items) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            if self._claim(nxt):
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
        deliveries = [item.delivery for item in items if item.delivery is not None]
        outcomes = commit_batch(self._store, deliveries, self._label) if deliveries else []
        if deliveries:
            self.healthy = not isinstance(outcomes[0], Exception)
            if self._on_batch is not None:
                self._on_batch(len(deliveries))
        committed = iter(outcomes)
        # a flush marker's answer is that it was reached
        results = [Outcome() if item.delivery is None else next(committed) for item in items]
        _settle(items, results)
        seqs = [max(r.seqs) for r in results if isinstance(r, Outcome) and r.seqs]
        if self._on_commit is not None and seqs:
            self._on_commit(max(seqs))


def commit_batch(
    store: Appender, deliveries: list[Delivery], label: str = "log"
) -> Sequence[Outcome | Exception]:
    """Each delivery's outcome, committed in one transaction; or, if the database failed,
    LogUnavailable for every one of them (nothing of the batch was stored).

    A delivery the database refuses does not fail the batch: the store quarantines it
    (`unstorable`) beside the others. So a failure here is the database's own, and would
    be again for each delivery alone: nothing is retried.
    """
    try:
        return store.append(deliveries)
    except Exception as exc:
        log.error(
            f"{label}_commit_failed",
            error=f"{type(exc).__name__}: {exc}",
            deliveries=len(deliveries),
        )
        return [LogUnavailable(str(exc)) for _ in deliveries]


def _settle(items: list[_Item], results: Sequence[Outcome | Exception]) -> None:
    """Tell each submitter its result, with one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Done, Outcome | Exception]]] = {}
    for item, result in zip(items, results, strict=True):
        by_loop.setdefault(item.loop, []).append((item.done, result))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[Done, Outcome | Exception]]) -> None:
    for done, result in pairs:
        try:
            done(result)
        except Exception:  # one bad callback must not leave the rest of the batch unanswered
            log.exception("log_writer_callback_failed")


def _nobody(result: Outcome | Exception) -> None:
    """A placeholder until the item's own callback is set."""


def _settle_item(
    item: _Item, future: asyncio.Future[Outcome], result: Outcome | Exception
) -> None:
    if future.done() and item.late is not None and isinstance(result, Outcome):
        item.late(result)  # committed after its caller gave up on it
    _settle_future(future, result)


def _settle_future(future: asyncio.Future[Outcome], result: Outcome | Exception) -> None:
    if future.done():  # the request was cancelled (client went away)
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
