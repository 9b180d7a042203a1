"""Named errors, translated once at the edge (HTTP middleware, CLI main)."""

from __future__ import annotations


class NotestoreError(Exception):
    """Base of every error a user can act on; its message is the whole story."""

    status = 500


class ConfigError(NotestoreError):
    """The configuration cannot be used (missing file, bad TOML, an app with no secret)."""


class BadRequest(NotestoreError):
    status = 400


class Unauthorized(NotestoreError):
    status = 401


class Forbidden(NotestoreError):
    status = 403


class NotFound(NotestoreError):
    status = 404


class Gone(NotestoreError):
    """An erased note (notestore erase): it was here, and its data is gone for good."""

    status = 410


class PayloadTooLarge(NotestoreError):
    status = 413


class Unavailable(NotestoreError):
    status = 503

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
