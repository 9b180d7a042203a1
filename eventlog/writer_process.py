"""The log's one writer process, for serve's workers: they hand it deliveries over a socket.

Each worker verifies and validates its requests, then sends the Delivery here and
waits for its Outcome. This process does nothing but group commits (GroupCommitWriter),
so its SQLite work never competes with HTTP for a worker's GIL, and one transaction
gathers the deliveries of every worker (larger batches, no lock hand-offs between
processes). Acknowledged still means durable: a worker answers 200 only after the
reply, which is sent after the commit that holds the delivery.

Wire format, both ways: a 4-byte big-endian length, then a pickle. Requests are
(request number, Delivery); replies (request number, Outcome or error text). The
socket lives in a 0700 directory of the user who runs serve, so only that user can
speak to it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from eventlog.append import Outcome
from eventlog.writer import GroupCommitWriter, LogUnavailable

log = structlog.get_logger("notestore.writer")

_LENGTH = struct.Struct(">I")


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next object on the stream; IncompleteReadError at the end."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class Outbox:
    """Frames for one stream, written together once per loop iteration (one syscall, not many)."""

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


class WriterService:
    def __init__(self, writer: GroupCommitWriter) -> None:
        self.writer = writer
        self.outboxes: set[Outbox] = set()  # one per connected worker, drained at shutdown

    async def serve_worker(
        self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter
    ) -> None:
        outbox = Outbox(stream)
        self.outboxes.add(outbox)
        try:
            while True:
                number, delivery = await read_frame(reader)
                try:
                    self.writer.submit(delivery, functools.partial(self._done, outbox, number))
                except LogUnavailable as exc:
                    self._done(outbox, number, exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker went away
        except Exception:
            # A garbled frame: drop this worker's connection (it answers 503 and reconnects).
            log.exception("log_writer_bad_frame")
        finally:
            self.outboxes.discard(outbox)
            stream.close()

    def _done(self, outbox: Outbox, number: int, result: Outcome | Exception) -> None:
        outbox.send((number, str(result) if isinstance(result, Exception) else result))


async def _run(data_dir: Path, socket_path: Path, on_batch: Callable[[int], None] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    service = WriterService(GroupCommitWriter(data_dir, on_batch=on_batch))
    server = await asyncio.start_unix_server(service.serve_worker, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    log.info("log_writer_ready")
    await stop.wait()
    # The supervisor stops the workers first; whatever they still sent is committed.
    server.close()
    await asyncio.to_thread(service.writer.close)  # commits and answers what is queued
    # Those answers are written by now; make sure they leave before the loop closes.
    drains = [o.stream.drain() for o in service.outboxes if not o.stream.is_closing()]
    await asyncio.gather(*drains, return_exceptions=True)


def main(data_dir: Path, socket_path: Path, on_batch: Callable[[int], None] | None = None) -> None:
    asyncio.run(_run(data_dir, socket_path, on_batch))
