"""The SQLite log's WAL, kept small off the commit path: the log writer's connection
checkpoints nothing itself (`open_log_for_writing`), a `Checkpointer` thread does it.

eventlog.store.SQLiteLogStore(data_dir, writer=True) uses both: the store the receiver's
GroupCommitWriter appends through.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from eventlog.db import connect, open_log, wal_path

log = structlog.get_logger("notestore.writer")

CHECKPOINT_INTERVAL_S = 1.0
# The WAL is started over once it holds this much (the -wal file stays well under 256 MB
# under steady load) ...
WAL_RESET_BYTES = 64 * 1024 * 1024
# ... by a checkpoint that keeps commits waiting at most this long for readers, else
# gives up and tries again a little later.
WAL_RESET_BUSY_MS = 20
WAL_RESET_RETRY_S = 0.1
WAL_RESET_WARN_S = 10.0  # a reset refused for this long is logged (and again as often)
# No commit seen for this long: empty the -wal file. A round sees the last commit within a
# second, and the one that truncates comes at most a second late: within 4 s of it.
WAL_IDLE_S = 2.0


def open_log_for_writing(data_dir: Path | str) -> sqlite3.Connection:
    """open_log, with automatic checkpoints off: a Checkpointer runs them instead."""
    conn = open_log(data_dir)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer's job, off the commit path
    return conn


class Checkpointer:
    """Keeps the log's WAL small, on a thread and connection of its own, off the commit path.

    The writer turns automatic checkpoints off: they fsync too, and would sit on the
    commit path of whichever delivery crossed the threshold. Every second a PASSIVE
    checkpoint copies what it can into events.db without blocking anyone. But PASSIVE
    never resets the WAL while readers keep using it, and under steady load they always
    do: the file then grows without end. So, once the WAL holds `reset_bytes`, a RESTART
    checkpoint makes the writer start the WAL over from its beginning (the next commit
    cuts the file to JOURNAL_SIZE_LIMIT). RESTART keeps new commits waiting while it
    finishes the copy and waits for readers of the old WAL: it waits at most `busy_ms`
    (the PASSIVE just before leaves it little to copy), and when readers are not done by
    then it gives up and tries again `retry_s` later, for as long as it takes. After
    `idle_s` without a commit, TRUNCATE empties the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        reset_bytes: int = WAL_RESET_BYTES,
        idle_s: float = WAL_IDLE_S,
        busy_ms: int = WAL_RESET_BUSY_MS,
        retry_s: float = WAL_RESET_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        """start=False: no thread; the caller runs step() itself (tests)."""
        self._path = path
        self._interval_s, self._reset_bytes, self._idle_s = interval_s, reset_bytes, idle_s
        self._retry_s = retry_s
        self._clock = clock
        self._conn = connect(path)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        self._frame_bytes = int(self._conn.execute("PRAGMA page_size").fetchone()[0]) + 24
        self._frames = -1  # frames in the WAL at the last step, to tell when commits stop
        # The WAL was started over and no commit came since: PASSIVE still counts its old
        # frames (the writer rewinds it on its next commit), which need no reset again.
        self._restarted = False
        self._changed_at = clock()
        self._deferred_since: float | None = None  # since when readers refuse the reset
        self._warned_at = 0.0
        self._attempted_at = -math.inf  # when RESTART was last tried
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="log-checkpointer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        wait = self._interval_s
        while not self._stopping.wait(wait):
            try:
                done = self.step()
            except sqlite3.Error as exc:
                log.warning("wal_checkpoint_failed", error=str(exc))
                done = "failed"
            wait = self._retry_s if done == "reset_deferred" else self._interval_s

    def _checkpoint(self, mode: str) -> tuple[bool, int, int]:
        """(busy, frames in the WAL, frames copied into the database)."""
        busy, frames, copied = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return bool(busy), int(frames), int(copied)

    def step(self) -> str:
        """One round; says what it did: passive, reset, reset_deferred, truncated, idle."""
        now = self._clock()
        _, frames, copied = self._checkpoint("PASSIVE")
        if frames != self._frames:
            self._frames, self._changed_at = frames, now
            self._restarted = False
        if frames * self._frame_bytes >= self._reset_bytes and not self._restarted:
            return self._reset(now, frames, everything_copied=copied == frames)
        if now - self._changed_at >= self._idle_s:
            try:
                if wal_path(self._path).stat().st_size == 0:
                    return "idle"
            except FileNotFoundError:
                return "idle"
            busy, frames, _ = self._checkpoint("TRUNCATE")
            if busy:  # a reader is still on it: next round
                return "passive"
            self._frames = frames
            return "truncated"
        return "passive"

    def _reset(self, now: float, frames: int, everything_copied: bool) -> str:
        # PASSIVE left frames behind: a reader holds an older snapshot, and RESTART would
        # keep commits waiting for it. Try anyway now and then: most readers are done
        # within milliseconds, only the ones that come and go all the time kept PASSIVE short.
        if not everything_copied and now - self._attempted_at < self._interval_s:
            return "reset_deferred"
        self._attempted_at = now
        busy, _, _ = self._checkpoint("RESTART")
        if busy:
            # One refusal is ordinary (a reader was mid-statement); say so when it lasts.
            if self._deferred_since is None:
                self._deferred_since = self._warned_at = now
            elif now - self._warned_at >= WAL_RESET_WARN_S:
                self._warned_at = now
                log.warning(
                    "wal_reset_deferred", wal_bytes=frames * self._frame_bytes,
                    seconds=round(now - self._deferred_since),
                    hint="a reader has held an old snapshot of the log all this time",
                )  # fmt: skip
            return "reset_deferred"
        if self._deferred_since is not None and self._warned_at > self._deferred_since:
            log.info("wal_reset_done", seconds=round(now - self._deferred_since))
        self._deferred_since = None
        # The count PASSIVE gives stays `frames` until the next commit: self._frames keeps
        # it, so the idle time still runs from the last commit, and TRUNCATE comes then.
        self._restarted = True
        return "reset"
