"""Turn one verified request body into what the log will hold.

Pure: no I/O. The receiver and `quarantine replay` both go through here, so a
fix to validation applies to both.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from eventlog import chain
from eventlog.canonical import compact_json, event_content_hash, loads_strict, sha256_hex
from eventlog.models import BLOCK, Envelope, entity_kind, surely_valid_block

MAX_DEPTH = 64  # deeper blocks are quarantined: reading them back must never exhaust the stack
EARLIEST_ACTION_TIME = 946_684_800.0  # 2000-01-01T00:00Z
MAX_AHEAD_S = 86_400.0  # an action_time over a day after receipt is a clock error, not an event
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ACCOUNT_FIELDS = frozenset({"mentions", "mention", "account_mentions"})
_CONTAINERS = (dict, list)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A block that passed validation, with the columns the log indexes."""

    message_id: str
    event_type: str
    content_hash: str
    entity: str | None
    entity_id: str | None
    note_id: str | None
    merchant_id: str | None
    action_time: float
    created_time: float | None
    block: str
    block_digest: str  # for the hash chain, computed here rather than in the writer


@dataclass(frozen=True, slots=True)
class Rejected:
    """Something verified but not acceptable: kept in quarantine with the reason."""

    reason: str
    detail: str
    payload: str  # the block's JSON, or the whole body as text
    kind: str  # "block" or "body"
    message_id: str | None = None

    @property
    def content_hash(self) -> str:
        return sha256_hex(f"{self.kind}\n{self.payload}")


@dataclass(slots=True)
class Intake:
    app_id: str | None = None
    request_id: str | None = None
    events: list[NewEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # the merchants the app could speak for when the body was read (None: any): the spool
    # keeps them, so a delivery read again later is judged as it was at receipt
    allowed_merchants: Collection[str] | None = None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) + 0.0  # -0.0 would read back from SQLite as 0.0 and break the chain


def describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "block"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _body_text(raw: bytes) -> str:
    """A body as quarantine text: bytes that are not UTF-8 as `\\xNN`, and NUL as `\\x00` too.

    (PostgreSQL's text cannot hold NUL; both backends keep the same text. The raw body
    itself is kept exactly, as bytes, with its request.)
    """
    return raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


@dataclass(frozen=True, slots=True)
class Context:
    """What a block is judged against besides itself: its envelope, its app, its receipt."""

    received_at: float
    envelope_merchant: str | None = None
    allowed_merchants: Collection[str] | None = None  # None: the app is bound to no merchant
    shallow: bool = False  # True: the body is known to nest no deeper than MAX_DEPTH


def read_body(
    raw: bytes,
    verified_app_id: str,
    received_at: float | None = None,
    allowed_merchants: Collection[str] | None = None,
) -> Intake:
    """Validate a body whose signature verified for `verified_app_id`.

    `received_at` (default: now) bounds a plausible action_time; `allowed_merchants`
    are those an app bound in the config may speak for (None: any).
    """
    intake = _read(raw, verified_app_id, received_at, allowed_merchants)
    intake.allowed_merchants = allowed_merchants
    return intake


def _read(
    raw: bytes,
    verified_app_id: str,
    received_at: float | None,
    allowed_merchants: Collection[str] | None,
) -> Intake:
    at = time.time() if received_at is None else received_at
    try:
        body = loads_strict(raw)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply to parse" if isinstance(exc, RecursionError) else str(exc)
        return Intake(rejected=[Rejected("not_json", detail, _body_text(raw), "body")])
    try:
        return _read_envelope(raw, body, verified_app_id, at, allowed_merchants)
    except RecursionError:  # nesting so deep that re-encoding it exhausts the stack
        detail = "nested too deeply to store block by block"
        return Intake(rejected=[Rejected("not_envelope", detail, _body_text(raw), "body")])


def _read_envelope(
    raw: bytes,
    body: Any,
    verified_app_id: str,
    received_at: float,
    allowed_merchants: Collection[str] | None,
) -> Intake:
    try:
        envelope = Envelope.model_validate(body)
    except ValidationError as exc:
        detail = describe_validation(exc)
        return Intake(rejected=[Rejected("not_envelope", detail, _body_text(raw), "body")])
    intake = Intake(app_id=envelope.app_id, request_id=_plain_text(envelope.request_id))
    if envelope.app_id is not None and envelope.app_id != verified_app_id:
        detail = f"signed with the secret of app {verified_app_id} but names app {envelope.app_id}"
        intake.rejected.append(Rejected("app_mismatch", detail, _body_text(raw), "body"))
        return intake
    intake.app_id = verified_app_id
    if not envelope.block_event:
        intake.rejected.append(
            Rejected("no_blocks", "block_event is empty", _body_text(raw), "body")
        )
        return intake
    context = Context(
        received_at, envelope_merchant(body), allowed_merchants, shallow=surely_shallow(raw)
    )
    for raw_block in envelope.block_event:
        outcome = read_block(raw_block, context)
        if isinstance(outcome, NewEvent):
            intake.events.append(outcome)
        else:
            intake.rejected.append(outcome)
    return intake


def envelope_merchant(body: Any) -> str | None:
    """The envelope's merchant_id when it is a usable id, else None."""
    merchant = body.get("merchant_id") if isinstance(body, dict) else None
    return merchant if _usable_id(merchant) else None


def _usable_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128 and not _CONTROL.search(value)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists and objects nest deeper than `limit` (the block itself is level 1).

    Recursion goes `limit` levels down at most, however deep a hostile value is.
    """
    kind = type(value)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    if limit == 0:
        return True
    for child in value:  # noqa: SIM110 (a plain loop: a third of the time of any() here)
        if type(child) in _CONTAINERS and too_deep(child, limit - 1):
            return True
    return False


def surely_shallow(raw: bytes) -> bool:
    """True when no value in the JSON text `raw` can nest deeper than MAX_DEPTH.

    Every list and object opens with `[` or `{` (a string holding one only adds to the
    count), so a text with at most MAX_DEPTH of them holds no deeper nesting. Counting
    bytes costs next to nothing beside walking each block; most bodies pass.
    """
    return raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH


def _bad_ids(raw_block: dict[str, Any]) -> str | None:
    """Why the block's ids cannot be ids (control characters, NUL included), else None."""
    data = raw_block["data_event"]
    named = [("message_id", raw_block["message_id"])]
    if data.get("merchant_id") is not None:
        named.append(("data_event.merchant_id", data["merchant_id"]))
    # note_id and comment_id are required strings for the known types; other types may
    # carry anything there, and only a string is taken as an id
    named += [(f"data_event.{k}", data[k]) for k in ("note_id", "comment_id") if k in data
              and isinstance(data[k], str)]  # fmt: skip
    for where, value in named:
        if not _usable_id(value):
            return f"{where}: must be a string of 1 to 128 characters without control characters"
    for item in data.get("event_detail") or ():
        if item["field_key"] in _ACCOUNT_FIELDS and _holds_control(item):
            return f"event_detail.{item['field_key']}: an account id holds a control character"
    return None


def _holds_control(item: dict[str, Any]) -> bool:
    """Whether a diff item's values (where account ids are) hold a control character."""
    return any(_control_in(item.get(key)) for key in ("add", "change", "remove"))


def _control_in(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return _CONTROL.search(value) is not None
    if kind is list:
        return any(_control_in(v) for v in value)
    if kind is dict:
        return any(_control_in(v) for v in value.values())
    return False


def _rejected(reason: str, detail: str, raw_block: Any) -> Rejected:
    message_id = raw_block.get("message_id") if isinstance(raw_block, dict) else None
    return Rejected(reason, detail, compact_json(raw_block), "block", _plain_text(message_id))


def _plain_text(value: Any) -> str | None:
    """A string kept in a column of its own, if it holds no control character (a NUL cannot
    be stored as text on PostgreSQL); the body or block keeps it either way."""
    return value if isinstance(value, str) and not _CONTROL.search(value) else None


def read_block(raw_block: Any, context: Context) -> NewEvent | Rejected:
    """Validate one block on its own, so one bad block does not sink its neighbours."""
    if not context.shallow and too_deep(raw_block):
        detail = f"lists and objects nest deeper than {MAX_DEPTH} levels"
        return _rejected("too_deep", detail, raw_block)
    try:
        if not surely_valid_block(raw_block):
            BLOCK.validate_python(raw_block)
    except ValidationError as exc:
        return _rejected("invalid_block", describe_validation(exc), raw_block)
    if bad := _bad_ids(raw_block):
        return _rejected("invalid_block", bad, raw_block)
    data_event = raw_block["data_event"]
    action_time = float(data_event["action_time"]) + 0.0  # -0.0 reads back as 0.0
    if not EARLIEST_ACTION_TIME <= action_time <= context.received_at + MAX_AHEAD_S:
        detail = (
            f"action_time {action_time!r} is before 2000-01-01 or more than"
            f" {MAX_AHEAD_S:.0f} s after receipt ({context.received_at!r})"
        )
        return _rejected("implausible_time", detail, raw_block)
    merchant = data_event.get("merchant_id")
    if merchant is None:
        merchant = context.envelope_merchant
    elif context.envelope_merchant is not None and merchant != context.envelope_merchant:
        detail = f"block names merchant {merchant} but its envelope {context.envelope_merchant}"
        return _rejected("merchant_mismatch", detail, raw_block)
    allowed = context.allowed_merchants
    if allowed is not None and merchant not in allowed:
        detail = f"the app may speak only for {', '.join(sorted(allowed))}, not {merchant}"
        return _rejected("merchant_not_allowed", detail, raw_block)
    event_type = raw_block["event_type"]
    block = compact_json(raw_block)
    kind = entity_kind(event_type)
    return NewEvent(
        message_id=raw_block["message_id"],
        event_type=event_type,
        content_hash=event_content_hash(raw_block["message_id"], event_type, data_event),
        entity=kind,
        entity_id=data_event[f"{kind}_id"] if kind else None,
        note_id=_str_or_none(data_event.get("note_id")),
        merchant_id=merchant,
        action_time=action_time,
        created_time=_number_or_none(data_event.get("created_time")),
        block=block,
        block_digest=chain.digest(block),
    )
