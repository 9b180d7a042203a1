"""One advisory lock per data directory, held by `notestore serve` while it runs.

The kernel drops it when the process dies (even by SIGKILL), so it never goes stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "serve.lock"


def hold_serve_lock(data_dir: Path) -> int | None:
    """Take the lock; returns its file descriptor, or None if another serve holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def serve_running(data_dir: Path) -> bool:
    if not (data_dir / LOCK_FILE).exists():
        return False
    fd = hold_serve_lock(data_dir)
    if fd is None:
        return True
    os.close(fd)
    return False
