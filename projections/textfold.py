"""Folding text for search: what the search view indexes and what a query is compared with.

One function on both sides, so the index and every query agree on both backends: Unicode
NFD, combining marks dropped, `đ`/`Đ` as `d` (NFD leaves them whole), lower case. Words are
the runs of letters and digits of the folded text; each backend is handed only words
joined by spaces, so FTS5's tokenizer and PostgreSQL's 'simple' parser see the same ones.
"""

from __future__ import annotations

import html
import re
import unicodedata

MAX_WORD = 64  # characters: a longer run is cut (PostgreSQL drops lexemes over 2 KB)
MAX_WORDS = 20_000  # words indexed per note: its text stays far below tsvector's 1 MB

_D = str.maketrans({"đ": "d", "Đ": "d"})
_WORD = re.compile(r"[^\W_]+")
_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
# control characters, lone surrogates: PostgreSQL cannot store a NUL, neither binds a surrogate
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACE = re.compile(r"\s+")


def fold(text: str) -> str:
    """`Ghi chú Đường` -> `ghi chu duong`."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFD", text.translate(_D))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def words(text: str) -> list[str]:
    """The folded words of `text`, in order, each at most MAX_WORD characters."""
    return [w[:MAX_WORD] for w in _WORD.findall(fold(text))]


def plain_text(markup: str) -> str:
    """HTML as the text a reader sees: tags and comments dropped, entities decoded, white
    space collapsed, and nothing either database cannot store."""
    text = html.unescape(_TAG.sub(" ", markup)) if "<" in markup or "&" in markup else markup
    text = _UNSTORABLE.sub(" ", text)
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def indexed_words(text: str) -> str:
    """What the index holds for `text`: its words joined by single spaces."""
    return " ".join(words(text)[:MAX_WORDS])
