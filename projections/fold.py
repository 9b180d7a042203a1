"""The fold of spec/views.md: registers and sets decided by stamps, never by arrival order.

An EntityState holds, per field, the winning stamp and value (registers) or the
latest add and remove stamp of each element (sets). Folding is commutative and,
given each event once, order-free: the same set of events gives the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventlog.models import DELETE_EVENTS
from eventlog.read import LogEvent
from projections.values import LIST_FIELDS, canonical_field, element_key, element_value, elements_of

Stamp = tuple[float, str]
_NO_CANDIDATE = object()


@dataclass
class EntityState:
    """One entity, identified by (merchant_id, entity_id): its merchant is part of its key."""

    entity_id: str
    merchant_id: str | None = None
    registers: dict[str, tuple[Stamp, Any]] = field(default_factory=dict)
    # field -> element key -> [latest add stamp or None, latest remove stamp or None]
    sets: dict[str, dict[str, list[Stamp | None]]] = field(default_factory=dict)
    deleted_time: float | None = None
    last_action_time: float | None = None
    event_count: int = 0
    erased_count: int = 0  # erased events (eventlog.erase) folded: they count, nothing more

    # -- reading ---------------------------------------------------------------

    def register(self, name: str) -> Any:
        held = self.registers.get(name)
        return held[1] if held else None

    def present(self, name: str) -> list[tuple[str, Stamp]]:
        """Present elements of a set field as (key, add stamp), in canonical order."""
        elements = self.sets.get(name, {})
        return [
            (key, added)
            for key, (added, removed) in sorted(elements.items())
            if added is not None and (removed is None or added > removed)
        ]

    def elements(self, name: str) -> list[Any]:
        return [element_value(key) for key, _ in self.present(name)]

    @property
    def deleted(self) -> bool:
        return self.deleted_time is not None

    @property
    def erased(self) -> bool:
        """Every event of it that the log holds was erased (spec/views.md: it answers 410)."""
        return self.event_count == 0 and self.erased_count > 0

    # -- folding ---------------------------------------------------------------

    def fold(self, event: LogEvent) -> None:
        """Fold one log event of this entity's merchant in. Each event at most once."""
        if event.erased:  # no register, no set element, no existence
            self.erased_count += 1
            return
        stamp: Stamp = event.stamp
        data = event.data_event
        is_delete = event.event_type in DELETE_EVENTS
        candidates: dict[str, Any] = {}
        for item in data.get("event_detail") or ():
            name = canonical_field(item["field_key"])
            if name in LIST_FIELDS:
                self._fold_set(name, item, stamp, is_delete)
                continue
            candidate = _register_candidate(item, is_delete)
            if candidate is not _NO_CANDIDATE:
                candidates[name] = candidate  # the last diff item of a field wins within one event
        for name, value in candidates.items():
            held = self.registers.get(name)
            if held is None or stamp > held[0]:
                self.registers[name] = (stamp, value)
        if is_delete and (self.deleted_time is None or event.action_time < self.deleted_time):
            self.deleted_time = event.action_time
        if self.last_action_time is None or event.action_time > self.last_action_time:
            self.last_action_time = event.action_time
        self.event_count += 1

    def _fold_set(self, name: str, item: dict[str, Any], stamp: Stamp, is_delete: bool) -> None:
        added: list[Any] = elements_of(item.get("add"))
        removed: list[Any] = []
        for change in item.get("change") or ():
            to = elements_of(change.get("to")) if isinstance(change, dict) else []
            before = elements_of(change.get("from")) if isinstance(change, dict) else []
            to_keys = {element_key(e) for e in to}
            added += to
            removed += [e for e in before if element_key(e) not in to_keys]
        # A delete's remove lists the last values: they count as present at the delete.
        (added if is_delete else removed).extend(elements_of(item.get("remove")))
        if not added and not removed:
            return  # a diff that names no element leaves no trace (spec: absent from extra)
        elements = self.sets.setdefault(name, {})
        for value, slot in [(v, 0) for v in added] + [(v, 1) for v in removed]:
            marks = elements.setdefault(element_key(value), [None, None])
            current = marks[slot]
            if current is None or stamp > current:
                marks[slot] = stamp

    # -- storage ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "r": {k: [list(s), v] for k, (s, v) in sorted(self.registers.items())},
            "s": {
                k: {
                    e: [list(a) if a else None, list(r) if r else None]
                    for e, (a, r) in sorted(v.items())
                }
                for k, v in sorted(self.sets.items())
            },
            "m": self.merchant_id,
            "d": self.deleted_time,
            "t": self.last_action_time,
            "n": self.event_count,
            # only when there is one: every other state's text stays as it was
            **({"x": self.erased_count} if self.erased_count else {}),
        }

    @classmethod
    def from_json(cls, entity_id: str, data: dict[str, Any]) -> EntityState:
        def stamp(raw: list[Any] | None) -> Stamp | None:
            return (raw[0], raw[1]) if raw else None

        return cls(
            entity_id=entity_id,
            registers={k: ((s[0], s[1]), v) for k, (s, v) in data["r"].items()},
            sets={
                k: {e: [stamp(a), stamp(r)] for e, (a, r) in v.items()}
                for k, v in data["s"].items()
            },
            merchant_id=data["m"],
            deleted_time=data["d"],
            last_action_time=data["t"],
            event_count=data["n"],
            erased_count=data.get("x", 0),
        )


def own_candidates(event: LogEvent, names: frozenset[str]) -> dict[str, Any]:
    """The event's own register candidates for the given fields (aliases folded, deletes too)."""
    is_delete = event.event_type in DELETE_EVENTS
    found: dict[str, Any] = {}
    for item in event.data_event.get("event_detail") or ():
        name = canonical_field(item["field_key"])
        if name in names:
            candidate = _register_candidate(item, is_delete)
            if candidate is not _NO_CANDIDATE:
                found[name] = candidate
    return found


def _register_candidate(item: dict[str, Any], is_delete: bool) -> Any:
    if change := item.get("change"):
        last = change[-1]
        return last.get("to") if isinstance(last, dict) else None
    if add := item.get("add"):
        return add[-1]
    if remove := item.get("remove"):
        return remove[-1] if is_delete else None
    return _NO_CANDIDATE
