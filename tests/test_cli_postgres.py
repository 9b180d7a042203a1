"""The command line on PostgreSQL: migrate with two roles, status, backup refused, and no path
that shows the database password (config errors, status, serve's start-up log, a server that
cannot be reached or refuses the password)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from app.signing import SIGNATURE_HEADER
from eventlog import pg_schema
from tests import pg
from tests.helpers import SAMPLE_FILES, SECRETS, make_block, make_body, signature, wait_until
from tests.ops_kit import Backend, delivery_of, notestore
from tests.server import Server, free_port, write_config

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

OWNER_PASSWORD = "owner-Pa55-never-shown"
SERVICE_PASSWORD = "service-Pa55-never-shown"


def one_line_error(done: subprocess.CompletedProcess[str], command: str) -> str:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"notestore {command}: "), done.stderr
    return lines[0]


def shows_no_password(done: subprocess.CompletedProcess[str], *passwords: str) -> None:
    for password in passwords:
        assert password not in done.stdout + done.stderr


@pytest.fixture
def two_roles(pg_database: pg.PgDatabase) -> tuple[str, str, str]:
    """An owner (owning the database, as docs/operations.md sets it up) and a service role;
    their URLs, and the service role's name."""
    owner, service = pg_database.role("owner"), pg_database.role("service")
    with psycopg.connect(pg_database.url, autocommit=True) as admin:
        pg_schema.create_roles(admin, owner, service, SERVICE_PASSWORD,
                               owner_password=OWNER_PASSWORD)  # fmt: skip
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(pg_database.name), sql.Identifier(owner)
            )
        )
    return (
        pg_database.url_as(owner, OWNER_PASSWORD),
        pg_database.url_as(service, SERVICE_PASSWORD),
        service,
    )


def _migrated(tmp_path: Path, two_roles: tuple[str, str, str]) -> Path:
    """Migrated by the owner, the samples appended by the service role (through the LogStore
    serve uses); the config names the service role's URL."""
    owner_url, service_url, service = two_roles
    config = write_config(tmp_path, SECRETS, database_url=service_url)
    # the service role cannot read a log nobody migrated: one line says what to run
    early = notestore(config, "verify")
    assert "notestore migrate" in one_line_error(early, "verify")
    shows_no_password(early, SERVICE_PASSWORD)

    done = notestore(config, "migrate", "--database-url", owner_url, "--service-role", service)
    assert done.returncode == 0, done.stderr
    assert "schema version 5" in done.stdout and service in done.stdout
    shows_no_password(done, OWNER_PASSWORD, SERVICE_PASSWORD)
    again = notestore(config, "migrate", "--database-url", owner_url, "--service-role", service)
    assert again.returncode == 0, again.stderr  # idempotent

    service_log = Backend(tmp_path / "data", service_url)
    for path in SAMPLE_FILES:
        _append_as_service(service_log, json.loads(path.read_bytes()))
    return config


def test_migrate_as_the_owner_then_the_service_role_appends_and_verifies(tmp_path, two_roles):
    _, service_url, _ = two_roles
    config = _migrated(tmp_path, two_roles)
    with psycopg.connect(service_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM events")  # the service role can change nothing
    verified = notestore(config, "verify")
    assert verified.returncode == 0 and "checked 6 events and 6 requests" in verified.stdout
    listing = notestore(config, "quarantine", "list", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout)["items"] == []
    shows_no_password(verified, SERVICE_PASSWORD)


def test_the_service_role_builds_and_owns_the_views_in_their_schema(tmp_path, two_roles):
    owner_url, _, service = two_roles
    config = _migrated(tmp_path, two_roles)
    rebuilt = notestore(config, "rebuild")  # the service role creates and swaps its views
    assert rebuilt.returncode == 0, rebuilt.stderr
    status = json.loads(notestore(config, "status", "--json").stdout)
    assert {v["checkpoint"] for v in status["views"]} == {6}
    with psycopg.connect(owner_url) as conn:
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'notestore_views'"
        ).fetchall()
    assert owners == [(service,)]
    # and serve runs as the service role alone: it receives, folds and answers
    with Server(config) as server:
        block = make_block("note_create", note_id="served-by-the-service-role")
        raw = json.dumps(make_body(block)).encode()
        request = urllib.request.Request(
            f"{server.url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["accepted"] == 1
        wait_until(lambda: _checkpoints(config) == {7}, 30, "the service role's views catching up")
    assert "Traceback" not in server.log_path.read_text()


def _checkpoints(config: Path) -> set[int]:
    status = json.loads(notestore(config, "status", "--json").stdout)
    return {v["checkpoint"] for v in status["views"]}


def test_status_on_postgresql_names_the_backend_and_the_masked_database(tmp_path, pg_url):
    backend = Backend(tmp_path / "data", pg_url)
    backend.append_bodies([json.loads(p.read_bytes()) for p in SAMPLE_FILES])
    config = backend.config(tmp_path, SECRETS)
    password = str(psycopg.conninfo.conninfo_to_dict(pg_url)["password"])
    assert notestore(config, "rebuild").returncode == 0
    status = notestore(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["backend"] == "postgresql"
    assert report["database"] == pg_url.replace(password, "***")
    assert report["log"] == {"events": 6, "requests": 6, "quarantined": 0, "last_seq": 6}
    assert "views_file" not in report and "bytes" not in report["log"]  # no files to size
    assert {v["checkpoint"] for v in report["views"]} == {6}
    text = notestore(config, "status")
    assert text.returncode == 0 and "PostgreSQL" in text.stdout and "***" in text.stdout
    for done in (status, text):
        shows_no_password(done, password)


def test_migrate_refuses_a_service_role_that_does_not_exist_or_is_the_owner(tmp_path, two_roles):
    owner_url, _, _ = two_roles
    config = write_config(tmp_path, SECRETS)
    missing = notestore(
        config, "migrate", "--database-url", owner_url, "--service-role", "nobody_x"
    )
    assert "does not exist" in one_line_error(missing, "migrate")
    owner = owner_url.split("//")[1].split(":")[0]
    itself = notestore(config, "migrate", "--database-url", owner_url, "--service-role", owner)
    assert "another role" in one_line_error(itself, "migrate")
    for done in (missing, itself):
        shows_no_password(done, OWNER_PASSWORD)


def test_migrate_on_sqlite_migrates_events_db(tmp_path):
    config = write_config(tmp_path, SECRETS)
    done = notestore(config, "migrate")
    assert done.returncode == 0 and "events.db is at schema version" in done.stdout
    assert (tmp_path / "data" / "events.db").exists()
    refused = notestore(config, "migrate", "--service-role", "notestore")
    assert "PostgreSQL" in one_line_error(refused, "migrate")


def test_backup_and_restore_on_postgresql_point_to_its_own_tools(tmp_path, pg_url):
    backend = Backend(tmp_path / "data", pg_url)
    backend.append_bodies([make_body(make_block())])
    config = backend.config(tmp_path, SECRETS)
    password = psycopg.conninfo.conninfo_to_dict(pg_url)["password"]
    made = notestore(config, "backup", str(tmp_path / "copy.db"))
    line = one_line_error(made, "backup")
    assert "pg_dump" in line and "continuous archiving" in line and "docs/operations.md" in line
    assert not (tmp_path / "copy.db").exists()
    (tmp_path / "copy.db").write_bytes(b"")
    restored = notestore(config, "restore", str(tmp_path / "copy.db"))
    assert "pg_restore" in one_line_error(restored, "restore")
    for done in (made, restored):
        shows_no_password(done, str(password))


def _append_as_service(backend: Backend, body: dict[str, object]) -> None:
    store = backend.storage.log_store()
    try:
        store.append([delivery_of(body)])
    finally:
        store.close()


def _closed_port_url(password: str) -> str:
    return f"postgresql://notestore:{password}@127.0.0.1:{free_port()}/notestore"


@pytest.mark.parametrize("command", [["status"], ["verify"], ["note", "n1"], ["rebuild"],
                                     ["quarantine", "list"], ["quarantine", "replay", "--all"],
                                     ["migrate"]])  # fmt: skip
def test_a_server_that_cannot_be_reached_is_one_line_without_the_password(tmp_path, command):
    password = "unreachable-Pa55-never-shown"
    config = write_config(tmp_path, SECRETS, database_url=_closed_port_url(password))
    done = notestore(config, *command)
    line = one_line_error(done, command[0])
    assert "postgresql://notestore:***@127.0.0.1:" in line and "cannot be used" in line
    assert f"config file {config}" in line
    shows_no_password(done, password)


def test_a_wrong_password_is_one_line_without_either_password(tmp_path, pg_database):
    wrong = "wrong-Pa55-never-shown"
    url = pg_database.url_as(pg.SUPERUSER, wrong)
    config = write_config(tmp_path, SECRETS)
    env = {**os.environ, "NOTESTORE_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "app", "status", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    line = one_line_error(done, "status")
    assert "password authentication failed" in line and "NOTESTORE_DATABASE_URL" in line
    real = psycopg.conninfo.conninfo_to_dict(pg_database.url)["password"]
    shows_no_password(done, wrong, str(real))


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://notestore:{pw}@localhost/notestore", "postgresql://"),
        ("postgresql://notestore:{pw}%zz@localhost/notestore", "PostgreSQL can read"),
        ("postgresql://notestore:{pw}@localhost:port/notestore", "PostgreSQL can read"),
    ],
)
def test_a_bad_database_url_is_a_config_error_without_the_password(tmp_path, url, needle):
    password = "config-Pa55-never-shown"
    config = write_config(tmp_path, SECRETS, database_url=url.format(pw=password))
    done = notestore(config, "status")
    line = one_line_error(done, "status")
    assert f"config file {config}: database_url: " in line and needle in line
    shows_no_password(done, password)


def test_serves_start_up_log_names_the_database_without_its_password(tmp_path):
    password = "serve-Pa55-never-shown"
    config = write_config(tmp_path, SECRETS, {"t": ["*"]}, database_url=_closed_port_url(password))
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--config", str(config), "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert done.returncode != 0
    shows_no_password(done, password)
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    starting = next(r for r in records if r["event"] == "starting")
    assert starting["backend"] == "postgresql"
    assert starting["database"].startswith("postgresql://notestore:***@127.0.0.1:")
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
