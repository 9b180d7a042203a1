"""The schemathesis hook that signs the webhook bodies it generates (tests/test_schemathesis.py).

A `before_call` hook: it runs on every case of every phase just before it is sent, so
it signs the exact bytes that go on the wire. A case generated as valid is signed (its
X-mevent-signature becomes sha256(app_id + body + secret)); one generated as invalid
keeps what schemathesis made of the header (none, or not a signature).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from app.signing import SIGNATURE_HEADER, sign
from tests.helpers import APP_A, secret_for

WEBHOOK = "POST /webhooks/mobio"


def body_bytes(case: Any) -> bytes:
    """The body as it goes on the wire: what schemathesis would serialize, as bytes."""
    body = case.body
    if body is None or isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    if hasattr(body, "data"):  # schemathesis's Binary, for application/octet-stream
        return bytes(body.data)
    return json.dumps(body, ensure_ascii=False).encode()


def is_signed(case: Any) -> bool:
    signature = (case.headers or {}).get(SIGNATURE_HEADER)
    return signature == sign(APP_A, body_bytes(case), secret_for(APP_A))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.label != WEBHOOK or case.method != "POST":
        return
    valid = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    raw = body_bytes(case)
    case.body = raw  # sent as exactly these bytes, whatever the media type
    if valid:
        case.headers = {
            **(case.headers or {}),
            SIGNATURE_HEADER: sign(APP_A, raw, secret_for(APP_A)),
        }
