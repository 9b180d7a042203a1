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

    def mentioned_in(self, text: str) -> bool:
        """For what cannot be read as blocks: whether it names this scope's merchant and one
        of its entities (an --older-than scope cannot tell, and leaves it)."""
        if self.before is not None:
            return False
        if self.merchant_id is not None and self.merchant_id not in text:
            return False
        return self.note_id is None or any(i in text for i in self.entities)


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


def redact_body(body: bytes, scopes: list[tuple[int, Scope]]) -> bytes | None:
    """The body with each block a scope covers replaced by its marker (the first scope
    covering it names the erasure); None when nothing in it is covered. A body that is not
    an envelope of blocks but names a scope's ids is replaced whole."""
    try:
        envelope = loads_strict(body)
        blocks = envelope["block_event"]
        if not isinstance(envelope, dict) or not isinstance(blocks, list):
            raise TypeError
    except (ValueError, TypeError, KeyError, RecursionError):
        text = body.decode("utf-8", "replace")
        for erasure_id, scope in scopes:
            if not is_marker(body) and scope.mentioned_in(text):
                return redacted_text(erasure_id, "body").encode()
        return None
    merchant = envelope.get("merchant_id")
    texts, changed = [], False
    for block in blocks:
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
    return ("{" + ",".join(parts) + "}").encode()


def redact_payload(
    payload: str, kind: str, scopes: list[tuple[int, Scope]], content_hash: str
) -> str | None:
    """A quarantine item's payload as a marker when a scope covers it (a block it holds, or
    the ids it names when it cannot be read); None when none does."""
    if is_marker(payload):
        return None
    block: Any = None
    if kind == "block":
        try:
            block = loads_strict(payload)
        except (ValueError, RecursionError):
            block = None
    for erasure_id, scope in scopes:
        readable = isinstance(block, dict) and isinstance(block.get("data_event"), dict)
        if scope.covers_block(block) if readable else scope.mentioned_in(payload):
            return redacted_text(erasure_id, kind, content_hash)
    return None
