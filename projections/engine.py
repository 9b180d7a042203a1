"""Applying the log to a projector: one transaction per batch, rows and checkpoint together.

The checkpoint is read inside the write transaction, so two processes (serve and
a rebuild, say) can never apply the same events twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from eventlog.read import read_from
from eventlog.transactions import immediate
from projections.base import Projector
from projections.store import LIVE, Target, position, set_position

# Called at named points inside a batch; tests raise or SIGKILL from here.
Hook = Callable[[str], None]
STEPS = ("begun", "read", "applied", "positioned")
BATCH = 1000


def _no_hook(point: str) -> None:
    return None


class NotBuilt(Exception):
    """The projector has no tables at this target yet: it must be (re)built first."""


def apply_pending(
    projector: Projector,
    views: sqlite3.Connection,
    log: sqlite3.Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
) -> int:
    """Inside the caller's transaction: fold the next batch and move the checkpoint."""
    checkpoint = position(views, projector.name, target)
    if checkpoint is None:
        raise NotBuilt(projector.name)
    events = read_from(log, checkpoint, limit)
    hook("read")
    if not events:
        return 0
    projector.apply(
        views, [e for e in events if e.event_type in projector.event_types], target.suffix
    )
    hook("applied")
    set_position(views, projector.name, target, events[-1].seq)
    hook("positioned")
    return len(events)


def step(
    projector: Projector,
    views: sqlite3.Connection,
    log: sqlite3.Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
) -> int:
    """One batch in one transaction; returns how many log events it consumed."""
    with immediate(views):
        hook("begun")
        applied = apply_pending(projector, views, log, target, limit, hook)
    return applied


def catch_up(
    projector: Projector,
    views: sqlite3.Connection,
    log: sqlite3.Connection,
    target: Target = LIVE,
    limit: int = BATCH,
    hook: Hook = _no_hook,
) -> int:
    """Batches until the end of the log; returns the events consumed."""
    total = 0
    while applied := step(projector, views, log, target, limit, hook):
        total += applied
    return total
