"""Query parameters: parsed once, or a BadRequest naming the parameter."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from app.errors import BadRequest
from eventlog.canonical import loads_strict
from projections.values import parse_iso

MAX_ID = 128
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# No stored id holds one (intake quarantines such blocks), and PostgreSQL cannot even be
# asked about a NUL: an id with a control character is refused, not looked up.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def entity_id(value: str, name: str) -> str:
    if not value or len(value) > MAX_ID or _CONTROL.search(value):
        raise BadRequest(f"{name} must be 1 to {MAX_ID} characters without control characters")
    return value


def limit(value: str | None, default: int, maximum: int, name: str = "limit") -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= maximum:
        raise BadRequest(f"{name} must be a whole number from 1 to {maximum}")
    return int(value)


def as_of(value: str | None) -> float | None:
    """Epoch seconds, or an ISO-8601 time of the form spec/views.md allows (no zone = UTC)."""
    if value is None:
        return None
    if _NUMBER.fullmatch(value):
        return float(value)
    parsed = parse_iso(value)
    if parsed is None:
        raise BadRequest("as_of must be epoch seconds or an ISO-8601 time like 2022-11-23T10:47Z")
    return parsed


def boolean(value: str | None, name: str) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise BadRequest(f"{name} must be true or false")


def after(value: str | None) -> int:
    if value is None:
        return 0
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise BadRequest("after must be a log position (a whole number >= 0)")
    return int(value)


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


Cursor = tuple[float, str, str]  # a keyset position: (sort value, id, merchant key)


def decode_cursor(value: str | None) -> Cursor | None:
    """A keyset position, as encode_cursor made it."""
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        at, key, merchant = loads_strict(raw)  # refuses lone surrogates, which SQLite cannot bind
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise ValueError
        if not isinstance(key, str) or not isinstance(merchant, str):
            raise ValueError
        if _CONTROL.search(key) or _CONTROL.search(merchant):
            raise ValueError
        if not math.isfinite(at := float(at)):
            raise ValueError
        return at, key, merchant
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError):
        raise BadRequest("cursor is not one this server gave out") from None
