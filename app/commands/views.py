"""status and rebuild: where the log and each view stand, and rebuilding views."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli import command, settings_of
from app.errors import ConfigError, NotestoreError
from eventlog.db import LOG_FILE, connect, file_sizes, open_log
from eventlog.read import log_counts
from projections.rebuild import rebuild_all
from projections.registry import all_projectors, projectors_named
from projections.status import all_status
from projections.store import VIEWS_FILE, open_views


def open_existing_log(data_dir: Path) -> sqlite3.Connection:
    if not (data_dir / LOG_FILE).exists():
        raise NotestoreError(f"no log at {data_dir / LOG_FILE}; start `notestore serve` first")
    open_log(data_dir).close()  # bring the schema up to date before reading read-only
    return connect(data_dir / LOG_FILE, readonly=True)


def gather_status(data_dir: Path) -> dict[str, Any]:
    log = open_existing_log(data_dir)
    views = open_views(data_dir)
    try:
        counts = log_counts(log)
        log_bytes, log_wal = file_sizes(data_dir / LOG_FILE)
        views_bytes, views_wal = file_sizes(data_dir / VIEWS_FILE)
        return {
            "data_dir": str(data_dir),
            "log": {**counts, "bytes": log_bytes, "wal_bytes": log_wal},
            "views_file": {"bytes": views_bytes, "wal_bytes": views_wal},
            "views": all_status(views, log, all_projectors()),
        }
    finally:
        log.close()
        views.close()


def _json_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command(
    "status", "the log's size and each view's version, checkpoint, lag and last error", _json_args
)
def status(args: argparse.Namespace) -> int:
    report = gather_status(settings_of(args).data_dir)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    console = Console()
    log = report["log"]
    console.print(
        f"[bold]log[/bold] {report['data_dir']}/events.db: {log['events']} events, "
        f"{log['requests']} requests, {log['quarantined']} quarantined, "
        f"last seq {log['last_seq']}; {log['bytes'] / 1e6:.1f} MB, "
        f"its WAL (events.db-wal) {log['wal_bytes'] / 1e6:.1f} MB"
    )
    views_file = report["views_file"]
    console.print(
        f"[bold]views[/bold] {report['data_dir']}/views.db: {views_file['bytes'] / 1e6:.1f} MB, "
        f"its WAL {views_file['wal_bytes'] / 1e6:.1f} MB"
    )
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
    data_dir = settings_of(args).data_dir
    try:
        chosen = projectors_named(args.views)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    log = open_existing_log(data_dir)
    views = open_views(data_dir)
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
