"""Fast pickling for the records serve's workers send to the log's writer process."""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

_GETTERS: dict[type, operator.attrgetter[Any]] = {}


def _init_values(cls: type) -> operator.attrgetter[Any]:
    getter = _GETTERS.get(cls)
    if getter is None:
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        getter = _GETTERS[cls] = operator.attrgetter(*names)
    return getter


class PickledAsTuple:
    """Pickles as (class, its init arguments): a plain tuple pickles in C, several times
    faster than a slots dataclass's own __getstate__/__setstate__, and one of these
    crosses the socket per delivery. Fields not set by __init__ are recomputed."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), _init_values(type(self))(self))
