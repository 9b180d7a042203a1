"""JSON texts with one meaning each: canonical (for hashing and ordering) and compact (for storage).

The receiver's hot path uses orjson (about ten times faster than the json module),
falling back to the json module for what orjson cannot represent exactly.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import orjson

# orjson reads integers past 64 bits as floats: bodies holding a run of 19 digits or
# more are parsed again with the json module, which keeps them exact. The run is found
# by masking digits and searching in C: a regex costs more than the parse itself.
_DIGIT_MASK = bytes(ord("1") if chr(b).isdigit() and b < 128 else ord(" ") for b in range(256))
_LONG_RUN = b"1" * 19
# orjson refuses nesting over 1024 levels, so the exact re-parse below needs at most that
# many frames beyond its caller's: room for it, so that a body orjson accepts is never lost
# to a RecursionError deep in a server's stack (its deep blocks are then quarantined).
ORJSON_MAX_DEPTH = 1024
if sys.getrecursionlimit() < 4 * ORJSON_MAX_DEPTH:
    sys.setrecursionlimit(4 * ORJSON_MAX_DEPTH)


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, non-ASCII kept as itself (spec/views.md)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compact_json(value: Any) -> str:
    """Key order kept, no spaces, non-ASCII as itself: how a received block is stored."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer past 64 bits, or nesting orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def compact_json_bytes(value: Any) -> bytes:
    """compact_json as UTF-8, without a round trip through str (for HTTP answers)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return compact_json(value).encode()


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def event_content_hash(message_id: str, event_type: str, data_event: Any) -> str:
    """What makes two deliveries of one message_id 'the same event' (envelope ignored)."""
    content = {"message_id": message_id, "event_type": event_type, "data_event": data_event}
    try:
        text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = canonical_json(content).encode()
    return hashlib.sha256(text).hexdigest()


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON, refusing NaN, Infinity, lone surrogates and invalid UTF-8 (ValueError)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    data = raw if isinstance(raw, bytes) else raw.encode()
    if _LONG_RUN in data.translate(_DIGIT_MASK):
        value = json.loads(raw)  # exact big integers; orjson has already vetted the text
    return value
