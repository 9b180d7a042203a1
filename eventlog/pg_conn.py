"""A psycopg connection with sqlite3's surface (eventlog.dbapi.Connection), so that the SQL
of the log's readers, the projectors and the queries serves PostgreSQL as it is.

What it translates, and nothing more:
- `?` marks become `%s`, and a literal `%` is doubled, in a statement given parameters (one
  given none is sent as it is, as psycopg does). Our SQL never holds a `?` inside a string
  literal.
- `BEGIN IMMEDIATE` (SQLite: take the database's write lock up front) becomes BEGIN plus a
  transaction-scoped advisory lock on `write_lock`: writers of one store are serialised
  exactly as on SQLite, which the projectors rely on (a checkpoint read inside the write
  transaction is never read by two writers at once).
- In CREATE TABLE: REAL is `double precision` (PostgreSQL's REAL has 24 bits: epoch
  seconds would lose their fractions), INTEGER is `bigint`, TEXT sorts bytewise (`COLLATE
  "C"`, as SQLite's default BINARY: a keyset cursor, and every tie broken by an id, orders
  the same on both backends), and SQLite's `WITHOUT ROWID` storage hint is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus

# Every connection notestore opens waits boundedly for a server that does not answer: a
# connect timeout, TCP keepalives both ways (a host that died or a network cut is noticed
# in about 25 s, not the kernel's two hours), and the server ends a session left idle
# inside a transaction, so a client frozen while holding the append lock cannot stop
# every other instance from receiving.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "options": (
        "-c idle_in_transaction_session_timeout=30000 -c tcp_keepalives_idle=10"
        " -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    ),
}


def connect(url: str) -> psycopg.Connection[Any]:
    """A psycopg connection in autocommit mode, with CONNECT_OPTIONS."""
    return psycopg.connect(url, autocommit=True, **CONNECT_OPTIONS)


_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "TEXT": 'TEXT COLLATE "C"'}
_TYPE_WORD = re.compile(r"\b(REAL|INTEGER|TEXT)\b")


@lru_cache(maxsize=512)
def translate(statement: str, with_parameters: bool = True) -> str:
    """A statement written for SQLite, as PostgreSQL takes it."""
    if statement.lstrip().upper().startswith("CREATE TABLE"):
        statement = _TYPE_WORD.sub(lambda m: _TYPES[m.group(1)], statement)
        statement = re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", statement)
    if not with_parameters:
        return statement
    return statement.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """One psycopg connection in autocommit mode: transactions are explicit, as with sqlite3."""

    backend = "postgresql"

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        write_lock: int,
        search_path: str | None = None,
    ) -> None:
        self.raw = conn
        self.raw.autocommit = True
        self.write_lock = write_lock
        if search_path is not None:
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(search_path)))

    @classmethod
    def connect(cls, url: str, *, write_lock: int, search_path: str | None = None) -> PgConnection:
        return cls(connect(url), write_lock=write_lock,
                   search_path=search_path)  # fmt: skip

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        if sql == "BEGIN IMMEDIATE":
            self.raw.execute("BEGIN")
            return self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (self.write_lock,))
        if not parameters:
            return self.raw.execute(translate(sql, False))
        return self.raw.execute(translate(sql), parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> None:
        rows = list(seq_of_parameters)
        if rows:
            with self.raw.cursor() as cur:
                cur.executemany(translate(sql), rows)

    @property
    def broken(self) -> bool:
        """The server went away (restarted, unreachable): open a new connection."""
        return self.raw.broken or self.raw.closed

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()
