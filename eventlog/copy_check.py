"""Whether a SQLite log may be copied into a PostgreSQL database, checked before anything is
written: the source holds exactly the tables copy-log knows, and the target is empty or
holds a prefix of the same log.

A target holds a prefix of the source when no table of it goes past the source's last key
and
- requests and events (hash-chained): its last row has the hash the source's row of that
  key has. With the target's chain verified as well (eventlog.copy_log does), every row
  before it is then the source's row too;
- quarantine and its replays (not chained): every row equals the source's row of that id.
Anything else is another log, and refused.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from eventlog import pg_schema
from eventlog.copy_chunks import TABLES, CopyRefused, Heads, Table
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


def prepare_target(target: PgConnection) -> bool:
    """Migrate a target whose log schema is missing or behind (as its owner); whether it
    did. A schema newer than this code's is refused."""
    at, wanted = pg_schema.version(target.raw), len(pg_schema.MIGRATIONS)
    if at > wanted:
        raise CopyRefused(
            f"the target's log is at schema version {at}, newer than this notestore's"
            f" ({wanted}): copy with the notestore that migrated it"
        )
    if at == wanted:
        return False
    pg_schema.migrate(target.raw)
    return True


def check_prefix(source: sqlite3.Connection, target: PgConnection, at: Heads, end: Heads) -> None:
    """Refuse a target that is not a prefix of the source (`at`: its heads; `end`: the
    source's)."""
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
