"""Helpers for operations tests: held items an older version rejected, the CLI, raw edits."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.config import fingerprint
from eventlog.append import Delivery, append_deliveries
from eventlog.canonical import compact_json
from eventlog.db import open_log
from eventlog.intake import Intake, Rejected
from tests.helpers import APP_A, make_block, secret_for, signature


def hold_as_if_rejected(data_dir: Path, count: int, per_request: int = 1) -> list[dict[str, Any]]:
    """Valid blocks that an older, stricter version sent to quarantine (what a code fix lets in)."""
    blocks = [make_block(note_id=f"held-{i % 7}", action_time=1_600_000_000.0 + i) for i in range(count)]
    conn = open_log(data_dir)
    try:
        for i in range(0, count, per_request):
            chunk = blocks[i : i + per_request]
            raw = json.dumps({"app_id": APP_A, "block_event": chunk}).encode()
            rejected = [
                Rejected("invalid_block", "older rule", compact_json(b), "block", b["message_id"])
                for b in chunk
            ]
            intake = Intake(app_id=APP_A, rejected=rejected)
            delivery = Delivery(
                time.time(), APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw, intake
            )
            append_deliveries(conn, [delivery])
    finally:
        conn.close()
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
