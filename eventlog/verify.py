"""Walking the log to prove it was not altered: hash chains and stored signatures.

Streams the log in batches by key, so a log of any size verifies in little memory. The same
SQL reads either backend (eventlog.dbapi.Connection): SQLite, or PostgreSQL through PgConnection.

An erased row (eventlog.erase) links into its chain with the digest of its content before
the erasure, as recorded in erased_rows; its content now must have the digest recorded
after it (each later erasure of the row starting from the digest the previous one left).
Its origin and signature can no longer be re-checked: the report lists such rows with the
erasures that redacted them. The erasures form a chain of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from eventlog import chain
from eventlog.canonical import event_content_hash, loads_strict
from eventlog.dbapi import DATABASE_ERRORS, Connection
from eventlog.redaction import ID_FIELDS, Scope, is_marker, is_marker_block, marker_start

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
    erased: dict[int, list[int]] = field(default_factory=dict)  # erasure id -> keys (first 20)
    erased_rows: int = 0

    def bad(self, key: int, problem: str) -> None:
        if self.first_bad is None:
            self.first_bad = key
        if len(self.problems) < 20:
            self.problems.append(problem)

    def erased_by(self, key: int, erasure_ids: list[int]) -> None:
        self.erased_rows += 1
        keys = self.erased.setdefault(erasure_ids[-1], [])
        if len(keys) < 20:
            keys.append(key)


@dataclass
class VerifyReport:
    events: ChainReport
    requests: ChainReport
    unverifiable: int = 0  # requests whose secret has since been rotated out
    expect_head: str | None = None
    erasures: ChainReport | None = None  # None: a log from before erasure (no such table)

    @property
    def ok(self) -> bool:
        head_ok = self.expect_head is None or self.events.saw_expected_head
        erasures_ok = self.erasures is None or self.erasures.first_bad is None
        return (
            self.events.first_bad is None and self.requests.first_bad is None and head_ok
            and erasures_ok
        )  # fmt: skip

    def erasure_lines(self) -> list[str]:
        """What verify says of erased rows: which erasure redacted them, and that their
        origin and signatures can no longer be re-checked."""
        lines = []
        for chain_report, key, what in (
            (self.events, "seq", "origin"), (self.requests, "id", "signature"),
        ):  # fmt: skip
            if chain_report.erased_rows:
                lines.append(
                    f"{chain_report.erased_rows} {chain_report.table} erased: their {what}"
                    " can no longer be re-checked (their content matches its erasure record)"
                )
            for erasure_id, keys in sorted(chain_report.erased.items()):
                shown = ", ".join(map(str, keys))
                lines.append(
                    f"  erased by erasure {erasure_id}: {chain_report.table} {key} {shown}"
                )
        return lines


# row key -> [(erasure id, digest before, digest after)] in erasure order
Erased = dict[int, list[tuple[int, str, str]]]


def _rows(
    conn: Connection, table: str, key: str, columns: tuple[str, ...], with_erased: bool
) -> Iterator[tuple[tuple[Any, ...], Erased]]:
    last = 0
    select = (
        f"SELECT {', '.join(columns)}, hash FROM {table}"
        f" WHERE {key} > ? ORDER BY {key} LIMIT {BATCH}"
    )
    while rows := conn.execute(select, (last,)).fetchall():
        erased: Erased = {}
        if with_erased:
            for row_key, erasure_id, before, after in conn.execute(
                "SELECT row_key, erasure_id, original_digest, redacted_digest FROM erased_rows"
                " WHERE log_table = ? AND row_key BETWEEN ? AND ? ORDER BY row_key, erasure_id",
                (table, rows[0][0], rows[-1][0]),
            ):
                erased.setdefault(int(row_key), []).append((int(erasure_id), before, after))
        for row in rows:
            yield row, erased
        last = rows[-1][0]


# (the row's values, the erasure ids of its records, the erasures' scopes) -> a problem
MarkerCheck = Callable[[tuple[Any, ...], list[int], dict[int, Scope]], str | None]


def _erased_link(
    values: tuple[Any, ...],
    records: list[tuple[int, str, str]],
    report: ChainReport,
    where: str,
    marker_check: MarkerCheck | None = None,
    scopes: dict[int, Scope] | None = None,
) -> str:
    """The digest an erased row links into its chain with; a problem if its content, or its
    records, do not follow one another, or if its content is not the marker its erasures
    write on a row their scopes cover (a record added by hand for another row)."""
    steps_follow = all(a[2] == b[1] for a, b in zip(records, records[1:], strict=False))
    if not steps_follow or chain.digest(values[-1]) != records[-1][2]:
        report.bad(values[0], f"{where}: erased content does not match its erasure record")
    elif marker_check is not None:
        problem = marker_check(values, [r[0] for r in records], scopes or {})
        if problem:
            report.bad(values[0], f"{where}: {problem}")
    report.erased_by(values[0], [r[0] for r in records])
    return records[0][1]


def erasure_scopes(conn: Connection) -> dict[int, Scope]:
    """Each recorded erasure's scope: its merchant, note, date, and the comments its
    tombstone holds (rows naming the erasure's merchant only)."""
    scopes = {
        int(i): Scope(merchant_id=m, note_id=n, before=None if b is None else float(b))
        for i, m, n, b in conn.execute("SELECT id, merchant_id, note_id, before FROM erasures")
    }
    for erasure_id, merchant, entity in conn.execute(
        "SELECT erasure_id, merchant_id, entity_id FROM tombstones"
    ):
        scope = scopes.get(int(erasure_id))
        comment = entity is not None and scope is not None and entity != scope.note_id
        if comment and scope and scope.note_id and merchant == scope.merchant_id:
            scopes[int(erasure_id)] = replace(scope, comments=scope.comments | {entity})
    return scopes


def _same_number(a: Any, b: Any) -> bool:
    number = isinstance(a, int | float) and not isinstance(a, bool)
    return number and float(a) == float(b)


def _event_marker(
    values: tuple[Any, ...], erasures: list[int], scopes: dict[int, Scope]
) -> str | None:
    """An erased event's block must be the marker of its last erasure for this very row
    (its message_id, event_type, ids and action_time), and every erasure must cover it."""
    _, message_id, _, event_type, entity, entity_id, note_id, merchant = values[:8]
    action_time, block = values[11], values[14]
    if any(e not in scopes for e in erasures):
        return "erased by an erasure that is not recorded"
    ids = (note_id, entity_id)
    if not all(scopes[e].covers(merchant, ids, action_time) for e in erasures):
        return "erased by an erasure whose scope does not cover it"
    try:
        marker = loads_strict(block)
    except (ValueError, RecursionError):
        marker = None
    own = {"note_id": note_id if entity != "note" else entity_id,
           "comment_id": entity_id, "merchant_id": merchant}  # fmt: skip
    fine = (
        is_marker(block)
        and is_marker_block(marker)
        and marker["erased"] == erasures[-1]
        and block.startswith(marker_start(erasures[-1]))
        and (marker["message_id"], marker["event_type"]) == (message_id, event_type)
        and all(marker["data_event"][k] == own[k] for k in ID_FIELDS if k in marker["data_event"])
        and _same_number(marker["data_event"].get("action_time"), action_time)
        and all(
            isinstance(d, dict) and set(d) == {"field_key"}
            for d in marker["data_event"].get("event_detail", [])
        )
    )
    return None if fine else "erased content is not the marker of its erasure"


def _body_marker(
    values: tuple[Any, ...], erasures: list[int], scopes: dict[int, Scope]
) -> str | None:
    """An erased body is either its last erasure's whole marker (a body that was not an
    envelope), or an envelope whose marker blocks each name one of the row's erasures and
    are covered by its scope, its last erasure's among them."""
    body = bytes(values[-1])
    if any(e not in scopes for e in erasures):
        return "erased by an erasure that is not recorded"
    try:
        parsed = loads_strict(body)
    except (ValueError, RecursionError):
        parsed = None
    if is_marker(body):
        fine = (
            isinstance(parsed, dict)
            and set(parsed) == {"erased", "redacted", "content_hash"}
            and parsed["erased"] == erasures[-1]
            and parsed["redacted"] == "body"
            and scopes[erasures[-1]].before is None
        )
        return None if fine else "erased content is not the marker of its erasure"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("block_event"), list):
        return "erased content is neither a marker nor an envelope with blocks erased"
    named = set()
    for block in parsed["block_event"]:
        if isinstance(block, dict) and "erased" in block:
            by = block.get("erased")
            if not is_marker_block(block) or by not in erasures:
                return "holds a marker of an erasure that did not erase it"
            if not scopes[by].covers_block(block, parsed.get("merchant_id")):
                return "holds a marker of an erasure whose scope does not cover it"
            named.add(by)
    if erasures[-1] not in named:
        return "erased content does not hold its erasure's marker"
    return None


def has_erasures(conn: Connection) -> bool:
    """Whether the log has the erasure tables (a backup from before them has not)."""
    try:
        conn.execute("SELECT 1 FROM erased_rows LIMIT 1").fetchall()
    except DATABASE_ERRORS:
        return False
    return True


def walk_chain(
    conn: Connection,
    table: str,
    key: str,
    columns: tuple[str, ...],
    check_row: Callable[[tuple[Any, ...], ChainReport], None] | None = None,
    expect_head: str | None = None,
    progress: Progress | None = None,
    with_erased: bool = False,
    marker_check: MarkerCheck | None = None,
) -> ChainReport:
    """One chain; with `with_erased`, erased rows are checked against their records and
    are not handed to `check_row` (their origin or signature cannot be re-checked)."""
    report = ChainReport(table)
    scopes = erasure_scopes(conn) if with_erased and marker_check else {}
    total = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    previous, expected_key = chain.GENESIS, 1
    for row, erased in _rows(conn, table, key, columns, with_erased):
        values, stored = row[:-1], row[-1]
        where = f"{table} {key} {values[0]}"
        if values[0] != expected_key:
            report.bad(expected_key, f"{table} {key} {expected_key} to {values[0] - 1} missing")
        records = erased.get(values[0])
        content = (
            _erased_link(values, records, report, where, marker_check, scopes) if records else None
        )
        if chain.link(previous, values, content) != stored:
            report.bad(values[0], f"{where}: content does not match its hash chain")
        if check_row is not None and not records:
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

    erasable = has_erasures(conn)
    events = walk_chain(
        conn, "events", "seq", chain.EVENT_COLUMNS, _origin_checker(conn), expect_head, progress,
        erasable, _event_marker,
    )  # fmt: skip
    requests = walk_chain(
        conn, "requests", "id", chain.REQUEST_COLUMNS, check_signature, with_erased=erasable,
        marker_check=_body_marker,
    )  # fmt: skip
    erasures = walk_chain(conn, "erasures", "id", chain.ERASURE_COLUMNS) if erasable else None
    return VerifyReport(events, requests, unverifiable, expect_head, erasures)
