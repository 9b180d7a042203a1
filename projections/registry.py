"""Every projector notestore runs, by name."""

from __future__ import annotations

from projections.base import Projector
from projections.comments import CommentsProjector
from projections.mentions import MentionsProjector
from projections.notes import NotesProjector
from projections.search import SearchProjector


def all_projectors() -> list[Projector]:
    return [NotesProjector(), CommentsProjector(), MentionsProjector(), SearchProjector()]


def projectors_named(names: list[str] | None) -> list[Projector]:
    known = {p.name: p for p in all_projectors()}
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown view {', '.join(unknown)}; views are {', '.join(known)}")
    return [known[n] for n in names]
