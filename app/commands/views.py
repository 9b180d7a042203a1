"""status and rebuild: where the log and each view stand, and rebuilding views."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli import command, settings_of
from app.config import Settings, shown_url
from app.errors import ConfigError, NotestoreError
from eventlog import pg_schema
from eventlog.db import LOG_FILE, file_sizes
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection
from eventlog.read import log_counts
from eventlog.spool import SpoolStats, read_stats
from projections.rebuild import rebuild_all
from projections.registry import all_projectors, projectors_named
from projections.status import all_status
from projections.storage import POSTGRESQL
from projections.store import VIEWS_FILE, VIEWS_SCHEMA


def open_existing_log(settings: Settings) -> Connection:
    """A reader of the log, which must exist and be at the schema this code reads.

    SQLite: events.db under data_dir, its schema brought up to date first. PostgreSQL: the
    log must have been migrated by its owner (`notestore migrate`); the service role that the
    commands connect as cannot create tables, so it only checks.
    """
    storage = settings.storage
    if storage.backend != POSTGRESQL:
        path = settings.data_dir / LOG_FILE
        if not path.exists():
            raise NotestoreError(f"no log at {path}; start `notestore serve` first")
        storage.prepare()  # bring the schema up to date before reading read-only
        return storage.log_reader()
    conn = storage.log_reader()
    try:
        assert isinstance(conn, PgConnection)
        at, wanted = pg_schema.version(conn.raw), len(pg_schema.MIGRATIONS)
    except BaseException:
        conn.close()
        raise
    if at < wanted:
        conn.close()
        where = shown_url(settings.database_url or "")
        raise NotestoreError(
            f"the log in {where} is at schema version {at}, this notestore reads version "
            f"{wanted}: run `notestore migrate` as the database's owner"
        )
    return conn


def gather_status(settings: Settings) -> dict[str, Any]:
    """Where the log and the views are, the log's counts and each view's state; file sizes
    on SQLite only (PostgreSQL's storage is the server's business)."""
    storage = settings.storage
    log = open_existing_log(settings)
    try:
        views = storage.views()
        try:
            counts = log_counts(log)
            view_states = all_status(views, log, all_projectors())
        finally:
            views.close()
    finally:
        log.close()
    spool = spool_status(settings)
    if storage.backend == POSTGRESQL:
        return {
            "backend": POSTGRESQL,
            "database": shown_url(settings.database_url or ""),
            "data_dir": str(settings.data_dir),
            "log": counts,
            "spool": spool,
            "views": view_states,
        }
    log_bytes, log_wal = file_sizes(settings.data_dir / LOG_FILE)
    views_bytes, views_wal = file_sizes(settings.data_dir / VIEWS_FILE)
    return {
        "backend": storage.backend,
        "data_dir": str(settings.data_dir),
        "log": {**counts, "bytes": log_bytes, "wal_bytes": log_wal},
        "spool": spool,
        "views_file": {"bytes": views_bytes, "wal_bytes": views_wal},
        "views": view_states,
    }


def spool_status(settings: Settings) -> dict[str, Any]:
    """What the spool holds that the log does not have yet (eventlog.spool)."""
    stats = read_stats(settings.spool_path) or SpoolStats(0, None, 0)
    return {
        "folder": str(settings.spool_path),
        "deliveries": stats.waiting,
        "oldest_age_s": round(stats.oldest_age_s(), 1),
        "bytes": stats.bytes,
        "set_aside": stats.set_aside,
    }


def _json_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command(
    "status", "the log's size and each view's version, checkpoint, lag and last error", _json_args
)
def status(args: argparse.Namespace) -> int:
    report = gather_status(settings_of(args))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    console = Console()
    log = report["log"]
    counted = (
        f"{log['events']} events, {log['requests']} requests, {log['quarantined']} quarantined, "
        f"last seq {log['last_seq']}"
    )
    if report["backend"] == POSTGRESQL:
        console.print(f"[bold]log[/bold] PostgreSQL {escape(report['database'])}: {counted}")
        console.print(f"[bold]views[/bold] schema {VIEWS_SCHEMA} of the same database")
    else:
        console.print(
            f"[bold]log[/bold] {report['data_dir']}/events.db: {counted}; "
            f"{log['bytes'] / 1e6:.1f} MB, its WAL (events.db-wal) {log['wal_bytes'] / 1e6:.1f} MB"
        )
        views_file = report["views_file"]
        console.print(
            f"[bold]views[/bold] {report['data_dir']}/views.db: "
            f"{views_file['bytes'] / 1e6:.1f} MB, its WAL {views_file['wal_bytes'] / 1e6:.1f} MB"
        )
    spool = report["spool"]
    if spool["deliveries"] or spool["set_aside"]:
        console.print(
            f"[bold yellow]spool[/bold yellow] {escape(spool['folder'])}: {spool['deliveries']}"
            f" deliveries not yet in the log, the oldest {spool['oldest_age_s']:.0f} s old"
            + (
                f"; {spool['set_aside']} set aside (the log refused them)"
                if spool["set_aside"]
                else ""
            )
        )
    else:
        console.print(f"[bold]spool[/bold] {escape(spool['folder'])}: empty")
    table = Table("view", "version", "checkpoint", "lag", "state")
    for v in report["views"]:
        state = "ok"
        if v["error"]:
            state = f"[red]stuck at seq {v['error']['seq']}: {v['error']['error']}[/red]"
        elif v["stored_version"] is None:
            state = "not built yet (serve builds it)"
        elif v["stored_version"] != v["version"]:
            state = f"built by version {v['stored_version']}: rebuilds on next serve"
        if v["rebuilding_at"] is not None:
            state += f", rebuilding (at seq {v['rebuilding_at']})"
        table.add_row(v["name"], str(v["version"]), str(v["checkpoint"]), str(v["lag"]), state)
    console.print(table)
    return 0


def _rebuild_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("views", nargs="*", metavar="VIEW", help="views to rebuild (default: all)")


@command(
    "rebuild", "replay the log into fresh views beside the live ones, then swap", _rebuild_args
)
def rebuild_views(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        chosen = projectors_named(args.views)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    log = open_existing_log(settings)
    try:
        views = settings.storage.views()
    except BaseException:
        log.close()
        raise
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} events/s"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns) as progress:
            task = progress.add_task(", ".join(p.name for p in chosen), total=None, rate="")

            def show(done: int, total: int) -> None:
                elapsed = progress.tasks[task].elapsed or 0
                rate = f"{done / elapsed:,.0f}" if elapsed else ""
                progress.update(task, completed=done, total=total, rate=rate)

            checkpoint = rebuild_all(chosen, views, log, show)
    finally:
        log.close()
        views.close()
    print(f"rebuilt {', '.join(p.name for p in chosen)} up to seq {checkpoint}")
    return 0
