"""Rebuilding a view beside the live one, then swapping it in with one transaction.

The live view keeps answering (and the live projector keeps applying) until the
swap; the swap catches up whatever arrived meanwhile before it renames.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from eventlog.dbapi import Connection
from eventlog.read import erasure_head, head_seq, iter_from
from eventlog.transactions import immediate
from projections.base import EntityProjector, Key, Projector
from projections.engine import BATCH, apply_pending, step
from projections.fold import EntityState
from projections.gc_pause import gc_paused
from projections.store import (
    LIVE,
    REBUILD,
    ErasureState,
    erasure_state,
    set_erasure_state,
    set_position,
)

Progress = Callable[[int, int], None]  # (events done, events in the log)


class RebuildSuperseded(Exception):
    """Another rebuild of the same view started meanwhile; this one stops without writing."""


def _drop(views: Connection, projector: Projector, suffix: str) -> None:
    for table in projector.tables:
        views.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


def _next_generation(views: Connection, name: str) -> int:
    row = views.execute(
        "SELECT max(generation) FROM (SELECT generation FROM projectors WHERE name = ?"
        " UNION ALL SELECT generation FROM rebuilds WHERE name = ?) AS g",
        (name, name),
    ).fetchone()
    return int(row[0] or 0) + 1


def start_rebuild(views: Connection, projector: Projector, erasures: int = 0) -> int:
    """Fresh empty tables beside the live ones (any left by a crashed rebuild are dropped).

    `erasures`: the erasure head read before the rebuild reads the log, so that an erasure
    ending later is folded in by the swap's catch-up."""
    with immediate(views):
        generation = _next_generation(views, projector.name)
        _drop(views, projector, REBUILD.suffix)
        for statement in projector.schema(REBUILD.suffix, generation):
            views.execute(statement)
        views.execute(
            "INSERT INTO rebuilds (name, checkpoint, generation, started_at) VALUES (?, 0, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET checkpoint = 0, generation = excluded.generation,"
            " started_at = excluded.started_at",
            (projector.name, generation, time.time()),
        )
        set_erasure_state(views, projector.name, REBUILD, ErasureState(erasures))
    return generation


def swap_in(
    views: Connection, log: Connection, projector: Projector, generation: int
) -> int:
    """Catch up the rebuilt tables and make them the live ones, atomically."""
    with immediate(views):
        current = views.execute(
            "SELECT generation FROM rebuilds WHERE name = ?", (projector.name,)
        ).fetchone()
        if current is None or current[0] != generation:
            raise RebuildSuperseded(f"another rebuild of {projector.name} started meanwhile")
        while apply_pending(projector, views, log, REBUILD, BATCH):
            pass
        (checkpoint,) = views.execute(
            "SELECT checkpoint FROM rebuilds WHERE name = ?", (projector.name,)
        ).fetchone()
        _drop(views, projector, "")
        for table in projector.tables:
            views.execute(f"ALTER TABLE {table}{REBUILD.suffix} RENAME TO {table}")
        views.execute(
            "INSERT INTO projectors (name, version, checkpoint, generation, built_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET version = excluded.version,"
            " checkpoint = excluded.checkpoint, generation = excluded.generation,"
            " built_at = excluded.built_at",
            (projector.name, projector.version, checkpoint, generation, time.time()),
        )
        # the catch-up above folded in every erasure end it saw, to the last chunk
        built = erasure_state(views, projector.name, REBUILD)
        set_erasure_state(views, projector.name, LIVE, ErasureState(built.applied))
        views.execute("DELETE FROM rebuilds WHERE name = ?", (projector.name,))
        views.execute("DELETE FROM projector_errors WHERE name = ?", (projector.name,))
    return int(checkpoint)


def rebuild(
    projector: Projector,
    views: Connection,
    log: Connection,
    progress: Progress | None = None,
    batch: int = 5000,
) -> int:
    """Replay the log into new tables beside the live ones, then swap; returns the checkpoint."""
    return rebuild_all([projector], views, log, progress, batch)


# Entities held in memory between writes while rebuilding: hot entities are folded many
# times but written once per flush. Bounded, so memory stays flat whatever the log size.
FLUSH_ENTITIES = 20_000
COLLECT_EVERY = 100_000  # events folded between collections while the collector is paused


def rebuild_all(
    projectors: list[Projector],
    views: Connection,
    log: Connection,
    progress: Progress | None = None,
    batch: int = 5000,
) -> int:
    """Rebuild several views in one pass over the log: each block is read and decoded once.

    Folded states are kept in memory and written (with the rebuild checkpoint, in one
    transaction) when FLUSH_ENTITIES are held or the log ends; then each view is swapped in.
    """
    erasures = erasure_head(log)  # before any event is read
    generations = {p.name: start_rebuild(views, p, erasures) for p in projectors}
    entity_projectors = [p for p in projectors if isinstance(p, EntityProjector)]
    others = [p for p in projectors if not isinstance(p, EntityProjector)]
    held: dict[str, dict[Key, EntityState]] = {p.name: {} for p in entity_projectors}
    total = head_seq(log)
    done = flushed = 0

    def flush(upto: int) -> None:
        nonlocal flushed
        with immediate(views):
            for p in entity_projectors:
                # states were folded outside this transaction: write them only if the tables
                # are still this run's, exactly as far as this run left them
                mine = views.execute(
                    "SELECT 1 FROM rebuilds WHERE name = ? AND generation = ? AND checkpoint = ?",
                    (p.name, generations[p.name], flushed),
                ).fetchone()
                if mine is None:
                    raise RebuildSuperseded(f"another rebuild of {p.name} started meanwhile")
                p.save_all(views, REBUILD.suffix, held[p.name])
                set_position(views, p.name, REBUILD, upto)
                held[p.name].clear()
        flushed = upto

    with gc_paused():
        collected = 0
        for events in iter_from(log, 0, batch, until=total):
            for p in entity_projectors:
                # an erased event (a redaction marker, eventlog.erase) folds into a count only
                relevant = [e for e in events if e.event_type in p.event_types]
                p.fold_into(views, relevant, REBUILD.suffix, held[p.name])
            done = events[-1].seq
            if sum(len(states) for states in held.values()) >= FLUSH_ENTITIES:
                flush(done)
            if done - collected >= COLLECT_EVERY:
                # The pause covers every thread of the process (the projector process's
                # runner too): clear what cycles anything left, now and then.
                gc.collect(0)
                collected = done
            if progress:
                progress(done, max(done, total))
        flush(done)
    for other in others:
        while step(other, views, log, REBUILD, batch):
            pass
    checkpoint = 0
    for projector in projectors:
        checkpoint = swap_in(views, log, projector, generations[projector.name])
    if progress:
        progress(checkpoint, checkpoint)
    return checkpoint


def needs_rebuild(views: Connection, projector: Projector) -> bool:
    """True when the stored tables are missing or were built by another version of the code."""
    row = views.execute(
        "SELECT version FROM projectors WHERE name = ?", (projector.name,)
    ).fetchone()
    return row is None or int(row[0]) != projector.version
