"""The projector contract, and the common shape of a view keyed by one entity."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from eventlog.canonical import compact_json, loads_strict
from eventlog.dbapi import Connection
from eventlog.read import LogEvent
from projections.fold import EntityState


class ProjectionFailed(Exception):
    """A projector could not fold an event; it halts there and retries later."""

    def __init__(self, projector: str, event: LogEvent, cause: BaseException) -> None:
        super().__init__(f"{projector} failed on seq {event.seq} ({event.message_id}): {cause!r}")
        self.seq = event.seq
        self.message_id = event.message_id


class Projector(ABC):
    """A named, versioned view: its tables in views.db and how a batch of events changes them.

    Tables are created under a suffix ("" live, "__new" while rebuilding) and
    their indexes named with a generation number, so a rebuilt set of tables can
    be renamed over the live one without index names colliding.
    """

    name: str
    version: int
    event_types: frozenset[str]
    tables: tuple[str, ...]

    @abstractmethod
    def schema(self, suffix: str, generation: int) -> list[str]:
        """CREATE statements for this projector's tables and indexes."""

    @abstractmethod
    def apply(self, conn: Connection, events: Sequence[LogEvent], suffix: str) -> None:
        """Fold `events` (already filtered to event_types, in seq order) into the tables."""


IDS_PER_QUERY = 500  # bound variables per statement: far below SQLite's limit, whatever the build
Key = tuple[str, str]  # (merchant key, entity id): an entity is (merchant, id), spec/views.md


def merchant_key(merchant_id: str | None) -> str:
    """The merchant as a key column: an event that names no merchant is keyed under ''."""
    return merchant_id or ""


class EntityProjector(Projector):
    """A view with one folded EntityState per (merchant, entity), stored in `state_table`.

    Each batch loads every touched entity once, folds in memory, writes each once.
    An entity only ever folds events of its own merchant: no event of one merchant
    can change what another merchant reads.
    """

    state_table: str
    key_column: str

    def load_many(
        self, conn: Connection, suffix: str, keys: Iterable[Key]
    ) -> dict[Key, EntityState]:
        """The stored states of `keys` (those that have one), a few statements per batch."""
        wanted = set(keys)
        ids = sorted({entity_id for _, entity_id in wanted})
        found: dict[Key, EntityState] = {}
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
            rows = conn.execute(
                f"SELECT merchant_id, {self.key_column}, state FROM {self.state_table}{suffix}"
                f" WHERE {self.key_column} IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for merchant, entity_id, state in rows:
                if (merchant, entity_id) in wanted:  # the same id under another merchant: not it
                    found[(merchant, entity_id)] = EntityState.from_json(
                        entity_id, loads_strict(state)
                    )
        return found

    @abstractmethod
    def save(self, writes: Writes, suffix: str, state: EntityState) -> None:
        """Write one entity's rows from its folded state (into `writes`, which runs each
        statement once for every entity of the batch: see save_all)."""

    def apply(self, conn: Connection, events: Sequence[LogEvent], suffix: str) -> None:
        touched: dict[Key, EntityState] = {}
        self.fold_into(conn, events, suffix, touched)
        self.save_all(conn, suffix, touched)

    def fold_into(
        self,
        conn: Connection,
        events: Sequence[LogEvent],
        suffix: str,
        states: dict[Key, EntityState],
    ) -> None:
        """Fold events into `states`, loading an entity from its table the first time it is met."""
        first: dict[Key, LogEvent] = {}  # each entity met for the first time, by its first event
        for event in events:
            if event.entity_id is not None:
                key = (merchant_key(event.merchant_id), event.entity_id)
                if key not in states and key not in first:
                    first[key] = event
        stored = self.load_many(conn, suffix, first)
        for key, event in first.items():
            states[key] = stored.get(key) or EntityState(key[1], event.merchant_id)
        for event in events:
            if event.entity_id is None:
                continue
            state = states[(merchant_key(event.merchant_id), event.entity_id)]
            try:
                state.fold(event)
            except Exception as exc:
                raise ProjectionFailed(self.name, event, exc) from exc

    def refold(self, conn: Connection, events: Sequence[LogEvent], suffix: str) -> None:
        """Replace each entity `events` are about by a fresh fold of exactly these events
        (all of its events, as the log holds them after an erasure: projections.engine)."""
        states = {
            (merchant_key(e.merchant_id), e.entity_id): EntityState(e.entity_id, e.merchant_id)
            for e in events
            if e.entity_id is not None
        }
        self.fold_into(conn, events, suffix, states)
        self.save_all(conn, suffix, states)

    def save_all(self, conn: Connection, suffix: str, states: dict[Key, EntityState]) -> None:
        writes = Writes()
        for state in states.values():
            self.save(writes, suffix, state)
        writes.run(conn)


class Writes:
    """A batch's writes, gathered per statement and run as one executemany each, in the
    order each statement was first met: one round trip per statement on PostgreSQL, one
    prepared statement on SQLite. Correct because save_all saves each entity once, so a
    statement's rows never need to interleave with another's of the same entity."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Sequence[object]]] = {}

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> None:
        self.rows.setdefault(sql, []).append(parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.rows.setdefault(sql, []).extend(rows)

    def run(self, conn: Connection) -> None:
        for sql, rows in self.rows.items():
            if rows:
                conn.executemany(sql, rows)


def upsert(writes: Writes, table: str, key: tuple[str, ...], row: dict[str, object]) -> None:
    """Insert the row, or update every other column of the row with the same key."""
    columns = ", ".join(row)
    updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in key)
    writes.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
        tuple(row.values()),
    )


def state_text(state: EntityState) -> str:
    # No sort_keys: to_json already orders its own keys, and a register's value keeps the
    # key order it was received with, so a reloaded state renders the same doc as a fresh one.
    return compact_json(state.to_json())


def doc_text(doc: object) -> str:
    return compact_json(doc)


def dump_tables(
    conn: Connection, projector: Projector, suffix: str = ""
) -> dict[str, list[tuple[object, ...]]]:
    """Every row of a projector's tables in key order: two views are equal when their dumps are."""
    return {
        table: conn.execute(f"SELECT * FROM {table}{suffix} ORDER BY 1, 2, 3").fetchall()
        for table in projector.tables
    }
