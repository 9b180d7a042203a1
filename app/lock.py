"""Advisory locks on files in the data directory.

`serve.lock` is held by `notestore serve` while it runs;
`projectors.lock` by the one projector process. The kernel drops a lock when its
holder dies (even by SIGKILL), so none ever goes stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "serve.lock"
PROJECTORS_LOCK = "projectors.lock"


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def try_lock(path: Path) -> int | None:
    """Take an exclusive lock now; its file descriptor, or None if another process holds it."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def wait_lock(path: Path) -> int:
    """Take an exclusive lock, waiting for its holder to let go."""
    fd = _open(path)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def is_held(path: Path) -> bool:
    """Whether a process holds the lock; probes with a shared lock, so probes never collide."""
    if not path.exists():
        return False
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def hold_serve_lock(data_dir: Path) -> int | None:
    """Take the serve lock; returns its file descriptor, or None if another serve holds it."""
    return try_lock(data_dir / LOCK_FILE)


def serve_running(data_dir: Path) -> bool:
    return is_held(data_dir / LOCK_FILE)


def projectors_running(data_dir: Path) -> bool:
    return is_held(data_dir / PROJECTORS_LOCK)
