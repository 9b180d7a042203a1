"""What the views return: a folded EntityState rendered as spec/views.md lists it."""

from __future__ import annotations

from typing import Any

from projections.fold import EntityState
from projections.values import LIST_FIELDS, TIME_FIELDS, element_value, to_epoch

NOTE_FIELDS = (
    "description", "information", "source", "object_id", "related_to", "related_to_not_delete",
    "attachment_ids", "mentions", "account_mentions", "created_time", "created_by", "updated_by",
    "updated_time",
)  # fmt: skip
COMMENT_FIELDS = (
    "object_id", "description", "status", "file_attachment_ids", "created_by", "updated_by",
    "created_time", "updated_time", "source",
)  # fmt: skip


def _field(state: EntityState, name: str) -> Any:
    if name in LIST_FIELDS:
        return state.elements(name)
    value = state.register(name)
    return to_epoch(value) if name in TIME_FIELDS else value


def _extra(state: EntityState, own: tuple[str, ...]) -> dict[str, Any]:
    skip = {*own, "merchant_id"}
    extra: dict[str, Any] = {}
    for name in sorted({*state.registers, *state.sets} - skip):
        extra[name] = state.elements(name) if name in LIST_FIELDS else state.register(name)
    return extra


def _tail(state: EntityState, own: tuple[str, ...]) -> dict[str, Any]:
    return {
        "deleted": state.deleted,
        "deleted_time": state.deleted_time,
        "last_action_time": state.last_action_time,
        "event_count": state.event_count,
        "extra": _extra(state, own),
    }


def note_document(state: EntityState) -> dict[str, Any]:
    fields = {name: _field(state, name) for name in NOTE_FIELDS}
    info = fields["information"]
    return {
        "note_id": state.entity_id,
        "merchant_id": state.merchant_id,
        "description": fields["description"],
        "information": info,
        "type": info.get("type") if isinstance(info, dict) else None,
        "result": info.get("result") if isinstance(info, dict) else None,
        **{name: fields[name] for name in NOTE_FIELDS[2:]},
        **_tail(state, NOTE_FIELDS),
    }


def comment_document(state: EntityState) -> dict[str, Any]:
    object_id = state.register("object_id")
    return {
        "comment_id": state.entity_id,
        "note_id": object_id if isinstance(object_id, str) else None,
        "merchant_id": state.merchant_id,
        **{name: _field(state, name) for name in COMMENT_FIELDS if name != "object_id"},
        **_tail(state, COMMENT_FIELDS),
    }


def account_named(element: Any) -> str | None:
    """The account an element of mentions/account_mentions names, if any."""
    if isinstance(element, str):
        return element
    if isinstance(element, dict):
        for key in ("account_id", "id"):
            if isinstance(element.get(key), str):
                return str(element[key])
    return None


def mentioned_accounts(state: EntityState) -> dict[str, float]:
    """account id -> mentioned_at, for a note that is not deleted."""
    if state.deleted:
        return {}
    found: dict[str, tuple[float, str]] = {}
    for name in ("account_mentions", "mentions"):
        for key, added in state.present(name):
            account = account_named(element_value(key))
            if account is not None and (account not in found or added > found[account]):
                found[account] = added
    return {account: stamp[0] for account, stamp in found.items()}


def mention_item(note: dict[str, Any], mentioned_at: float) -> dict[str, Any]:
    keys = ("note_id", "merchant_id", "description", "type", "source", "object_id", "created_by")
    return {
        "note_id": note["note_id"],
        "merchant_id": note["merchant_id"],
        "mentioned_at": mentioned_at,
        **{k: note[k] for k in keys[2:]},
    }
