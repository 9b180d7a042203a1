"""erase: remove a note's or a merchant's personal data from the log for good, or events
older than a number of days (an operator's command; no HTTP route).

It says what it will erase and asks for confirmation (--yes skips it); then it records the
erasure (and, for a note or a merchant, its tombstone), redacts the rows chunk by chunk
while serve keeps receiving (eventlog.erase), records its end, and has every view fold it
in (the entry projectors read after the rows it redacted; serve's projectors follow too),
and scrubs the files (app.scrub). On PostgreSQL it runs with the owner's rights
(--database-url, as `notestore migrate`); the views follow through the configured
database_url (the service role, which owns them).

Exit status: 0 erased (or nothing confirmed: 1); 2 it cannot run; 3 erased from the log,
but the views did not follow here (serve's projectors fold it in: then run it again to
scrub what the views held).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from app.cli import command, settings_of
from app.commands.views import open_existing_log
from app.config import Settings
from app.errors import NotestoreError
from app.scrub import scrub
from eventlog import pg_schema
from eventlog.db import LOG_FILE, open_log
from eventlog.dbapi import Connection
from eventlog.erase import (
    TABLES,
    count,
    end_erasure,
    erase_rows,
    record_erasure,
    with_comments,
)
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import APPEND_LOCK
from eventlog.redaction import Scope
from eventlog.spool import redact_set_aside
from eventlog.transactions import immediate
from projections import search_index
from projections.engine import catch_up
from projections.rebuild import needs_rebuild, rebuild_all
from projections.registry import all_projectors
from projections.store import LIVE, position

DAY_S = 86_400.0


def _erase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why (kept with the erasure, for the record)")
    p.add_argument("--note", metavar="ID", help="a note, its comments and every event about them")
    p.add_argument("--merchant", metavar="M", help="the merchant (alone: everything of it)")
    p.add_argument(
        "--older-than", type=float, metavar="DAYS", help="events whose action_time is older"
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL: connect as the owner of the log's tables (default: database_url)",
    )


MAX_DAYS = 36_500.0  # --older-than: at most a hundred years


def _id(option: str, value: str | None) -> str | None:
    """An id as given, refused when empty or only whitespace (it would match nothing the
    operator meant, and a blank merchant must never stand for every merchant)."""
    if value is not None and not value.strip():
        raise NotestoreError(f"{option} takes an id: it cannot be empty or whitespace")
    return value


def scope_of(args: argparse.Namespace, now: float) -> Scope:
    if not args.reason.strip():
        raise NotestoreError("--reason must say why")
    merchant, note = _id("--merchant", args.merchant), _id("--note", args.note)
    if args.older_than is not None:
        if note is not None:
            raise NotestoreError("--older-than erases by age: it takes no --note")
        days = args.older_than
        if not (math.isfinite(days) and 0 < days <= MAX_DAYS):
            raise NotestoreError(
                f"--older-than takes a number of days above 0 and at most {MAX_DAYS:.0f}"
            )
        return Scope(merchant_id=merchant, before=now - days * DAY_S)
    if merchant is None:
        raise NotestoreError(
            "say what to erase: --note ID --merchant M, --merchant M, or --older-than DAYS"
        )
    return Scope(merchant_id=merchant, note_id=note)


def describe(scope: Scope) -> str:
    if scope.before is not None:
        whose = f" of merchant {scope.merchant_id}" if scope.merchant_id else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(scope.before))
        return f"events{whose} whose action_time is before {when}"
    if scope.note_id is not None:
        return (
            f"note {scope.note_id} of merchant {scope.merchant_id}, its"
            f" {len(scope.comments)} comment(s) and every event about them"
        )
    return f"everything of merchant {scope.merchant_id}"


def open_log_owner(settings: Settings, url: str | None) -> Connection:
    """The log, to redact it: SQLite's events.db, or PostgreSQL as the owner of its tables
    (its append lock taken by each transaction, as appends take it)."""
    if url is None:
        if not (settings.data_dir / LOG_FILE).exists():
            raise NotestoreError(f"no log at {settings.data_dir / LOG_FILE}")
        return open_log(settings.data_dir)
    conn = PgConnection.connect(url, write_lock=APPEND_LOCK)
    at, wanted = pg_schema.version(conn.raw), len(pg_schema.MIGRATIONS)
    if at != wanted:
        conn.close()
        raise NotestoreError(
            f"the log is at schema version {at}, this notestore erases at {wanted}: run"
            " `notestore migrate` as the database's owner first"
        )
    return conn


def confirmed() -> bool:
    print("Erase them for good? Type yes: ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer == "yes"


@command("erase", "remove a note's or a merchant's personal data from the log", _erase_args)
def erase(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    scope = scope_of(args, time.time())
    url = args.database_url or settings.database_url
    if url is not None and settings.database_url is None:  # the log named only by the option
        settings = settings_of(args, database_url=url)
    log = open_log_owner(settings, url)
    try:
        scope = with_comments(log, scope)
        counts = count(log, scope)
        print(f"erase {describe(scope)}: " + ", ".join(f"{counts[t]} {t}" for t in TABLES))
        if not args.yes and not confirmed():
            print("nothing erased")
            return 1
        erasure = record_erasure(log, scope, args.reason, counts)
        done = erase_rows(log, erasure)
        end_erasure(log, erasure.id)
    finally:
        log.close()
    print(f"erasure {erasure.id}: redacted " + ", ".join(f"{done[t]} {t}" for t in TABLES))
    if erasure.scope.before is None:
        print("its tombstone keeps what arrives later about it redacted")
    try:
        if aside := redact_set_aside(settings.spool_path, erasure.id, erasure.scope):
            print(f"redacted {aside} delivery(ies) set aside in this instance's spool")
        print(f"views followed up to seq {follow_views(settings)}")
        followed = True
    except Exception as exc:  # the log is erased: whatever failed here, scrub it anyway
        print(
            f"notestore erase: the views did not follow here ({exc}); serve's projectors fold"
            " the erasure in: once `notestore status` shows them caught up, run this erase"
            " again (it finds nothing more to redact) to scrub what the views held",
            file=sys.stderr,
        )
        followed = False
    scrub(settings, url)
    return 0 if followed else 3


def follow_views(settings: Settings) -> int:
    """Every view folds the erasure in (serve's projectors may be doing it too: each batch
    is one transaction, so it happens once); a view never built, or built by another
    version, is rebuilt beside the live one instead. The search index tables of a replaced
    generation are dropped now (PostgreSQL), not when the live projector next writes.
    Returns the log position the views reached."""
    log = open_existing_log(settings)
    try:
        views = settings.storage.views()
        try:
            projectors = all_projectors()
            stale = [p for p in projectors if needs_rebuild(views, p)]
            checkpoint = rebuild_all(stale, views, log) if stale else 0
            for projector in projectors:
                if projector not in stale:
                    catch_up(projector, views, log)
                    checkpoint = position(views, projector.name, LIVE) or 0
            with immediate(views):
                search_index.drop_stale(views)
            return checkpoint
        finally:
            views.close()
    finally:
        log.close()
