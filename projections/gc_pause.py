"""Folding with Python's cyclic garbage collector paused.

Folding allocates a great many small objects (decoded blocks, stamps, states) that
live until the batch is written. Each of those allocations counts towards the next
collection, and a full collection walks every object held, so a rebuild holding
20,000 entity states spent up to half its time in the collector (measured: 9,500
events/s with it, 20,000 without). Nothing folding makes refers back to itself, so
reference counting frees it all; whoever pauses runs `gc.collect(0)` at points where
little is held (a rebuild does at each flush), which bounds what a stray cycle can keep.
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
