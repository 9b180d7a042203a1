"""The redaction marker, in one place: what an erased block, body or quarantine payload becomes.

An erased block keeps what the log needs to stay a log: message_id, event_type, the entity
ids, the merchant, action_time and the names of the fields that changed; nothing else. Its
text starts with MARKER_PREFIX followed by the erasure's id and a comma:

    { "erased": 7, "message_id": "…", "event_type": "note_update_data", "data_event": {…}}

Blocks received are stored as compact JSON (eventlog.canonical.compact_json), which never
holds a space after `{`, so no received block can start with the marker: the marker is
recognised by its first bytes (by `LogEvent.erased`, and by the database triggers that let
an erasure replace content). A request body keeps its other blocks as they are and has each
erased block replaced by the same marker text (spliced, so the marker is found in the body
too); a body that cannot be read as blocks is replaced whole by a marker.

`Scope` says which blocks an erasure (or a tombstone) covers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eventlog.canonical import compact_json, loads_strict

MARKER_PREFIX = '{ "erased": '
_ID_FIELDS = ("note_id", "comment_id", "merchant_id")


def marker_start(erasure_id: int) -> str:
    """The first characters of every marker an erasure writes."""
    return f"{MARKER_PREFIX}{erasure_id}, "


def marker_erasure(text: str | bytes) -> int | None:
    """The erasure named by the first marker in `text` (a block, a payload or a body)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    at = data.find(MARKER_PREFIX.encode())
    if at < 0:
        return None
    digits = data[at + len(MARKER_PREFIX) :].split(b",", 1)[0]
    return int(digits) if digits.isdigit() else None


def is_marker(text: str | bytes) -> bool:
    prefix = MARKER_PREFIX if isinstance(text, str) else MARKER_PREFIX.encode()
    return text.startswith(prefix)  # type: ignore[arg-type]


def _marker(erasure_id: int, rest: dict[str, Any]) -> str:
    return marker_start(erasure_id) + compact_json(rest)[1:]


def redacted_block(block: dict[str, Any], erasure_id: int) -> str:
    """The marker text standing for an erased block."""
    found = block.get("data_event")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    kept: dict[str, Any] = {k: data[k] for k in _ID_FIELDS if k in data}
    kept["action_time"] = data.get("action_time")
    details = data.get("event_detail")
    if isinstance(details, list):
        kept["event_detail"] = [
            {"field_key": d["field_key"]}
            for d in details
            if isinstance(d, dict) and "field_key" in d
        ]
    return _marker(
        erasure_id,
        {"message_id": block.get("message_id"), "event_type": block.get("event_type"),
         "data_event": kept},
    )  # fmt: skip


def redacted_text(erasure_id: int, kind: str, content_hash: str | None = None) -> str:
    """The marker standing for a whole body or quarantine payload that is erased."""
    return _marker(erasure_id, {"redacted": kind, "content_hash": content_hash})


@dataclass(frozen=True)
class Scope:
    """What an erasure covers: a merchant's note and its comments (`comments`: their ids,
    found when the erasure is recorded), a whole merchant, or events older than `before`
    (action_time, epoch seconds; optionally of one merchant)."""

    merchant_id: str | None = None
    note_id: str | None = None
    before: float | None = None
    comments: frozenset[str] = frozenset()

    @property
    def entities(self) -> frozenset[str]:
        """The ids of what a note scope erases: the note and its comments."""
        return self.comments | {self.note_id} if self.note_id is not None else frozenset()

    def covers(self, merchant: str | None, ids: tuple[Any, ...], action_time: Any) -> bool:
        """Whether an event of `merchant` about the entities `ids` at `action_time` is covered."""
        if self.merchant_id is not None and merchant != self.merchant_id:
            return False
        if self.note_id is not None and not self.entities.intersection(ids):
            return False
        if self.before is not None:
            number = isinstance(action_time, int | float) and not isinstance(action_time, bool)
            return number and action_time < self.before
        return True

    def covers_block(self, block: Any, envelope_merchant: Any = None) -> bool:
        if not isinstance(block, dict) or not isinstance(block.get("data_event"), dict):
            return False
        data = block["data_event"]
        merchant = data.get("merchant_id", envelope_merchant)
        return self.covers(merchant, block_entities(block), data.get("action_time"))

    def named_in(self, text: str) -> bool:
        """For what cannot be read as blocks: whether it names this scope's merchant and one
        of its entities exactly, each as a whole JSON string ("m1" is not named by "m10");
        an --older-than scope cannot tell, and leaves it."""
        if self.before is not None:
            return False
        if self.merchant_id is not None and not _names_string(text, self.merchant_id):
            return False
        return self.note_id is None or any(_names_string(text, i) for i in self.entities)


def _names_string(text: str, value: str) -> bool:
    """Whether `text` holds `value` as a whole JSON string (quoted, escaped either way)."""
    forms = {compact_json(value), json.dumps(value)}
    return any(form in text for form in forms)


def _strings_in(value: Any) -> Iterator[str]:
    """Every string of a parsed JSON value, keys and values."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _names_values(value: Any, scope: Scope) -> bool:
    """Whether parsed JSON that is not an envelope of blocks names the scope's merchant and
    one of its entities, each as a whole string value (never a substring of one)."""
    if scope.before is not None:
        return False
    strings = set(_strings_in(value))
    if scope.merchant_id is not None and scope.merchant_id not in strings:
        return False
    return scope.note_id is None or bool(strings & scope.entities)


def block_entities(block: dict[str, Any]) -> tuple[Any, ...]:
    """The ids a block is about: its note or comment, and for a comment the note it is on
    (the object_id of its diff: a comment's data_event names no note)."""
    data = block["data_event"]
    ids = [data.get("note_id"), data.get("comment_id")]
    if "comment" in str(block.get("event_type")):
        for item in data.get("event_detail") or ():
            if isinstance(item, dict) and item.get("field_key") == "object_id":
                for key in ("add", "change"):
                    values = item.get(key)
                    ids += (
                        [v for v in values if isinstance(v, str)]
                        if isinstance(values, list)
                        else []
                    )
    return tuple(ids)


def _is_marker_block(block: Any) -> bool:
    """A block of a body that is a marker already (read back from its text)."""
    return (
        isinstance(block, dict)
        and type(block.get("erased")) is int
        and set(block) == {"erased", "message_id", "event_type", "data_event"}
        and isinstance(block["data_event"], dict)
        and set(block["data_event"]) <= {*_ID_FIELDS, "action_time", "event_detail"}
    )


def _envelope(text: str | bytes) -> tuple[dict[str, Any] | None, Any]:
    """(the envelope, None) when `text` is an envelope of blocks; (None, the parsed JSON)
    when it is JSON of another shape; (None, None) when it cannot be parsed."""
    try:
        parsed = loads_strict(text)
    except (ValueError, TypeError, RecursionError):
        return None, None
    if isinstance(parsed, dict) and isinstance(parsed.get("block_event"), list):
        return parsed, None
    return None, parsed


def _splice(envelope: dict[str, Any], scopes: list[tuple[int, Scope]]) -> str | None:
    """The envelope's text with each block a scope covers replaced by its marker, the other
    blocks kept as they are; None when no block is covered."""
    merchant = envelope.get("merchant_id")
    texts, changed = [], False
    for block in envelope["block_event"]:
        by = next((e for e, s in scopes if s.covers_block(block, merchant)), None)
        if _is_marker_block(block):  # erased before: kept as its marker text
            rest = {k: v for k, v in block.items() if k != "erased"}
            texts.append(_marker(block["erased"], rest))
        elif by is None:
            texts.append(compact_json(block))
        else:
            texts.append(redacted_block(block, by))
            changed = True
    if not changed:
        return None
    blocks_text = "[" + ",".join(texts) + "]"
    parts = [
        f"{compact_json(k)}:{blocks_text if k == 'block_event' else compact_json(v)}"
        for k, v in envelope.items()
    ]
    return "{" + ",".join(parts) + "}"


def _whole(text: str, parsed: Any, scopes: list[tuple[int, Scope]]) -> int | None:
    """The erasure that replaces content that is not an envelope whole: JSON of another
    shape naming a scope's ids as whole string values, or text that cannot be parsed naming
    them as whole JSON strings."""
    for erasure_id, scope in scopes:
        if scope.named_in(text) and (parsed is None or _names_values(parsed, scope)):
            return erasure_id
    return None


is_marker_block = _is_marker_block
ID_FIELDS = _ID_FIELDS  # the ids a marker keeps


def redact_body(body: bytes, scopes: list[tuple[int, Scope]]) -> bytes | None:
    """The body with each block a scope covers replaced by its marker (the first scope
    covering it names the erasure); None when nothing in it is covered. A body that is not
    an envelope of blocks but names a scope's ids exactly is replaced whole."""
    if is_marker(body):
        return None
    envelope, parsed = _envelope(body)
    if envelope is not None:
        spliced = _splice(envelope, scopes)
        return None if spliced is None else spliced.encode()
    erasure_id = _whole(body.decode("utf-8", "replace"), parsed, scopes)
    return None if erasure_id is None else redacted_text(erasure_id, "body").encode()


def redact_payload(
    payload: str, kind: str, scopes: list[tuple[int, Scope]], content_hash: str
) -> str | None:
    """A quarantine item's payload with what a scope covers redacted; None when none does.
    A block is replaced whole by a marker; a body that is an envelope of blocks has only the
    covered blocks spliced out (as redact_body does: the other notes' blocks stay); anything
    else is replaced whole only when it names a scope's ids exactly."""
    if is_marker(payload):
        return None
    if kind == "block":
        try:
            block: Any = loads_strict(payload)
        except (ValueError, RecursionError):
            block = None
        if isinstance(block, dict) and isinstance(block.get("data_event"), dict):
            by = next((e for e, s in scopes if s.covers_block(block)), None)
        else:
            by = _whole(payload, block, scopes)
        return None if by is None else redacted_text(by, kind, content_hash)
    envelope, parsed = _envelope(payload)
    if envelope is not None:
        return _splice(envelope, scopes)
    by = _whole(payload, parsed, scopes)
    return None if by is None else redacted_text(by, kind, content_hash)
