"""Helpers for view tests: a real log, appended to directly, and folded.

Every helper takes where the log and views are: a projections.storage.Storage (either
backend; tests/backends.py makes prepared ones), or a data_dir Path, which means SQLite
there (what the helpers took before there was a PostgreSQL backend).

The reference views (fold_from_scratch, fold_prefix) are folded into a scratch SQLite
views.db from the backend's own log reader, whichever the backend: the reference then never
shares a fault with the views under test, and a test comparing the two on PostgreSQL also
checks that PostgreSQL's views are row for row SQLite's for the same log.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from app.config import fingerprint
from eventlog.append import Delivery, Outcome
from eventlog.intake import read_body
from projections.base import Projector, dump_tables
from projections.engine import catch_up, step
from projections.rebuild import rebuild, start_rebuild
from projections.storage import Storage
from projections.store import REBUILD, open_views
from tests.helpers import APP_A, secret_for, signature

Dump = dict[str, list[tuple[object, ...]]]
Where = Storage | Path | str  # a Storage, or the data_dir of a SQLite one


def storage_of(where: Where) -> Storage:
    return where if isinstance(where, Storage) else Storage(Path(where))


def append_bodies(
    where: Where,
    bodies: Iterable[dict[str, Any]],
    allowed_merchants: Collection[str] | None = None,
) -> list[Outcome]:
    """Append each body as one verified request, each in its own transaction."""
    store = storage_of(where).log_store()
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
            outcomes += store.append([delivery])
        return outcomes
    finally:
        store.close()


def append_blocks(where: Where, blocks: Sequence[dict[str, Any]], per_request: int = 1) -> None:
    bodies = [
        {"app_id": APP_A, "block_event": list(blocks[i : i + per_request])}
        for i in range(0, len(blocks), per_request)
    ]
    append_bodies(where, bodies)


class Views:
    """A projector's live view over the log, where `where` keeps them."""

    def __init__(self, where: Where, projector: Projector) -> None:
        self.storage = storage_of(where)
        self.storage.prepare()
        self.projector = projector
        self.views = self.storage.views()
        self.log = self.storage.log_reader()

    def build(self) -> int:
        return rebuild(self.projector, self.views, self.log)

    def catch_up(self, limit: int = 1000) -> int:
        return catch_up(self.projector, self.views, self.log, limit=limit)

    def dump(self) -> Dump:
        return dump_tables(self.views, self.projector)

    def close(self) -> None:
        self.views.close()
        self.log.close()


def fold_from_scratch(where: Where, projector: Projector) -> Dump:
    """The view a rebuild of the whole log gives, in a scratch SQLite views.db of its own."""
    with tempfile.TemporaryDirectory() as scratch:
        views = open_views(scratch)
        log = storage_of(where).log_reader()
        try:
            rebuild(projector, views, log)
            return dump_tables(views, projector)
        finally:
            views.close()
            log.close()


def fold_prefix(where: Where, projector: Projector, upto: int) -> Dump:
    """The view of exactly the events with seq <= upto, folded into tables of its own (in a
    scratch SQLite views.db)."""
    with tempfile.TemporaryDirectory() as scratch:
        views = open_views(scratch)
        log = storage_of(where).log_reader()
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
