"""Applying the log to a projector: one transaction per batch, rows and checkpoint together.

The checkpoint is read inside the write transaction, so two processes (serve and
a rebuild, say) can never apply the same events twice.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from eventlog.dbapi import Connection
from eventlog.read import LogEvent, read_from
from eventlog.transactions import immediate
from projections.base import Projector
from projections.store import LIVE, Target, position, set_position

# Called at named points inside a batch; tests raise or SIGKILL from here.
Hook = Callable[[str], None]
STEPS = ("begun", "read", "applied", "positioned")
BATCH = 1000


def _no_hook(point: str) -> None:
    return None


Reader = Callable[[Connection, int, int], list[LogEvent]]


class SharedReads:
    """The last batch read from the log, handed to every projector that asks for it next.

    The projectors of one process tail the log in step, and two of them fold note events:
    sharing the batch reads and decodes each block once, not once per projector. The log
    is append-only, so what it held after seq N never changes; the batch is extended from
    the log when a projector asks for more than it holds.
    """

    def __init__(self) -> None:
        self.after = 0  # the batch is every event with after < seq <= events[-1].seq
        self.events: list[LogEvent] = []

    def read(self, log: Connection, after: int, limit: int) -> list[LogEvent]:
        if self.events and self.after <= after < self.events[-1].seq:
            start = bisect.bisect_right(self.events, after, key=_seq)
            found = self.events[start : start + limit]
            if len(found) < limit:
                found += read_from(log, found[-1].seq, limit - len(found))
        else:
            found = read_from(log, after, limit)
        if found:
            self.after, self.events = after, found
        return found


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
    reader: Reader = read_from,
) -> int:
    """Inside the caller's transaction: fold the next batch and move the checkpoint."""
    checkpoint = position(views, projector.name, target)
    if checkpoint is None:
        raise NotBuilt(projector.name)
    events = reader(log, checkpoint, limit)
    hook("read")
    if not events:
        return 0
    # an erased event (its block a redaction marker, eventlog.erase) folds into nothing
    relevant = [e for e in events if e.event_type in projector.event_types and not e.erased]
    projector.apply(views, relevant, target.suffix)
    hook("applied")
    set_position(views, projector.name, target, events[-1].seq)
    hook("positioned")
    return len(events)


def step(
    projector: Projector,
    views: Connection,
    log: Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
    reader: Reader = read_from,
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
