"""Which merchant's entity a query means: scope first, then ?merchant_id=, then ambiguity.

An entity is (merchant, id) (spec/views.md): the same note id may be held by several
merchants. A token limited to some merchants never learns that another holds the id;
a "*" token names the merchant when more than one holds it, else gets a 409.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.errors import NotestoreError, NotFound
from app.queries.scope import Scope


class Ambiguous(NotestoreError):
    """An id held by several merchants the token may read, and no ?merchant_id= naming one."""

    status = 409

    def __init__(self, message: str, merchants: list[str | None]) -> None:
        super().__init__(message)
        self.merchants = merchants


def choose_merchant(held_by: Iterable[str], scope: Scope, wanted: str | None, what: str) -> str:
    """The merchant key (as the views store it, '' for none) of the entity the query means.

    `held_by` are the merchant keys holding the id. NotFound when the token sees none of
    them (or not `wanted`), Ambiguous when it sees several and `wanted` is None.
    """
    visible = sorted({m for m in held_by if scope.sees(m or None)})
    if wanted is not None:
        visible = [m for m in visible if m == wanted]
    if not visible:
        raise NotFound(f"no {what}")
    if len(visible) > 1:
        raise Ambiguous(
            f"{what} is held by several merchants ({', '.join(m or '(none)' for m in visible)}):"
            " name one with ?merchant_id= (--merchant on the command line)",
            [m or None for m in visible],
        )
    return visible[0]
