"""Which notes match a search, through the view's full-text index (projections/search_index.py):
counted, and taken newest first a chunk at a time, on SQLite's FTS5 or PostgreSQL's GIN index.

A word of few notes is looked up through the index and its matches sorted; a common word
(over DENSE matches) is found by reading the notes newest first and testing each, so it costs
about as many tests as it takes to fill a chunk, never a sort of every note it is in.
"""

from __future__ import annotations

from app.queries.scope import Scope
from eventlog.dbapi import Connection
from projections import search_index

DENSE = 5000
Boundary = tuple[float, str, str]  # (last_action_time, note_id, merchant): after it, older
Candidate = tuple[float, str, str]


class Matcher:
    """The matches of one query's words in the live index `table`."""

    def __init__(self, views: Connection, table: str, terms: list[str]) -> None:
        self.views, self.table, self.terms = views, table, terms
        self.pg = search_index.is_postgresql(views)
        self._dense: bool | None = None

    def _match(self, terms: list[str]) -> str:
        return " ".join(terms) if self.pg else search_index.fts5_query(terms)

    def _condition(self) -> str:
        if self.pg:
            return "words @@ plainto_tsquery('simple', ?)"
        return f"{self.table} MATCH ?"

    def count(self, terms: list[str], cap: int = DENSE + 1) -> int:
        """How many notes hold every word of `terms`, counted up to `cap`."""
        row = self.views.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {self.table} WHERE {self._condition()}"
            " LIMIT ?) AS m",
            (self._match(terms), cap),
        ).fetchone()
        return int(row[0])

    def _source(self, dense: bool) -> str:
        """FROM and the match condition (one `?`: the query)."""
        table, condition = self.table, self._condition()
        if self.pg and dense:
            return f"{table} w JOIN search_docs d USING (merchant_id, note_id) WHERE w.{condition}"
        if self.pg:  # OFFSET 0 fences the matches off: no plan reading every note by recency
            return (f"(SELECT merchant_id, note_id FROM {table} WHERE {condition} OFFSET 0) m"
                    " JOIN search_docs d USING (merchant_id, note_id) WHERE TRUE")  # fmt: skip
        if dense:  # the unary + keeps SQLite from driving the query by the matches' rowids
            return f"search_docs d WHERE +d.rowid IN (SELECT rowid FROM {table} WHERE {condition})"
        return f"{table} CROSS JOIN search_docs d ON d.rowid = {table}.rowid WHERE {condition}"

    def newest(self, scope: Scope, after: Boundary | None, limit: int) -> list[Candidate]:
        """Up to `limit` matches the scope sees after `after`, newest first."""
        where, params = scope.sql("d.merchant_id")
        if after is not None:
            where += " AND (d.last_action_time, d.note_id, d.merchant_id) < (?, ?, ?)"
            params = (*params, *after)
        if self._dense is None:
            self._dense = self.count(self.terms) > DENSE
        source = self._source(self._dense)
        rows = self.views.execute(
            f"SELECT d.last_action_time, d.note_id, d.merchant_id FROM {source} AND {where}"
            " ORDER BY d.last_action_time DESC, d.note_id DESC, d.merchant_id DESC LIMIT ?",
            (self._match(self.terms), *params, limit),
        ).fetchall()
        return [(float(at), note_id, merchant) for at, note_id, merchant in rows]
