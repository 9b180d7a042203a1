"""A search result's snippet: the words around the first match, escaped, matches marked."""

from __future__ import annotations

import html
import re

from projections.textfold import words

_WORD = re.compile(r"[^\W_]+")
BEFORE, AFTER = 8, 24  # words shown before the first match and from it on


def snippet(text: str, terms: set[str]) -> str:
    """`text` around its first word that folds to one of `terms`, as HTML: every piece of
    the text escaped first, then each matching word wrapped in <mark>."""
    found = [(m.start(), m.end(), any(w in terms for w in words(m.group())))
             for m in _WORD.finditer(text)]  # fmt: skip
    first = next((i for i, (_, _, hit) in enumerate(found) if hit), 0)
    shown = found[max(0, first - BEFORE) : first + AFTER]
    if not shown:
        return html.escape(text[:200])
    start, end = shown[0][0], shown[-1][1]
    out = ["…" if start > 0 else ""]
    at = start
    for begin, finish, hit in shown:
        out.append(html.escape(text[at:begin]))
        word = html.escape(text[begin:finish])
        out.append(f"<mark>{word}</mark>" if hit else word)
        at = finish
    out.append("…" if end < len(text) else "")
    return " ".join("".join(out).split())
