"""copy-log: copy the SQLite log of data_dir into PostgreSQL, verified at both ends.

Exit status: 0 copied (or nothing new) and both ends verify; 1 a chain does not verify
(the source: nothing copied; or the target after the copy); 2 it cannot run (no log, a URL
or server that cannot be used, a privilege missing); 3 the target holds another log, or
one that does not verify, and was left as it was.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from app.cli import command, settings_of
from app.commands.operations import signer_for
from app.config import shown_url, without_password
from app.errors import NotestoreError
from app.lock import serve_running
from eventlog.copy import CopyRefused, CopyReport, copy_log
from eventlog.copy_chunks import CHUNK_ROWS, TABLES, Progress
from eventlog.db import LOG_FILE, connect
from eventlog.pg_conn import PgConnection
from projections.storage import Storage

REFUSED = 3
PLAIN_EVERY_S = 5.0  # off a terminal: a line per phase, then at most one each this often


def _copy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the PostgreSQL database to copy into, as the owner of the log's tables"
        " (postgresql://owner:PASSWORD@host/db); empty, or holding an earlier copy",
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=CHUNK_ROWS,
        metavar="N",
        help=f"rows of each table per transaction (default {CHUNK_ROWS})",
    )


@command(
    "copy-log",
    "copy the SQLite log of data_dir into PostgreSQL (resumable; serve may keep running)",
    _copy_args,
)
def copy_log_command(args: argparse.Namespace) -> int:
    settings = settings_of(args, database_url=args.to)  # the URL checked as database_url is
    url = settings.database_url or ""
    path = settings.data_dir / LOG_FILE
    if not path.exists():
        raise NotestoreError(f"no SQLite log at {path}: nothing to copy")
    if args.chunk_rows < 1:
        raise NotestoreError("--chunk-rows must be at least 1")
    Storage(settings.data_dir).prepare()  # the schema up to date (a brief write, if behind)
    print(f"copying {path} into {shown_url(url)}", flush=True)
    console = Console()
    source = connect(path, readonly=True)
    try:
        target = _connect(url)
        try:
            with shown_progress(console) as progress:
                report = copy_log(
                    source, target, signer_for(settings), rows=args.chunk_rows, progress=progress
                )
        finally:
            target.close()
    except CopyRefused as exc:
        left = "" if exc.written else "; the target was left as it was"
        print(f"notestore copy-log: {exc}{left}", file=sys.stderr)
        return REFUSED
    except psycopg.Error as exc:
        raise NotestoreError(_database_problem(exc, url)) from None
    finally:
        source.close()
    print_copy_report(report, url)
    if report.ok and serve_running(settings.data_dir):
        print(
            "serve is still receiving on SQLite: stop it, then run copy-log once more to copy"
            " what arrived meanwhile"
        )
    return 0 if report.ok else 1


def _connect(url: str) -> PgConnection:
    return PgConnection.connect(url, write_lock=0)


def _database_problem(exc: psycopg.Error, url: str) -> str:
    what = without_password(str(exc), url) or type(exc).__name__
    hint = ""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        hint = " (copy-log writes as the owner of the log's tables: give the owner's URL to --to)"
    return f"database {shown_url(url)} cannot be used: {what}{hint}"


def print_copy_report(report: CopyReport, url: str) -> None:
    source = report.source
    print(f"source: {source.events.rows} events and {source.requests.rows} requests", end="")
    if not source.ok:
        print(" do NOT verify")
        _problems(report)
        print("FAILED: the SQLite log does not verify (`notestore verify`); nothing copied")
        return
    print(f" verify, head {source.events.head}")
    if report.migrated:
        print(
            "the target's log schema was created: grant the service role with `notestore"
            " migrate --database-url OWNER_URL --service-role NAME`"
        )
    copied = ", ".join(
        f"{t.name} {report.start[t.name] + 1}-{report.end[t.name]}"
        for t in TABLES
        if report.end[t.name] > report.start[t.name]
    )
    if copied:
        rate = report.copied / max(report.copy_seconds, 1e-9)
        print(f"copied {report.copied} rows ({copied}) in {report.copy_seconds:.1f} s"
              f" ({rate:,.0f} rows/s)")  # fmt: skip
    else:
        print("copied 0 rows: nothing new")
    target = report.target
    assert target is not None
    print(
        f"target: {target.events.rows} events and {target.requests.rows} requests"
        f" {'verify' if target.ok else 'do NOT verify'}, head {target.events.head}"
    )
    _problems(report)
    if not report.ok:
        print(f"FAILED: {shown_url(url)} does not hold a verified copy of the log")
        return
    print(f"OK: {shown_url(url)} holds the log up to seq {report.end['events']}")
    print("the views are not copied: serve rebuilds them on PostgreSQL when it starts there")


def _problems(report: CopyReport) -> None:
    for verified in (report.source, report.target):
        if verified is None:
            continue
        for problem in verified.events.problems + verified.requests.problems:
            print(f"TAMPERED {problem}")
        if verified.expect_head and not verified.events.saw_expected_head:
            print(f"the chain does not reach the source's head {verified.expect_head}")
    if report.target is not None and not report.whole:
        print(f"the target's heads are {report.reached}, the source's {report.end}")


@contextmanager
def shown_progress(console: Console) -> Iterator[Progress]:
    """Each phase's progress: a rich bar on a terminal; off one, plain lines."""
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(),
        )  # fmt: skip
        with Bars(*columns, console=console) as bars:
            tasks: dict[str, TaskID] = {}

            def bar(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bars.add_task(phase, total=total)
                bars.update(tasks[phase], completed=done, total=total)

            yield bar
        return
    shown: dict[str, float] = {}

    def line(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - shown.get(phase, -PLAIN_EVERY_S) < PLAIN_EVERY_S:
            return
        shown[phase] = now
        print(f"{phase}: {done:,} of {total:,}", flush=True)

    yield line
