"""When serve restarts its projector process after it died: at once, unless it keeps dying young.

A child that crashes on start (a full disk, a broken install) would otherwise be
restarted five times a second, each start logging its failure. One death is
restarted at once; each further death within QUICK_S of its start doubles the wait
before the next start (1 s, 2 s, 4 s ... up to MAX_DELAY_S); a child that lived
longer than QUICK_S starts the count again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

QUICK_S = 10.0
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


class Restarts:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: dict[str, float] = {}
        self._young_deaths: dict[str, int] = {}

    def started(self, child: str) -> None:
        self._started[child] = self._clock()

    def died(self, child: str) -> float:
        """Note a death; returns how many seconds to wait before starting it again."""
        now = self._clock()
        if now - self._started.get(child, now) >= QUICK_S:
            self._young_deaths[child] = 0
        deaths = self._young_deaths[child] = self._young_deaths.get(child, 0) + 1
        return 0.0 if deaths == 1 else min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (deaths - 2))
