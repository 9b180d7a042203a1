"""Which backend holds the log and the views, and how each part of notestore opens them.

SQLite (the default): events.db and views.db under data_dir. PostgreSQL, when a
`database_url` is configured: the log in the database's `public` schema (eventlog.pg_schema)
and the views in its `notestore_views` schema; data_dir then holds only local files.
Every reader, projector and query gets an eventlog.dbapi.Connection from here and runs the
same SQL on either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from eventlog import pg_schema
from eventlog.db import LOG_FILE, connect, open_log
from eventlog.dbapi import Connection
from eventlog.pg_conn import PgConnection
from eventlog.pg_log import PostgresLogStore
from eventlog.store import LogStore, SQLiteLogStore
from projections.store import open_pg_views, open_views

SQLITE, POSTGRESQL = "sqlite", "postgresql"


def masked(url: str) -> str:
    """A database URL as it may be shown: its password replaced by ***, whether in its user
    part or in a `password=` query parameter."""
    return re.sub(r"((?:\?|&)password=)[^&]*", r"\1***", _masked_user(url))


def _masked_user(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "postgresql://***"  # a URL too malformed to take apart shows nothing of itself


@dataclass(frozen=True)
class Storage:
    data_dir: Path
    database_url: str | None = None

    @property
    def backend(self) -> str:
        return POSTGRESQL if self.database_url else SQLITE

    def prepare(self) -> None:
        """Create the log if it is missing and bring its schema up to date (and data_dir,
        which holds local files whichever the backend)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.database_url:
            conn = PgConnection.connect(self.database_url, write_lock=0)
            try:
                # the service role cannot migrate (`notestore migrate` runs as the owner):
                # only a log that is behind is migrated here
                if pg_schema.version(conn.raw) < len(pg_schema.MIGRATIONS):
                    pg_schema.migrate(conn.raw)
            finally:
                conn.close()
        else:
            open_log(self.data_dir).close()

    def log_reader(self) -> Connection:
        """A connection that reads the log (it never writes through it)."""
        if self.database_url:
            return PgConnection.connect(self.database_url, write_lock=0)
        return connect(self.data_dir / LOG_FILE, readonly=True)

    def views(self) -> Connection:
        if self.database_url:
            return open_pg_views(self.database_url)
        return open_views(self.data_dir)

    def log_store(self, *, writer: bool = False) -> LogStore:
        """The log's storage contract. writer=True: the store of the receiver's writer
        (eventlog.writer.GroupCommitWriter), which appends from one thread: on SQLite it
        checkpoints the WAL on a thread of its own, off the commit path; on PostgreSQL it
        holds one connection."""
        if self.database_url and writer:
            return PostgresLogStore(self.database_url, max_connections=1)
        if self.database_url:
            return PostgresLogStore(self.database_url)
        return SQLiteLogStore(self.data_dir, writer=writer)
