"""Helpers for view tests: a real log on disk, appended to directly, and folded."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from app.config import fingerprint
from eventlog.append import Delivery, Outcome, append_deliveries
from eventlog.db import LOG_FILE, connect, open_log
from eventlog.intake import read_body
from projections.base import Projector, dump_tables
from projections.engine import catch_up, step
from projections.rebuild import rebuild, start_rebuild
from projections.store import REBUILD, open_views
from tests.helpers import APP_A, secret_for, signature

Dump = dict[str, list[tuple[object, ...]]]


def append_bodies(
    data_dir: Path,
    bodies: Iterable[dict[str, Any]],
    allowed_merchants: Collection[str] | None = None,
) -> list[Outcome]:
    """Append each body as one verified request, each in its own transaction."""
    conn = open_log(data_dir)
    try:
        outcomes = []
        for body in bodies:
            raw = json.dumps(body, ensure_ascii=False).encode()
            app_id = body.get("app_id", APP_A)
            signed = signature(raw, app_id)
            key = fingerprint(secret_for(app_id))
            at = time.time()
            intake = read_body(raw, app_id, at, allowed_merchants)
            delivery = Delivery(at, app_id, key, signed, raw, intake)
            outcomes += append_deliveries(conn, [delivery])
        return outcomes
    finally:
        conn.close()


def append_blocks(data_dir: Path, blocks: Sequence[dict[str, Any]], per_request: int = 1) -> None:
    bodies = [
        {"app_id": APP_A, "block_event": list(blocks[i : i + per_request])}
        for i in range(0, len(blocks), per_request)
    ]
    append_bodies(data_dir, bodies)


class Views:
    """A projector's live view in data_dir/views.db over data_dir/events.db."""

    def __init__(self, data_dir: Path, projector: Projector) -> None:
        open_log(data_dir).close()
        self.projector = projector
        self.views = open_views(data_dir)
        self.log = connect(Path(data_dir) / LOG_FILE, readonly=True)

    def build(self) -> int:
        return rebuild(self.projector, self.views, self.log)

    def catch_up(self, limit: int = 1000) -> int:
        return catch_up(self.projector, self.views, self.log, limit=limit)

    def dump(self) -> Dump:
        return dump_tables(self.views, self.projector)

    def close(self) -> None:
        self.views.close()
        self.log.close()


def fold_from_scratch(data_dir: Path, projector: Projector) -> Dump:
    """The view a rebuild of the whole log gives, in a views.db of its own."""
    with tempfile.TemporaryDirectory() as scratch:
        views = open_views(scratch)
        log = connect(Path(data_dir) / LOG_FILE, readonly=True)
        try:
            rebuild(projector, views, log)
            return dump_tables(views, projector)
        finally:
            views.close()
            log.close()


def fold_prefix(data_dir: Path, projector: Projector, upto: int) -> Dump:
    """The view of exactly the events with seq <= upto, folded into tables of its own."""
    with tempfile.TemporaryDirectory() as scratch:
        views = open_views(scratch)
        log = connect(Path(data_dir) / LOG_FILE, readonly=True)
        try:
            start_rebuild(views, projector)
            if upto:
                step(projector, views, log, REBUILD, limit=upto)
            return dump_tables(views, projector, REBUILD.suffix)
        finally:
            views.close()
            log.close()


def docs(dump: Dump, table: str, doc_column: int) -> dict[str, Any]:
    """The JSON documents of a dumped table, by its entity id (the column after the merchant)."""
    return {row[1]: json.loads(str(row[doc_column])) for row in dump[table]}
