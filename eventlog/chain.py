"""The hash chain that makes tampering with the log detectable.

Each row's hash is sha256(previous row's hash + sha256 of the row's content),
where the content covers every stored column but the hash itself. Events,
requests and erasures each form their own chain, in key order. An erased row's link
is computed with the digest of its content before the erasure (eventlog.erase keeps it).
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
# the erasures a chain of their own (eventlog.erase); counts (JSON) enter by their digest
ERASURE_COLUMNS = ("id", "at", "merchant_id", "note_id", "before", "reason", "counts")


def digest(payload: str | bytes | memoryview) -> str:
    """The sha256 that stands for a row's large last column (a block or a body)."""
    return hashlib.sha256(payload.encode() if isinstance(payload, str) else payload).hexdigest()


def link(previous: str, values: Sequence[Any], last_digest: str | None = None) -> str:
    """The hash of a row whose columns (in *_COLUMNS order) are `values`.

    The last column (the block, or the body) enters by its digest, which the receiver
    computes before handing the row to the writer: the writer only hashes ~300 bytes.
    """
    cells = [*values[:-1], last_digest or digest(values[-1])]
    content = hashlib.sha256(orjson.dumps(cells)).digest()
    return hashlib.sha256(previous.encode() + content).hexdigest()
