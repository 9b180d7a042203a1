"""After an erasure: make sure no file of the data directory (or no page of PostgreSQL
that VACUUM can reach) still holds the erased text.

The rows are redacted by then (eventlog.erase) and the views have followed; what is left
are copies the databases keep of what they held before:

SQLite (the log, the views, the spool). Every connection that writes them has
`secure_delete` on (eventlog.db, projections.store, eventlog.spool), so the space an UPDATE
or a DELETE frees is zeroed as it is freed. But
- FTS5 does not delete a document's words from its index: it adds a delete entry, and the
  words stay in the older segments until they are merged. The search view's index is
  merged into one segment here ('optimize'); the old segments' pages are freed, zeroed.
- The WAL files keep the pages as they were before the erasure wrote them, until they are
  overwritten: a TRUNCATE checkpoint copies the WAL into the database and cuts the file to
  nothing. It cannot while a reader (serve's) still reads an older snapshot, so it is tried
  again until a deadline, and the operator is told if it never got through.
- Space freed before secure_delete was on (a database written by an older notestore) is
  not zeroed: spool.db is VACUUMed (rewritten whole: it is small); the log and views.db
  are not (the log is huge and append-only; a VACUUM of views.db holds its write lock
  throughout and may renumber the rowids the search index refers to, and every view was
  rebuilt into new tables when secure_delete came in): their free pages are overwritten
  with zeros instead (docs/operations.md, "Erasure requests", says why).

PostgreSQL. An UPDATE leaves the old row version in place until VACUUM removes it: the log's
tables are VACUUMed as the owner (the erasure's role), the views' as the service role (which
owns them), and the views' indexes rebuilt (a GIN index never drops a key). VACUUM runs
outside any transaction (autocommit), and neither waits long for a lock (LOCK_TIMEOUT):
what could not be done is reported. What PostgreSQL keeps
elsewhere (free space not zeroed, WAL, archives, backups) is for the operator:
docs/operations.md.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from app.config import Settings
from eventlog import pg_schema
from eventlog.db import LOG_FILE, connect
from eventlog.spool import SPOOL_FILE, spool_stats
from eventlog.transactions import immediate
from projections import search_index
from projections.store import VIEWS_FILE, VIEWS_SCHEMA, open_views

# How long the TRUNCATE checkpoints may keep trying while readers hold older snapshots
# (all files together; each gets one attempt at least), and how long each attempt waits
# for them (busy_timeout) before the next.
CHECKPOINT_DEADLINE_S = 30.0
CHECKPOINT_BUSY_MS = 200
CHECKPOINT_RETRY_S = 0.05
LOCK_TIMEOUT = "5s"  # PostgreSQL: VACUUM and REINDEX give up waiting past these
STATEMENT_TIMEOUT = "10min"

# The log's free pages are overwritten this many at a time (4 MB of 4 KB pages: a
# transaction of a few milliseconds, which serve's appends wait for at most).
FILL_PAGES = 1024
FILL_TABLE = "scrub_zero_fill"

_NOT_REMOVABLE = re.compile(r"(\d+) are dead but not yet removable")


@dataclass
class Scrubbed:
    """What the scrub did, and what it could not (each a line for the operator)."""

    done: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def scrub(
    settings: Settings, log_url: str | None, *, deadline_s: float = CHECKPOINT_DEADLINE_S
) -> bool:
    """Called by `notestore erase` once the rows are redacted and the views have followed.
    Prints what it did, and a warning for each copy it could not remove; True when none."""
    report = Scrubbed()
    deadline = time.monotonic() + deadline_s
    views_url = settings.database_url or log_url
    if views_url is None:
        _sqlite_views(settings.data_dir, report)
        _zero_freelist(settings.data_dir / LOG_FILE, report)
        _truncate_wal(settings.data_dir / LOG_FILE, deadline, report)
        _truncate_wal(settings.data_dir / VIEWS_FILE, deadline, report)
    else:
        log_tables: list[sql.Composable] = [
            sql.Identifier(pg_schema.SCHEMA, t)
            for t in (*pg_schema.LOG_TABLES, *pg_schema.ERASURE_TABLES)
        ]
        _vacuum(log_url or views_url, "the log", lambda _: log_tables, report)
        _vacuum(views_url, "the views", _views_tables, report, reindex=True)
    _spool(settings.spool_path / SPOOL_FILE, deadline, report)
    for line in report.done:
        print(f"scrub: {line}")
    for line in report.warnings:
        print(f"notestore erase: warning: {line}", file=sys.stderr)
    return not report.warnings


# --- SQLite ------------------------------------------------------------------------------


def _sqlite_views(data_dir: Path, report: Scrubbed) -> None:
    if not (data_dir / VIEWS_FILE).exists():
        return
    views = open_views(data_dir)  # secure_delete on
    try:
        with immediate(views):
            merged = search_index.optimize(views)
        if merged:
            report.done.append(f"search index merged into one segment ({', '.join(merged)})")
    finally:
        views.close()
    # Not a VACUUM: it would hold the views' write lock for the whole rewrite, and may
    # renumber search_docs' rowids, which the FTS5 index refers to. Every view is rebuilt
    # (new tables, the old ones freed and zeroed) whenever its version changes, as it did
    # when secure_delete came in: what an older notestore freed is in the freelist.
    _zero_freelist(data_dir / VIEWS_FILE, report)


def _zero_freelist(path: Path, report: Scrubbed) -> None:
    """The log is not VACUUMed (it can be huge: a VACUUM needs its size again on disk and
    keeps serve's appends waiting for all of it). In an append-only log the only space
    freed before secure_delete was on is its freelist (pages a migration's DROP TABLE left
    behind, holding the text they had): this fills every free page with zeros, in bounded
    transactions that serve's appends interleave with, then frees them again (zeroed)."""
    if not path.exists():
        return
    conn = connect(path)  # secure_delete on
    try:
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        zeroed = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        while free := int(conn.execute("PRAGMA freelist_count").fetchone()[0]):
            with immediate(conn):  # a row whose overflow pages take up to FILL_PAGES of them
                conn.execute(f"CREATE TABLE IF NOT EXISTS {FILL_TABLE} (b BLOB NOT NULL)")
                size = max(1, min(free, FILL_PAGES) - 1) * (page - 4)
                conn.execute(f"INSERT INTO {FILL_TABLE} (b) VALUES (zeroblob(?))", (size,))
        _drop_fill(conn)
    finally:
        conn.close()
    if zeroed:
        report.done.append(f"{path.name}: {zeroed} free pages overwritten with zeros")


def _drop_fill(conn: sqlite3.Connection) -> None:
    """Free the pages of the fill table, a row (at most FILL_PAGES pages) per transaction."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FILL_TABLE,)
    ).fetchone()
    if found is None:
        return
    while row := conn.execute(f"SELECT rowid FROM {FILL_TABLE} LIMIT 1").fetchone():
        with immediate(conn):
            conn.execute(f"DELETE FROM {FILL_TABLE} WHERE rowid = ?", (row[0],))
    with immediate(conn):
        conn.execute(f"DROP TABLE {FILL_TABLE}")


def _vacuum_file(conn: sqlite3.Connection, name: str, report: Scrubbed) -> None:
    """Rewrite the whole file: no page keeps what was freed before secure_delete was on."""
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError as exc:  # busy past busy_timeout: serve kept writing
        report.warnings.append(
            f"could not VACUUM {name} ({exc}): space freed before secure_delete was on"
            f" may still hold erased text; run `sqlite3 {name} VACUUM` in its folder while"
            " serve is stopped"
        )
        return
    report.done.append(f"{name} rewritten (VACUUM)")


def _truncate_wal(path: Path, deadline: float, report: Scrubbed) -> None:
    """A TRUNCATE checkpoint of the database at path, tried again until the deadline while
    readers keep it from resetting the WAL (its `busy` column is 1)."""
    if not path.exists():
        return
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        attempts = 0
        while True:
            attempts += 1
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError:  # locked past busy_timeout: as busy
                busy = 1
            if not busy:
                report.done.append(f"{path.name}: WAL copied in and emptied")
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(CHECKPOINT_RETRY_S)
    finally:
        conn.close()
    report.warnings.append(
        f"{path}-wal could not be emptied ({attempts} attempts): a reader still reads an"
        " older snapshot (serve's?), and the WAL may still hold erased text. It is emptied"
        f" once readers let it: stop serve, or run sqlite3 {path}"
        " 'PRAGMA wal_checkpoint(TRUNCATE)' until its first column is 0"
    )


def _spool(path: Path, deadline: float, report: Scrubbed) -> None:
    """The spool holds deliveries only until they are drained (then deleted, zeroed): what is
    still waiting keeps its text until then (the log stores it redacted under the
    erasure's tombstone)."""
    if not path.exists():
        return
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS * 10}")
        conn.execute("PRAGMA secure_delete = ON")
        try:
            waiting = spool_stats(conn).waiting
        except sqlite3.OperationalError:  # created but never written: no table yet
            waiting = 0
        if waiting:
            report.warnings.append(
                f"{path} still holds {waiting} deliveries not yet drained into the log: their"
                " text stays there until serve drains them (the log then stores what the"
                " erasure covers redacted, its tombstone says so, and the spool, once empty,"
                " zeroes their rows and empties its WAL)"
            )
        _vacuum_file(conn, SPOOL_FILE, report)
    finally:
        conn.close()
    _truncate_wal(path, deadline, report)


# --- PostgreSQL --------------------------------------------------------------------------


def _views_tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[sql.Composable]:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
        (VIEWS_SCHEMA,),
    ).fetchall()
    return [sql.Identifier(VIEWS_SCHEMA, str(row[0])) for row in rows]


def _vacuum(
    url: str,
    what: str,
    tables_of: Callable[[psycopg.Connection[tuple[object, ...]]], list[sql.Composable]],
    report: Scrubbed,
    *,
    reindex: bool = False,
) -> None:
    """VACUUM each table (not in a transaction: autocommit), as the role of `url`; a table
    it may not vacuum, or whose dead rows an open snapshot still needs, is reported.
    reindex: then rebuild its indexes too (_reindex)."""
    messages: list[str] = []
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.add_notice_handler(lambda d: messages.append(d.message_primary or ""))
        # never wait long on a lock or a snapshot (an idle transaction, a long pg_dump):
        # what could not be done is reported, the erasure itself is done already
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        tables = tables_of(conn)
        for table, error in _each_table(conn, "VACUUM (VERBOSE) {}", tables):
            name = table.as_string(conn)
            report.warnings.append(
                f"VACUUM of {what}, {name}: {error}: its old row versions may"
                f" still hold erased text; run VACUUM {name} once that is over"
            )
        if reindex:
            _reindex(conn, what, tables, report)
    skipped = [m for m in messages if "skipping" in m]
    kept = sum(int(m.group(1)) for line in messages for m in _NOT_REMOVABLE.finditer(line))
    for line in skipped:
        report.warnings.append(f"VACUUM of {what}: {line}")
    if kept:
        report.warnings.append(
            f"VACUUM of {what} left {kept} dead row versions an open transaction still"
            " sees: they may hold erased text until the next VACUUM (autovacuum's, or run"
            " VACUUM on those tables once that transaction is over)"
        )
    report.done.append(f"{what}: {len(tables)} tables vacuumed")


def _each_table(
    conn: psycopg.Connection[tuple[object, ...]], statement: str, tables: list[sql.Composable]
) -> list[tuple[sql.Composable, str]]:
    """Run `statement` ({} the table) on each table; the tables it failed on, with why. A
    table dropped meanwhile (a rebuild's swap) is passed over: its files went with it."""
    failed = []
    for table in tables:
        try:
            conn.execute(sql.SQL(statement).format(table))
        except psycopg.errors.UndefinedTable:
            continue
        except psycopg.Error as exc:
            failed.append((table, str(exc).strip()))
    return failed


def _drop_invalid_indexes(
    conn: psycopg.Connection[tuple[object, ...]], table: sql.Composable
) -> None:
    """A REINDEX CONCURRENTLY stopped halfway (a timeout) leaves its new indexes invalid:
    never used, but kept up to date by every write. Drop them."""
    try:
        rows = conn.execute(
            sql.SQL(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = {}::regclass AND NOT i.indisvalid"
            ).format(sql.Literal(table.as_string(conn)))
        ).fetchall()
        for (name,) in rows:
            conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                    sql.Identifier(VIEWS_SCHEMA, str(name))
                )
            )
    except psycopg.Error:
        pass  # the table went meanwhile, or the drop waits too: the next scrub tries again


def _reindex(
    conn: psycopg.Connection[tuple[object, ...]],
    what: str,
    tables: list[sql.Composable],
    report: Scrubbed,
) -> None:
    """Rebuild each table's indexes into new files (CONCURRENTLY: serve keeps reading and
    writing). VACUUM removes a dead row's entries from a B-tree without zeroing them, and a
    GIN index (the search view's words) never removes a key once added: the views' indexes
    hold text (mentions, words), so after an erasure they are written anew and the old
    files dropped. The log's indexes hold ids and digests only: they are left alone."""
    failed = []
    for table, error in _each_table(conn, "REINDEX TABLE CONCURRENTLY {}", tables):
        failed.append(f"{table.as_string(conn)}: {error}")
        _drop_invalid_indexes(conn, table)
    for line in failed:
        report.warnings.append(f"REINDEX of {what}, {line}: its old index may hold erased text")
    report.done.append(f"{what}: indexes of {len(tables) - len(failed)} tables rebuilt")
