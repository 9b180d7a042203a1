"""Hostile HTTP, sent as raw bytes to a real server on 127.0.0.1.

- An Authorization that is not a known token is a 401, whatever its bytes; two
  Authorization headers are a 400 on the routes that read one.
- What aiohttp's HTTP parser refuses (bad header bytes, over-long lines, a malformed
  request line, broken body framing) is a JSON {"error": ...} that repeats none of the
  request's bytes, logged at INFO without a traceback, by the app as the tests run it
  (AppRunner/TCPSite) and by `notestore serve` (web.run_app).
- A body whose signature fails is refused without a word about it or about the apps.
- Every 503 carries Retry-After.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from app.config import Settings
from app.middleware import errors_as_json, install_parser_error_handler
from app.signing import SIGNATURE_HEADER
from app.web import create_app
from eventlog.spool import SPOOL_FILE
from projections.registry import all_projectors
from tests.helpers import APP_A, SECRETS, make_body, signature, wait_for
from tests.server import Server, write_config

MARKER = b"s3cr3t-t0ken"  # in every hostile request: it must come back nowhere
TOKENS = {"ops-token": ("*",), "t\u00f6k\u20acn": ("*",), MARKER.decode(): ("*",)}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"].split(";")[0] == "application/json", self.headers
        return json.loads(self.body)


async def send(port: int, request: bytes) -> Answer:
    """One raw request on a connection of its own; the answer read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return Answer(int(status_line.split()[1]), headers, body)


def get(path: str, *headers: bytes) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def post(raw: bytes, *headers: bytes) -> bytes:
    lines = [b"POST /webhooks/mobio HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    return b"\r\n".join([*lines, b"Content-Length: %d" % len(raw)]) + b"\r\n\r\n" + raw


def signed_delivery() -> bytes:
    raw = json.dumps(make_body()).encode()
    return post(raw, f"{SIGNATURE_HEADER}: {signature(raw)}".encode())


@pytest.fixture
def hardened_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", apps=SECRETS, tokens=TOKENS)


@pytest.fixture
async def port(hardened_settings: Settings) -> AsyncIterator[int]:
    """create_app served by aiohttp's AppRunner and TCPSite, as on 127.0.0.1."""
    runner = web.AppRunner(create_app(hardened_settings, all_projectors()))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def aiohttp_complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("aiohttp") and r.levelno >= logging.WARNING
    ]


# --- Authorization -------------------------------------------------------------------

NOT_A_TOKEN = [
    b"Bearer \xff",  # was a 500: UnicodeEncodeError in scope_for
    b"Bearer ops-token\xff",
    b"Bearer \xed\xa0\x80",  # a UTF-8-encoded surrogate
    b"Bearer \xc3\xa9",
    b"bearer \x80\x80",
    b"\xff",
    b"Bearer",
    b"Bearer ops-tokenx",
    b"Basic b3BzLXRva2Vu",
]


@pytest.mark.parametrize("value", NOT_A_TOKEN, ids=repr)
@pytest.mark.parametrize("path", ["/events", "/notes/n-1", "/accounts/a/mentions"])
async def test_an_authorization_that_is_no_known_token_is_a_401(port, path, value):
    answer = await send(port, get(path, b"Authorization: " + value))
    assert answer.status == 401
    assert answer.json()["error"] in ("unknown token", "send Authorization: Bearer <token>")


async def test_a_configured_token_that_is_not_ascii_is_accepted(port):
    answer = await send(port, get("/events", "Authorization: Bearer tök€n".encode()))
    assert answer.status == 200, answer.body
    assert answer.json() == {"events": [], "next_after": None}


@pytest.mark.parametrize(
    "values",
    [
        (b"Bearer ops-token", b"Bearer ops-token"),
        (b"Bearer ops-token", b"Bearer nope"),
        (b"Bearer nope", b"Bearer ops-token"),
        (b"Bearer ops-token", b"Bearer ops-token", b"Bearer ops-token"),
    ],
)
@pytest.mark.parametrize("path", ["/events", "/notes/n-1/history", "/notes?related_to=r"])
async def test_more_than_one_authorization_header_is_a_400(port, path, values):
    one = await send(port, get(path, b"Authorization: Bearer ops-token"))
    assert one.status != 400
    headers = [b"Authorization: " + v for v in values[:-1]] + [b"authorization: " + values[-1]]
    answer = await send(port, get(path, *headers))
    assert answer.status == 400
    assert answer.json() == {"error": "send one Authorization header, not several"}


@pytest.mark.parametrize("path", ["/healthz", "/webhooks/mobio", "/openapi.json"])
async def test_routes_that_take_no_token_ignore_authorization_headers(port, path):
    answer = await send(port, get(path, b"Authorization: Bearer a", b"Authorization: Bearer b"))
    assert answer.status == 200


# --- the HTTP parser's refusals ------------------------------------------------------

MALFORMED = {
    "control byte in a header": get("/events", b"Authorization: Bearer " + MARKER + b"\x01"),
    "NUL in a header": get("/events", b"Authorization: Bearer \x00" + MARKER),
    "header too long": get("/events", b"Authorization: Bearer " + MARKER * 800),
    "request line too long": get("/notes/" + MARKER.decode() * 800),
    "not HTTP": MARKER + b"\r\n\r\n",
    "bad request line": b"GET /" + MARKER + b" HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "space in a header name": get("/events", b"Author ization: Bearer " + MARKER),
    "bad Content-Length": b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\nContent-Length: "
    + MARKER
    + b"\r\n\r\n",
    "bad chunk size": b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + MARKER + b"\r\n",
}


def assert_refused_quietly(answer: Answer) -> None:
    assert answer.status == 400
    body = answer.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert MARKER not in answer.body
    assert not any(MARKER.decode() in v for v in answer.headers.values())


@pytest.mark.parametrize("request_", MALFORMED.values(), ids=MALFORMED.keys())
async def test_the_parsers_refusals_are_json_and_repeat_nothing(port, caplog, request_):
    caplog.set_level(logging.DEBUG)
    assert_refused_quietly(await send(port, request_))
    assert aiohttp_complaints(caplog) == []


async def test_the_signature_covers_the_bytes_as_received_whatever_their_encoding(port, caplog):
    """Content-Encoding is not undone: what is verified and kept is what came over the wire."""
    caplog.set_level(logging.DEBUG)
    answer = await send(port, post(b"not gzip " + MARKER, b"Content-Encoding: gzip"))
    assert answer.status == 401 and MARKER not in answer.body
    assert aiohttp_complaints(caplog) == []
    raw = json.dumps(make_body()).encode()
    packed = gzip.compress(raw)
    # signed over the JSON it decompresses to: not the bytes received
    wrong = await send(
        port,
        post(packed, b"Content-Encoding: gzip", f"{SIGNATURE_HEADER}: {signature(raw)}".encode()),
    )
    assert wrong.status == 401
    # signed over the bytes received: verified, and kept (in quarantine: they are not JSON)
    kept = await send(
        port,
        post(
            packed, b"Content-Encoding: gzip", f"{SIGNATURE_HEADER}: {signature(packed)}".encode()
        ),
    )
    assert (kept.status, kept.json()) == (200, {"accepted": 0, "duplicates": 0, "quarantined": 1})


async def test_serve_answers_the_parsers_refusals_as_json_and_logs_them_at_info(
    tmp_path: Path,
):
    config = write_config(tmp_path, SECRETS, {k: list(v) for k, v in TOKENS.items()})
    with Server(config) as server:
        for request in MALFORMED.values():
            assert_refused_quietly(await send(server.port, request))
        answer = await send(server.port, get("/events", b"Authorization: Bearer \xff"))
        assert answer.status == 401

        def refusals() -> list[dict[str, Any]]:
            lines, _ = read_log(server.log_path)
            return [line for line in lines if line.get("event") == "http_request_refused"]

        await wait_for(lambda: len(refusals()) >= len(MALFORMED), 30, "every refusal logged")
        lines, other = read_log(server.log_path)
        refused = refusals()
    assert {line["level"] for line in refused} == {"info"}
    assert not [line for line in lines if line["level"] in ("error", "critical")]
    assert other == []  # e.g. aiohttp's own "ERROR:aiohttp.server:Error handling request"
    log = server.log_path.read_text()
    assert "Traceback" not in log and MARKER.decode() not in log


def read_log(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """serve's JSON log lines, and any line that is not one."""
    lines, other = [], []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            other.append(text)
    return lines, other


# --- the webhook's refusals ----------------------------------------------------------


async def test_a_failed_signature_says_only_that_it_does_not_match(port):
    """Whatever the body (an app that exists or not, not JSON, nested past any parser's
    depth), a wrong signature gets the same words: the body is not read for them."""
    bodies = [
        json.dumps(make_body(app_id=APP_A)).encode(),
        json.dumps(make_body(app_id="no-such-app")).encode(),
        b"\xff not json",
        b"[" * 100_000,
    ]
    answers = []
    for raw in bodies:
        for header in (signature(raw, APP_A, "wrong-secret"), "0" * 64, "x"):
            answer = await send(port, post(raw, f"{SIGNATURE_HEADER}: {header}".encode()))
            answers.append((answer.status, answer.json()))
    assert set(map(json.dumps, answers)) == {
        json.dumps([401, {"error": f"{SIGNATURE_HEADER} does not match the body"}])
    }
    missing = await send(port, post(b"{}"))
    assert (missing.status, missing.json()) == (
        401,
        {"error": f"missing {SIGNATURE_HEADER} header"},
    )


# --- 503 -----------------------------------------------------------------------------


async def test_every_503_carries_retry_after(port, hardened_settings):
    """The log cannot commit (a trigger refuses inserts, as a full disk would): the
    delivery's 503 and /healthz's 503 both say when to come back."""
    assert (await send(port, signed_delivery())).status == 200  # the log exists
    conns = [
        sqlite3.connect(hardened_settings.events_path, isolation_level=None),
        sqlite3.connect(hardened_settings.spool_path / SPOOL_FILE, isolation_level=None),
    ]  # the log and the spool both refuse: nothing can keep a delivery
    for conn, table in zip(conns, ("requests", "spooled"), strict=True):
        conn.execute(
            f"CREATE TRIGGER full_disk BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    try:
        for answer in (await send(port, signed_delivery()), await send(port, get("/healthz"))):
            assert answer.status == 503, answer.body
            assert answer.headers["retry-after"].isdigit(), answer.headers
            assert int(answer.headers["retry-after"]) >= 1
    finally:
        for conn in conns:
            conn.execute("DROP TRIGGER full_disk")
            conn.close()


async def test_a_503_raised_as_an_aiohttp_exception_carries_retry_after(aiohttp_client):
    async def busy(request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable()

    app = web.Application(middlewares=[errors_as_json])
    app.router.add_get("/busy", busy)
    client = await aiohttp_client(app)
    resp = await client.get("/busy")
    assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
    assert await resp.json() == {"error": "Service Unavailable"}


async def test_a_handler_failing_outside_the_middleware_still_answers_json():
    """What aiohttp itself answers 500 for (no errors_as_json around the handler)."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom " + MARKER.decode())

    install_parser_error_handler()
    app = web.Application()
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        answer = await send(runner.addresses[0][1], get("/broken"))
    finally:
        await runner.cleanup()
    assert answer.status == 500
    assert answer.json() == {"error": "internal error; the server log has the details"}
    assert MARKER not in answer.body
