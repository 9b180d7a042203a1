"""Every error leaves as {"error": "..."} with its status; never a stack trace."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from app.errors import NotestoreError, Unavailable
from eventlog.canonical import compact_json_bytes

log = structlog.get_logger("notestore.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer, encoded with orjson (the json module for what orjson cannot encode)."""
    return web.Response(
        body=compact_json_bytes(body), status=status, content_type="application/json"
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotestoreError as exc:
        headers = None
        if isinstance(exc, Unavailable) and exc.retry_after is not None:
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, str(exc), headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status, exc.reason, {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        )
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal error; the server log has the details")
