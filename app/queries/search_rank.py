"""Ranking a chunk of matching notes, the same on both backends: BM25 over the folded words
search_docs holds, each word weighted by how rare it is (its notes counted up to a cap:
past it every word is as common), lengths against the chunk's average."""

from __future__ import annotations

import math
from collections.abc import Mapping

from eventlog.dbapi import Connection

K1, B = 1.2, 0.75
Key = tuple[str, str]  # (merchant key, note id)


def weights(counts: Mapping[str, int], cap: int) -> dict[str, float]:
    """A word's weight from how many notes hold it (at most `cap` counted)."""
    return {term: math.log(1 + (cap - n + 0.5) / (n + 0.5)) for term, n in counts.items()}


def ranked(views: Connection, keys: list[Key], weight: Mapping[str, float]) -> list[Key]:
    """`keys` best first; ties by note id, then merchant."""
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    wanted = set(keys)
    found: dict[Key, tuple[int, dict[str, int]]] = {}
    for merchant, note_id, words in views.execute(
        f"SELECT merchant_id, note_id, words FROM search_docs WHERE note_id IN ({marks})",
        [note_id for _, note_id in keys],
    ):
        if (merchant, note_id) in wanted:
            padded = f" {words} "
            tf = {term: padded.count(f" {term} ") for term in weight}
            found[(merchant, note_id)] = (words.count(" ") + 1, tf)
    average = sum(length for length, _ in found.values()) / max(len(found), 1)

    def score(key: Key) -> float:
        length, tf = found.get(key, (1, {}))
        norm = K1 * (1 - B + B * length / max(average, 1))
        return sum(w * tf.get(t, 0) * (K1 + 1) / (tf.get(t, 0) + norm) for t, w in weight.items())

    return sorted(keys, key=lambda k: (-score(k), k[1], k[0]))
