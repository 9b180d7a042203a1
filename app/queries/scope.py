"""Which merchants a bearer token may read."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from app.config import Settings
from app.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Scope:
    merchants: frozenset[str] | None  # None: every merchant

    def sees(self, merchant_id: str | None) -> bool:
        return self.merchants is None or merchant_id in self.merchants

    def sql(self, column: str = "merchant_id") -> tuple[str, tuple[object, ...]]:
        """An SQL condition (with its parameters) limiting rows to this scope."""
        if self.merchants is None:
            return "TRUE", ()
        return f"{column} IN ({', '.join('?' * len(self.merchants))})", tuple(
            sorted(self.merchants)
        )


EVERYTHING = Scope(None)


def scope_for(settings: Settings, authorization: str | None) -> Scope:
    """The scope of `Authorization: Bearer <token>`; tokens compared in constant time."""
    if not settings.tokens:
        raise Forbidden(
            "no query tokens are configured: add one under [tokens] in the config "
            '(e.g. "your-token" = ["*"]); `notestore init` generates one'
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token>")
    try:
        given = token.strip().encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp keeps them as lone
        raise Unauthorized("unknown token") from None  # surrogates): no token holds them
    found = None
    for known, merchants in settings.tokens.items():
        if hmac.compare_digest(given, known.encode()) and found is None:
            found = merchants
    if found is None:
        raise Unauthorized("unknown token")
    return EVERYTHING if "*" in found else Scope(frozenset(found))
