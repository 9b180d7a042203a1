"""`copy-log`: bring a SQLite log into PostgreSQL, verified at both ends, resumable.

One run: the source's tables checked, the source's heads taken, the target checked to be
empty or a prefix of the same log (eventlog.copy_check), the source's chains and signatures
verified (eventlog.verify), the target migrated if its schema is missing or behind, and a
target that is not empty verified; then the rows after the target's heads copied up to the
source's (eventlog.copy_chunks), and the target verified again with the same code, which
must reach the source's event head (a run with nothing to copy keeps the first check).
Re-running continues from the target's heads, so each run copies what arrived since the
last one.
Nothing here touches views: they are rebuilt from the log on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from eventlog.copy_check import check_prefix, check_source_tables, migrate_target, target_version
from eventlog.copy_chunks import (
    CHUNK_ROWS,
    CopyRefused,
    Heads,
    Progress,
    copy_rows,
    heads,
    rows_between,
)
from eventlog.pg_conn import PgConnection
from eventlog.verify import Signer, VerifyReport, verify_log

__all__ = ["CopyRefused", "CopyReport", "copy_log"]


@dataclass
class CopyReport:
    start: Heads  # the target's heads before the run
    end: Heads  # the source's heads the run copied up to
    migrated: bool  # the target's log schema was created (or brought up to date) by this run
    source: VerifyReport
    target: VerifyReport | None = None  # None: the source did not verify, nothing was copied
    reached: Heads | None = None  # the target's heads after the run
    copy_seconds: float = 0.0  # how long the rows took to copy (the verifications apart)

    @property
    def copied(self) -> int:
        return rows_between(self.start, self.end) if self.target is not None else 0

    @property
    def ok(self) -> bool:
        return self.source.ok and self.target is not None and self.target.ok and self.whole

    @property
    def whole(self) -> bool:
        """The target holds every row up to the source's heads, and no more."""
        return self.reached == self.end


def copy_log(
    source: sqlite3.Connection,
    target: PgConnection,
    signer: Signer,
    *,
    rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy what the target lacks of the source's log (see the module's docstring).

    Raises CopyRefused for a target holding another log or one that does not verify, with
    nothing written (and for an erasure recorded mid-run, after whole chunks: see
    CopyRefused.written); returns a report whose `ok` is false when a chain does not
    verify."""
    check_source_tables(source)
    version = target_version(target)
    end = heads(source)
    head = _event_hash(source, end["events"])
    start = heads(target) if version else dict.fromkeys(end, 0)
    if any(start.values()):
        check_prefix(source, target, start, end)
    report = CopyReport(start, end, False, verify_log(
        source, signer, head, _phase(progress, "verifying the source")
    ))  # fmt: skip
    if not report.source.ok:
        return report
    report.migrated = migrate_target(target, version)
    before = _verified_prefix(target, signer, start, head if start == end else None, progress)
    if start == end and before is not None:
        report.target = before  # nothing to copy: the target is what was just verified
    else:
        started = time.perf_counter()
        copy_rows(source, target, start, end, rows=rows, progress=progress)
        report.copy_seconds = time.perf_counter() - started
        report.target = verify_log(target, signer, head, _phase(progress, "verifying the target"))
    report.reached = heads(target)
    return report


def _verified_prefix(
    target: PgConnection,
    signer: Signer,
    start: Heads,
    head: str | None,
    progress: Progress | None,
) -> VerifyReport | None:
    """The target's own verification before anything is added to it (None: it is empty);
    CopyRefused if it does not verify."""
    if not any(start.values()):
        return None
    report = verify_log(target, signer, head, _phase(progress, "checking the target"))
    if not report.ok:
        raise CopyRefused(
            f"the target's log does not verify (first bad seq {report.events.first_bad},"
            f" request id {report.requests.first_bad}): not copying into it"
        )
    return report


def _event_hash(conn: sqlite3.Connection, seq: int) -> str | None:
    row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
    return str(row[0]) if row else None


def _phase(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)
