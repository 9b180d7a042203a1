"""A search result's snippet: the words around the first match, escaped, matches marked."""

from __future__ import annotations

import html
import re
from collections import deque

from projections.textfold import words

_WORD = re.compile(r"[^\W_]+")
BEFORE, AFTER = 8, 24  # words shown before the first match and from it on


Span = tuple[int, int, bool]  # a word's start, end, and whether it matches


def _shown_words(text: str, terms: set[str]) -> tuple[list[Span], bool, bool]:
    """The words to show: up to BEFORE before the first match and AFTER from it on (the first
    AFTER when nothing matches), and whether words were left out before them and after them.
    Reads the text no further than that."""
    before: deque[Span] = deque(maxlen=BEFORE)
    opening: list[Span] = []
    shown: list[Span] = []
    skipped, more = 0, False
    for m in _WORD.finditer(text):
        if len(shown) == AFTER or (not shown and len(opening) == AFTER and skipped > 10_000):
            more = True
            break
        span = (m.start(), m.end(), any(w in terms for w in words(m.group())))
        if shown or span[2]:
            shown.append(span)
            continue
        skipped += len(before) == BEFORE
        before.append(span)
        if len(opening) < AFTER:
            opening.append(span)
    if shown:
        return [*before, *shown], skipped > 0, more
    return opening, False, more or len(opening) < skipped + len(before)


def snippet(text: str, terms: set[str]) -> str:
    """`text` around its first word that folds to one of `terms`, as HTML: every piece of
    the text escaped first, then each matching word wrapped in <mark>."""
    shown, cut_before, cut_after = _shown_words(text, terms)
    if not shown:
        return html.escape(text[:200])
    start = shown[0][0] if cut_before else 0
    end = shown[-1][1] if cut_after else len(text)
    out = ["… " if cut_before else ""]
    at = start
    for begin, finish, hit in shown:
        out.append(html.escape(text[at:begin]))
        word = html.escape(text[begin:finish])
        out.append(f"<mark>{word}</mark>" if hit else word)
        at = finish
    out.append(html.escape(text[at:end]) + (" …" if cut_after else ""))
    return " ".join("".join(out).split())
