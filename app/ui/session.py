"""The inspector's session: a signed cookie naming a token by its fingerprint, never the token.

The cookie is `<payload>.<signature>`: the payload is base64url JSON holding the token's
fingerprint, the expiry (epoch seconds) and a random nonce; the signature is HMAC-SHA256
of the payload under `session_secret`. Every request finds the token again among those
configured now, so a token removed from the config ends its sessions. Forms carry a CSRF
token derived from the nonce (HMAC again), which another site cannot read or compute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from app.config import Settings
from app.queries.scope import EVERYTHING, Scope

COOKIE = "notestore_session"
LOGIN_COOKIE = "notestore_login"  # the nonce of the sign-in form's CSRF token
PATH = "/ui"


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(b"notestore-ui-token:" + token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    fingerprint: str
    expires: float
    nonce: str


class Signer:
    """Signs and checks cookies and CSRF tokens with one secret."""

    def __init__(self, secret: str | bytes) -> None:
        self._key = secret.encode() if isinstance(secret, str) else secret

    def _mac(self, purpose: str, data: str) -> str:
        return hmac.new(self._key, f"{purpose}:{data}".encode(), hashlib.sha256).hexdigest()

    def cookie(self, session: Session) -> str:
        raw = json.dumps({"f": session.fingerprint, "e": session.expires, "n": session.nonce})
        payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return f"{payload}.{self._mac('session', payload)}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, or None if it is missing, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            found = Session(str(data["f"]), float(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        return found if found.expires > (time.time() if now is None else now) else None

    def csrf(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def csrf_ok(self, nonce: str | None, given: object) -> bool:
        return (
            bool(nonce)
            and isinstance(given, str)
            and hmac.compare_digest(given, self.csrf(nonce or ""))
        )


def new_session(token: str, hours: float) -> Session:
    return Session(token_fingerprint(token), time.time() + hours * 3600, secrets.token_urlsafe(16))


def token_named(settings: Settings, token: str) -> bool:
    """Whether `token` is configured now (compared in constant time, as the API does)."""
    given = token.encode(errors="surrogatepass")
    return any(hmac.compare_digest(given, known.encode()) for known in settings.tokens)


def scope_of(settings: Settings, session: Session) -> Scope | None:
    """The merchants of the token the session names, if it is still configured."""
    for token, merchants in settings.tokens.items():
        if hmac.compare_digest(token_fingerprint(token), session.fingerprint):
            return EVERYTHING if "*" in merchants else Scope(frozenset(merchants))
    return None


def safe_next(value: object) -> str:
    """Where to go after signing in: a /ui/ path of this site, else the home page."""
    if (
        isinstance(value, str)
        and value.startswith(PATH + "/")
        and not value.startswith("//")
        and "\\" not in value
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
        and ".." not in value
        and "%2e" not in value.lower()
    ):
        return value
    return PATH + "/"
