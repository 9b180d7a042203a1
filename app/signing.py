"""Mobio's signature: sha256(app_id + raw_body + app_secret) as hex.

A plain hash, not an HMAC (spec/webhooks.md). The receiver, `notestore send`
and the tests all sign and verify through here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "X-mevent-signature"


def sign(app_id: str, body: bytes, secret: str) -> str:
    return hashlib.sha256(app_id.encode() + body + secret.encode()).hexdigest()


def match_secret(
    header: str | None, body: bytes, secrets: Iterable[tuple[str, str]]
) -> tuple[str, str] | None:
    """The (app_id, secret) whose signature equals the header, or None.

    Every candidate is hashed and compared in constant time, so timing does not
    reveal which app or how much of the digest matched.
    """
    if not header:
        return None
    given = header.strip().lower().encode("ascii", errors="replace")
    found = None
    for app_id, secret in secrets:
        if hmac.compare_digest(given, sign(app_id, body, secret).encode()) and found is None:
            found = (app_id, secret)
    return found
