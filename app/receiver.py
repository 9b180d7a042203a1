"""POST /webhooks/mobio: verify, validate, append, commit, answer. Nothing else."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from app import spooling
from app.config import fingerprint
from app.errors import PayloadTooLarge, Unauthorized, Unavailable
from app.keys import METRICS, SETTINGS, WRITER
from app.middleware import json_response
from app.signing import SIGNATURE_HEADER, match_secret
from app.spooling import DRAINER
from eventlog.append import Delivery
from eventlog.intake import read_body
from eventlog.writer import LogUnavailable

log = structlog.get_logger("notestore.receiver")

_CHUNK = 64 * 1024


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge without buffering more than `limit` bytes."""
    too_large = PayloadTooLarge(f"body is larger than max_body_bytes ({limit} bytes)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(header: str | None) -> Unauthorized:
    """The 401 of a body whose signature fails: the body is never parsed, and the answer
    says nothing of which apps are configured."""
    if not header:
        return Unauthorized(f"missing {SIGNATURE_HEADER} header")
    return Unauthorized(f"{SIGNATURE_HEADER} does not match the body")


async def receive(request: web.Request) -> web.Response:
    """Verify, validate, append, commit, answer; counted and timed whatever the outcome."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    try:
        response = await _receive(request, started)
    except PayloadTooLarge:
        metrics.delivery["too_large"].inc()
        raise
    except Unauthorized:
        metrics.delivery["unauthorized"].inc()
        raise
    except Unavailable:
        metrics.delivery["unavailable"].inc()
        raise
    finally:
        metrics.latency.observe(time.perf_counter() - started)
    metrics.delivery["ok"].inc()
    return response


async def _receive(request: web.Request, started: float) -> web.Response:
    settings = request.app[SETTINGS]
    body = await read_limited(request, settings.max_body_bytes)
    header = request.headers.get(SIGNATURE_HEADER)
    matched = match_secret(header, body, settings.secrets())
    if matched is None:
        log.info("delivery_refused", reason="signature", size=len(body))
        raise _refusal(header)
    app_id, secret = matched
    received_at = time.time()
    intake = read_body(body, app_id, received_at, settings.merchants_of(app_id))
    delivery = Delivery(
        received_at=received_at,
        app_id=app_id,
        secret_fingerprint=fingerprint(secret),
        signature=header or "",
        body=body,
        intake=intake,
    )
    if request.app[DRAINER].first:  # the spool is draining: after those, in order
        return json_response(await spooling.keep(request, delivery, None))
    try:
        outcome = await request.app[WRITER].append(
            delivery,
            settings.log_commit_timeout_ms / 1000,
            on_late=request.app[METRICS].count_outcome,  # stored after all: counted then
        )
    except LogUnavailable as exc:  # failed, or not in time: the spool keeps it
        return json_response(await spooling.keep(request, delivery, str(exc)))
    request.app[METRICS].count_outcome(outcome)
    log.info(
        "delivery",
        request_id=intake.request_id,
        app_id=app_id,
        message_ids=[e.message_id for e in intake.events],
        **outcome.as_answer(),
        reasons=sorted(set(outcome.reasons)) or None,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return json_response(outcome.as_answer())


async def online_check(request: web.Request) -> web.Response:
    """Mobio's GET to see the endpoint is up."""
    return web.json_response({"status": "ok"})
