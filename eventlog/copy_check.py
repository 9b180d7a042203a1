"""Whether a SQLite log may be copied into a PostgreSQL database, checked before anything is
written: the source holds exactly the tables copy-log knows, and the target is empty or
holds a prefix of the same log.

A target holds a prefix of the source when no table of it goes past the source's last key
and
- requests and events (hash-chained): its last row has the hash the source's row of that
  key has. With the target's chain verified as well (eventlog.copy.copy_log does), every
  row before it is then the source's row too;
- quarantine and its replays (not chained): every row equals the source's row of that id.
Anything else is another log, and refused.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from eventlog import pg_schema
from eventlog.copy_chunks import (
    ERASURE_TABLES,
    TABLES,
    CopyRefused,
    Heads,
    Table,
    refuse_erasures,
)
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection

BATCH = 5000
# Tables of events.db that are not the log, and so are not copied: the spool drainer's probe
# (eventlog.drain) overwrites its one row to check that the log commits.
NOT_THE_LOG = frozenset({"heartbeat"})


def check_source_tables(source: sqlite3.Connection) -> None:
    """The SQLite log holds the tables copy-log copies, and no other (a table added by a
    later migration would otherwise be left behind without a word)."""
    found = {
        name
        for (name,) in source.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    found -= NOT_THE_LOG
    refuse_erasures(source)
    found -= set(ERASURE_TABLES)  # empty: nothing of them to copy
    known = {t.name for t in TABLES}
    if found - known:
        raise CopyRefused(
            f"the SQLite log holds table(s) this copy-log does not copy: "
            f"{', '.join(sorted(found - known))}; nothing copied"
        )
    if known - found:
        raise CopyRefused(
            f"the SQLite file is not a notestore log (no {', '.join(sorted(known - found))})"
        )


def target_version(target: PgConnection) -> int:
    """The target's log schema version (0: none yet); one newer than this code's is refused."""
    at, wanted = pg_schema.version(target.raw), len(pg_schema.MIGRATIONS)
    if at > wanted:
        raise CopyRefused(
            f"the target's log is at schema version {at}, newer than this notestore's"
            f" ({wanted}): copy with the notestore that migrated it"
        )
    return at


def migrate_target(target: PgConnection, at: int) -> bool:
    """Create the target's log schema, or bring it up to date (as its owner); whether it
    had to."""
    if at == len(pg_schema.MIGRATIONS):
        return False
    pg_schema.migrate(target.raw)
    return True


def check_prefix(source: sqlite3.Connection, target: PgConnection, at: Heads, end: Heads) -> None:
    """Refuse a target that is not a prefix of the source (`at`: its heads; `end`: the
    source's)."""
    for table in ERASURE_TABLES:  # the source holds none (check_source_tables)
        if _holds_rows(target, table):
            raise CopyRefused(f"the target holds another log: its {table} hold rows")
    for t in TABLES:
        mine, theirs = at[t.name], end[t.name]
        if mine > theirs:
            raise CopyRefused(
                f"the target holds another log: its {t.name} go up to {t.key} {mine}, the"
                f" source's only to {theirs}"
            )
        if mine and t.chained:
            _same_hash(source, target, t, mine)
        elif mine:
            _same_rows(source, target, t, mine)


def _holds_rows(target: PgConnection, table: str) -> bool:
    row = target.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()
    if not (row and row[0]):
        return False
    row = target.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()
    return bool(row and row[0])


def _hash_at(conn: Connection, t: Table, key: int) -> str | None:
    row = conn.execute(f"SELECT hash FROM {t.name} WHERE {t.key} = ?", (key,)).fetchone()
    return str(row[0]) if row else None


def _same_hash(source: sqlite3.Connection, target: PgConnection, t: Table, key: int) -> None:
    theirs, mine = _hash_at(source, t, key), _hash_at(target, t, key)
    if theirs != mine:
        raise CopyRefused(
            f"the target holds another log: {t.name} {t.key} {key} has hash {mine} there and"
            f" {theirs} in the source"
        )


def _same_rows(source: sqlite3.Connection, target: PgConnection, t: Table, upto: int) -> None:
    select = (
        f"SELECT {', '.join(t.columns)} FROM {t.name}"
        f" WHERE {t.key} > ? AND {t.key} <= ? ORDER BY {t.key} LIMIT {BATCH}"
    )
    last = 0
    while True:
        theirs = source.execute(select, (last, upto)).fetchall()
        mine = target.execute(select, (last, upto)).fetchall()
        for a, b in zip(theirs, mine, strict=False):
            if tuple(a) != _plain(b):
                key = min(a[0], b[0])
                raise CopyRefused(
                    f"the target holds another log: its {t.name} row {t.key} {key} differs"
                    " from the source's"
                )
        if len(theirs) != len(mine):
            raise CopyRefused(
                f"the target holds another log: its {t.name} rows after {t.key} {last} are"
                " not the source's"
            )
        if not theirs:
            return
        last = int(theirs[-1][0])


def _plain(row: Any) -> tuple[Any, ...]:
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
