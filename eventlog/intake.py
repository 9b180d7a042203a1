"""Turn one verified request body into what the log will hold.

Pure: no I/O. The receiver and `quarantine replay` both go through here, so a
fix to validation applies to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from eventlog import chain
from eventlog.canonical import compact_json, event_content_hash, loads_strict, sha256_hex
from eventlog.models import BLOCK, Envelope, entity_kind, surely_valid_block


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
    return raw.decode("utf-8", errors="backslashreplace")


def read_body(raw: bytes, verified_app_id: str) -> Intake:
    """Validate a body whose signature verified for `verified_app_id`."""
    try:
        body = loads_strict(raw)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply to parse" if isinstance(exc, RecursionError) else str(exc)
        return Intake(rejected=[Rejected("not_json", detail, _body_text(raw), "body")])
    try:
        return _read_envelope(raw, body, verified_app_id)
    except RecursionError:  # nesting so deep that re-encoding it exhausts the stack
        detail = "nested too deeply to store block by block"
        return Intake(rejected=[Rejected("not_envelope", detail, _body_text(raw), "body")])


def _read_envelope(raw: bytes, body: Any, verified_app_id: str) -> Intake:
    try:
        envelope = Envelope.model_validate(body)
    except ValidationError as exc:
        detail = describe_validation(exc)
        return Intake(rejected=[Rejected("not_envelope", detail, _body_text(raw), "body")])
    intake = Intake(app_id=envelope.app_id, request_id=_str_or_none(envelope.request_id))
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
    for raw_block in envelope.block_event:
        outcome = read_block(raw_block)
        if isinstance(outcome, NewEvent):
            intake.events.append(outcome)
        else:
            intake.rejected.append(outcome)
    return intake


def read_block(raw_block: Any) -> NewEvent | Rejected:
    """Validate one block on its own, so one bad block does not sink its neighbours."""
    try:
        if not surely_valid_block(raw_block):
            BLOCK.validate_python(raw_block)
    except ValidationError as exc:
        message_id = raw_block.get("message_id") if isinstance(raw_block, dict) else None
        return Rejected(
            "invalid_block",
            describe_validation(exc),
            compact_json(raw_block),
            "block",
            _str_or_none(message_id),
        )
    data_event = raw_block["data_event"]
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
        merchant_id=_str_or_none(data_event.get("merchant_id")),
        action_time=float(data_event["action_time"]) + 0.0,  # -0.0 reads back as 0.0
        created_time=_number_or_none(data_event.get("created_time")),
        block=block,
        block_digest=chain.digest(block),
    )
