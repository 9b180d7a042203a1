"""Test helpers: samples, event factories, the signer (the same one `notestore send` uses)."""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from app.signing import SIGNATURE_HEADER, sign

ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = ROOT / "examples" / "mobio"
SAMPLE_FILES = sorted(SAMPLES_DIR.glob("*.json"))

APP_A = "16453496-6a17-11ed-8a77-6632ed169876"  # notes samples
APP_B = "c71f0b7a-6ecc-11ed-9704-468042e8692e"  # comment samples
SECRETS = {APP_A: ("secret-a",), APP_B: ("old-secret-b", "secret-b")}
MERCHANT = "1b99bdcf-d582-4f49-9715-1b61dfff3924"


def sample(name: str) -> dict[str, Any]:
    """A seed sample by its file name's stem fragment, e.g. sample('note_create')."""
    for path in SAMPLE_FILES:
        if path.stem.split("-", 1)[1] == name:
            loaded: dict[str, Any] = json.loads(path.read_bytes())
            return loaded
    raise KeyError(name)


def secret_for(app_id: str) -> str:
    return SECRETS[app_id][-1]


def signature(body: bytes, app_id: str = APP_A, secret: str | None = None) -> str:
    return sign(app_id, body, secret or secret_for(app_id))


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()


async def signed_post(
    client: TestClient,  # type: ignore[type-arg]
    body: dict[str, Any] | bytes,
    app_id: str | None = None,
    secret: str | None = None,
) -> tuple[int, Any]:
    raw = encode(body)
    if app_id is None:
        app_id = body.get("app_id", APP_A) if isinstance(body, dict) else APP_A
    resp = await client.post(
        "/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw, app_id, secret)}
    )
    return resp.status, await resp.json()


def make_block(event_type: str = "note_create", **data: Any) -> dict[str, Any]:
    """A valid block; data_event fields can be overridden."""
    kind = "comment" if "comment" in event_type else "note"
    data_event: dict[str, Any] = {
        f"{kind}_id": data.pop(f"{kind}_id", uuid.uuid4().hex[:24]),
        "event_id": uuid.uuid4().hex[:24],
        "merchant_id": MERCHANT,
        "action_time": 1669200439.5,
        "created_time": 1669200441.8,
        "event_detail": [],
    }
    data_event.update(data)
    return {"message_id": str(uuid.uuid4()), "event_type": event_type, "data_event": data_event}


def make_body(*blocks: dict[str, Any], app_id: str = APP_A) -> dict[str, Any]:
    return {
        "merchant_id": MERCHANT,
        "timestamp": 1669200453,
        "block_event": list(blocks) or [make_block()],
        "app_id": app_id,
        "request_id": str(uuid.uuid4()),
        "version": 1,
    }


def with_changed_description(body: dict[str, Any], text: str) -> dict[str, Any]:
    forged = copy.deepcopy(body)
    forged["block_event"][0]["data_event"]["event_detail"][0]["add"] = [text]
    return forged


def snapshot(
    db_path: Path, tables: tuple[str, ...] = ("events", "requests")
) -> dict[str, list[Any]]:
    """Every row of the given log tables, to show a request left them as they were."""
    if not db_path.exists():
        return {t: [] for t in tables}
    conn = sqlite3.connect(db_path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    finally:
        conn.close()


BASE_VIEWS = ("notes", "comments", "mentions")


def views_settled(settings, views_named=BASE_VIEWS) -> bool:  # type: ignore[no-untyped-def]
    """Whether every view has applied the whole log (on the settings' backend), and the views
    named exist (the app's own projectors may be fewer than the registry's)."""
    storage = settings.storage
    if storage.backend == "sqlite" and not settings.views_path.exists():
        return False
    log, views = storage.log_reader(), storage.views()
    try:
        head = log.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        checkpoints = dict(views.execute("SELECT name, checkpoint FROM projectors").fetchall())
    finally:
        log.close()
        views.close()
    return set(views_named) <= checkpoints.keys() and all(c == head for c in checkpoints.values())


async def settled(settings, timeout: float = 15.0, views_named=BASE_VIEWS) -> None:  # type: ignore[no-untyped-def]
    """Wait until every view has applied the whole log (the runner works in the background)."""
    await wait_for(
        lambda: views_settled(settings, views_named), timeout, "views catching up with the log"
    )


async def post_samples(client: TestClient) -> None:  # type: ignore[type-arg]
    for path in SAMPLE_FILES:
        raw = path.read_bytes()
        status, _ = await signed_post(client, raw, json.loads(raw)["app_id"])
        assert status == 200


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    """Poll `check` until it is true; fail (never hang) once the deadline passes."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what or check}"
        time.sleep(0.05)


async def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> None:
    """wait_until for a test running on the event loop: `check` may be a coroutine function."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        done = check()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not reached: {what or check}"
        await asyncio.sleep(0.02)
