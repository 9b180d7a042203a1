"""Serialises the commits of several writer processes on one log.

SQLite's own busy handler sleeps between retries (1, 2, 5 ... up to 100 ms), which
puts every collision between two serve workers on the p99. An flock queue wakes the
next waiter the moment the holder lets go. Holders keep it for one transaction.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WRITE_LOCK = "write.lock"


class WriteLock:
    def __init__(self, data_dir: Path) -> None:
        self._fd = os.open(Path(data_dir) / WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def held(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
