"""The log's storage contract (`LogStore`), and its SQLite backend over today's functions.

A log store appends batches of verified deliveries (dedup per (merchant, message_id),
conflicts and rejected items to quarantine, the requests and events hash chains, all of a
batch in one transaction) and reads events back by position and by entity. Backends:
`SQLiteLogStore` (here: events.db under data_dir) and `eventlog.pg_log.PostgresLogStore`.
tests/test_log_contract.py runs one suite over both.

One bad row never fails a whole batch: when a batch cannot be written because of what one
delivery holds (text the database refuses, a broken constraint), the batch is written again
delivery by delivery in the same transaction, each in a savepoint, and a delivery that still
fails is stored as its request (the raw body, exactly) with the whole body quarantined under
the reason `unstorable`. Failures of the database itself (locked, disk, connection)
propagate: nothing of the batch is committed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from eventlog.append import Batch, Delivery, Outcome, _store, append_deliveries, quarantine
from eventlog.db import LOG_FILE, open_log
from eventlog.intake import Intake, Rejected, _body_text
from eventlog.read import LogEvent, head_seq, log_counts, read_by_entity, read_from
from eventlog.tombstones import read_tombstones, redact_item
from eventlog.transactions import immediate
from eventlog.wal import Checkpointer, open_log_for_writing

UNSTORABLE = "unstorable"  # quarantine reason of a delivery the backend could not store
RequestKey = tuple[float, str, str]  # a request as received: (received_at, app_id, signature)


@runtime_checkable
class LogStore(Protocol):
    """The storage contract of the log (tests/test_log_contract.py holds every backend to it)."""

    def append(self, deliveries: list[Delivery]) -> list[Outcome]:
        """Store every delivery in one transaction; each one's counts, once committed."""
        ...

    def read_from(
        self, after_seq: int, limit: int = 1000, merchants: frozenset[str] | None = None
    ) -> list[LogEvent]:
        """Events with seq > after_seq in seq order, at most `limit`; with `merchants`, only
        events whose merchant_id is one of them (an event without a merchant is in no scope)."""
        ...

    def read_by_entity(self, ids: list[str] | tuple[str, ...] | set[str]) -> list[LogEvent]:
        """Every event whose entity_id, or whose note_id, is one of `ids`, in seq order."""
        ...

    def head_seq(self) -> int:
        """The last seq (0 for an empty log)."""
        ...

    def counts(self) -> dict[str, int]:
        """{"events", "requests", "quarantined", "last_seq"}."""
        ...

    def probe(self) -> None:
        """Commit a transaction that writes nothing of the log (raises if it cannot)."""
        ...

    def logged(self, keys: list[RequestKey]) -> set[RequestKey]:
        """Those of `keys` (received_at, app_id, signature) whose request the log holds."""
        ...

    def quarantine(self, item: Rejected, received_at: float) -> None:
        """Quarantine one item on its own, with no request (a delivery the log refused)."""
        ...

    def close(self) -> None: ...


def storable_text(value: str | None) -> bool:
    """Whether both backends can store `value` in a text column (no NUL, valid UTF-8)."""
    if value is None:
        return True
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable(d: Delivery, error: BaseException) -> Delivery:
    """What is stored of a delivery its backend refused: its request and raw body as they
    came, the body quarantined whole with the error (its events can be replayed later)."""
    detail = f"the log could not store this delivery: {type(error).__name__}: {error}"
    request_id = d.intake.request_id if storable_text(d.intake.request_id) else None
    intake = Intake(
        app_id=d.intake.app_id,
        request_id=request_id,
        rejected=[Rejected(UNSTORABLE, _printable(detail), _body_text(d.body), "body")],
    )
    return Delivery(
        d.received_at, d.app_id, d.secret_fingerprint, d.signature, d.body, intake, d.body_digest
    )


def _printable(text: str) -> str:
    """An error message as storable text (it may quote the very character refused)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


# What a delivery's own content can raise while its rows are bound and inserted: text that
# cannot be encoded, an integer past 64 bits, a constraint or trigger refusing the row. (Not
# any ValueError: one raised by our own code is a bug, and fails the batch as it is.)
SQLITE_ROW_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeEncodeError,
    OverflowError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
)


class SQLiteLogStore:
    """The log in events.db under data_dir: today's functions behind the contract.

    writer=True: the store of the receiver's writer (eventlog.writer.GroupCommitWriter).
    Its connection never checkpoints the WAL on a commit (wal_autocheckpoint=0): a
    Checkpointer thread of the store's own does, off the commit path (eventlog.wal), and
    close() stops it. Use one such store per log at a time.
    """

    backend = "sqlite"

    def __init__(self, data_dir: Path | str, *, writer: bool = False) -> None:
        self.path = Path(data_dir) / LOG_FILE
        self.conn = open_log_for_writing(data_dir) if writer else open_log(data_dir)
        self._lock = threading.Lock()  # one connection: one operation at a time
        self._checkpointer = Checkpointer(self.path) if writer else None

    def append(self, deliveries: list[Delivery]) -> list[Outcome]:
        with self._lock:
            try:
                return append_deliveries(self.conn, deliveries)
            except SQLITE_ROW_ERRORS:
                pass  # rolled back: write them again one by one, the bad one quarantined
            return self._append_isolated(deliveries)

    def _append_isolated(self, deliveries: list[Delivery]) -> list[Outcome]:
        outcomes = []
        with immediate(self.conn):
            batch = Batch(self.conn)
            for d in deliveries:
                try:
                    outcomes.append(self._store_in_savepoint(batch, d))
                except SQLITE_ROW_ERRORS as exc:
                    outcomes.append(self._store_in_savepoint(batch, unstorable(d, exc)))
        return outcomes

    def _store_in_savepoint(self, batch: Batch, d: Delivery) -> Outcome:
        heads = (batch.seq, batch.event_hash, batch.request_id, batch.request_hash)
        self.conn.execute("SAVEPOINT delivery")
        try:
            outcome = _store(self.conn, batch, d)
        except BaseException:
            self.conn.execute("ROLLBACK TO delivery")
            self.conn.execute("RELEASE delivery")
            batch.seq, batch.event_hash, batch.request_id, batch.request_hash = heads
            raise
        self.conn.execute("RELEASE delivery")
        return outcome

    def read_from(
        self, after_seq: int, limit: int = 1000, merchants: frozenset[str] | None = None
    ) -> list[LogEvent]:
        where: tuple[str, tuple[object, ...]] = ("TRUE", ())
        if merchants is not None:
            ordered = tuple(sorted(merchants))
            where = (f"merchant_id IN ({', '.join('?' * len(ordered))})", ordered)
        with self._lock:
            return read_from(self.conn, after_seq, limit, where)

    def read_by_entity(self, ids: list[str] | tuple[str, ...] | set[str]) -> list[LogEvent]:
        with self._lock:
            return read_by_entity(self.conn, ids)

    def head_seq(self) -> int:
        with self._lock:
            return head_seq(self.conn)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return log_counts(self.conn)

    def probe(self) -> None:
        with self._lock, immediate(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", (time.time(),)
            )

    def quarantine(self, item: Rejected, received_at: float) -> None:
        with self._lock, immediate(self.conn):
            item = redact_item(item, read_tombstones(self.conn))
            quarantine(self.conn, item, None, received_at)

    def logged(self, keys: list[RequestKey]) -> set[RequestKey]:
        found: set[RequestKey] = set()
        times = sorted({at for at, _, _ in keys})
        with self._lock:
            for start in range(0, len(times), 500):
                chunk = times[start : start + 500]
                found.update(
                    self.conn.execute(
                        "SELECT received_at, app_id, signature FROM requests"
                        f" WHERE received_at IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    )
                )
        return found & set(keys)

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                with contextlib.suppress(sqlite3.Error):  # what is left for the next opener
                    self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.conn.close()
