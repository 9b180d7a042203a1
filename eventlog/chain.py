"""The hash chain that makes tampering with the log detectable.

Each row's hash is sha256(previous row's hash + sha256 of the row's content),
where the content covers every stored column but the hash itself. Events and
requests each form their own chain, in key order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

GENESIS = "0" * 64

EVENT_COLUMNS = (
    "seq", "message_id", "content_hash", "event_type", "entity", "entity_id", "note_id",
    "merchant_id", "app_id", "request_id", "request_ref", "action_time", "created_time",
    "received_at", "block",
)  # fmt: skip
REQUEST_COLUMNS = (
    "id", "received_at", "app_id", "secret_fingerprint", "signature", "request_id", "body",
)  # fmt: skip


def _content(values: Sequence[Any]) -> bytes:
    """sha256 of the row's cells as a JSON array (a blob by its own sha256)."""
    cells = [
        hashlib.sha256(v).hexdigest() if isinstance(v, bytes | bytearray | memoryview) else v
        for v in values
    ]
    return hashlib.sha256(orjson.dumps(cells)).digest()


def link(previous: str, values: Sequence[Any]) -> str:
    """The hash of a row whose columns (in *_COLUMNS order) are `values`."""
    return hashlib.sha256(previous.encode() + _content(values)).hexdigest()
