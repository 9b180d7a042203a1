"""`copy-log`: bring a SQLite log into PostgreSQL, verified at both ends, resumable.

One run: the source's tables checked, the target migrated if its schema is missing, the
source's heads taken, the target checked to be empty or a prefix of the same log
(eventlog.copy_check), the source's chains and signatures verified, the rows after the
target's heads copied up to the source's (eventlog.copy_chunks), and the target verified
with the same code (eventlog.verify), which must reach the source's event head. Re-running
continues from the target's heads, so each run copies what arrived since the last one.
Nothing here touches views: they are rebuilt from the log on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from eventlog.copy_check import check_prefix, check_source_tables, prepare_target
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

    Raises CopyRefused, with nothing written, for a target holding another log or one that
    does not verify; returns a report whose `ok` is false when a chain does not verify."""
    check_source_tables(source)
    migrated = prepare_target(target)
    end = heads(source)
    head = _event_hash(source, end["events"])
    start = heads(target)
    if any(start.values()):
        check_prefix(source, target, start, end)
    report = CopyReport(start, end, migrated, verify_log(
        source, signer, head, _phase(progress, "verifying the source")
    ))  # fmt: skip
    if not report.source.ok:
        return report
    if any(start.values()):
        before = verify_log(target, signer, progress=_phase(progress, "checking the target"))
        if not before.ok:
            raise CopyRefused(
                f"the target's log does not verify (first bad seq {before.events.first_bad},"
                f" request id {before.requests.first_bad}): not copying into it"
            )
    copy_rows(source, target, start, end, rows=rows, progress=progress)
    report.target = verify_log(target, signer, head, _phase(progress, "verifying the target"))
    report.reached = heads(target)
    return report


def _event_hash(conn: sqlite3.Connection, seq: int) -> str | None:
    row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
    return str(row[0]) if row else None


def _phase(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)
