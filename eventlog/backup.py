"""Consistent copies of the log while it is written, and putting one back."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from eventlog.db import LOG_FILE, connect
from eventlog.verify import VerifyReport, verify_log


def _chains_only(app_id: str, fingerprint: str, body: bytes) -> str | None:
    return None  # a backup check proves the chains; signatures need the secrets (notestore verify)


def verify_file(path: Path) -> VerifyReport:
    conn = connect(path, readonly=True)
    try:
        return verify_log(conn, _chains_only)
    finally:
        conn.close()


def backup(data_dir: Path, dest: Path) -> VerifyReport:
    """VACUUM INTO: one read transaction, so writers never restart it (unlike the backup API)."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists; choose a new file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(Path(data_dir) / LOG_FILE, readonly=True)
    try:
        conn.execute("VACUUM INTO ?", (str(dest),))
    finally:
        conn.close()
    return verify_file(dest)


def restore(source: Path, data_dir: Path) -> Path | None:
    """Put a verified backup in place of the log; the old one is kept aside. Views must rebuild."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    live = data_dir / LOG_FILE
    kept = None
    if live.exists():
        # fold the live WAL in first, so the file set aside is complete on its own
        conn = connect(live)  # synchronous = FULL, as every connection to the log
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        kept = data_dir / f"{LOG_FILE}.replaced-{time.strftime('%Y%m%dT%H%M%S')}"
        live.rename(kept)
    for leftover in (Path(f"{live}-wal"), Path(f"{live}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(source, live)
    for view_file in data_dir.glob("views.db*"):
        view_file.unlink()
    return kept
