"""A serve worker's side of the writer process: the same `await append()` as GroupCommitWriter."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

from eventlog.append import Delivery, Outcome
from eventlog.writer import LogUnavailable
from eventlog.writer_process import Outbox, read_frame

REPLY_TIMEOUT_S = 10.0  # a stuck writer must not hold requests forever; Mobio retries


class WriterClient:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.healthy = True
        self._outbox: Outbox | None = None  # while connected to the writer process
        self._replies: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Outcome | str]] = {}
        self._numbers = itertools.count()
        self._connecting = asyncio.Lock()

    async def _connected(self) -> Outbox:
        if self._outbox is not None:  # the usual case: no lock on the hot path
            return self._outbox
        async with self._connecting:
            if self._outbox is None:
                try:
                    reader, stream = await asyncio.open_unix_connection(self.socket_path)
                except OSError as exc:
                    self.healthy = False
                    raise LogUnavailable(
                        f"the log writer process is not reachable: {exc}"
                    ) from None
                self._outbox = Outbox(stream)
                self._replies = asyncio.create_task(self._read_replies(reader))
            return self._outbox

    async def append(self, delivery: Delivery) -> Outcome:
        outbox = await self._connected()
        number = next(self._numbers)
        future: asyncio.Future[Outcome | str] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        outbox.send((number, delivery))
        try:
            result = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
        except TimeoutError:
            # Nothing is acknowledged; if it commits after all, the retry is a duplicate.
            raise LogUnavailable(
                f"the log writer did not confirm within {REPLY_TIMEOUT_S:.0f} s"
            ) from None
        finally:
            self._pending.pop(number, None)
        if isinstance(result, str):  # the writer could not commit
            self.healthy = False
            raise LogUnavailable(result)
        self.healthy = True
        return result

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                number, result = await read_frame(reader)
                future = self._pending.pop(number, None)
                if future is not None and not future.done():
                    future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            # The writer process went away. What it had not answered may or may not be
            # committed; the sender gets a 503 and its retry is deduplicated either way.
            if self._outbox is not None:
                self._outbox.stream.close()
            self._outbox = None
            pending, self._pending = self._pending, {}
            # Not a failed commit: the supervisor starts a new writer, so health is unchanged.
            for future in pending.values():
                if not future.done():
                    future.set_exception(
                        LogUnavailable("the log writer process stopped before confirming")
                    )

    def close(self) -> None:
        if self._replies is not None:
            self._replies.cancel()
        if self._outbox is not None:
            with contextlib.suppress(RuntimeError):
                self._outbox.stream.close()
