"""Mobio's signature, checked directly: sha256(app_id + body + secret) as hex, whole or nothing.

Part of the mutation-testing suite of docs/testing.md: fast, no I/O.
"""

from __future__ import annotations

import hashlib

import pytest

from app.signing import match_secret, sign

APPS = [("app-1", "s1"), ("app-2", "s2-old"), ("app-2", "s2")]
BODY = b'{"app_id": "app-2", "block_event": []}'


def test_sign_is_the_plain_sha256_of_app_id_body_and_secret_in_that_order() -> None:
    expected = hashlib.sha256(b"app-1" + BODY + b"s1").hexdigest()
    assert sign("app-1", BODY, "s1") == expected
    assert sign("s1", BODY, "app-1") != expected
    assert len(expected) == 64 and expected == expected.lower()


def test_sign_encodes_text_as_utf8() -> None:
    assert sign("ä", b"", "ß") == hashlib.sha256("äß".encode()).hexdigest()


def test_the_matching_app_and_secret_are_returned_among_several() -> None:
    for app_id, secret in APPS:
        assert match_secret(sign(app_id, BODY, secret), BODY, APPS) == (app_id, secret)


def test_a_signature_is_case_and_surrounding_space_insensitive() -> None:
    digest = sign("app-2", BODY, "s2")
    assert match_secret(f"  {digest.upper()}\t", BODY, APPS) == ("app-2", "s2")


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_signature_matches_nothing(header: str | None) -> None:
    assert match_secret(header, BODY, APPS) is None


def test_only_the_whole_digest_verifies() -> None:
    digest = sign("app-1", BODY, "s1")
    for partial in (digest[:1], digest[:63], digest[1:], digest + "0", "0" + digest):
        assert match_secret(partial, BODY, APPS) is None


def test_another_body_or_an_unknown_secret_does_not_verify() -> None:
    assert match_secret(sign("app-1", BODY + b" ", "s1"), BODY, APPS) is None
    assert match_secret(sign("app-1", BODY, "s9"), BODY, APPS) is None
    assert match_secret(sign("app-1", BODY, "s1"), BODY, []) is None


def test_a_non_ascii_header_is_refused_not_an_error() -> None:
    digest = sign("app-1", BODY, "s1")
    assert match_secret("é" + digest[1:], BODY, APPS) is None
    assert match_secret("\udcff" * 64, BODY, APPS) is None


def test_when_two_configured_pairs_sign_alike_the_first_configured_wins() -> None:
    # "a" + b"" + "bc" and "ab" + b"" + "c" hash the same text
    pairs = [("a", "bc"), ("ab", "c")]
    assert match_secret(sign("a", b"", "bc"), b"", pairs) == ("a", "bc")
    assert match_secret(sign("a", b"", "bc"), b"", pairs[::-1]) == ("ab", "c")
