"""Folding text for search, HTML to text, and snippets: the pure functions under /search."""

from __future__ import annotations

import pytest

from app.errors import BadRequest
from app.queries.search import query_terms
from app.queries.snippet import snippet
from projections.textfold import MAX_WORD, fold, indexed_words, plain_text, words


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Ghi chú", "ghi chu"),
        ("ĐƯỜNG đường", "duong duong"),
        ("chu\u0301 Tiếng Việt", "chu tieng viet"),  # NFD input: the mark is dropped
        ("Ærø Straße", "ærø straße"),  # no decomposition: kept (lower case only)
        ("İstanbul", "istanbul"),
        ("ASCII only", "ascii only"),
    ],
)
def test_fold_drops_marks_maps_d_and_lowers(text, folded):
    assert fold(text) == folded


def test_words_are_runs_of_letters_and_digits_cut_to_max_word():
    assert words("a_b c-d e.f 12,5 \"x\" NEAR(y) z*") == ["a", "b", "c", "d", "e", "f", "12", "5",
                                                          "x", "near", "y", "z"]  # fmt: skip
    assert words("x" * 100) == ["x" * MAX_WORD]


def test_plain_text_drops_tags_decodes_entities_and_removes_what_no_database_stores():
    assert plain_text('<p class="c">Tôi &amp; <b>bạn</b></p><!-- note -->\x00 ok\ud800') == (
        "Tôi & bạn ok"
    )
    assert plain_text("chu\u0301") == "chú"  # stored composed
    assert indexed_words(plain_text("<div>Ghi chú <br/>về&nbsp;Đường</div>")) == "ghi chu ve duong"


def test_snippet_escapes_the_text_before_marking_matches():
    text = "<script>alert(1)</script> Ghi chú & <b>chú</b>"
    assert snippet(text, {"chu"}) == (
        "&lt;script&gt;alert(1)&lt;/script&gt; Ghi <mark>chú</mark> &amp; "
        "&lt;b&gt;<mark>chú</mark>&lt;/b&gt;"
    )


def test_snippet_shows_the_words_around_the_first_match_with_ellipses():
    text = " ".join(f"w{i}" for i in range(100)) + " target " + "tail " * 50
    shown = snippet(text, {"target"})
    assert shown.startswith("… w92 ") and "<mark>target</mark>" in shown and shown.endswith("…")
    assert shown.count("tail") == 23
    assert snippet("nothing here", {"absent"}) == "nothing here"


@pytest.mark.parametrize(
    "q", [None, "", "!!! ???", "x" * 501, " ".join(f"w{i}" for i in range(17))]
)
def test_queries_without_words_or_too_long_are_refused(q):
    with pytest.raises(BadRequest):
        query_terms(q)


def test_a_query_is_its_folded_words_once_each():
    assert query_terms('"Ghi" chú OR ghi*') == ["ghi", "chu", "or"]
