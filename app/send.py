"""`notestore send`: sign payload files exactly as Mobio would and post them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from app.config import Settings
from app.errors import ConfigError
from app.signing import SIGNATURE_HEADER, sign


def app_id_of(body: bytes, path: Path) -> str:
    try:
        app_id = json.loads(body).get("app_id")
    except (ValueError, AttributeError):
        app_id = None
    if not isinstance(app_id, str):
        raise ConfigError(f"{path}: no app_id in the body; pass --app-id")
    return app_id


def post_signed(url: str, body: bytes, signature: str, timeout: float = 10.0) -> tuple[int, str]:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def send_file(
    settings: Settings, path: Path, url: str, app_id: str | None, secret: str | None
) -> tuple[int, str]:
    body = path.read_bytes()
    app_id = app_id or app_id_of(body, path)
    if secret is None:
        configured = settings.apps.get(app_id)
        if not configured:
            raise ConfigError(f"{path}: app {app_id} has no secret in the config; pass --secret")
        secret = configured.secrets[-1]  # the newest secret during a rotation
    return post_signed(url, body, sign(app_id, body, secret))
