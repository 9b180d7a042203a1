"""A note's timeline: its history (app.queries.history, as the API answers it), newest first,
each event's diff read field by field: added, removed, changed from -> to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from markupsafe import Markup

from eventlog.models import DELETE_EVENTS
from projections.values import LIST_FIELDS, canonical_field, element_key, elements_of


@dataclass
class Change:
    name: str
    added: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    changed: list[tuple[Any, Any]] = field(default_factory=list)
    last_values: list[Any] = field(default_factory=list)  # a delete's remove: the value before


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def field_changes(event_type: str, changes: Any) -> list[Change]:
    """The diff items of one event (its event_detail as received), one Change per field.

    List fields (spec/views.md) are shown element by element: a change from A to B adds
    the elements of B not in A and removes those of A not in B."""
    is_delete = event_type in DELETE_EVENTS
    by_field: dict[str, Change] = {}
    for item in changes if isinstance(changes, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("field_key"), str):
            continue
        name = canonical_field(item["field_key"])
        change = by_field.setdefault(name, Change(name))
        listed = name in LIST_FIELDS
        values = elements_of if listed else _items
        change.added += values(item.get("add"))
        (change.last_values if is_delete else change.removed).extend(values(item.get("remove")))
        for pair in _items(item.get("change")):
            if not isinstance(pair, dict):
                continue
            if listed:
                before, after = elements_of(pair.get("from")), elements_of(pair.get("to"))
                change.added += _missing(after, before)
                change.removed += _missing(before, after)
            else:
                change.changed.append(around_the_change(pair.get("from"), pair.get("to")))
    return [c for c in by_field.values() if c.added or c.removed or c.changed or c.last_values]


LONG, CONTEXT = 240, 60  # characters


def around_the_change(before: Any, after: Any) -> tuple[Any, Any]:
    """Two long texts cut to what differs between them, with CONTEXT characters around it
    and … where text was left out (the note as it was then shows them whole)."""
    if (
        not (isinstance(before, str) and isinstance(after, str))
        or max(len(before), len(after)) <= LONG
    ):
        return before, after
    shortest = min(len(before), len(after))
    prefix = _shared(before, after, shortest)
    suffix = _shared(before[prefix:][::-1], after[prefix:][::-1], shortest - prefix)
    start, keep_end = max(0, prefix - CONTEXT), max(0, suffix - CONTEXT)

    def cut(text: str) -> str:
        end = len(text) - keep_end
        return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")

    return cut(before), cut(after)


def _shared(one: str, other: str, most: int) -> int:
    """How many leading characters (at most `most`) the two texts share: a bisection over
    slices compared in C, not a loop over characters (500 long texts a page)."""
    low, high = 0, most  # the length shared lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if one[low:middle] == other[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _missing(elements: list[Any], other: list[Any]) -> list[Any]:
    """The elements of `elements` that `other` does not hold."""
    held = {element_key(e) for e in other}
    return [e for e in elements if element_key(e) not in held]


def shown(value: Any) -> str:
    """A value as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, ensure_ascii=False, sort_keys=True)


def readable_times(changes: list[Change]) -> list[Change]:
    """The values of the *_time fields (epoch seconds) as <time> elements, readable (UTC, and
    the viewer's zone with static/ui.js) instead of bare numbers; other values as they are."""
    from app.ui.render import iso, readable  # (render imports this module)

    def moment(value: Any) -> Any:
        at = iso(value)  # '' for what is not a time
        return Markup(f'<time datetime="{at}">{readable(value)}</time>') if at else value

    for change in changes:
        if change.name.endswith("_time"):
            change.added = [moment(v) for v in change.added]
            change.removed = [moment(v) for v in change.removed]
            change.last_values = [moment(v) for v in change.last_values]
            change.changed = [(moment(a), moment(b)) for a, b in change.changed]
    return changes


def timeline(history: dict[str, Any]) -> list[dict[str, Any]]:
    """The history's events, newest first, each with its field changes and its times and actor
    as the page shows them (made here once: a template's macro per value costs more)."""
    from app.ui.render import iso, readable  # (render imports this module)

    return [
        {
            **event,
            "diff": readable_times(field_changes(event["event_type"], event.get("changes"))),
            "at_iso": iso(event["action_time"]),
            "at_text": readable(event["action_time"]),
            "received_iso": iso(event["received_at"]),
            "received_text": readable(event["received_at"]),
            "actor_text": shown(event.get("actor")),
        }
        for event in reversed(history["events"])
    ]
