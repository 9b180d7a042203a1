"""Reading the log: from a position in batches, by entity, counts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eventlog.canonical import loads_strict
from eventlog.dbapi import Connection
from eventlog.redaction import is_marker

_COLUMNS = (
    "seq, message_id, event_type, entity, entity_id, note_id, merchant_id, app_id,"
    " request_id, action_time, created_time, received_at, block"
)


# Read-only by convention (SharedReads hands one instance to several projectors), but not
# frozen: a frozen dataclass sets each of its 13 fields through object.__setattr__, 2.0
# instead of 0.3 µs per event read, and every projector and query reads many.
@dataclass
class LogEvent:
    seq: int
    message_id: str
    event_type: str
    entity: str | None
    entity_id: str | None
    note_id: str | None
    merchant_id: str | None
    app_id: str
    request_id: str | None
    action_time: float
    created_time: float | None
    received_at: float
    block: str

    @cached_property
    def data_event(self) -> dict[str, Any]:
        data: dict[str, Any] = loads_strict(self.block)["data_event"]
        return data

    @property
    def erased(self) -> bool:
        """Its block was erased (eventlog.erase): it folds into nothing."""
        return is_marker(self.block)

    @property
    def stamp(self) -> tuple[float, str]:
        """What orders events for every fold (spec/views.md): later wins."""
        return (self.action_time, self.message_id)


def _events(rows: Iterable[tuple[Any, ...]]) -> list[LogEvent]:
    return [LogEvent(*row) for row in rows]


def read_from(
    conn: Connection,
    after_seq: int,
    limit: int = 1000,
    where: tuple[str, tuple[Any, ...]] = ("TRUE", ()),
) -> list[LogEvent]:
    """Events with seq > after_seq (and the extra SQL condition), in seq order, at most `limit`."""
    condition, params = where
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND {condition} ORDER BY seq LIMIT ?",
        (after_seq, *params, limit),
    )
    return _events(rows)


def iter_from(
    conn: Connection, after_seq: int = 0, batch: int = 1000, until: int | None = None
) -> Iterator[list[LogEvent]]:
    """Batches from after_seq on, each read in its own short statement."""
    while True:
        events = read_from(conn, after_seq, batch)
        if until is not None:
            events = [e for e in events if e.seq <= until]
        if not events:
            return
        yield events
        after_seq = events[-1].seq


IDS_PER_QUERY = 500  # far below SQLite's limit on bound variables, whatever the build


def read_by_entity(conn: Connection, entity_ids: Iterable[str]) -> list[LogEvent]:
    """Every event whose entity is one of `entity_ids`, or whose data_event names it as note_id."""
    ids = list(dict.fromkeys(entity_ids))
    found: dict[int, LogEvent] = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        chunk = ids[start : start + IDS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        # The seqs come from the two indexes alone and are deduplicated as integers; only then
        # are the rows read. (A UNION of whole rows sorted and compared every column.)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq IN ("
            f"SELECT seq FROM events WHERE entity_id IN ({marks})"
            f" UNION ALL SELECT seq FROM events WHERE note_id IN ({marks}))",
            (*chunk, *chunk),
        )
        found.update((event.seq, event) for event in _events(rows))
    return [found[seq] for seq in sorted(found)]


def head_seq(conn: Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def log_counts(conn: Connection) -> dict[str, int]:
    """Sizes an operator asks for: events, requests, quarantined, last seq."""
    one = conn.execute
    return {
        "events": int(one("SELECT count(*) FROM events").fetchone()[0]),
        "requests": int(one("SELECT count(*) FROM requests").fetchone()[0]),
        "quarantined": int(one("SELECT count(*) FROM quarantine").fetchone()[0]),
        "last_seq": head_seq(conn),
    }


def erasure_head(conn: Connection) -> int:
    """The position of the last erasure end (0: none): every row that erasure redacted is
    redacted now. Positions follow the order erasures ended in, not their ids: two erasures
    may run at once, and the later one may end first."""
    return int(conn.execute("SELECT coalesce(max(position), 0) FROM erasure_ends").fetchone()[0])


def erasures_to_follow(conn: Connection, after: int, upto: int) -> list[int]:
    """The erasures a view that has folded ends up to position `after` must follow to reach
    `upto`: those that ended at a position in (after, upto], and those that never ended (a
    run that stopped, or is still running: what they redacted so far), by id."""
    rows = conn.execute(
        "SELECT erasure_id FROM erasure_ends WHERE position > ? AND position <= ?"
        " UNION SELECT id FROM erasures WHERE id NOT IN (SELECT erasure_id FROM erasure_ends)"
        " ORDER BY 1",
        (after, upto),
    )
    return [int(row[0]) for row in rows]


def erased_events(
    conn: Connection, erasure_id: int, after_seq: int, limit: int
) -> list[tuple[int, str, str | None]]:
    """Up to `limit` events the erasure redacted, in seq order after `after_seq`:
    (seq, merchant key, entity id). Read through erased_rows_by_erasure: a range of the
    index, whatever the number of rows erasures recorded before."""
    rows = conn.execute(
        "SELECT e.seq, coalesce(e.merchant_id, ''), e.entity_id FROM erased_rows r"
        " JOIN events e ON e.seq = r.row_key"
        " WHERE r.erasure_id = ? AND r.log_table = 'events' AND r.row_key > ?"
        " ORDER BY r.row_key LIMIT ?",
        (erasure_id, after_seq, limit),
    )
    return [(int(seq), str(merchant), entity_id) for seq, merchant, entity_id in rows]
