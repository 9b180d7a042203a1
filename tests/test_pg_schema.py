"""The log's schema on a real PostgreSQL: migrations, exact bytes, append-only, the two roles.

Also the test server's own contract: skipped without a server locally, failed with CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from eventlog import pg_schema
from tests import pg
from tests.pg import PgDatabase

# the fixtures of tests/pg.py, used by this module
pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"data":[{"text":"a\\u0000b"}]}\x00\xff raw NUL and a byte that is not UTF-8'
BLOCK = '{"message_id":"m-1","text":"a\\u0000b","nested":{"v":"\\u0000"}}'

LATEST = 5  # the schema's steps: 1 the log, 2 requests by receipt time (the spool), 3 erasure,
# 4 the erasure's UPDATE tightened (digest, exact ids, no second redaction), 5 erasure_ends
APPEND_ONLY = (*pg_schema.LOG_TABLES, *pg_schema.ERASURE_TABLES, "erasure_ends")
STEPS = [(n,) for n in range(1, LATEST + 1)]


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def insert_one_of_each(conn: psycopg.Connection, n: int = 1) -> None:
    conn.execute(
        "INSERT INTO requests (id, received_at, app_id, secret_fingerprint, signature,"
        " request_id, body, hash) VALUES (%s, 1700000000.25, 'app', 'fp', 'sig', 'r', %s, 'h')",
        (n, BODY),
    )
    conn.execute(
        "INSERT INTO events (seq, message_id, content_hash, event_type, entity, entity_id,"
        " note_id, merchant_id, app_id, request_id, request_ref, action_time, created_time,"
        " received_at, block, hash) VALUES (%s, %s, 'c', 'note_create', 'note', 'e', 'n', 'm',"
        " 'app', 'r', %s, 1.5, NULL, 1700000000.25, %s, 'h')",
        (n, f"m-{n}", n, BLOCK),
    )
    quarantine_id = conn.execute(
        "INSERT INTO quarantine (content_hash, reason, detail, kind, message_id, payload,"
        " request_ref, received_at) VALUES (%s, 'not_json', 'd', 'body', NULL, %s, %s, 2.0)"
        " RETURNING id",
        (f"q-{n}", BLOCK, n),
    ).fetchone()
    assert quarantine_id is not None
    conn.execute(
        "INSERT INTO quarantine_replays (quarantine_id, replayed_at, outcome, detail)"
        " VALUES (%s, 3.0, 'still_rejected', 'd')",
        (quarantine_id[0],),
    )


def everything(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table))
        ).fetchall()
        for table in pg_schema.LOG_TABLES
    }


def schema_objects(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT 'table', relname, relkind::text FROM pg_class"
        "  WHERE relnamespace = 'public'::regnamespace"
        " UNION ALL SELECT 'trigger', tgname, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal"
        " UNION ALL SELECT 'function', proname, '' FROM pg_proc"
        "  WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2"
    ).fetchall()


# --- the test server -------------------------------------------------------------------


def test_each_test_has_a_fresh_empty_database(pg_database: PgDatabase) -> None:
    with connect(pg_database.url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name == (pg_database.name,)
        assert conn.execute("SELECT to_regclass('public.events')").fetchone() == (None,)
        if pg_database.server.started_here:  # a cluster of ours listens on loopback only
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW server_version_num").fetchone()[0] >= "150000"


TINY_TEST = """
from tests import pg

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


def test_needs_postgres(pg_url):
    assert pg_url
"""


@pytest.mark.parametrize(
    "impossible",
    [
        pytest.param({"NOTESTORE_PG_BIN": "{empty}"}, id="no-binaries"),
        pytest.param(
            {"NOTESTORE_TEST_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none"},
            id="unreachable-url",
        ),
    ],
)
@pytest.mark.parametrize("ci", [None, "true"])
def test_no_server_skips_locally_and_fails_on_ci(
    tmp_path: Path, impossible: dict[str, str], ci: str | None
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_tiny.py").write_text(TINY_TEST)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "NOTESTORE_PG_BIN", "NOTESTORE_TEST_DATABASE_URL", "PYTEST_ADDOPTS")
    }
    env.update({k: v.format(empty=tmp_path / "empty") for k, v in impossible.items()})
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "test_tiny.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert "PostgreSQL is not available" in out, out
    assert ("NOTESTORE_PG_BIN" in out) == ("NOTESTORE_PG_BIN" in impossible), out
    assert "secret" not in out, out  # the URL's password is masked
    if ci is None:
        assert done.returncode == 0, out
        assert "1 skipped" in out, out
    else:
        assert done.returncode == 1, out
        assert "1 error" in out, out
        assert "CI=true: the PostgreSQL tests must run" in out, out


# --- migrations --------------------------------------------------------------------------


def test_migrate_twice_changes_nothing_the_second_time(pg_url: str) -> None:
    with connect(pg_url) as conn:
        assert pg_schema.version(conn) == 0
        assert pg_schema.migrate(conn) == len(pg_schema.MIGRATIONS) == LATEST
        first = schema_objects(conn)
        insert_one_of_each(conn)
        rows = everything(conn)
        assert pg_schema.migrate(conn) == LATEST
        assert schema_objects(conn) == first
        assert everything(conn) == rows
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == STEPS
        assert pg_schema.version(conn) == LATEST
    tables = {name for kind, name, relkind in first if kind == "table" and relkind == "r"}
    assert tables == {*APPEND_ONLY, "schema_migrations"}
    triggers = {(name, enabled) for kind, name, enabled in first if kind == "trigger"}
    assert triggers == {  # ALWAYS
        *((f"{t}_append_only", "A") for t in APPEND_ONLY),
        *((f"{t}_erasure_only", "A") for t in ("events", "requests", "quarantine")),
    }


def test_concurrent_migrations_apply_each_step_once(pg_url: str) -> None:
    results: list[object] = []
    start = threading.Barrier(3)

    def run() -> None:
        with connect(pg_url) as conn:
            start.wait()
            try:
                results.append(pg_schema.migrate(conn))
            except Exception as exc:  # reported by the assertion below
                results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [LATEST] * 3
    with connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == STEPS


def test_migrate_refuses_a_connection_inside_a_transaction(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:  # not autocommit: the SELECT opens a transaction
        conn.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="inside a transaction"):
            pg_schema.migrate(conn)


# --- exact bytes and text ----------------------------------------------------------------


def test_bodies_and_blocks_holding_nul_read_back_exactly(pg_url: str) -> None:
    with connect(pg_url) as conn:
        pg_schema.migrate(conn)
        insert_one_of_each(conn)
        body, received_at = conn.execute("SELECT body, received_at FROM requests").fetchone()
        assert body == BODY and b"\x00" in body and b"\xff" in body
        assert received_at == 1700000000.25
        block, created = conn.execute("SELECT block, created_time FROM events").fetchone()
        assert block == BLOCK and "\\u0000" in block
        assert created is None
        assert conn.execute("SELECT payload FROM quarantine").fetchone() == (BLOCK,)
        # text keeps JSON's escape as six characters; jsonb would have refused it
        assert conn.execute("SELECT length(block) FROM events").fetchone() == (len(BLOCK),)
        with pytest.raises(errors.UntranslatableCharacter):
            conn.execute("SELECT %s::text::jsonb", (BLOCK,))
        # and a raw NUL character cannot go in a text column at all: the appender must
        # store such text escaped (or as bytes), which is why bodies are bytea
        with pytest.raises(psycopg.DataError):
            conn.execute("SELECT %s::text", ("a\x00b",))


# --- append-only, and the two roles -------------------------------------------------------


@dataclass
class Log:
    admin_url: str
    owner_url: str
    service_url: str
    owner: str
    service: str


@pytest.fixture
def log(pg_database: PgDatabase) -> Iterator[Log]:
    """A migrated log with one row in each table, its owner and its service role."""
    owner, service = pg_database.role("owner"), pg_database.role("service")
    with connect(pg_database.url) as admin:
        pg_schema.create_roles(admin, owner, service, "service-pw", owner_password="owner-pw")
    owner_url = pg_database.url_as(owner, "owner-pw")
    service_url = pg_database.url_as(service, "service-pw")
    with connect(owner_url) as conn:
        pg_schema.migrate(conn, service=service)
    with connect(service_url) as conn:
        insert_one_of_each(conn)
    yield Log(pg_database.url, owner_url, service_url, owner, service)


CHANGES = {
    "update": "UPDATE {table} SET {column} = {column}",
    "update-nothing": "UPDATE {table} SET {column} = {column} WHERE false",
    "delete": "DELETE FROM {table}",
    "truncate": "TRUNCATE {table} CASCADE",
    "upsert": "INSERT INTO {table} SELECT * FROM {table} ON CONFLICT ({column}) DO UPDATE"
    " SET {column} = excluded.{column}",
}
KEYS = {"requests": "id", "events": "seq", "quarantine": "id", "quarantine_replays": "id"}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("table", pg_schema.LOG_TABLES)
def test_the_log_refuses_changes_from_its_owner_and_a_superuser(
    log: Log, table: str, change: str
) -> None:
    statement = CHANGES[change].format(table=table, column=KEYS[table])
    for url in (log.owner_url, log.admin_url):
        with connect(url) as conn:
            if url == log.admin_url:  # a superuser's replica mode skips ordinary triggers
                conn.execute("SET session_replication_role = replica")
            before = everything(conn)
            with pytest.raises(errors.InsufficientPrivilege, match="append-only") as refused:
                conn.execute(statement.encode())
            assert f"{table} rows cannot be" in str(refused.value) or change == "truncate"
            assert everything(conn) == before


def test_plain_truncate_of_a_referenced_table_is_refused_too(log: Log) -> None:
    with connect(log.owner_url) as conn:
        before = everything(conn)
        for table in pg_schema.LOG_TABLES:
            with pytest.raises(psycopg.errors.Error):
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
        assert everything(conn) == before


def test_the_service_role_can_insert_and_select_the_log(log: Log) -> None:
    with connect(log.service_url) as conn:
        insert_one_of_each(conn, n=2)  # the quarantine ids come from their identity sequences
        rows = everything(conn)
        assert [len(rows[t]) for t in pg_schema.LOG_TABLES] == [2, 2, 2, 2]
        assert rows["requests"][1][6] == BODY
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (LATEST,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO schema_migrations (version) VALUES (2)")


# Refused by the role's privileges (not only by the triggers, which would refuse it too).
SERVICE_REFUSED = {
    "update": ("UPDATE {table} SET {column} = {column}", "permission denied"),
    "delete": ("DELETE FROM {table}", "permission denied"),
    "truncate": ("TRUNCATE {table} CASCADE", "permission denied"),
    "upsert": (
        "INSERT INTO {table} SELECT * FROM {table} ON CONFLICT ({column}) DO UPDATE"
        " SET {column} = excluded.{column}",
        "permission denied",
    ),
    "alter": ("ALTER TABLE {table} ADD COLUMN extra TEXT", "must be owner"),
    "disable-trigger": (
        "ALTER TABLE {table} DISABLE TRIGGER {table}_append_only",
        "must be owner",
    ),
    "drop-trigger": ("DROP TRIGGER {table}_append_only ON {table}", "must be owner"),
    "drop": ("DROP TABLE {table} CASCADE", "must be owner"),
    "rename": ("ALTER TABLE {table} RENAME TO {table}_old", "must be owner"),
}


@pytest.mark.parametrize("attempt", SERVICE_REFUSED)
@pytest.mark.parametrize("table", pg_schema.LOG_TABLES)
def test_the_service_role_cannot_alter_the_log(log: Log, table: str, attempt: str) -> None:
    template, why = SERVICE_REFUSED[attempt]
    statement = template.format(table=table, column=KEYS[table])
    with connect(log.service_url) as conn:
        before = everything(conn)
        with pytest.raises(errors.InsufficientPrivilege, match=why):
            conn.execute(statement.encode())
        assert everything(conn) == before
    with connect(log.owner_url) as conn:
        assert schema_objects(conn) and everything(conn) == before


@pytest.mark.parametrize(
    "statement",
    [
        "SET session_replication_role = replica",
        "CREATE TABLE events_shadow (seq BIGINT)",
        "CREATE OR REPLACE FUNCTION log_refuse_change() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        "DROP FUNCTION log_refuse_change() CASCADE",
        "ALTER SEQUENCE quarantine_id_seq RESTART WITH 1",
        "SELECT setval('quarantine_id_seq', 1)",
    ],
)
def test_the_service_role_cannot_get_around_the_triggers(log: Log, statement: str) -> None:
    with connect(log.service_url) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement.encode())
    with connect(log.owner_url) as conn:
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%append_only' AND tgenabled = 'A'"
        ).fetchone()
        assert triggers == (len(APPEND_ONLY),)


def test_roles_get_login_and_nothing_else(log: Log) -> None:
    with connect(log.admin_url) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
            " rolbypassrls, rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%%'"
            " FROM pg_authid WHERE rolname IN (%s, %s) ORDER BY rolname = %s",
            (log.owner, log.service, log.service),
        ).fetchall()
        assert rows == [
            (log.owner, False, False, False, False, False, True, True),
            (log.service, False, False, False, False, False, True, True),
        ]
        privileges = conn.execute(
            "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type)"
            " FROM information_schema.role_table_grants WHERE grantee = %s"
            " GROUP BY table_name ORDER BY table_name",
            (log.service,),
        ).fetchall()
        assert privileges == sorted(
            [(t, "INSERT,SELECT") for t in (*pg_schema.LOG_TABLES, "erased_rows", "tombstones")]
            + [("erasure_ends", "SELECT"), ("erasures", "SELECT"), ("schema_migrations", "SELECT")]
        )


def test_create_roles_runs_again_and_refuses_unsafe_roles(log: Log) -> None:
    with connect(log.admin_url) as conn:
        pg_schema.create_roles(conn, log.owner, log.service, "new-service-pw")
        with pytest.raises(ValueError, match="two different roles"):
            pg_schema.create_roles(conn, log.owner, log.owner, "x")
        superuser = conn.execute("SELECT current_user").fetchone()
        assert superuser is not None
        with pytest.raises(ValueError, match="superuser"):
            pg_schema.create_roles(conn, log.owner, superuser[0], "x")
    with pytest.raises(psycopg.OperationalError):  # the password was changed
        connect(log.service_url)
    with connect(log.service_url.replace("service-pw", "new-service-pw")) as conn:
        assert len(everything(conn)["events"]) == 1


def test_a_message_id_is_unique_per_merchant(pg_url: str) -> None:
    """As in the SQLite log: another merchant's event with the same message_id is another event."""
    with connect(pg_url) as conn:
        pg_schema.migrate(conn)
        insert_one_of_each(conn)  # seq 1: message m-1 of merchant m

        def event(seq: int, merchant: str | None) -> None:
            conn.execute(
                "INSERT INTO events (seq, message_id, content_hash, event_type, merchant_id, app_id,"
                " request_ref, action_time, received_at, block, hash)"
                " VALUES (%s, 'm-1', 'c', 't', %s, 'app', 1, 1.5, 2.5, '{}', 'h')",
                (seq, merchant),
            )

        event(2, "other-merchant")
        event(3, None)
        for seq, merchant in ((4, "m"), (5, "other-merchant"), (6, None)):
            with pytest.raises(psycopg.errors.UniqueViolation):
                event(seq, merchant)
        assert [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")] == [1, 2, 3]
