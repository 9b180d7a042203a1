"""Applying the log to a projector: one transaction per batch, rows and checkpoint together.

The checkpoint is read inside the write transaction, so two processes (serve and
a rebuild, say) can never apply the same events twice.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from eventlog.dbapi import Connection
from eventlog.read import (
    LogEvent,
    erased_events,
    erasure_head,
    erasures_to_follow,
    read_by_entity,
    read_from,
)
from eventlog.transactions import immediate
from projections.base import EntityProjector, Projector, merchant_key
from projections.store import (
    LIVE,
    ErasureState,
    Target,
    erasure_state,
    position,
    set_erasure_state,
    set_position,
)

# Called at named points inside a batch; tests raise or SIGKILL from here.
Hook = Callable[[str], None]
STEPS = ("begun", "read", "applied", "positioned")
BATCH = 1000


def _no_hook(point: str) -> None:
    return None


# The erasure head (eventlog.read.erasure_head), read before the events: an erasure that
# ended before them has redacted them; one that ends later is folded in at the next step.
# (SharedReads hands out events read earlier only while the head is still the same.)
Batch = tuple[int, list[LogEvent]]
Reader = Callable[[Connection, int, int], Batch]


def read_batch(log: Connection, after: int, limit: int) -> Batch:
    head = erasure_head(log)
    return head, read_from(log, after, limit)


class SharedReads:
    """The events read from the log lately, handed to every projector that asks for them.

    The projectors of one process tail the log a step apart (one writes at a time), each
    reading every event: sharing what was read decodes each block once, not once per
    projector. So what is held is a window of the latest `window` events, extended in place
    as projectors ask past its end; a projector behind it is read for on its own. The log
    is append-only, so what it held after seq N never changes; only an erasure changes
    blocks in place, before its end is recorded. So the erasure head is read first at every
    ask, and the window is handed out only while the head is still the one read before its
    first events; once the head has moved it is read afresh. (Comparing with the head at
    the ask, not only when the window was read, matters: `notestore erase` may fold the
    erasure into a view from another process, moving its checkpoint into the window.)
    """

    def __init__(self, window: int = 2 * BATCH) -> None:
        self.window = window
        self.after = 0  # held: every event with after < seq <= events[-1].seq
        self.events: list[LogEvent] = []
        self.head = 0  # the erasure head, read before the events held

    def read(self, log: Connection, after: int, limit: int) -> list[LogEvent]:
        return self.read_batch(log, after, limit)[1]

    def read_batch(self, log: Connection, after: int, limit: int) -> Batch:
        head = erasure_head(log)
        held = self.events
        if head == self.head and held and self.after <= after <= held[-1].seq:
            start = bisect.bisect_right(held, after, key=_seq)
            found = held[start : start + limit]  # a copy: what is handed out never changes
            if len(found) < limit:  # read on from the log, and keep it
                more = read_from(log, held[-1].seq, limit - len(found))
                held.extend(more)
                self._trim()
                found += more
            return head, found
        found = read_from(log, after, limit)
        # a projector behind the window is read for alone: the others still share it
        if found and (head != self.head or not held or after > self.after):
            self.after, self.events, self.head = after, list(found), head
            self._trim()
        return head, found

    def _trim(self) -> None:
        """Keep the latest `window` events."""
        drop = len(self.events) - self.window
        if drop > 0:
            self.after = self.events[drop - 1].seq
            self.events = self.events[drop:]


def _seq(event: LogEvent) -> int:
    return event.seq


class NotBuilt(Exception):
    """The projector has no tables at this target yet: it must be (re)built first."""


def apply_pending(
    projector: Projector,
    views: Connection,
    log: Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
    reader: Reader = read_batch,
) -> int:
    """Inside the caller's transaction: fold the entities of erasures ended since the last
    batch again (a chunk of them), then the next batch, and move the checkpoints. Returns
    the events consumed, or 1 when there were none but erased entities are left to fold."""
    checkpoint = position(views, projector.name, target)
    if checkpoint is None:
        raise NotBuilt(projector.name)
    head, events = reader(log, checkpoint, limit)
    hook("read")
    more = follow_erasures(projector, views, log, target, head, checkpoint)
    if not events:
        return 1 if more else 0
    # an erased event (its block a redaction marker) is folded too: into nothing but a count
    relevant = [e for e in events if e.event_type in projector.event_types]
    projector.apply(views, relevant, target.suffix)
    hook("applied")
    set_position(views, projector.name, target, events[-1].seq)
    hook("positioned")
    return len(events)


# After an erasure, the entities folded again per transaction (a merchant's erasure touches
# every entity it has, and the views' write lock must not be held for all of them at once),
# found reading its erased events a page at a time (an entity of many erased events, a note
# of 20,000, is folded once for all of them, not once per page).
REFOLD_ENTITIES = 1000
ERASED_PAGE = 1000


def follow_erasures(
    projector: Projector,
    views: Connection,
    log: Connection,
    target: Target,
    head: int,
    checkpoint: int,
) -> bool:
    """An erasure is an entry read after the events it redacted (spec/views.md, "Erasure"):
    each entity it touched that this view has folded is folded again, afresh, from its events
    up to the checkpoint as the log holds them now, so the view equals a rebuild. About
    REFOLD_ENTITIES at a time, the position in the erasures' events kept between steps (an
    entity met again after it is folded again: harmless); returns whether some are left."""
    if head == 0:  # no erasure has ever ended: no read of the views' state on each batch
        return False
    state = erasure_state(views, projector.name, target)
    if state.upto is None:
        if head <= state.applied:
            return False
        state = ErasureState(state.applied, head)
    assert state.upto is not None
    if not isinstance(projector, EntityProjector) or checkpoint == 0:
        set_erasure_state(views, projector.name, target, ErasureState(state.upto))
        return False
    done_erasure, done_seq = state.done
    keys: set[tuple[str, str]] = set()
    for erasure_id in erasures_to_follow(log, state.applied, state.upto):
        if erasure_id < done_erasure:
            continue
        after = done_seq if erasure_id == done_erasure else 0
        while rows := erased_events(log, erasure_id, after, ERASED_PAGE):
            keys |= {(m, entity) for seq, m, entity in rows if entity and seq <= checkpoint}
            after = rows[-1][0]
            if len(rows) < ERASED_PAGE:
                break  # this erasure's last page
            if len(keys) >= REFOLD_ENTITIES:  # the next step goes on from here
                _refold(projector, views, log, target, keys, checkpoint)
                more = ErasureState(state.applied, state.upto, (erasure_id, after))
                set_erasure_state(views, projector.name, target, more)
                return True
    _refold(projector, views, log, target, keys, checkpoint)
    set_erasure_state(views, projector.name, target, ErasureState(state.upto))
    return False


def _refold(
    projector: EntityProjector,
    views: Connection,
    log: Connection,
    target: Target,
    keys: set[tuple[str, str]],
    checkpoint: int,
) -> None:
    touched = set(keys)
    if not touched:
        return
    events = [
        e
        for e in read_by_entity(log, sorted({entity_id for _, entity_id in touched}))
        if e.seq <= checkpoint
        and e.event_type in projector.event_types
        and (merchant_key(e.merchant_id), e.entity_id) in touched
    ]
    projector.refold(views, events, target.suffix)


def step(
    projector: Projector,
    views: Connection,
    log: Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
    reader: Reader = read_batch,
) -> int:
    """One batch in one transaction; returns how many log events it consumed."""
    with immediate(views):
        hook("begun")
        applied = apply_pending(projector, views, log, target, limit, hook, reader)
    return applied


def catch_up(
    projector: Projector,
    views: Connection,
    log: Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
) -> int:
    """Batches until the end of the log; returns the events consumed."""
    total = 0
    while applied := step(projector, views, log, target, limit, hook):
        total += applied
    return total
