"""`notestore init`: a commented starter config with fresh secrets and a token."""

from __future__ import annotations

import secrets
from pathlib import Path

from app.errors import ConfigError

# The two app ids that appear in Mobio's samples (examples/mobio/), and their merchant.
SAMPLE_APPS = ("16453496-6a17-11ed-8a77-6632ed169876", "c71f0b7a-6ecc-11ed-9704-468042e8692e")
SAMPLE_MERCHANT = "1b99bdcf-d582-4f49-9715-1b61dfff3924"

TEMPLATE = """\
# notestore configuration. Every key may also be set as NOTESTORE_<KEY>
# (NOTESTORE_APPS and NOTESTORE_TOKENS as JSON objects).

data_dir = "data"          # events.db (the log) and views.db; relative to this file
host = "127.0.0.1"
port = 8080
max_body_bytes = 1048576   # Mobio's bodies are a few KB
session_secret = "{session_secret}"   # signs the inspector's (/ui/) session cookies
session_hours = 12         # how long an inspector sign-in lasts
trust_forwarded_proto = false   # behind a TLS proxy: true (X-Forwarded-Proto marks cookies Secure)

# One table per Mobio app: its secrets (several while rotating one) and the merchants it
# may speak for; a block it signs for any other merchant is quarantined (merchant_not_allowed).
# ("app_id" = "secret" under [apps] also works, and lets the app speak for any merchant.)
# These are the app ids of Mobio's samples with freshly generated secrets:
# replace them with your own app id, secret and merchant ids from Mobio.
{apps}

[tokens]
# bearer token = merchant ids it may read ("*" for all)
"{token}" = ["*"]
"""


def write_starter(path: Path) -> dict[str, str]:
    """Write the starter file; refuses to overwrite. Returns what it generated."""
    if path.exists():
        raise ConfigError(f"{path} already exists; not overwriting it")
    made = {app: secrets.token_urlsafe(24) for app in SAMPLE_APPS}
    token = secrets.token_urlsafe(24)
    apps = "\n".join(
        f'[apps."{app}"]\nsecrets = ["{secret}"]\nmerchants = ["{SAMPLE_MERCHANT}"]\n'
        for app, secret in made.items()
    )
    text = TEMPLATE.format(apps=apps, token=token, session_secret=secrets.token_urlsafe(32))
    path.write_text(text, encoding="utf-8")
    return {**made, "token": token}
