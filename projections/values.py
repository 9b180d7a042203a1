"""Field names and values as spec/views.md reads them: aliases, times, elements."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from eventlog.canonical import canonical_json, loads_strict

ALIASES = {"create_by": "created_by", "update_by": "updated_by", "mention": "mentions"}
LIST_FIELDS = frozenset({"attachment_ids", "file_attachment_ids", "mentions", "account_mentions"})
TIME_FIELDS = frozenset({"created_time", "updated_time"})

_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def canonical_field(field_key: str) -> str:
    return ALIASES.get(field_key, field_key)


def parse_iso(text: str) -> float | None:
    """Epoch seconds of an ISO-8601 time of the spec's form (no zone means UTC), else None."""
    m = _ISO.fullmatch(text)
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            micro,
            tzinfo=UTC,
        )
    except ValueError:
        return None
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        try:
            moment = moment - offset if sign == "+" else moment + offset
        except OverflowError:  # 0001-01-01T00:00+01:00 is before datetime's first moment
            return None
    delta = moment - _EPOCH
    return delta.days * 86400 + delta.seconds + delta.microseconds / 1e6


def to_epoch(value: Any) -> float | None:
    """A time field as float epoch seconds: numbers kept, ISO strings converted, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_iso(value)
    return None


def elements_of(value: Any) -> list[Any]:
    """Set elements of a value: list items, one level of nested lists unwrapped, nulls dropped."""
    if value is None:
        return []
    if not isinstance(value, list):
        return [value]
    found: list[Any] = []
    for item in value:
        if isinstance(item, list):
            found.extend(x for x in item if x is not None)
        elif item is not None:
            found.append(item)
    return found


def element_key(element: Any) -> str:
    """Elements are compared and ordered by their canonical JSON text."""
    if isinstance(element, str):  # the usual case: orjson writes a string exactly as json does
        return orjson.dumps(element).decode()
    return canonical_json(element)


def element_value(key: str) -> Any:
    if key[0] == '"' and "\\" not in key:  # a plain string, the usual case: no parse needed
        return key[1:-1]
    return loads_strict(key)
