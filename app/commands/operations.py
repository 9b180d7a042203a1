"""verify, quarantine, backup, restore, migrate: what an operator runs, on either backend."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli import command, settings_of
from app.commands.views import open_existing_log
from app.config import Settings, fingerprint, shown_url
from app.errors import NotestoreError
from app.lock import serve_running
from app.signing import sign
from eventlog import migrations, pg_schema
from eventlog.backup import backup, restore, verify_file
from eventlog.db import LOG_FILE, open_log
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import APPEND_LOCK
from eventlog.replay import held_items, replay
from eventlog.verify import Signer, VerifyReport, verify_log
from projections.storage import POSTGRESQL
from projections.store import VIEWS_SCHEMA


def signer_for(settings: Settings) -> Signer:
    """Signs with the secret whose fingerprint was stored at receipt; None once rotated out."""
    by_fingerprint = {(app, fingerprint(s)): s for app, s in settings.secrets()}

    def signer(app_id: str, stored_fingerprint: str, body: bytes) -> str | None:
        secret = by_fingerprint.get((app_id, stored_fingerprint))
        return sign(app_id, body, secret) if secret is not None else None

    return signer


def print_report(report: VerifyReport, seconds: float) -> None:
    rows = report.events.rows + report.requests.rows
    print(f"checked {report.events.rows} events and {report.requests.rows} requests "
          f"in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s)")  # fmt: skip
    print(f"head: {report.events.head} after {report.events.rows} events")
    if report.unverifiable:
        print(
            f"{report.unverifiable} request(s) unverifiable: their secret is no longer configured"
        )
    for line in report.erasure_lines():
        print(line)
    for chain_report in (report.events, report.requests, report.erasures):
        for problem in chain_report.problems if chain_report else ():
            print(f"TAMPERED {problem}")
    if report.events.first_bad is not None:
        print(f"first bad seq: {report.events.first_bad}")
    if report.requests.first_bad is not None:
        print(f"first bad request id: {report.requests.first_bad}")
    if report.expect_head and not report.events.saw_expected_head:
        print(f"TAMPERED the log no longer extends the expected head {report.expect_head}")
    print("OK: the log verifies" if report.ok else "FAILED: the log does not verify")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expect-head", metavar="HASH", help="fail unless the log still extends this head hash"
    )


@command("verify", "check the log's hash chains and every stored signature", _verify_args)
def verify(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    conn = open_existing_log(settings)
    started = time.perf_counter()
    try:
        columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("events", total=None)
            report = verify_log(
                conn, signer_for(settings), args.expect_head,
                lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
    finally:
        conn.close()
    print_report(report, time.perf_counter() - started)
    return 0 if report.ok else 1


def _quarantine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="items to replay")
    p.add_argument("--all", action="store_true", help="replay every item still held")
    p.add_argument("--json", action="store_true", help="list as JSON")


def quarantine_listing(settings: Settings) -> dict[str, Any]:
    conn = open_existing_log(settings)
    try:
        reasons = dict(
            conn.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 2 DESC")
        )
        rows = conn.execute(
            "SELECT q.id, q.reason, q.detail, q.kind, q.message_id, q.received_at, q.request_ref,"
            " (SELECT outcome FROM quarantine_replays r WHERE r.quarantine_id = q.id"
            "  ORDER BY r.id DESC LIMIT 1)"
            " FROM quarantine q ORDER BY q.id DESC"
        ).fetchall()
    finally:
        conn.close()
    keys = ("id", "reason", "detail", "kind", "message_id", "received_at", "request", "last_replay")
    return {"reasons": reasons, "items": [dict(zip(keys, row, strict=True)) for row in rows]}


@command("quarantine", "list what was verified but not accepted, or replay it", _quarantine_args)
def quarantine(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.action == "list":
        listing = quarantine_listing(settings)
        if args.json:
            print(json.dumps(listing, indent=2, ensure_ascii=False))
            return 0
        console = Console()
        console.print(
            ", ".join(f"{n} {reason}" for reason, n in listing["reasons"].items()) or "nothing held"
        )
        table = Table("id", "reason", "kind", "message_id", "detail", "last replay")
        for item in listing["items"]:
            table.add_row(str(item["id"]), item["reason"], item["kind"], item["message_id"] or "",
                          item["detail"][:120], item["last_replay"] or "")  # fmt: skip
        console.print(table)
        return 0
    if not args.ids and not args.all:
        raise NotestoreError(
            "name the items to replay (IDs from `notestore quarantine list`) or pass --all"
        )
    conn = open_log_writer(settings)
    try:
        counts = replay(
            conn, held_items(conn, None if args.all else args.ids), settings.merchants_of
        )
    finally:
        conn.close()
    print(
        ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing to replay"
    )
    return 0


def open_log_writer(settings: Settings) -> Connection:
    """A connection that appends to the log as the server's own appends do, serialised with
    them: SQLite's write lock on events.db, or on PostgreSQL the advisory lock every
    PostgresLogStore append takes (a replay adds events to the request they came in, which
    LogStore.append, taking new deliveries, cannot)."""
    if settings.storage.backend != POSTGRESQL:
        return open_log(settings.data_dir)
    open_existing_log(settings).close()  # migrated by its owner, at the version this code writes
    return PgConnection.connect(settings.database_url or "", write_lock=APPEND_LOCK)


def no_file_copies(settings: Settings, what: str, instead: str) -> None:
    """backup and restore copy SQLite files; a PostgreSQL log is the server's to copy."""
    if settings.storage.backend == POSTGRESQL:
        raise NotestoreError(
            f"the log is on PostgreSQL ({shown_url(settings.database_url or '')}): {what} it "
            f"with {instead} (docs/operations.md, PostgreSQL)"
        )


def _dest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", type=Path, metavar="DEST", help="the backup file to write")


@command(
    "backup", "a consistent copy of the log, taken while serve runs, then verified", _dest_args
)
def take_backup(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    no_file_copies(settings, "back", "pg_dump or continuous archiving")
    open_existing_log(settings).close()
    try:
        report = backup(settings.data_dir, args.dest)
    except FileExistsError as exc:
        raise NotestoreError(str(exc)) from None
    print(
        f"backed up {report.events.rows} events and {report.requests.rows} requests to {args.dest}"
    )
    print(f"head: {report.events.head}")
    print("the copy verifies" if report.ok else "FAILED: the copy does not verify")
    return 0 if report.ok else 1


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup", type=Path, metavar="BACKUP", help="a file made by notestore backup")


@command(
    "restore",
    "put a verified backup in place of the log (serve stopped); views rebuild",
    _source_args,
)
def restore_backup(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    no_file_copies(settings, "restore", "pg_restore, or point-in-time recovery from the archive")
    if not args.backup.is_file():
        raise NotestoreError(f"no backup at {args.backup}")
    if serve_running(settings.data_dir):
        raise NotestoreError("notestore serve is running on this data directory: stop it first")
    report = verify_file(args.backup)
    if not report.ok:
        first_bad = report.events.first_bad
        raise NotestoreError(
            f"{args.backup} does not verify (first bad seq {first_bad}); not restoring"
        )
    kept = restore(args.backup, settings.data_dir)
    print(f"restored {report.events.rows} events into {settings.data_dir / LOG_FILE}")
    if kept:
        print(f"the previous log is kept as {kept}")
    print("views were dropped; `notestore serve` rebuilds them")
    return 0


def _migrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="connect as the owner of the log's tables (default: the configured database_url)",
    )
    p.add_argument(
        "--service-role",
        metavar="NAME",
        help="PostgreSQL: grant this role what serve needs (INSERT and SELECT on the log, its"
        f" own tables in schema {VIEWS_SCHEMA})",
    )


def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def prepare_views_schema(conn: psycopg.Connection[Any], service: str | None) -> None:
    """The views' schema, made by the owner, in which the service role creates (and so owns)
    the views' tables: a rebuild drops and renames them, which only their owner may."""
    schema = sql.Identifier(VIEWS_SCHEMA)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
    if service is not None:
        conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                schema, sql.Identifier(service)
            )
        )


@command(
    "migrate",
    "create or update the log's schema (PostgreSQL: as the owner of its tables, granting the"
    " service role)",
    _migrate_args,
)
def migrate(args: argparse.Namespace) -> int:
    settings = settings_of(args, database_url=args.database_url)
    url = settings.database_url
    if url is None:
        if args.service_role is not None:
            raise NotestoreError(
                "--service-role is for PostgreSQL: name the database with --database-url or"
                " database_url"
            )
        log = open_log(settings.data_dir)
        try:
            version = migrations.migrate(log)
        finally:
            log.close()
        print(f"the log at {settings.data_dir / LOG_FILE} is at schema version {version}")
        return 0
    owner = psycopg.connect(url, autocommit=True)
    try:
        me = owner.execute("SELECT current_user").fetchone()
        if args.service_role is not None:
            if me is not None and me[0] == args.service_role:
                raise NotestoreError(
                    f"--service-role {args.service_role} is the role migrate connects as: the"
                    " service must be another role than the owner of the log's tables"
                )
            if not _role_exists(owner, args.service_role):
                raise NotestoreError(
                    f"role {args.service_role} does not exist: create it first"
                    " (docs/operations.md, PostgreSQL)"
                )
        version = pg_schema.migrate(owner, service=args.service_role)
        prepare_views_schema(owner, args.service_role)
    finally:
        owner.close()
    who = me[0] if me else "?"
    print(f"the log in {shown_url(url)} is at schema version {version} (tables owned by {who})")
    if args.service_role is not None:
        print(
            f"{args.service_role} may insert into and read the log, and keeps the views in"
            f" schema {VIEWS_SCHEMA}: serve with its URL"
        )
    return 0
