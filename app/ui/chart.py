"""Events per day as the bars of a small SVG chart (drawn by templates/status.html)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from app.queries.activity import DAY

WIDTH, HEIGHT, GAP = 600, 120, 2


@dataclass(frozen=True)
class Bar:
    day: str  # YYYY-MM-DD, UTC
    count: int
    x: float
    y: float
    width: float
    height: float


def bars(counts: list[int], today_start: float) -> dict[str, object]:
    """One bar per day, oldest first, scaled so the busiest day fills the height."""
    most = max(counts, default=0) or 1
    step = WIDTH / max(len(counts), 1)
    first = today_start - DAY * (len(counts) - 1)
    drawn = []
    for i, count in enumerate(counts):
        height = HEIGHT * count / most
        day = datetime.datetime.fromtimestamp(first + DAY * i, datetime.UTC).date().isoformat()
        drawn.append(Bar(day, count, i * step, HEIGHT - height, step - GAP, height))
    return {"bars": drawn, "width": WIDTH, "height": HEIGHT, "most": max(counts, default=0),
            "total": sum(counts)}  # fmt: skip
