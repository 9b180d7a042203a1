"""Where the log and the views are opened (projections.storage.Storage), the views'
bookkeeping (projections.store) and PgConnection's translation of SQLite's surface
(eventlog.pg_conn), in-process on real SQLite files and the real PostgreSQL of tests/pg.py."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

from eventlog import pg_conn, pg_schema
from eventlog.db import LOG_FILE
from eventlog.pg_conn import PgConnection, translate
from eventlog.pg_log import PostgresLogStore
from eventlog.store import SQLiteLogStore
from eventlog.transactions import immediate
from projections.storage import POSTGRESQL, SQLITE, Storage, masked
from projections.store import (
    LIVE,
    REBUILD,
    VIEWS_FILE,
    VIEWS_SCHEMA,
    VIEWS_WRITE_LOCK,
    ErasureState,
    clear_error,
    erasure_state,
    last_error,
    live_row,
    open_pg_views,
    open_views,
    position,
    record_error,
    set_erasure_state,
    set_position,
)
from tests import pg

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


# --- masked URLs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app:s3cret@db.example:5433/notes",
            "postgresql://app:***@db.example:5433/notes",
        ),
        ("postgresql://app:s3cret@db.example/notes", "postgresql://app:***@db.example/notes"),
        ("postgresql://:s3cret@db/notes", "postgresql://:***@db/notes"),
        ("postgresql://app:s3cret@[::1]:5432/notes", "postgresql://app:***@[::1]:5432/notes"),
        ("postgresql://app@db:5432/notes", "postgresql://app@db:5432/notes"),
        ("postgresql://db/notes?password=s3cret", "postgresql://db/notes?password=***"),
        (
            "postgresql://db/notes?sslmode=require&password=s3cret&user=app",
            "postgresql://db/notes?sslmode=require&password=***&user=app",
        ),
        (
            "postgresql://app:pw@db/notes?xpassword=keep",
            "postgresql://app:***@db/notes?xpassword=keep",
        ),
        ("postgresql://app:pw@/notes?host=/run/pg", "postgresql://app:***@/notes?host=/run/pg"),
        ("postgresql://app:pw@[::1/notes", "postgresql://***"),
        ("postgresql://app:pw@db:port/notes", "postgresql://***"),
    ],
)
def test_masked_hides_every_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_storage_names_its_backend(tmp_path: Path) -> None:
    assert Storage(tmp_path).backend == SQLITE == "sqlite"
    remote = Storage(tmp_path, "postgresql://app:s3cret@db:5432/notes")
    assert remote.backend == POSTGRESQL == "postgresql"
    assert Storage(tmp_path, "").backend == "sqlite"


# --- Storage on SQLite -----------------------------------------------------------------


def test_prepare_on_sqlite_makes_data_dir_and_a_migrated_log(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b"
    Storage(data).prepare()
    conn = sqlite3.connect(data / LOG_FILE)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"events", "requests", "quarantine", "quarantine_replays"} <= tables


def test_the_sqlite_log_reader_cannot_write(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.prepare()
    reader = storage.log_reader()
    try:
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("CREATE TABLE x (a)")
    finally:
        reader.close()


def test_the_sqlite_views_and_log_stores(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    views = storage.views()
    try:
        assert (tmp_path / "data" / VIEWS_FILE).exists()
        assert views.execute("SELECT count(*) FROM projectors").fetchone()[0] == 0
    finally:
        views.close()
    plain, writer = storage.log_store(), storage.log_store(writer=True)
    try:
        assert isinstance(plain, SQLiteLogStore) and isinstance(writer, SQLiteLogStore)
        assert plain._checkpointer is None and writer._checkpointer is not None
        assert plain.path == tmp_path / "data" / LOG_FILE
    finally:
        plain.close()
        writer.close()


# --- Storage on PostgreSQL -------------------------------------------------------------


def test_prepare_on_postgresql_migrates_a_new_database_and_makes_data_dir(
    tmp_path: Path, pg_url: str
) -> None:
    Storage(tmp_path / "local", pg_url).prepare()
    assert (tmp_path / "local").is_dir()
    assert not (tmp_path / "local" / LOG_FILE).exists()
    with psycopg.connect(pg_url) as conn:
        assert pg_schema.version(conn) == len(pg_schema.MIGRATIONS)
    Storage(tmp_path / "local", pg_url).prepare()  # again: nothing to do, nothing fails


def test_prepare_as_the_service_role_leaves_a_current_log_alone(
    tmp_path: Path, pg_database: pg.PgDatabase
) -> None:
    """The service role has no CREATE: preparing a log that is current must not migrate."""
    service = pg_database.role("service")
    with psycopg.connect(pg_database.url, autocommit=True) as admin:
        pg_schema.migrate(admin)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(service)))
        pg_schema.grant_service(admin, service)
        admin.execute(
            sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC, {}").format(
                sql.Identifier(service)
            )
        )
    Storage(tmp_path, pg_database.url_as(service, "pw")).prepare()


def test_postgresql_reader_views_and_stores(tmp_path: Path, pg_url: str) -> None:
    storage = Storage(tmp_path, pg_url)
    storage.prepare()
    reader = storage.log_reader()
    try:
        assert isinstance(reader, PgConnection) and reader.write_lock == 0
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        reader.close()
    views = storage.views()
    try:
        assert isinstance(views, PgConnection) and views.write_lock == VIEWS_WRITE_LOCK
        assert views.execute("SELECT current_schema()").fetchone() == (VIEWS_SCHEMA,)
    finally:
        views.close()
    plain, writer = storage.log_store(), storage.log_store(writer=True)
    try:
        assert isinstance(plain, PostgresLogStore) and isinstance(writer, PostgresLogStore)
        assert (plain.pool.max_size, writer.pool.max_size) == (4, 1)
        assert plain.url == writer.url == pg_url
    finally:
        plain.close()
        writer.close()


# --- the views' bookkeeping ------------------------------------------------------------


def test_open_views_makes_the_file_with_its_pragmas_and_tables(tmp_path: Path) -> None:
    conn = open_views(tmp_path / "new" / "dir")
    try:
        assert (tmp_path / "new" / "dir" / VIEWS_FILE).exists()
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.isolation_level is None  # transactions are explicit
        columns = {
            table: [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for table in ("projectors", "rebuilds", "projector_errors")
        }
    finally:
        conn.close()
    assert columns == {
        "projectors": ["name", "version", "checkpoint", "generation", "built_at"],
        "rebuilds": ["name", "checkpoint", "generation", "started_at"],
        "projector_errors": ["name", "seq", "message_id", "error", "at"],
    }
    open_views(tmp_path / "new" / "dir").close()  # opening again keeps them


def bookkeeping_checks(conn: Any) -> None:
    """positions, rows and errors, the same on either backend."""
    with immediate(conn):
        conn.execute(
            "INSERT INTO projectors (name, version, checkpoint, generation, built_at)"
            " VALUES ('notes', 3, 10, 2, 1.5), ('other', 1, 99, 1, 2.5)"
        )
        conn.execute(
            "INSERT INTO rebuilds (name, checkpoint, generation, started_at)"
            " VALUES ('notes', 4, 3, 7.5)"
        )
    assert position(conn, "notes", LIVE) == 10
    assert position(conn, "notes", REBUILD) == 4
    assert position(conn, "missing", LIVE) is None
    set_position(conn, "notes", LIVE, 12)
    set_position(conn, "notes", REBUILD, 6)
    assert (position(conn, "notes", LIVE), position(conn, "notes", REBUILD)) == (12, 6)
    assert position(conn, "other", LIVE) == 99  # only the named projector moved
    row = live_row(conn, "notes")
    assert row is not None
    assert (row.name, row.version, row.checkpoint, row.generation, row.built_at) == (
        "notes", 3, 12, 2, 1.5,
    )  # fmt: skip
    assert live_row(conn, "missing") is None

    assert last_error(conn, "notes") is None
    record_error(conn, "notes", 5, "m-5", "boom")
    first = last_error(conn, "notes")
    assert first is not None and (first.seq, first.message_id, first.error) == (5, "m-5", "boom")
    record_error(conn, "notes", None, None, "again")
    second = last_error(conn, "notes")
    assert second is not None
    assert (second.seq, second.message_id, second.error) == (None, None, "again")
    assert second.at >= first.at
    record_error(conn, "other", 1, "m-1", "elsewhere")
    clear_error(conn, "notes")
    assert last_error(conn, "notes") is None
    assert last_error(conn, "other") is not None

    # how far each target has folded in the erasures' ends
    assert erasure_state(conn, "notes", LIVE) == ErasureState()
    set_erasure_state(conn, "notes", LIVE, ErasureState(3, 7, (2, 5)))
    set_erasure_state(conn, "notes", REBUILD, ErasureState(1))
    assert erasure_state(conn, "notes", LIVE) == ErasureState(3, 7, (2, 5))
    assert erasure_state(conn, "notes", REBUILD) == ErasureState(1, None, (0, 0))
    assert erasure_state(conn, "other", LIVE) == ErasureState()
    set_erasure_state(conn, "notes", LIVE, ErasureState(7))  # the range done
    assert erasure_state(conn, "notes", LIVE) == ErasureState(7, None, (0, 0))
    conn.execute(
        "INSERT INTO erasure_positions (positions, name, applied) VALUES ('projectors', 'x', 4)"
    )
    assert erasure_state(conn, "x", LIVE) == ErasureState(4, None, (0, 0))  # NULLs read as 0


def test_bookkeeping_on_sqlite(tmp_path: Path) -> None:
    conn = open_views(tmp_path)
    try:
        bookkeeping_checks(conn)
        assert LIVE.suffix == "" and REBUILD.suffix == "__new"
    finally:
        conn.close()


def test_bookkeeping_on_postgresql(pg_url: str) -> None:
    conn = open_pg_views(pg_url)
    try:
        bookkeeping_checks(conn)
    finally:
        conn.close()


def test_open_pg_views_makes_its_schema_once_and_a_second_open_reuses_it(pg_url: str) -> None:
    first = open_pg_views(pg_url)
    try:
        assert first.write_lock == VIEWS_WRITE_LOCK == 0x6E6F7465_76696577
        assert first.execute("SELECT current_schema()").fetchone() == (VIEWS_SCHEMA,)
        assert not first.in_transaction
        first.execute("INSERT INTO projectors VALUES ('n', 1, 2, 3, 4.0)")
    finally:
        first.close()
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
            (VIEWS_SCHEMA,),
        ).fetchall()
        assert [t[0] for t in tables] == [
            "erasure_positions",
            "projector_errors",
            "projectors",
            "rebuilds",
        ]
        assert conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'projectors'"
            " AND table_schema <> %s",
            (VIEWS_SCHEMA,),
        ).fetchone() == (0,)
        kinds = conn.execute(
            "SELECT column_name, data_type, collation_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'projectors' ORDER BY ordinal_position",
            (VIEWS_SCHEMA,),
        ).fetchall()
    assert kinds == [
        ("name", "text", "C"),
        ("version", "bigint", None),
        ("checkpoint", "bigint", None),
        ("generation", "bigint", None),
        ("built_at", "double precision", None),
    ]
    again = open_pg_views(pg_url)
    try:
        assert again.execute("SELECT name FROM projectors").fetchall() == [("n",)]
    finally:
        again.close()


def test_a_reader_opening_made_views_never_waits_for_a_writers_lock(pg_url: str) -> None:
    open_pg_views(pg_url).close()  # made
    writer = open_pg_views(pg_url)
    opened: list[PgConnection] = []
    try:
        writer.execute("BEGIN IMMEDIATE")  # a projector's write transaction, held
        reader = threading.Thread(target=lambda: opened.append(open_pg_views(pg_url)))
        reader.start()
        reader.join(timeout=10)
        done_while_held = bool(opened)
        writer.execute("ROLLBACK")
        reader.join(timeout=30)
    finally:
        writer.close()
        for conn in opened:
            conn.close()
    assert done_while_held


def test_open_pg_views_with_the_schema_but_not_the_tables(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(VIEWS_SCHEMA)))
    views = open_pg_views(pg_url)
    try:
        assert views.execute("SELECT count(*) FROM projector_errors").fetchone() == (0,)
    finally:
        views.close()


def test_open_pg_views_closes_its_connection_when_it_fails(pg_database: pg.PgDatabase) -> None:
    """A role that may not create the schema: the error surfaces, no connection is left."""
    role = pg_database.role("nocreate")
    with psycopg.connect(pg_database.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(pg_database.name)
            )
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        open_pg_views(pg_database.url_as(role, "pw"))
    with psycopg.connect(pg_database.url) as admin:
        left = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
        ).fetchone()
    assert left == (0,)


# --- PgConnection ----------------------------------------------------------------------


def test_translate_creates_tables_as_postgresql_types_them() -> None:
    assert translate(
        "  create table t (a INTEGER, b REAL, c TEXT, INTEGERS TEXTUAL) WITHOUT ROWID", False
    ) == ('  create table t (a BIGINT, b DOUBLE PRECISION, c TEXT COLLATE "C", INTEGERS TEXTUAL)')
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE 'x%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%'"
    )
    assert translate("SELECT 'x%' -- INTEGER", False) == "SELECT 'x%' -- INTEGER"
    assert translate("INSERT INTO t VALUES (?) -- REAL ) WITHOUT ROWID") == (
        "INSERT INTO t VALUES (%s) -- REAL ) WITHOUT ROWID"
    )


def test_pg_connection_runs_sqlite_sql(pg_url: str) -> None:
    conn = PgConnection.connect(pg_url, write_lock=4242)
    try:
        assert conn.raw.autocommit and conn.backend == "postgresql"
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a%"), (2, "b")])
        conn.executemany("INSERT INTO t VALUES (?, ?)", [])
        conn.executemany("INSERT INTO t VALUES (?, ?)", iter([(3, "c")]))
        assert conn.execute("SELECT v FROM t WHERE v LIKE 'a%'").fetchall() == [("a%",)]
        # a statement without parameters is sent as written: no % doubled, no ? replaced
        assert conn.execute("SELECT 'a%', '?'").fetchone() == ("a%", "?")
        assert conn.execute("SELECT id FROM t WHERE v = ? OR id = ?", ("b", 3)).fetchall() == [
            (2,),
            (3,),
        ]
        assert not conn.in_transaction
        conn.execute("BEGIN IMMEDIATE")
        assert conn.in_transaction
        with psycopg.connect(pg_url) as other:
            held = other.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
                " AND granted"
            ).fetchone()
        assert held == (1,)
        conn.execute("INSERT INTO t VALUES (?, ?)", (4, "d"))
        conn.execute("ROLLBACK")
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
        assert not conn.broken
    finally:
        conn.close()
    assert conn.broken


def test_pg_connection_search_path(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute('CREATE SCHEMA "odd schema"')
        admin.execute('CREATE TABLE "odd schema".here (x bigint)')
    conn = PgConnection.connect(pg_url, write_lock=1, search_path="odd schema")
    try:
        assert conn.execute("SELECT count(*) FROM here").fetchone() == (0,)
    finally:
        conn.close()
    plain = PgConnection(psycopg.connect(pg_url), write_lock=7)
    try:
        assert plain.raw.autocommit and plain.write_lock == 7
        assert plain.execute("SELECT current_schema()").fetchone() == ("public",)
    finally:
        plain.close()


def test_a_raw_connection_is_in_autocommit_and_leaves_no_transaction_open(pg_url: str) -> None:
    """pg_conn.connect is also used bare (projections.process: the projector lease, LISTEN):
    outside autocommit, its first statement would open a transaction that the server's
    idle_in_transaction_session_timeout ends, and a LISTEN would wait for a COMMIT."""
    conn = pg_conn.connect(pg_url)
    try:
        assert conn.autocommit
        conn.execute("LISTEN mutants_probe")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("NOTIFY mutants_probe, 'hello'")
        assert [n.payload for n in conn.notifies(timeout=2, stop_after=1)] == ["hello"]
    finally:
        conn.close()


def test_the_views_file_can_be_used_from_another_thread(tmp_path: Path) -> None:
    """The service hands the views' connection to worker threads (asyncio.to_thread)."""
    conn = open_views(tmp_path)
    found: list[Any] = []
    try:
        worker = threading.Thread(
            target=lambda: found.append(conn.execute("SELECT count(*) FROM projectors").fetchone())
        )
        worker.start()
        worker.join()
        assert found == [(0,)]
    finally:
        conn.close()
