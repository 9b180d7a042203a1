"""The storage backends the view tests run on, each as a prepared projections.storage.Storage:
SQLite (events.db and views.db under a folder) and PostgreSQL (a fresh database of the
server of tests/pg.py: the log in `public`, the views in `notestore_views`).

Bind the fixtures in a test module, as with tests/pg.py (an assignment, not an import that
ruff would report as redefined by the argument). The PostgreSQL case asks for the server's
fixture by name, so the module binds `pg_server` too:

    from tests import backends as kit

    backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

    def test_something(backend): ...

- `backends` (params "sqlite", "postgresql"): a `Backends`, whose `fresh()` gives a new
  prepared Storage each time it is entered, e.g. one per hypothesis example. The
  PostgreSQL log is append-only (its triggers refuse DELETE and TRUNCATE), so a fresh log
  is a fresh database: a copy of a template migrated once per session, dropped on leaving.
- `backend`: one fresh Storage of that backend for the test (SQLite under tmp_path/data).

A hypothesis test over `backends` runs fewer examples on PostgreSQL, where each costs a
database (`examples(backends)`; used on an inner @given function, since a decorator on the
test itself cannot see the backend):

    def test_something(backends):
        @examples(backends)
        @given(...)
        def run(...): ...

        run()

Without a PostgreSQL server the "postgresql" cases are skipped, and with CI=true they fail
(tests/pg.py), so a CI run can never pass them green by skipping.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from eventlog.pg_log import APPEND_LOCK
from projections.storage import POSTGRESQL, SQLITE, Storage
from tests import pg

BACKENDS = (SQLITE, POSTGRESQL)
pg_server = pg.pg_server
# hypothesis examples per test: a PostgreSQL example makes and drops one or two databases
# (about 0.15 s each) and talks to the server over TCP, so it costs 3-5 times a SQLite one
MAX_EXAMPLES = {SQLITE: 40, POSTGRESQL: 15}


def _prepare_template(url: str) -> None:
    """A database holding a migrated log and the views' schema with its bookkeeping."""
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage(Path(folder), url)
        storage.prepare()
        storage.views().close()


@dataclass(frozen=True)
class Backends:
    """Fresh prepared storages of one backend."""

    name: str
    server: pg.PgServer | None = None  # the PostgreSQL server, for POSTGRESQL

    @contextmanager
    def fresh(self, folder: Path | None = None) -> Iterator[Storage]:
        """A new prepared Storage: an empty log and no views yet. `folder` (default: a
        temporary one) holds its data_dir: SQLite's files, nothing on PostgreSQL."""
        with tempfile.TemporaryDirectory(prefix="notestore-backend-") as scratch:
            data = Path(folder or scratch) / "data"
            if self.server is None:
                storage = Storage(data)
                storage.prepare()
                yield storage
                return
            template = pg.template_database(self.server, "log+views", _prepare_template)
            with pg.fresh_database(self.server, template) as database:
                storage = Storage(data, database.url)
                storage.prepare()  # a no-op on the copy: it is what makes a Storage ready
                yield storage


def examples(backends: Backends, sqlite: int | None = None) -> settings:
    """The hypothesis settings of a test over `backends`: `sqlite` examples (default
    MAX_EXAMPLES) on SQLite, scaled to MAX_EXAMPLES' ratio on PostgreSQL; no deadline."""
    count = sqlite or MAX_EXAMPLES[SQLITE]
    if backends.name == POSTGRESQL:
        count = max(1, count * MAX_EXAMPLES[POSTGRESQL] // MAX_EXAMPLES[SQLITE])
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest) -> Backends:
    server = request.getfixturevalue("pg_server") if request.param == POSTGRESQL else None
    return Backends(request.param, server)


@pytest.fixture
def backend(backends: Backends, tmp_path: Path) -> Iterator[Storage]:
    with backends.fresh(tmp_path) as storage:
        yield storage


@contextmanager
def held_write_lock(storage: Storage) -> Iterator[None]:
    """Another session holds the log's write lock (SQLite's, or PostgreSQL's append lock)
    until the block ends: appends wait for it, and fail or time out meanwhile."""
    if storage.backend == SQLITE:
        conn = sqlite3.connect(storage.data_dir / "events.db", isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    assert storage.database_url
    with psycopg.connect(storage.database_url, autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s)", (APPEND_LOCK,))
        yield
