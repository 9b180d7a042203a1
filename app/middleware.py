"""Every error leaves as {"error": "..."} with its status; never a stack trace.

Two layers: the middleware `errors_as_json` for whatever a route raises, and
`install_parser_error_handler` for what aiohttp's HTTP parser refuses before any route
or middleware runs (bad header bytes, over-long lines, a malformed request line).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.log import server_logger
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from app import openapi
from app.errors import BadRequest, NotestoreError, Unavailable
from eventlog.canonical import compact_json_bytes

log = structlog.get_logger("notestore.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every 503 says when to come back: a view being built says so itself (app.api), the
# rest (the log cannot commit) get this.
RETRY_AFTER_S = 5


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer, encoded with orjson (the json module for what orjson cannot encode)."""
    return web.Response(
        body=compact_json_bytes(body), status=status, content_type="application/json"
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return web.Response(
        status=status,
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


def _takes_a_token(request: web.Request) -> bool:
    """Whether the route answering this request reads `Authorization` (per /openapi.json)."""
    resource = request.match_info.route.resource
    if resource is None:  # no route: 404 or 405
        return False
    method = "get" if request.method == "HEAD" else request.method.lower()
    return (method, resource.canonical) in openapi.SECURED


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if len(request.headers.getall("Authorization", ())) > 1 and _takes_a_token(request):
            # Which one would count? Refuse rather than let the first (or last) win.
            raise BadRequest("send one Authorization header, not several")
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
            exc.status,
            exc.reason,
            {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        )
    except (HttpProcessingError, RequestPayloadError) as exc:
        # The body broke after the route had started reading it (content it says is
        # gzip and is not): the client's doing, answered without echoing its bytes.
        log.info("http_request_refused", error=type(exc).__name__, path=request.path)
        return error_response(400, "malformed request body")
    except ConnectionResetError:
        # The client went away before its body was complete: no one to answer.
        log.info("client_went_away", path=request.path, method=request.method)
        return error_response(400, "the connection closed before the body was complete")
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal error; the server log has the details")


# What the parser refused, by the class of its error: fixed words, never the request's
# bytes (aiohttp's own message repeats the offending line, a bearer token included).
# The most specific classes first: BadHttpMethod is a BadStatusLine.
_PARSER_ERRORS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "a request line or header is longer than the server accepts"),
    (BadHttpMethod, "not an HTTP request, or an unknown method"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "malformed request target"),
    (InvalidHeader, "malformed header"),
    (PayloadEncodingError, "malformed body framing"),
)
_DATA = re.compile(r"[:'\"`\n]")


def parser_refusal(exc: HttpProcessingError) -> str:
    for kind, words in _PARSER_ERRORS:
        if isinstance(exc, kind):
            return f"malformed HTTP request: {words}"
    return "malformed HTTP request"


def _reason(exc: HttpProcessingError) -> str:
    """The parser's own reason for the log, cut before the bytes it quotes."""
    return _DATA.split(exc.message, 1)[0].strip()[:100]


def handle_error(
    self: RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp's RequestHandler.handle_error, answering in JSON.

    aiohttp calls it for what never reaches the application: the parser's refusals
    (status 400, `exc` an HttpProcessingError) and a handler that failed despite
    `errors_as_json`. The parser's refusals are the client's doing: logged at INFO,
    without a traceback and without the request's bytes.
    """
    if isinstance(exc, HttpProcessingError):
        log.info(
            "http_request_refused",
            status=status,
            error=type(exc).__name__,
            reason=_reason(exc),
            remote=request.remote,
        )
        text = parser_refusal(exc)
    else:
        log.error("unhandled_error", status=status, exc_info=exc)
        text = "internal error; the server log has the details"
    if request.writer.output_size > 0:  # as aiohttp does: too late for another answer
        raise ConnectionError("the response had started; cannot send the error")
    response = error_response(status, text)
    response.force_close()
    return response


_CLIENTS_DOING = (HttpProcessingError, RequestPayloadError, ConnectionResetError)


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger of aiohttp's RequestHandler (web.Application's handler_args["logger"]).

    aiohttp logs "Unhandled exception" with a traceback at ERROR when, after the route
    answered, it drains a body that the client broke (bad gzip); that is the client's
    doing: one line at INFO. Anything else keeps aiohttp's ERROR and traceback.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, _CLIENTS_DOING):
            log.info("http_request_refused", error=type(exc_info).__name__, stage="after_answer")
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


PROTOCOL_LOG = ProtocolLog(server_logger, {})


def install_parser_error_handler() -> None:
    """Make every aiohttp server in this process answer the parser's refusals as above.

    aiohttp has no public hook for these answers (aio-libs/aiohttp#3287): the
    protocol's handle_error builds them before any application code runs, for any
    runner (AppRunner in tests, web.run_app in serve). Overriding that one
    method of RequestHandler is the narrowest way to reach them; create_app calls this.
    """
    if RequestHandler.handle_error is not handle_error:
        RequestHandler.handle_error = handle_error  # type: ignore[method-assign]
