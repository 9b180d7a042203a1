"""After an erasure: make sure no file of the data directory (or no page of PostgreSQL
that VACUUM can reach) still holds the erased text. Filled in by the erasure's phase 2."""

from __future__ import annotations

from app.config import Settings


def scrub(settings: Settings, log_url: str | None) -> None:
    """Called by `notestore erase` once the rows are redacted and the views have followed."""
    return None
