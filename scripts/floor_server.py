"""The least a delivery can cost in this stack: baselines for scripts/bench_floor.py.

    python scripts/floor_server.py MODE PORT DATA_DIR

MODE:
  verify   read the body, check its signature against every configured secret (as serve
           does), parse it with orjson, answer 200. Nothing stored.
  durable  verify, then store: one thread commits whatever deliveries are waiting as one
           SQLite transaction (WAL, synchronous=FULL, as the log), a row per delivery keyed
           by its first message_id (a duplicate is ignored), and answers the batch with one
           wake-up of the event loop. No hash chain, no request row, no validation, no
           quarantine, no views: a lower bound on serve's own path, not an alternative to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import queue
import sqlite3
import sys
import threading
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import SECRETS  # noqa: E402

CANDIDATES = [
    (app_id, secret.encode()) for app_id, secrets in SECRETS.items() for secret in secrets
]
ANSWER = {"accepted": 1, "duplicates": 0, "quarantined": 0}


def verified(header: str | None, body: bytes) -> str | None:
    """The app_id whose signature matches, every candidate hashed (constant time)."""
    given = (header or "").strip().lower().encode()
    found = None
    for app_id, secret in CANDIDATES:
        digest = hashlib.sha256(app_id.encode() + body + secret).hexdigest().encode()
        if hmac.compare_digest(given, digest) and found is None:
            found = app_id
    return found


class Committer:
    """Group commit in a thread: the batch is whatever is queued when the last one ends."""

    def __init__(self, path: Path) -> None:
        self.queue: queue.Queue[tuple[str, bytes, asyncio.Future[None]]] = queue.Queue()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS events (message_id TEXT PRIMARY KEY, body BLOB)"
        )
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < 512:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            error: Exception | None = None
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(
                    "INSERT OR IGNORE INTO events VALUES (?, ?)", [(m, b) for m, b, _ in batch]
                )
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:  # answered 500: the benchmark reports non-200s
                error = exc
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            self.loop.call_soon_threadsafe(_answer, [f for _, _, f in batch], error)


def _answer(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(mode: str, data_dir: Path) -> web.Application:
    app = web.Application(client_max_size=1_048_576)
    committer: list[Committer] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if verified(request.headers.get("X-mevent-signature"), body) is None:
            return web.json_response({"error": "signature"}, status=401)
        parsed = orjson.loads(body)
        if mode == "durable":
            future = asyncio.get_running_loop().create_future()
            committer[0].queue.put((parsed["block_event"][0]["message_id"], body, future))
            await future
        return web.json_response(ANSWER)

    async def start(app: web.Application) -> None:
        if mode == "durable":
            committer.append(Committer(data_dir / "floor.db"))

    app.on_startup.append(start)
    app.router.add_post("/webhooks/mobio", receive)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    mode, port, data_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    if mode not in ("verify", "durable"):
        raise SystemExit(f"unknown mode {mode!r}: verify or durable")
    data_dir.mkdir(parents=True, exist_ok=True)
    web.run_app(make_app(mode, data_dir), host="127.0.0.1", port=port, print=None, access_log=None)
