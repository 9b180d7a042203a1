"""Re-running quarantined items through the receiver's validation and append path.

Quarantine rows are never changed: each replay adds a row to quarantine_replays
(appended, duplicate, or still failing with the new reason). Events that now
pass point at the request they originally came in, so their origin stays verifiable.

The same SQL runs on either backend: on PostgreSQL `conn` is a PgConnection whose write lock
is the advisory lock of the log's appends (eventlog.pg_log.APPEND_LOCK), so a replay's
transaction is serialised with the server's appends as on SQLite. (eventlog.append's helpers
are still annotated with sqlite3.Connection; their SQL is portable, hence the ignores below.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from eventlog.append import Batch, Outcome, add_events, quarantine
from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection
from eventlog.intake import Context, Intake, Rejected, envelope_merchant, read_block, read_body
from eventlog.transactions import immediate

TRANSACTION_ROWS = 200  # keep other writers (the server) waiting briefly at most

# app_id -> the merchants a bound app may speak for (None: any), as the config says today
MerchantsOf = Callable[[str], Collection[str] | None]


def _any_merchant(app_id: str) -> None:
    return None


@dataclass(frozen=True)
class Held:
    id: int
    reason: str
    kind: str
    payload: str
    request_ref: int | None


def held_items(conn: Connection, ids: list[int] | None) -> list[Held]:
    """Items still held: never replayed, or replayed and still failing."""
    rows = conn.execute(
        "SELECT q.id, q.reason, q.kind, q.payload, q.request_ref FROM quarantine q"
        " WHERE NOT EXISTS (SELECT 1 FROM quarantine_replays r WHERE r.quarantine_id = q.id"
        " AND r.outcome IN ('appended', 'duplicate')) ORDER BY q.id"
    ).fetchall()
    items = [Held(*row) for row in rows]
    return [i for i in items if i.id in set(ids)] if ids else items


# A whole delivery the spool's drainer quarantined (`undrainable`) has no request in the log:
# its app and signature were not kept, so it cannot be judged or carried again.
NO_REQUEST = (
    "no request in the log to judge it against or append it to (a delivery the spool could"
    " not drain keeps only its body): resend the body to the receiver instead"
)


def _intake(conn: Connection, item: Held, merchants_of: MerchantsOf) -> tuple[Intake, str] | None:
    """What validation makes of the item today, and the app it came in for; None when the
    request it came in is not in the log.

    Judged as on arrival: against the time it was received and its envelope's merchant.
    """
    request = conn.execute(
        "SELECT app_id, body, request_id, received_at FROM requests WHERE id = ?",
        (item.request_ref,),
    ).fetchone()
    if request is None:
        return None
    app_id, body, request_id, received_at = request
    allowed = merchants_of(app_id)
    if item.kind == "body":
        return read_body(bytes(body), app_id, received_at, allowed), app_id
    try:
        envelope = loads_strict(bytes(body))
    except (ValueError, RecursionError):
        envelope = None
    context = Context(received_at, envelope_merchant(envelope), allowed)
    outcome = read_block(json.loads(item.payload), context)
    intake = Intake(app_id=app_id, request_id=request_id)
    if isinstance(outcome, Rejected):
        intake.rejected.append(outcome)
    else:
        intake.events.append(outcome)
    return intake, app_id


def _replay_one(
    conn: Connection, batch: Batch, item: Held, at: float, merchants_of: MerchantsOf
) -> str:
    judged = _intake(conn, item, merchants_of)
    if judged is None:
        _record(conn, item, at, "still_failing", NO_REQUEST)
        return "still_failing"
    intake, app_id = judged
    assert item.request_ref is not None  # its request was found
    outcome = Outcome()
    for rejected in intake.rejected:
        quarantine(conn, rejected, item.request_ref, at)  # type: ignore[arg-type]  # see above
    add_events(
        conn, batch, intake.events, app_id=app_id, request_id=intake.request_id,  # type: ignore[arg-type]
        ref=item.request_ref, at=at, outcome=outcome,
    )  # fmt: skip
    reasons = [r.reason for r in intake.rejected] + outcome.reasons
    if outcome.accepted:
        result, detail = "appended", f"{outcome.accepted} event(s) appended"
    elif outcome.duplicates and not reasons:
        result, detail = "duplicate", "already in the log"
    else:
        result, detail = "still_failing", ", ".join(sorted(set(reasons))) or "nothing to append"
    _record(conn, item, at, result, detail)
    return result


def _record(conn: Connection, item: Held, at: float, result: str, detail: str) -> None:
    conn.execute(
        "INSERT INTO quarantine_replays (quarantine_id, replayed_at, outcome, detail)"
        " VALUES (?, ?, ?, ?)",
        (item.id, at, result, detail),
    )


def replay(
    conn: Connection, items: list[Held], merchants_of: MerchantsOf = _any_merchant
) -> dict[str, int]:
    """Replay in short transactions; returns how many ended each way."""
    counts: dict[str, int] = {}
    for start in range(0, len(items), TRANSACTION_ROWS):
        with immediate(conn):
            batch = Batch(conn)  # type: ignore[arg-type]  # see above
            at = time.time()
            for item in items[start : start + TRANSACTION_ROWS]:
                result = _replay_one(conn, batch, item, at, merchants_of)
                counts[result] = counts.get(result, 0) + 1
    return counts
