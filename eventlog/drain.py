"""Moving spooled deliveries into the log, in the order received, once the log commits.

The drainer runs on serve's event loop. While the spool holds anything it:
1. probes the log with a commit that writes nothing of the log (store.probe), backing off
   while that fails;
2. reads the oldest spooled deliveries, drops those the log already holds (found by
   receipt time, app and signature: a drain that committed but died before it emptied
   the spool, or a delivery the writer committed after its caller gave up on it), and
   appends the rest through the receiver's own writer, so they get the next seqs and
   keep their received_at;
3. empties those rows from the spool.

While the spool holds anything, new deliveries are spooled too (`active`), so the log
takes them in the order received. A delivery the log keeps refusing while probes succeed
is moved to the log's quarantine (reason `undrainable`, with the error) after
MAX_ATTEMPTS, or set aside in the spool if even that fails: it never blocks the
deliveries behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from eventlog.append import Outcome
from eventlog.intake import Rejected, _body_text
from eventlog.spool import Spool, Spooled, SpoolStats
from eventlog.store import LogStore, RequestKey
from eventlog.writer import CommitTimeout, GroupCommitWriter, LogUnavailable

log = structlog.get_logger("notestore.drain")

DRAIN_BATCH = 256
MAX_ATTEMPTS = 5
IDLE_S = 1.0  # an empty spool is looked at again this often (a spooled delivery wakes it)
BACKOFF_S = (0.1, 5.0)  # between failed probes: doubling from the first to the second
UNDRAINABLE = "undrainable"


def _key(item: Spooled) -> RequestKey:
    d = item.delivery
    return (d.received_at, d.app_id, d.signature)


class Drainer:
    def __init__(
        self,
        spool: Spool,
        writer: GroupCommitWriter,
        open_store: Callable[[], LogStore],
        timeout: float,
        on_drained: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.spool = spool
        self.writer = writer
        self._open_store = open_store
        self._store: LogStore | None = None
        self.timeout = timeout
        self._on_drained = on_drained
        self._wake = asyncio.Event()
        self._puts = 0  # deliveries spooled by this process: tells a stale "empty" apart
        self.spooling = 0  # spool writes in progress: those come before any new delivery
        self.stats = spool.stats()
        self.active = self.stats.waiting > 0  # spool first: the log takes them in order

    async def refresh(self) -> SpoolStats:
        """The spool's figures now (they are otherwise as of the last drain)."""
        self.stats = await asyncio.to_thread(self.spool.stats)
        return self.stats

    @property
    def first(self) -> bool:
        """Whether a new delivery must go to the spool, behind those already there."""
        return self.active or self.spooling > 0

    def spooled(self) -> None:
        """A delivery was just spooled: keep spooling until the drainer empties it."""
        self._puts += 1
        self.active = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        delay = BACKOFF_S[0]
        while not stop.is_set():
            puts = self._puts
            self._wake.clear()
            try:
                drained = await self._drain_once()
            except Exception as exc:  # the log (or the spool) failed: back off, probe again
                log.warning("spool_drain_waiting", error=_one_line(exc), retry_in_s=delay)
                await self._close_store()
                await _wait(stop, delay)
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            delay = BACKOFF_S[0]
            if drained:
                continue
            if self._puts == puts and self.stats.waiting == 0 and not self.spooling:
                self.active = False
            await _wait(stop, IDLE_S, self._wake)
        await self._close_store()

    async def _drain_once(self) -> int:
        """Drain one batch; how many deliveries left the spool (0: nothing to do)."""
        await self.refresh()
        if self.stats.waiting <= 0:
            return 0
        store = await self._store_now()
        await asyncio.to_thread(store.probe)
        # a delivery the writer took before its caller gave up on it lands (or fails) first:
        # then the log says whether it holds it
        await self.writer.flush()
        batch = await asyncio.to_thread(self.spool.oldest, DRAIN_BATCH)
        if not batch:
            return 0
        logged = await asyncio.to_thread(store.logged, [_key(i) for i in batch])
        done = [i.id for i in batch if _key(i) in logged]
        todo = [i for i in batch if _key(i) not in logged]
        results = await asyncio.gather(
            *(self.writer.append(i.delivery, self.timeout) for i in todo), return_exceptions=True
        )
        if todo and all(isinstance(r, BaseException) for r in results) and len(todo) > 1:
            results = [await self._append_alone(i) for i in todo]  # who is refused?
        for item, result in zip(todo, results, strict=True):
            if isinstance(result, Outcome):
                done.append(item.id)
                if self._on_drained is not None:
                    self._on_drained(result)
            else:
                await self._refused(store, item, result)
        await asyncio.to_thread(self.spool.remove, done)
        await self.refresh()
        if done:
            log.info("spool_drained", deliveries=len(done), left=self.stats.waiting)
        return len(done) or len(batch)

    async def _append_alone(self, item: Spooled) -> Outcome | BaseException:
        try:
            return await self.writer.append(item.delivery, self.timeout)
        except LogUnavailable as exc:
            return exc

    async def _refused(self, store: LogStore, item: Spooled, error: BaseException) -> None:
        """The log refused this delivery although it commits: count it; after MAX_ATTEMPTS,
        quarantine it in the log, or set it aside in the spool if even that fails."""
        if isinstance(error, CommitTimeout):
            raise error  # a slow or locked log: nothing to hold against the delivery
        await asyncio.to_thread(store.probe)  # the log itself down: not the delivery's fault
        attempts = await asyncio.to_thread(self.spool.failed, item.id, _one_line(error))
        if attempts < MAX_ATTEMPTS:
            return
        d = item.delivery
        detail = f"the log refused this delivery {attempts} times: {_one_line(error)}"
        rejected = Rejected(UNDRAINABLE, detail, _body_text(d.body), "body")
        try:
            await asyncio.to_thread(store.quarantine, rejected, d.received_at)
        except Exception as exc:
            log.error("spool_delivery_set_aside", spool_id=item.id, error=_one_line(exc))
            await asyncio.to_thread(self.spool.set_aside, item.id)
            return
        log.error("spool_delivery_quarantined", spool_id=item.id, detail=detail)
        await asyncio.to_thread(self.spool.remove, [item.id])

    async def _store_now(self) -> LogStore:
        if self._store is None:
            self._store = await asyncio.to_thread(self._open_store)
        return self._store

    async def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.close)


async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
