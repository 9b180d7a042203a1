"""The projector contract, and the common shape of a view keyed by one entity."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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

    def load(self, conn: Connection, suffix: str, key: Key) -> EntityState | None:
        row = conn.execute(
            f"SELECT state FROM {self.state_table}{suffix}"
            f" WHERE merchant_id = ? AND {self.key_column} = ?",
            key,
        ).fetchone()
        return EntityState.from_json(key[1], loads_strict(row[0])) if row else None

    @abstractmethod
    def save(self, conn: Connection, suffix: str, state: EntityState) -> None:
        """Write one entity's rows from its folded state."""

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
        for event in events:
            if event.entity_id is None:
                continue
            key = (merchant_key(event.merchant_id), event.entity_id)
            state = states.get(key)
            if state is None:
                state = self.load(conn, suffix, key) or EntityState(
                    event.entity_id, event.merchant_id
                )
                states[key] = state
            try:
                state.fold(event)
            except Exception as exc:
                raise ProjectionFailed(self.name, event, exc) from exc

    def save_all(
        self, conn: Connection, suffix: str, states: dict[Key, EntityState]
    ) -> None:
        for state in states.values():
            self.save(conn, suffix, state)


def upsert(
    conn: Connection, table: str, key: tuple[str, ...], row: dict[str, object]
) -> None:
    """Insert the row, or update every other column of the row with the same key."""
    columns = ", ".join(row)
    updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in key)
    conn.execute(
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
