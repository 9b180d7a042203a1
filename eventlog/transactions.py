"""Explicit write transactions: BEGIN IMMEDIATE, COMMIT, or ROLLBACK on any exception."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from eventlog.dbapi import Connection

C = TypeVar("C", bound=Connection)


@contextmanager
def immediate(conn: C) -> Iterator[C]:
    """Take the write lock up front (no upgrade deadlocks), commit if the block completes.
    (On PostgreSQL, eventlog.pg_conn makes the lock an advisory lock of the store.)"""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
