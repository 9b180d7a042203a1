"""Decoding and folding events with Python's cyclic garbage collector paused.

Decoding blocks allocates a great many small containers, and every allocation
counts towards the next collection, which walks what is held:
- a rebuild holding 20,000 entity states spent up to half its time in the collector
  (9,500 events/s with it, 20,000 without);
- a note's history (84 events decoded) took a median 3.5 ms and a p99 of 21 ms with
  it, and 2.2 ms and 4.6 ms without. Queries no longer pause it: they run in serve's
  query threads, and four overlapping pauses kept the collector off for good.
Nothing decoded or folded refers back to itself, so reference counting frees it all
when the work is done. The pause covers the whole process, every thread: pause
around synchronous work (a pause held across an `await` would pause the collector
for everything else the event loop runs), and let a long pause (a rebuild, on a
thread of its own) run `gc.collect(0)` now and then, to bound what a stray cycle
elsewhere can keep.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # pauses in progress, across threads (gc.disable is process-wide)
_resume = False  # whether the collector was on before the first pause


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
