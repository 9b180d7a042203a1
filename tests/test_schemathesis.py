"""Schemathesis fuzzes a live server with its own /openapi.json.

The app runs as the other tests run it (create_app on aiohttp's AppRunner/TCPSite, on
127.0.0.1), here in a thread of its own since schemathesis calls it synchronously,
with a token and the sample events. Every documented operation gets generated
requests, valid and invalid; the checks: no 500, and every status, content type,
header and body as the document says. The webhook bodies schemathesis generates are
signed by a hook (tests/schemathesis_hooks.py), so they reach the handler: each one is
answered 200 and stored, which the last test counts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.signing import SIGNATURE_HEADER
from app.web import create_app
from projections.registry import all_projectors
from tests.helpers import (
    APP_A,
    SAMPLE_FILES,
    SECRETS,
    make_block,
    make_body,
    signature,
    views_settled,
    wait_until,
)
from tests.schemathesis_hooks import WEBHOOK, is_signed

TOKEN = "fuzz-token"
ACCOUNT = "70176784-07f7-4eb7-9280-4028f21152b7"  # the samples' creator, the doc's example account
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
        "generation": {"mode": "all"},
    }
)
WEBHOOK_ANSWERS: Counter[tuple[bool, int]] = Counter()  # (signed, status) -> count


class LiveApp:
    """create_app on AppRunner/TCPSite at 127.0.0.1, in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-app", daemon=True)
        self._started: concurrent.futures.Future[int] = concurrent.futures.Future()

    def __enter__(self) -> LiveApp:
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._started.result(timeout=60)}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the live app did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            if not self._started.done():
                self._started.set_exception(exc)
            raise

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(create_app(self.settings, all_projectors()))
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self._started.set_result(runner.addresses[0][1])
            await self._stop.wait()
        finally:
            await runner.cleanup()


def post(url: str, raw: bytes, app_id: str = APP_A) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw, app_id)}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def stored_requests(settings: Settings) -> int:
    conn = sqlite3.connect(settings.events_path)
    try:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """The live app, its log holding the samples and a few notes mentioning an account."""
    settings_ = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        apps=SECRETS,
        tokens={TOKEN: ("*",)},
        max_body_bytes=64 * 1024,
    )
    with LiveApp(settings_) as app:
        for path in SAMPLE_FILES:
            raw = path.read_bytes()
            post(app.url, raw, json.loads(raw)["app_id"])
        mentions = [
            make_block(
                note_id=f"n-{i}",
                event_detail=[{"field_key": "account_mentions", "add": [[ACCOUNT]]}],
            )
            for i in range(3)
        ]
        assert post(app.url, json.dumps(make_body(*mentions)).encode())["accepted"] == 3
        wait_until(lambda: views_settled(settings_), what="views catching up")
        yield app


@pytest.fixture(scope="module")
def api_schema(live: LiveApp) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_live_server_keeps_to_its_document(case: Any, live: LiveApp) -> None:
    response = case.call_and_validate(base_url=live.url, checks=CHECKS)
    if case.operation.label == WEBHOOK:
        signed = is_signed(case)
        WEBHOOK_ANSWERS[signed, response.status_code] += 1
        if signed:  # reached the handler: whatever the bytes, stored (or quarantined)
            assert response.status_code == 200, response.text
        else:
            assert response.status_code != 200, "an unsigned body was accepted"


def test_every_signed_body_reached_the_log(live: LiveApp) -> None:
    """Runs after the fuzzing above: the signed bodies were each answered 200 and stored."""
    assert WEBHOOK_ANSWERS, "run with test_the_live_server_keeps_to_its_document before it"
    signed_ok = WEBHOOK_ANSWERS[True, 200]
    assert signed_ok > 0, WEBHOOK_ANSWERS
    assert sum(n for (signed, _), n in WEBHOOK_ANSWERS.items() if signed) == signed_ok
    samples = len(SAMPLE_FILES) + 1
    assert stored_requests(live.settings) == samples + signed_ok
