"""Helpers for operations tests: held items an older version rejected, the CLI, raw edits, and
the same on either backend (a `Backend`: SQLite files under data_dir, or a PostgreSQL URL)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from app.config import fingerprint
from eventlog import pg_schema
from eventlog.append import Delivery
from eventlog.canonical import compact_json
from eventlog.intake import Intake, Rejected, read_body
from projections.storage import Storage
from tests.helpers import APP_A, make_block, secret_for, signature
from tests.server import write_config


@dataclass(frozen=True)
class Backend:
    """Where a test's log lives: `url` None for SQLite under data_dir."""

    data_dir: Path
    url: str | None = None

    @property
    def storage(self) -> Storage:
        return Storage(self.data_dir, self.url)

    @property
    def name(self) -> str:
        return self.storage.backend

    def config(self, folder: Path, apps: dict[str, Any], **more: Any) -> Path:
        """A config with data under folder/data and, on PostgreSQL, this database_url."""
        if self.url is not None:
            more = {"database_url": self.url, **more}
        return write_config(folder, apps, **more)

    def append(self, deliveries: list[Delivery]) -> None:
        """Each delivery in a transaction of its own, through the backend's LogStore."""
        if self.url is not None:
            migrate(self.url)
        store = self.storage.log_store()
        try:
            for delivery in deliveries:
                store.append([delivery])
        finally:
            store.close()

    def append_bodies(self, bodies: Iterable[dict[str, Any]]) -> None:
        self.append([delivery_of(body) for body in bodies])

    def message_ids(self) -> list[str]:
        conn = self.storage.log_reader()
        try:
            return [r[0] for r in conn.execute("SELECT message_id FROM events ORDER BY seq")]
        finally:
            conn.close()

    def tamper(self, sqlite_statement: str, pg_statement: str | None = None) -> None:
        """Edit the log by hand, as an attacker (or a superuser) would: triggers off first."""
        if self.url is None:
            tamper(self.data_dir / "events.db", sqlite_statement)
            return
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            for table in pg_schema.LOG_TABLES:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
            conn.execute((pg_statement or sqlite_statement).encode())
            for table in pg_schema.LOG_TABLES:
                conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only")


def delivery_of(body: dict[str, Any]) -> Delivery:
    """A body as the receiver hands it to the log: signed by its app, read now."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    app_id = body.get("app_id", APP_A)
    at = time.time()
    return Delivery(at, app_id, fingerprint(secret_for(app_id)), signature(raw, app_id), raw,
                    read_body(raw, app_id, at))  # fmt: skip


def migrate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        pg_schema.migrate(conn)


def backend_for(request: Any, tmp_path: Path) -> Backend:
    """The backend a test parametrised with "sqlite" / "postgresql" runs on (the second takes
    the pg_url fixture, which the test module binds)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return Backend(tmp_path / "data", url)


def held_deliveries(
    count: int, per_request: int = 1
) -> tuple[list[dict[str, Any]], list[Delivery]]:
    """Valid blocks that an older, stricter version sent to quarantine (what a code fix lets
    in), and the deliveries that hold them."""
    blocks = [
        make_block(note_id=f"held-{i % 7}", action_time=1_600_000_000.0 + i) for i in range(count)
    ]
    deliveries = []
    for i in range(0, count, per_request):
        chunk = blocks[i : i + per_request]
        raw = json.dumps({"app_id": APP_A, "block_event": chunk}).encode()
        rejected = [
            Rejected("invalid_block", "older rule", compact_json(b), "block", b["message_id"])
            for b in chunk
        ]
        intake = Intake(app_id=APP_A, rejected=rejected)
        deliveries.append(
            Delivery(
                time.time(), APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw, intake
            )
        )
    return blocks, deliveries


def hold_as_if_rejected(
    data_dir: Path, count: int, per_request: int = 1, database_url: str | None = None
) -> list[dict[str, Any]]:
    """Quarantine `count` valid blocks as an older version did, in the log of either backend."""
    blocks, deliveries = held_deliveries(count, per_request)
    Backend(data_dir, database_url).append(deliveries)
    return blocks


def notestore(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def tamper(db: Path, *statements: str) -> None:
    """Edit the log by hand, as an attacker would: triggers dropped first."""
    conn = sqlite3.connect(db, isolation_level=None)
    for trigger in [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    ]:
        conn.execute(f"DROP TRIGGER {trigger}")
    for statement in statements:
        conn.execute(statement)
    conn.close()
