"""The small surface of a database connection that the log's readers, the projectors and the
queries use: sqlite3.Connection has it, and so does eventlog.pg_conn.PgConnection over
PostgreSQL. Code typed with `Connection` runs on either backend unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import psycopg


class Rows(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """`?` marks, explicit BEGIN IMMEDIATE / COMMIT / ROLLBACK, autocommit otherwise."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


# What a failing database raises, whichever backend: callers that report a storage problem
# (rather than a bug) catch these.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


def is_broken(conn: Connection) -> bool:
    """Whether a connection can no longer be used (a PostgreSQL server that went away); a
    SQLite connection never breaks."""
    return bool(getattr(conn, "broken", False))
