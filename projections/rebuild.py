"""Rebuilding a view beside the live one, then swapping it in with one transaction.

The live view keeps answering (and the live projector keeps applying) until the
swap; the swap catches up whatever arrived meanwhile before it renames.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from eventlog.read import head_seq
from projections.base import Projector
from projections.engine import BATCH, apply_pending, step
from projections.store import REBUILD

Progress = Callable[[int, int], None]  # (events done, events in the log)


def _drop(views: sqlite3.Connection, projector: Projector, suffix: str) -> None:
    for table in projector.tables:
        views.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


def _next_generation(views: sqlite3.Connection, name: str) -> int:
    row = views.execute(
        "SELECT max(generation) FROM (SELECT generation FROM projectors WHERE name = ?"
        " UNION ALL SELECT generation FROM rebuilds WHERE name = ?)",
        (name, name),
    ).fetchone()
    return int(row[0] or 0) + 1


def start_rebuild(views: sqlite3.Connection, projector: Projector) -> int:
    """Fresh empty tables beside the live ones (any left by a crashed rebuild are dropped)."""
    views.execute("BEGIN IMMEDIATE")
    try:
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
        views.execute("COMMIT")
    except BaseException:
        if views.in_transaction:
            views.execute("ROLLBACK")
        raise
    return generation


def swap_in(views: sqlite3.Connection, log: sqlite3.Connection, projector: Projector) -> int:
    """Catch up the rebuilt tables and make them the live ones, atomically."""
    views.execute("BEGIN IMMEDIATE")
    try:
        while apply_pending(projector, views, log, REBUILD, BATCH):
            pass
        checkpoint, generation = views.execute(
            "SELECT checkpoint, generation FROM rebuilds WHERE name = ?", (projector.name,)
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
        views.execute("DELETE FROM rebuilds WHERE name = ?", (projector.name,))
        views.execute("COMMIT")
    except BaseException:
        if views.in_transaction:
            views.execute("ROLLBACK")
        raise
    return int(checkpoint)


def rebuild(
    projector: Projector,
    views: sqlite3.Connection,
    log: sqlite3.Connection,
    progress: Progress | None = None,
    batch: int = 5000,
) -> int:
    """Replay the log into new tables in short transactions, then swap; returns the checkpoint."""
    start_rebuild(views, projector)
    done = 0
    while applied := step(projector, views, log, REBUILD, batch):
        done += applied
        if progress:
            progress(done, max(done, head_seq(log)))
    checkpoint = swap_in(views, log, projector)
    if progress:
        progress(checkpoint, checkpoint)
    return checkpoint


def needs_rebuild(views: sqlite3.Connection, projector: Projector) -> bool:
    """True when the stored tables are missing or were built by another version of the code."""
    row = views.execute(
        "SELECT version FROM projectors WHERE name = ?", (projector.name,)
    ).fetchone()
    return row is None or int(row[0]) != projector.version
