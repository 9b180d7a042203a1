"""Keyset pages: {"items", "next_cursor"}, with a cursor exactly when more items exist."""

from __future__ import annotations

from typing import Any

from app.queries.params import encode_cursor


def page(items: list[Any], keys: list[tuple[Any, str]], limit: int) -> dict[str, Any]:
    """From up to limit+1 rows (and their sort keys): the first `limit`, and where to go on."""
    more = len(items) > limit
    return {
        "items": items[:limit],
        "next_cursor": encode_cursor(list(keys[limit - 1])) if more else None,
    }
