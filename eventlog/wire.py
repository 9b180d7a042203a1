"""Frames between serve's workers and the log writer process, over a unix socket.

Each frame is a 4-byte big-endian length, then a marshal of plain tuples. Workers
send requests, (number, Delivery as a row); the writer answers (number, Outcome as a
row, or the error text). Marshal of tuples is about twice as fast as pickling the
dataclasses, on both ends, and one request crosses per delivery. The socket lives in
a 0700 directory of the user who runs serve, so only that user can speak to it.
"""

from __future__ import annotations

import asyncio
import marshal
import operator
import struct
from dataclasses import fields
from typing import Any

from eventlog.append import Delivery, Outcome
from eventlog.intake import Intake, NewEvent, Rejected

_LENGTH = struct.Struct(">I")
_EVENT = operator.attrgetter(*(f.name for f in fields(NewEvent)))
_REJECTED = operator.attrgetter(*(f.name for f in fields(Rejected)))
_OUTCOME = operator.attrgetter(*(f.name for f in fields(Outcome)))


class BadFrame(Exception):
    """A frame that does not decode to what the protocol sends."""


def frame(row: Any) -> bytes:
    data = marshal.dumps(row)
    return _LENGTH.pack(len(data)) + data


def take_frames(buffer: bytearray) -> list[Any]:
    """Every complete frame at the start of `buffer`, removed from it; a partial one stays."""
    found, start = [], 0
    with memoryview(buffer) as view:  # released before the bytearray is resized
        while len(buffer) - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            end = start + _LENGTH.size + size
            if end > len(buffer):
                break
            try:
                found.append(marshal.loads(view[start + _LENGTH.size : end]))
            except (EOFError, ValueError, TypeError) as exc:
                raise BadFrame(f"undecodable frame: {exc}") from None
            start = end
    del buffer[:start]
    return found


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame's row; IncompleteReadError at the end of the stream."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return marshal.loads(await reader.readexactly(size))


def request(number: int, d: Delivery) -> tuple[Any, ...]:
    i = d.intake
    return (
        number, d.received_at, d.app_id, d.secret_fingerprint, d.signature, d.body,
        d.body_digest, i.app_id, i.request_id, [_EVENT(e) for e in i.events],
        [_REJECTED(r) for r in i.rejected],
    )  # fmt: skip


def parse_request(row: Any) -> tuple[int, Delivery]:
    try:
        (number, at, app_id, secret, signature, body, digest, intake_app, request_id, events,
         rejected) = row  # fmt: skip
        intake = Intake(
            intake_app, request_id, [NewEvent(*e) for e in events], [Rejected(*r) for r in rejected]
        )
        delivery = Delivery(at, app_id, secret, signature, body, intake, digest)
    except (TypeError, ValueError) as exc:
        raise BadFrame(f"not a delivery: {exc}") from None
    if not isinstance(number, int) or not isinstance(body, bytes) or not digest:
        raise BadFrame("not a delivery: bad number, body or digest")
    return number, delivery


def reply(number: int, result: Outcome | Exception) -> tuple[Any, ...]:
    return (number, str(result) if isinstance(result, Exception) else _OUTCOME(result))


def parse_reply(row: Any) -> tuple[int, Outcome | str]:
    number, result = row
    return number, result if isinstance(result, str) else Outcome(*result)
