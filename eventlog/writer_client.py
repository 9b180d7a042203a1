"""A serve worker's side of the writer process: the same `await append()` as GroupCommitWriter."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import structlog

from eventlog.append import Delivery, Outcome
from eventlog.wire import frame, parse_reply, read_frame, request
from eventlog.writer import LogUnavailable

log = structlog.get_logger("notestore.writer")

REPLY_TIMEOUT_S = 10.0  # a stuck writer must not hold requests forever; Mobio retries


class Outbox:
    """Frames for the writer, sent together once per loop iteration (one syscall, not many)."""

    def __init__(self, stream: asyncio.StreamWriter) -> None:
        self.stream = stream
        self.frames: list[bytes] = []

    def send(self, obj: Any) -> None:
        if not self.frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self.frames.append(frame(obj))

    def _flush(self) -> None:
        frames, self.frames = self.frames, []
        if not self.stream.is_closing():
            self.stream.write(b"".join(frames))


class WriterClient:
    def __init__(self, socket_path: Path, reply_timeout: float = REPLY_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.reply_timeout = reply_timeout
        self.healthy = True
        self._outbox: Outbox | None = None  # while connected to the writer process
        self._replies: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # request number -> (deadline, future), oldest first: numbers only grow
        self._pending: dict[int, tuple[float, asyncio.Future[Outcome | str]]] = {}
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
                if self._sweeper is None:
                    self._sweeper = asyncio.create_task(self._sweep())
            return self._outbox

    async def append(self, delivery: Delivery) -> Outcome:
        outbox = await self._connected()
        number = next(self._numbers)
        row = request(number, delivery)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome | str] = loop.create_future()
        self._pending[number] = (loop.time() + self.reply_timeout, future)
        try:
            outbox.send(row)
            result = await future
        finally:
            self._pending.pop(number, None)
        if isinstance(result, str):  # the writer could not commit
            self.healthy = False
            raise LogUnavailable(result)
        self.healthy = True
        return result

    async def _sweep(self) -> None:
        """Fail requests the writer has not answered in time: one timer for all, not one each."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.reply_timeout / 2))
            now = loop.time()
            for number, (deadline, future) in list(self._pending.items()):
                if deadline > now:
                    break  # the rest were sent later
                del self._pending[number]
                if not future.done():
                    # Nothing is acknowledged; if it commits after all, the retry is a duplicate.
                    future.set_exception(
                        LogUnavailable(
                            f"the log writer did not confirm within {self.reply_timeout:g} s"
                        )
                    )

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                number, result = parse_reply(await read_frame(reader))
                _, future = self._pending.pop(number, (0.0, None))
                if future is not None and not future.done():
                    future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:  # a garbled reply: reconnect rather than guess
            log.exception("log_writer_bad_reply")
        finally:
            # The writer process went away. What it had not answered may or may not be
            # committed; the sender gets a 503 and its retry is deduplicated either way.
            if self._outbox is not None:
                self._outbox.stream.close()
            self._outbox = None
            pending, self._pending = self._pending, {}
            # Not a failed commit: the supervisor starts a new writer, so health is unchanged.
            for _, future in pending.values():
                if not future.done():
                    future.set_exception(
                        LogUnavailable("the log writer process stopped before confirming")
                    )

    def close(self) -> None:
        for task in (self._replies, self._sweeper):
            if task is not None:
                task.cancel()
        if self._outbox is not None:
            with contextlib.suppress(RuntimeError):
                self._outbox.stream.close()
