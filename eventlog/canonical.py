"""Canonical JSON: one text per value, so equal content hashes equally."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, non-ASCII kept as itself (spec/views.md)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compact_json(value: Any) -> str:
    """Key order kept: how a received block is stored."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def event_content_hash(message_id: str, event_type: str, data_event: Any) -> str:
    """What makes two deliveries of one message_id 'the same event' (envelope ignored)."""
    return sha256_hex(
        canonical_json(
            {"message_id": message_id, "event_type": event_type, "data_event": data_event}
        )
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(raw: bytes | str) -> Any:
    """json.loads that refuses NaN/Infinity, which Python would otherwise accept."""
    return json.loads(raw, parse_constant=_reject_constant)
