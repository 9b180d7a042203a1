"""Walking the log to prove it was not altered: hash chains and stored signatures.

Streams the log in batches by key, so a log of any size verifies in little memory. The same
SQL reads either backend (eventlog.dbapi.Connection): SQLite, or PostgreSQL through PgConnection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eventlog import chain
from eventlog.canonical import event_content_hash, loads_strict
from eventlog.dbapi import Connection

BATCH = 5000
# (app_id, fingerprint, body) -> the signature that secret gives, or None if no such secret
Signer = Callable[[str, str, bytes], str | None]
Progress = Callable[[int, int], None]


@dataclass
class ChainReport:
    table: str
    rows: int = 0
    head: str = chain.GENESIS
    first_bad: int | None = None
    problems: list[str] = field(default_factory=list)
    saw_expected_head: bool = False

    def bad(self, key: int, problem: str) -> None:
        if self.first_bad is None:
            self.first_bad = key
        if len(self.problems) < 20:
            self.problems.append(problem)


@dataclass
class VerifyReport:
    events: ChainReport
    requests: ChainReport
    unverifiable: int = 0  # requests whose secret has since been rotated out
    expect_head: str | None = None

    @property
    def ok(self) -> bool:
        head_ok = self.expect_head is None or self.events.saw_expected_head
        return self.events.first_bad is None and self.requests.first_bad is None and head_ok


def _rows(
    conn: Connection, table: str, key: str, columns: tuple[str, ...]
) -> Iterator[tuple[Any, ...]]:
    last = 0
    select = (
        f"SELECT {', '.join(columns)}, hash FROM {table}"
        f" WHERE {key} > ? ORDER BY {key} LIMIT {BATCH}"
    )
    while rows := conn.execute(select, (last,)).fetchall():
        yield from rows
        last = rows[-1][0]


def walk_chain(
    conn: Connection,
    table: str,
    key: str,
    columns: tuple[str, ...],
    check_row: Callable[[tuple[Any, ...], ChainReport], None] | None = None,
    expect_head: str | None = None,
    progress: Progress | None = None,
) -> ChainReport:
    report = ChainReport(table)
    total = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    previous, expected_key = chain.GENESIS, 1
    for row in _rows(conn, table, key, columns):
        values, stored = row[:-1], row[-1]
        if values[0] != expected_key:
            report.bad(expected_key, f"{table} {key} {expected_key} to {values[0] - 1} missing")
        if chain.link(previous, values) != stored:
            report.bad(
                values[0], f"{table} {key} {values[0]}: content does not match its hash chain"
            )
        if check_row is not None:
            check_row(row, report)
        if stored == expect_head:
            report.saw_expected_head = True
        previous, expected_key = stored, values[0] + 1
        report.rows += 1
        if progress and report.rows % BATCH == 0:
            progress(report.rows, total)
    report.head = previous
    if progress:
        progress(report.rows, total)
    return report


def _origin_checker(conn: Connection) -> Callable[[tuple[Any, ...], ChainReport], None]:
    """Each event's block must be one its request's signed body carries, with the same content.

    Without this a forged row, chained correctly and pointing at a genuine request, would pass.
    """
    bodies: dict[int, dict[str, str]] = {}  # request id -> message_id -> content hash (small cache)

    def carried(request_ref: int) -> dict[str, str]:
        if request_ref not in bodies:
            if len(bodies) > 1000:
                bodies.clear()
            row = conn.execute("SELECT body FROM requests WHERE id = ?", (request_ref,)).fetchone()
            found: dict[str, str] = {}
            try:
                for block in loads_strict(bytes(row[0]))["block_event"] if row else ():
                    found.setdefault(
                        block["message_id"],
                        event_content_hash(
                            block["message_id"], block["event_type"], block["data_event"]
                        ),
                    )
            except (ValueError, TypeError, KeyError, RecursionError):
                pass  # a body that cannot be read carries no event
            bodies[request_ref] = found
        return bodies[request_ref]

    def check(row: tuple[Any, ...], report: ChainReport) -> None:
        seq, message_id, content_hash, request_ref, block = row[0], row[1], row[2], row[10], row[14]
        try:
            stored = loads_strict(block)
            own = event_content_hash(message_id, stored["event_type"], stored["data_event"])
        except (ValueError, TypeError, KeyError, RecursionError):
            own = None
        if own != content_hash:
            report.bad(seq, f"events seq {seq}: its block does not match its content hash")
        elif carried(request_ref).get(message_id) != content_hash:
            report.bad(
                seq, f"events seq {seq}: not carried by the request it names (id {request_ref})"
            )

    return check


def verify_log(
    conn: Connection,
    signer: Signer,
    expect_head: str | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    unverifiable = 0

    def check_signature(row: tuple[Any, ...], report: ChainReport) -> None:
        nonlocal unverifiable
        request_id, app_id, fingerprint, signature, body = row[0], row[2], row[3], row[4], row[6]
        expected = signer(app_id, fingerprint, bytes(body))
        if expected is None:
            unverifiable += 1
        elif expected != signature.strip().lower():
            report.bad(
                request_id, f"requests id {request_id}: stored signature does not match its body"
            )

    events = walk_chain(
        conn, "events", "seq", chain.EVENT_COLUMNS, _origin_checker(conn), expect_head, progress
    )
    requests = walk_chain(conn, "requests", "id", chain.REQUEST_COLUMNS, check_signature)
    return VerifyReport(events, requests, unverifiable, expect_head)
